"""Train one model on a split list (MRAC25 command line, plus --device and --config).

    python train.py --dataset demo --seed 0 --feat "['demo-hubert-large-UTT','demo-roberta-large-UTT']" \
        --model auto_attention --epochs 40 --test
    # conversation context: whole dialogues, a context layer over each utterance's 2 x 2 neighbours
    python train.py --dataset meld --split train_lst/meld/official.json --feat meld-minilm-UTT --context 2 --test
    # replay a run from its resolved settings (flags given after it override them)
    python train.py --config saved/demo/seed0/auto_attention/<run>/args.yaml --save_root saved/replay

Settings: engine/config.py (defaults, models/model-tune.yaml, --config, flags). Writes a run folder under
--save_root, named by its settings unless --run_name says otherwise (see engine/trainer.py), and ends with
``RUN: <folder>`` and ``BEST: epoch:<e>, loss:<l>, acc:<a>, f-score:<f>`` (validation, best epoch by weighted F1).
"""

import sys

from engine.config import build_parser, from_namespace
from common.errors import DataError
from engine.grid import end_with_driver
from engine.trainer import train
from common.utils import error_line


def main(argv=None):
    end_with_driver()  # a run of a grid (engine/grid.py) ends with the process that started it
    p = build_parser()
    p.description = __doc__
    args = p.parse_args(argv)
    if args.list_models:
        from models import list_models
        print("\n".join(list_models()))
        return 0
    try:
        train(from_namespace(args))
    except (DataError, KeyError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
