"""``preprocess/finetune_encoder.py``: fine-tune an encoder on the training list, then write its embeddings.

In order:

1. labels come from the split list only: its ``train_info`` (trained on; plus, with ``--pseudo_split``, the
   pseudo-labelled rows of that list's ``train_info`` with their weights) and its ``valid_info`` (early stopping).
   No label table is read for labels, and the test label table is never opened: the names to embed come from
   the data set's name lists (label table, test list, unlabelled list), the dialogue order from the tables that
   carry it (never ``test_label_csv``), the texts from the subtitle/transcript table;
2. the feature folders are taken (extraction's lock and manifest check: a rerun with other settings is refused,
   naming the differences) before anything is trained;
3. the trainings: one on the whole training list, and with ``--folds K`` one per fold on K-1 of K stratified,
   seeded parts (whole dialogues where the data set has them). Each lives in ``<folder>/training/<label>/``
   (checkpoint while it runs, history.csv, curves.png, predictions.npz once done), so a killed run started
   again goes on where it stopped;
4. the embeddings (the head's projection) of the whole-list model for every name, written as an ordinary
   ``UTT`` feature through extraction's writer (report, manifest with a ``finetune`` section, registration in the
   data set's ``dataset.yaml``); the model in ``<folder>/adapter/`` (peft ``save_pretrained``, or the whole
   backbone with ``--lora 0``; the head in head.safetensors and head.json);
5. with ``--folds K``: a second feature ``<feature>-probs``, class probabilities, out-of-fold for the training
   names, the K fold models' mean for every other name.
"""

import hashlib
import json
import os
import time

import numpy as np

import config
from common.errors import DataError
from common.names import check_name
from dataloader.dialogue import DialogueIndex
from dataloader.files import read_split_json
from extraction import runner as xrunner
from extraction import writer
from extraction.sources import Sources, dataset_names
from finetuning import inputs as inputs_mod
from finetuning import model as model_mod
from finetuning.parallel import Parallel
from finetuning.trainer import CHECKPOINT, Examples, Trainer, bf16_autocast, peak_memory, plot_history

PREDICTIONS = "predictions.npz"
SAVE_DTYPES = ("float16", "float32")


class FinetunedEncoder:
    """What extraction's folder functions read of an encoder, for a fine-tuned one."""

    def __init__(self, backbone, dim, device):
        self.ref, self.dim, self.device = backbone.ref, int(dim), device
        self.padding_probe = {"batching": "padded; the head pools over real tokens only (attention mask)"
                              if backbone.modality == "text" else
                              "windows padded (or in equal-length groups); the head pools over real frames only"}


def check_args(args):
    """Refuse bad flag values in one line, before anything is read or loaded."""
    positive = {"epochs": args.epochs, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                "embed_dim": args.embed_dim, "patience": args.patience, "max_tokens": args.max_tokens}
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise DataError(f"--{flag} {value}: give a positive number")
    if args.lora is not None and args.lora < 0:
        raise DataError(f"--lora {args.lora}: give the LoRA rank (e.g. 8), or 0 for full fine-tuning")
    if args.lr is not None and not args.lr > 0:
        raise DataError(f"--lr {args.lr}: give a positive learning rate")
    if args.folds == 1 or args.folds < 0:
        raise DataError(f"--folds {args.folds}: give 0 (no cross-fitting) or K >= 2 folds")
    if args.context_window < 0:
        raise DataError(f"--context_window {args.context_window}: give 0 (the utterance alone) or a number of "
                        "previous utterances")
    if args.focal_gamma < 0:
        raise DataError(f"--focal_gamma {args.focal_gamma}: give a number >= 0")
    if not 0.0 <= args.label_smoothing < 1.0:
        raise DataError(f"--label_smoothing {args.label_smoothing}: give a number in [0, 1)")
    if args.save_dtype not in SAVE_DTYPES:
        raise DataError(f"--save_dtype '{args.save_dtype}': use float16 or float32")
    if args.modality not in inputs_mod.MODALITIES:
        raise DataError(f"--modality {args.modality}: use {' or '.join(inputs_mod.MODALITIES)}")
    if args.modality == "audio":
        text_only = {"--context_window": args.context_window, "--speakers": args.speakers,
                     "--max_tokens": args.max_tokens, "--subtitles": args.subtitles}
        given = [flag for flag, value in text_only.items() if value]
        if given:
            raise DataError(f"{', '.join(given)}: text flags; an audio model reads the clip alone, in windows "
                            "(--window_s)")
    elif getattr(args, "audio_dir", None) or getattr(args, "video_dir", None) or getattr(args, "window_s", None):
        raise DataError("--audio_dir, --video_dir and --window_s are for --modality audio")
    if args.feature_name is not None:
        check_name(args.feature_name, "--feature_name")
    if not args.dataset or args.dataset not in config.DATASETS:
        raise DataError(f"--dataset '{args.dataset}': give a data set of config.DATASETS "
                        f"({', '.join(config.DATASETS)})")


def resolve_settings(args, backbone):
    """Every training setting: the flags, else the defaults of the backbone's family (finetuning.model.DEFAULTS)."""
    d = model_mod.DEFAULTS[backbone.family]
    lora = d["lora"] if args.lora is None else int(args.lora)
    lr = args.lr if args.lr is not None else (d["lr_lora"] if lora and "lr_lora" in d else d["lr"])
    text = backbone.modality == "text"
    max_tokens = (args.max_tokens or (d["max_tokens_context"] if args.context_window else d["max_tokens"])) if text \
        else None
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()] if args.lora_targets else None
    return {
        "lora": lora, "lora_alpha": (args.lora_alpha or d["lora_alpha"] or 2 * lora) if lora else None,
        "lora_dropout": (d["lora_dropout"] if args.lora_dropout is None else args.lora_dropout) if lora else None,
        "lora_targets": targets if lora else None,
        "lr": float(lr), "batch_size": int(args.batch_size or d["batch_size"]),
        "epochs": int(args.epochs or d["epochs"]), "embed_dim": int(args.embed_dim or d["embed_dim"]),
        "loss": args.loss or d["loss"], "focal_gamma": float(args.focal_gamma),
        "class_weights": args.class_weights, "label_smoothing": float(args.label_smoothing),
        "patience": int(args.patience or d["patience"]), "grad_accum": int(args.grad_accum),
        "weight_decay": float(args.weight_decay), "warmup_ratio": float(args.warmup_ratio),
        "head_dropout": float(d["head_dropout"] if args.head_dropout is None else args.head_dropout),
        "max_tokens": int(min(max_tokens, backbone.token_limit())) if text else None, "seed": int(args.seed),
        "folds": int(args.folds),
        "grad_checkpointing": bool(args.grad_checkpointing),
        "load_in_4bit": bool(getattr(args, "load_in_4bit", False)),
    }


def _digest(obj):
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def read_training_lists(args, ds, classes):
    """``(train, valid, where)``: ``{"names", "labels", "weights"}`` of the training rows (the split's
    ``train_info``, plus the pseudo-labelled rows of ``--pseudo_split``) and of ``valid_info``; labels only from
    these lists."""
    split = read_split_json(args.split, classes)
    index = {c: i for i, c in enumerate(classes)}

    def rows(info):
        return {"names": list(info["names"]), "labels": [index[e] for e in info["emos"]],
                "weights": list(info.get("weights") or [1.0] * len(info["names"]))}

    train, valid = rows(split["train_info"]), rows(split["valid_info"])
    digests = {"split": _digest({k: split[k] for k in ("train_info", "valid_info")}), "pseudo_split": None}
    if args.pseudo_split:
        pseudo = read_split_json(args.pseudo_split, classes)
        extra = rows(pseudo["train_info"])
        known, held = set(train["names"]), set(valid["names"])
        clash = [n for n in extra["names"] if n in held]
        if clash:
            raise DataError(f"--pseudo_split '{args.pseudo_split}' trains on {len(clash)} names of the validation list "
                            f"of '{args.split}' (e.g. {clash[:3]}); use a pseudo-label list built on this split")
        keep = [i for i, n in enumerate(extra["names"]) if n not in known]
        for key in train:
            train[key] += [extra[key][i] for i in keep]
        digests["pseudo_split"] = _digest(pseudo["train_info"])
    test_csv = ds.get("test_csv")
    if test_csv and os.path.isfile(test_csv):
        from dataloader.files import read_names_csv

        test = set(read_names_csv(test_csv))
        gold = [n for n in split["train_info"]["names"] + split["valid_info"]["names"] if n in test]
        pseudo_test = [n for n in train["names"] if n in test and n not in gold]
        if gold:
            raise DataError(f"split list '{args.split}' holds {len(gold)} names of the test list (e.g. {gold[:3]}); "
                            "test names are never trained or validated on")
        if pseudo_test and not ds.get("transductive"):
            raise DataError(f"--pseudo_split '{args.pseudo_split}' pseudo-labels {len(pseudo_test)} test names (e.g. "
                            f"{pseudo_test[:3]}), and data set '{args.dataset}' is not transductive")
    return train, valid, digests


def read_texts(args, ds):
    """The subtitle/transcript table: ``(Sources, speakers or None, dialogue index)``."""
    path = args.subtitles or ds.get("subtitle_csv") or ds.get("transcripts_csv")
    if not path:
        raise DataError(f"data set '{args.dataset}' has no subtitle_csv or transcripts_csv: give --subtitles CSV "
                        "(name and text columns)")
    sources = Sources("text", subtitles=path, subtitle_col=args.subtitle_col)
    speakers = None
    if args.speakers:
        import pandas as pd

        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if "speaker" not in table.columns:
            raise DataError(f"--speakers: '{path}' has no 'speaker' column (columns: {list(table.columns)})")
        speakers = dict(zip(table["name"].str.strip(), table["speaker"].str.strip()))
    group_col = ds.get("group_col") or "dialogue"
    tables = [ds.get(k) for k in ("label_csv", "test_csv", "unlabeled_csv")] + [path]  # never test_label_csv
    dialogues = DialogueIndex.from_csvs([p for p in dict.fromkeys(tables) if p and os.path.isfile(p)], group_col)
    if args.context_window and not dialogues.has_dialogues():
        raise DataError(f"--context_window {args.context_window} needs each utterance's dialogue: the tables of data set "
                        f"'{args.dataset}' have no '{group_col}' column with dialogues of two or more utterances")
    return sources, speakers, dialogues


def read_audio(args, ds, backbone):
    """The clips (``--audio_dir`` / ``--video_dir``, else the data set's ``audio_dir``, else its ``video_dir``, as
    extraction reads them, at the model's sampling rate): ``(Sources, None, dialogue index)``; the dialogues (for
    the folds' whole dialogues) from the tables that carry them, never ``test_label_csv``."""
    folders = {"audio_dir": getattr(args, "audio_dir", None), "video_dir": getattr(args, "video_dir", None)}
    if not any(folders.values()):
        folders = {"audio_dir": ds.get("audio_dir"), "video_dir": None if ds.get("audio_dir") else ds.get("video_dir")}
    sources = Sources("audio", **folders, sample_rate=backbone.sample_rate)
    group_col = ds.get("group_col") or "dialogue"
    tables = [ds.get(k) for k in ("label_csv", "test_csv", "unlabeled_csv")]
    dialogues = DialogueIndex.from_csvs([p for p in dict.fromkeys(tables) if p and os.path.isfile(p)], group_col)
    return sources, None, dialogues


def make_inputs(args, backbone, s, sources, dialogues, speakers, device):
    """The modality's input class (finetuning.inputs.MODALITIES) for this run."""
    if args.modality == "audio":
        backbone.check(s)
        return inputs_mod.AudioInputs(backbone, sources, getattr(args, "window_s", None), getattr(args, "prompt", None),
                                      device)
    return inputs_mod.TextInputs(backbone.tokenizer, sources.texts, dialogues, speakers, args.context_window,
                                 s["max_tokens"], backbone.family == "llm", sources.subtitle_col)


def folder_names(args, backbone):
    """``(embedding folder, its feature name, probabilities folder, its feature name)``."""
    base = args.feature_name or f"{backbone.ref.short_name}-ft"
    feature = base if base.endswith("-UTT") else f"{base}-UTT"
    out = args.out or os.path.join(config.FEATURE_ROOT, args.dataset, feature)
    feature = os.path.basename(os.path.normpath(out)) if args.out and not args.feature_name else feature
    probs = f"{feature}-probs"
    return out, feature, os.path.join(os.path.dirname(os.path.normpath(out)), probs), probs


def fold_parts(train, k, seed, dialogues):
    """K (train positions, held-out positions) pairs over the training rows: stratified by label, seeded, whole
    dialogues where the rows have them."""
    import pandas as pd

    from dataloader.splits import kfold_splits

    df = pd.DataFrame({"name": train["names"], "discrete": train["labels"]})
    df["group"] = [dialogues.dialogue.get(n) or f"alone:{n}" for n in df["name"]]
    grouped = df["group"].nunique() < len(df)
    try:
        return kfold_splits(df, k, seed, "group" if grouped else None)
    except ValueError as e:
        raise DataError(f"--folds {k}: the training list cannot be cut into {k} stratified parts ({e}); give fewer "
                        "folds") from None


def run(args, logger):
    """Fine-tune and write the features of ``args``; returns the exit status (0 done, 1 some names failed)."""
    from common.utils import process_device

    t_start = time.time()
    check_args(args)
    ds = config.DATASETS[args.dataset]
    classes = list(config.EMO_RULE[ds["emo_rule"]])
    train, valid, digests = read_training_lists(args, ds, classes)
    names, lists = dataset_names(args.dataset)
    names = sorted(set(names) | set(train["names"]) | set(valid["names"]))
    audio = args.modality == "audio"
    sources, speakers, dialogues = (None, None, None) if audio else read_texts(args, ds)
    device = process_device(args.device, 0)
    if audio:  # finetuning/audio.py: HuBERT, wav2vec2, WavLM, Whisper's encoder, Qwen2-Audio
        from finetuning.audio import AudioBackbone

        backbone = AudioBackbone(args.model, args.modality, args.revision, args.trust_remote_code)
        sources, speakers, dialogues = read_audio(args, ds, backbone)
    else:
        backbone = model_mod.Backbone(args.model, args.modality, args.revision, args.trust_remote_code)
    s = resolve_settings(args, backbone)
    if s["load_in_4bit"]:
        model_mod.check_4bit(device, s["lora"])
    inputs = make_inputs(args, backbone, s, sources, dialogues, speakers, device)
    lacking = [n for n in train["names"] + valid["names"] if not inputs.has_input(n)]
    if lacking:
        raise DataError(f"{len(lacking)} names of the training and validation lists have no {args.modality} input in "
                        f"{sources.describe()} (e.g. {lacking[:3]}); give inputs for every one")
    # what each name's model reads, as text (audio: its file's size and mtime), by name
    texts = {n: inputs.input_key(n) for n in names if inputs.has_input(n)}
    train_inputs = inputs_mod.text_digest([(n, texts[n]) for n in train["names"] + valid["names"]])
    if s["lora"] and not s["lora_targets"]:
        s["lora_targets"] = backbone.default_targets()
    identity = {"stage": "finetune", **backbone.describe(), "method": "lora" if s["lora"] else "full",
                **{k: v for k, v in s.items() if k not in ("grad_checkpointing", "load_in_4bit")},
                **({"load_in_4bit": "nf4, bf16 compute"} if s["load_in_4bit"] else {}), "classes": classes, **digests,
                "train_inputs": train_inputs, **inputs.identity(), "head": "layernorm, attentive statistics pooling, "
                "projection, relu, dropout, linear", "level": "UTT", "file_dtype": args.save_dtype}
    trainings = [("all", list(range(len(train["names"]))), None)]
    if s["folds"]:
        trainings += [(f"fold{k}", list(tr), list(ho))
                      for k, (tr, ho) in enumerate(fold_parts(train, s["folds"], s["seed"], dialogues))]
    units, failed = inputs.prepare_all(list(texts))  # audio: every clip decoded, in windows (failures reported)
    unread = [n for n in train["names"] + valid["names"] if n in failed]
    if unread:
        raise DataError(f"{len(unread)} clips of the training and validation lists cannot be read (e.g. "
                        f"{unread[0]}: {failed[unread[0]]})")
    out, feature, probs_out, probs_feature = folder_names(args, backbone)
    encoder = FinetunedEncoder(backbone, s["embed_dim"], device)
    probs_encoder = FinetunedEncoder(backbone, len(classes), device)
    parallel = Parallel(device)  # under torchrun: the process group (gloo on the CPU, nccl on CUDA)
    locks = []
    try:
        verdict = None
        if parallel.main:  # rank 0 takes the folders (lock, settings check); every rank gets its verdict
            lock, verdict, _ = xrunner.take_folder(out, identity, encoder, sources, names, lists, logger)
            locks += [lock] if lock else []
            if s["folds"] and not verdict:
                probs_identity = {**identity, "output": "class probabilities (out-of-fold for training names)",
                                  "dim": len(classes), "file_dtype": "float32"}
                lock, verdict, _ = xrunner.take_folder(probs_out, probs_identity, probs_encoder, sources, names,
                                                       lists, logger)
                locks += [lock] if lock else []
        verdict = parallel.broadcast(verdict)
        if verdict:
            raise DataError(verdict)
        if parallel.main:
            xrunner._log_to_file(logger, os.path.join(out, "finetune.log"))
        else:  # the other ranks write nothing, and say only what goes wrong
            logger.setLevel("WARNING")
            args.quiet = True
        logger.info(f"fine-tuning {backbone.ref.label} ({backbone.family}: {identity['family']}) on {device}: "
                    f"{len(train['names'])} training names, {len(valid['names'])} validation names, {len(names)} to "
                    f"embed; settings {json.dumps(s)}" + (f"; {parallel.world} processes (torchrun), each "
                                                           f"{1 / parallel.world:.3g} of every batch" if
                                                           parallel.world > 1 else ""))
        results = {}
        for k, (label, rows, held) in enumerate(trainings):
            results[label] = train_one(label, k, rows, held, train, valid, names, units, inputs, backbone, s, identity,
                                       out, device, parallel, classes, args, logger)
        status = 0
        if parallel.main:
            status = write_features(args, out, feature, names, units, texts, sources, encoder, results, identity, s,
                                    backbone, t_start, logger, parallel.world, failed=failed)
            if s["folds"]:
                status = max(status, write_probs(args, probs_out, probs_feature, names, units, texts, sources,
                                                 probs_encoder, results, train, trainings, t_start, logger,
                                                 parallel.world, failed=failed))
        return parallel.broadcast(status)
    finally:
        for lock in locks:
            writer.unlock_folder(lock)
        parallel.close()


def train_one(label, k, rows, held, train, valid, names, units, inputs, backbone, s, identity, out, device, parallel,
              classes, args, logger):
    """One training (``all``, or ``fold<k>``), or its saved predictions when it finished before: returns
    ``{"names", "embeddings" (all only), "probs", "info"}``."""
    import torch

    from common.utils import set_seed

    folder = os.path.join(out, "training", label)
    path = os.path.join(folder, PREDICTIONS)
    if parallel.broadcast(os.path.isfile(path)):
        with np.load(path, allow_pickle=False) as z:
            done = {"names": z["names"].tolist(), "probs": z["probs"],
                    "embeddings": z["embeddings"] if "embeddings" in z.files else None}
        with open(os.path.join(folder, "summary.json")) as f:
            done["info"] = json.load(f)
        logger.info(f"training {label}: finished before (val F1 {done['info']['best_f1']:.4f}); its predictions reused")
        return done
    if parallel.main:
        os.makedirs(folder, exist_ok=True)
    set_seed(s["seed"] + k)  # the same on every rank (and DDP starts every rank from rank 0's weights)
    # LoRA on a GPU with bf16: the frozen base in bf16 (peft keeps the adapters in float32); float32 otherwise
    dtype = torch.bfloat16 if bf16_autocast(device) and s["lora"] else torch.float32
    model, _ = model_mod.build_model(backbone, len(classes), s, device, dtype)
    trainable, total = model_mod.parameter_counts(model)
    pick = [train["names"][i] for i in rows]
    tr = Examples(pick, [units[n] for n in pick], [train["labels"][i] for i in rows], [train["weights"][i] for i in rows])
    va = Examples(valid["names"], [units[n] for n in valid["names"]], valid["labels"], valid["weights"])
    weights = model_mod.class_weights(tr.labels, len(classes)) if s["class_weights"] == "balanced" else None
    loss = model_mod.make_loss(s["loss"], s["focal_gamma"], weights, s["label_smoothing"])
    logger.info(f"training {label}: {len(tr)} names; parameters {trainable:,} trainable of {total:,} "
                f"({100 * trainable / max(1, total):.2f}%)" + (f"; LoRA r {s['lora']} on {s['lora_targets']}"
                                                                if s["lora"] else "; full fine-tuning"))
    trainer = Trainer(model, inputs.collate, loss, s, device, parallel, logger, progress=not args.quiet)
    fit = trainer.fit(tr, va, folder, key=_digest(identity) + f":{label}", stop_after=args.stop_after_epochs)
    adapter = os.path.join(out, "adapter") if label == "all" else os.path.join(folder, "adapter")
    head_info = {"hidden": backbone.hidden, "embed_dim": s["embed_dim"], "classes": classes,
                 "head_dropout": s["head_dropout"], "base_model": backbone.ref.label,
                 "weights": backbone.ref.weights_id(), "method": identity["method"]}
    adapter_hash = model_mod.save_model(model, adapter, head_info) if parallel.main else None
    if label == "all":
        predict = Examples(names=[n for n in names if n in units], units=[units[n] for n in names if n in units])
    else:
        held_names = {train["names"][i] for i in held}
        trained = {train["names"][i] for i in rows}
        predict_names = [n for n in names if n in units and (n in held_names or n not in trained)]
        predict = Examples(predict_names, [units[n] for n in predict_names])
    emb, probs, _ = trainer.predict(predict)
    info = {"label": label, "best_epoch": fit["best_epoch"], "best_f1": fit["best_f1"], "epochs_run": fit["epochs_run"],
            "train_names": len(tr), "adapter": os.path.relpath(adapter, out), "adapter_hash": adapter_hash,
            "trainable_parameters": trainable, "total_parameters": total}
    if parallel.main:
        _write_history(folder, fit["history"], f"{backbone.ref.label} {label}: best val F1 {fit['best_f1']:.4f} "
                                               f"at epoch {fit['best_epoch']}")
        with open(os.path.join(folder, "summary.json"), "w") as f:
            json.dump(info, f, indent=1)
        arrays = {"names": np.array(predict.names), "probs": probs}
        if label == "all":
            arrays["embeddings"] = emb
        save_npz(path, arrays)
        if os.path.isfile(os.path.join(folder, CHECKPOINT)):
            os.remove(os.path.join(folder, CHECKPOINT))
    parallel.barrier()
    logger.info(f"training {label}: best val weighted F1 {fit['best_f1']:.4f} at epoch {fit['best_epoch']} of "
                f"{fit['epochs_run']} ({fit['seconds']:.1f}s); peak memory {peak_memory(device)}; model in {adapter}")
    return {"names": predict.names, "probs": probs, "embeddings": emb if label == "all" else None, "info": info}


def save_npz(path, arrays):
    """``np.savez`` with fixed time stamps in the archive (the same arrays give the same bytes), atomically."""
    import io
    import zipfile

    tmp = f"{path}.{os.getpid()}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    os.replace(tmp, path)


def _write_history(folder, history, title):
    import pandas as pd

    path = os.path.join(folder, "history.csv")
    pd.DataFrame(history).drop(columns=["seconds"]).to_csv(path + ".tmp", index=False)
    os.replace(path + ".tmp", path)
    if history:
        plot_history(history, os.path.join(folder, "curves.png"), title)


def _rows(out, names, values, units, texts, sources, dtype, failed=None):
    text = sources.modality == "text"
    rows = []
    for n in names:
        if text:
            fp = "sha256:" + hashlib.sha256(texts[n].encode("utf-8")).hexdigest()[:16] if n in texts else None
        else:  # as extraction records a media input: size and mtime
            fp = sources.fingerprint(n)
        if n not in values:
            e = (failed or {}).get(n) or sources.missing(n)
            reason = f"no text for '{n}' in column '{sources.subtitle_col}'" if text and n not in (failed or {}) \
                else str(e)
            rows.append(xrunner._report_row(n, "missing_text" if text else e.code, reason, sources.input_of(n)))
            continue
        writer.save_npy(writer.feature_path(out, n), np.asarray(values[n], dtype=dtype))
        info = {"tokens": len(units[n])} if text else inputs_mod.AudioInputs.info(units[n])
        rows.append(xrunner._report_row(n, "ok", "", sources.input_of(n), info, 0, fp))
    return rows


def write_features(args, out, feature, names, units, texts, sources, encoder, results, identity, s, backbone, t_start,
                   logger, processes=1, failed=None):
    """The embeddings of the whole-list model, through extraction's writer; returns the exit status."""
    done = results["all"]
    values = dict(zip(done["names"], done["embeddings"]))
    rows = _rows(out, names, values, units, texts, sources, args.save_dtype, failed)
    info = {"base_model": backbone.ref.label, "revision": backbone.ref.weights_id(),
            "adapter": "adapter", "adapter_hash": done["info"]["adapter_hash"],
            "split": args.split, "split_hash": identity["split"],
            "pseudo_split": args.pseudo_split, "folds": s["folds"], "seed": s["seed"],
            "settings": s, "trainings": {k: v["info"] for k, v in results.items()},
            "device": str(encoder.device), "peak_memory": peak_memory(encoder.device)}
    return _close(args, out, feature, names, rows, sources, encoder, processes, t_start, info)


def _close(args, out, feature, names, rows, sources, encoder, processes, t_start, info):
    """Report, manifest (with the fine-tuning's ``info`` under ``finetune``), registration and summary of one
    written feature; the exit status (0 every name has its file, 1 some failed)."""
    report = xrunner.close_folder(out, rows, names, encoder, processes, time.time() - t_start)
    manifest = writer.read_manifest(out)
    manifest["finetune"] = info
    writer.write_manifest(out, manifest)
    ok = report.status.isin(xrunner.DONE)
    registered = xrunner.register_in_dataset(args.dataset, out, feature, sources.modality, encoder.dim, "UTT",
                                             ok.any())
    print(xrunner.summarize(report, out, feature, sources.modality, encoder.dim, registered=registered))
    return 0 if ok.all() else 1


def write_probs(args, out, feature, names, units, texts, sources, encoder, results, train, trainings, t_start, logger,
                processes=1, failed=None):
    """Class probabilities: out-of-fold for the training names, the fold models' mean for the others."""
    folds = [label for label, _, _ in trainings if label != "all"]
    trained = set(train["names"])
    values, sums = {}, {}
    for label in folds:
        for n, p in zip(results[label]["names"], results[label]["probs"]):
            if n in trained:
                values[n] = p  # the one fold model that held it out
            else:
                sums.setdefault(n, []).append(p)
    for n, ps in sums.items():
        values[n] = np.mean(np.stack(ps), axis=0)
    rows = _rows(out, names, values, units, texts, sources, "float32", failed)
    info = {"folds": len(folds), "out_of_fold": len(trained & set(values)),
            "embedding_feature": os.path.basename(os.path.normpath(out))[:-len("-probs")],
            "trainings": {k: results[k]["info"] for k in folds}}
    return _close(args, out, feature, names, rows, sources, encoder, processes, t_start, info)
