"""Train one model on a split list (MRAC25 command line, plus --device).

    python train.py --dataset demo --seed 0 --feat "['demo-hubert-large-UTT','demo-roberta-large-UTT']" \
        --model auto_attention --epochs 40 --test
    # conversation context: whole dialogues, a context layer over each utterance's 2 x 2 neighbours
    python train.py --dataset meld --split train_lst/meld/official.json --feat meld-minilm-UTT --context 2 --test

Writes a run folder under --save_root (see toolkit/trainer.py) and ends with the line
``BEST: epoch:<e>, loss:<l>, acc:<a>, f-score:<f>`` (validation, best epoch by weighted F1).
"""

import argparse
import sys

from models.context import CONTEXT_LEVELS
from toolkit.files import DataError
from toolkit.trainer import train
from toolkit.utils import error_line


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the split list, initialisation and batch order")
    p.add_argument("--dataset", default="demo", help="data set name in config.DATASETS (split: train_lst/<dataset>/seed<seed>.json)")
    p.add_argument("--split", default=None, help="explicit split list JSON (overrides the one from --dataset/--seed)")
    p.add_argument("--emo_rule", default=None, help="label set in config.EMO_RULE (default: the data set's)")
    p.add_argument("--save_root", default="./saved", help="root of run folders")
    p.add_argument("--save_as_time", action="store_true", help="name the run folder by the time instead of 'run'")
    p.add_argument("--run_name", default=None, help="name the run folder explicitly")
    p.add_argument("--save_model", action="store_true",
                   help="kept for MRAC25 compatibility: best.pth is always written, test.py needs it")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pth")
    p.add_argument("--model", default="auto_attention", help="registered model (models/), see --list_models")
    p.add_argument("--model_pretrain", default=None, help="checkpoint to initialise the model from (e.g. stage 1)")
    p.add_argument("--feat", default="['demo-hubert-large-UTT','demo-roberta-large-UTT','demo-clip-vit-base-UTT']",
                   help="features, as \"['a','b']\" or a,b; each registered in config.py")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--l2", type=float, default=1e-5, help="weight decay")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=4, help="threads reading feature files into the packed cache")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--feat_norm", default="standard", choices=["standard", "none"],
                   help="z-score each feature with the training list's statistics (stored in the checkpoint)")
    p.add_argument("--mmap", action="store_true", help="read batches from the memory-mapped packs instead of copying the split into memory")
    p.add_argument("--test", action="store_true", help="score the best checkpoint on the data set's test list")
    p.add_argument("--test_csv", default=None, help="test name list (default: the data set's)")
    p.add_argument("--test_label_csv", default=None, help="test labels, for scoring only (default: the data set's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--list_models", action="store_true", help="print the registered models and exit")
    g = p.add_argument_group("model hyperparameters (default: models/model-tune.yaml)")
    g.add_argument("--hidden_dim", type=int, default=None)
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--att_norm", default=None, choices=["softmax", "none"])
    g.add_argument("--seq_layers", type=int, default=None)
    g.add_argument("--seq_heads", type=int, default=None)
    g.add_argument("--seq_dim", type=int, default=None, help="width inside a frame-level sequence encoder")
    g.add_argument("--max_len", type=int, default=None, help="frames kept per frame-level sequence")
    g.add_argument("--expert_dropout", type=float, default=None, help="drop whole experts while training")
    g.add_argument("--input_noise", type=float, default=None, help="Gaussian noise on standardised inputs")
    g.add_argument("--grad_clip", type=float, default=None)
    g.add_argument("--context", type=int, default=None, metavar="K",
                   help="conversation context: 0 off (default); K > 0 adds a context layer over whole dialogues "
                        "(a convolution over 2K+1 neighbouring utterances, then a bidirectional GRU) on top of the "
                        "model's fused state (see --context_level)")
    g.add_argument("--context_hidden", type=int, default=None, help="width of the fused-level context layer "
                                                                     "(default 128)")
    g.add_argument("--context_level", choices=CONTEXT_LEVELS, default=None,
                   help="where the context layer sits: on the fused state (default), on each expert's state before "
                        "fusion (MiSTER-E, bc-LSTM's first level), or both (bc-LSTM's hierarchy)")
    p.add_argument("--dialogue_csv", nargs="*", default=[], metavar="CSV",
                   help="with --context: CSVs with name, the dialogue column (the data set's group_col, else "
                        "'dialogue') and order, read after the data set's label tables; names without a "
                        "dialogue id stand alone")
    g.add_argument("--model_args", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other model hyperparameter, e.g. --model_args lambda_kl=0.2 lambda_con=0")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list_models:
        from models import list_models
        print("\n".join(list_models()))
        return 0
    try:
        train(args)
    except (DataError, KeyError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
