"""The extraction loop behind ``preprocess/extract_features.py``.

One process (or one torchrun rank) does, in order:

1. resolve the names (a data set's label, test and unlabelled lists, or a ``--names`` CSV), load the model
   (timing and logging where from), and probe whether padding changes its output;
2. rank 0 takes the output folder's lock (held to the end of the run: a second extraction into the folder is
   refused), checks the folder against the settings (:func:`extraction.writer.check_folder`) and writes the
   manifest; every rank gets its verdict and the input fingerprints the folder recorded;
3. take this rank's fixed share of the sorted names and drop those whose file is already there and valid and
   whose input is unchanged (its fingerprint, :meth:`extraction.sources.Sources.fingerprint`, is the one
   recorded; a clip with none recorded is kept as it is);
4. decode and preprocess clips in ``--workers`` processes (a ``DataLoader``), gather a buffer of clips, sort
   their units by length and run them through the model in batches (pinned memory and non-blocking copies
   on CUDA, ``torch.inference_mode``), pool each clip's states and write its file atomically;
5. rank 0 gathers every rank's report rows, checks that each name has a file or an error record, writes
   ``extract_report.csv`` and the manifest, and prints the line for config.py.

A clip that fails (a corrupt file, no audio stream, no face, an empty subtitle, values that overflow the
file dtype, an encoder error) is reported with its reason and never written; the run goes on.
"""

import os
import time
from collections import defaultdict

import numpy as np

import config
from extraction import encoders as enc_mod
from extraction import writer
from extraction.media import MediaError
from extraction.sharding import Shard
from extraction.sources import ClipInputs, FrameRule, Sources, dataset_names
from common.names import check_name
from dataloader.files import DataError, read_names_csv

LEVELS = ("UTT", "FRM")
SAVE_DTYPES = ("float16", "float32")
DONE = ("ok", "redone", "exists")  # report statuses of a clip that has its file
INPUT_CHANGED = "input changed since its file was written"
CONFIG_DICT = {"audio": "FEAT_AUDIO_DICT", "visual": "FEAT_VIDEO_DICT", "text": "FEAT_TEXT_DICT"}
# MERTools' frame counts per image family (face crops: every frame; DINOv2 64 uniform and VideoMAE 16 uniform,
# both through MERTools' resampling, which repeats the last frame of a shorter clip up to the count)
FAMILY_FRAMES = {"dinov2": 64, "dinov2_with_registers": 64}


def _identity(x):
    return x


class ClipDataset:
    """Clip ``i`` -> ``{"name", "units", "lengths", "info"}`` or ``{"name", "error", "reason"}`` (in a worker)."""

    def __init__(self, names, sources, preprocessor):
        self.names, self.sources, self.preprocessor = names, sources, preprocessor

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        import torch

        name = self.names[i]
        try:
            prep = self.preprocessor(self.sources.load(name))
        except MediaError as e:
            return {"name": name, "error": e.code, "reason": str(e)}
        except Exception as e:  # a decoder or preprocessor failure on one clip never stops the run
            return {"name": name, "error": "failed", "reason": f"{type(e).__name__}: {e}"}
        # Tensors travel from workers through shared memory (arrays would be pickled through a pipe). Each tensor
        # moves its whole storage, so units that are views of one buffer are either sent as that one stacked
        # array (frames: (T, 3, H, W)) or copied apart (audio windows), never sent as N views of N copies.
        if isinstance(prep.units, np.ndarray):
            units = torch.from_numpy(prep.units)
        else:
            units = [torch.from_numpy(np.array(u, copy=True)) if isinstance(u, np.ndarray) else u for u in prep.units]
        return {"name": name, "units": units, "lengths": prep.lengths, "info": prep.info}


PART_TAGS = {"audio_tower": "audio", "vision_tower": "vision", "language_model": "lm"}


def default_feature_name(short_name, level, modality, subtitle_col=None, frame_source=None, part=None,
                         default_part=None):
    """MERTools' folder names: ``<model>-UTT``; English subtitles ``<model>-langeng-UTT``; whole video
    frames or detected faces add ``-frames``/``-detface`` (face crops, MERTools' input, add nothing); a part of a
    multimodal LLM other than the family's default adds ``-audio``, ``-vision`` or ``-lm``."""
    parts = [short_name]
    if part and part != default_part:
        parts.append(PART_TAGS[part])
    if modality == "text" and subtitle_col and subtitle_col != "chinese":
        parts.append("langeng" if subtitle_col == "english" else subtitle_col)
    if modality == "visual" and frame_source in ("whole video frames", "detected faces"):
        parts.append("frames" if frame_source == "whole video frames" else "detface")
    return "-".join(parts + [level])


def config_line(modality, feature_name, folder, dim):
    """The line to paste into config.py (``_feat(...)`` where the folder lies under FEATURE_ROOT)."""
    return f'{CONFIG_DICT[modality]}["{feature_name}"] = [{dim}, {writer.registry_root(folder)}]'


def make_batches(lengths, batch_size, pad_safe):
    """Index batches over units: longest first; mixed lengths only where padding is harmless."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    if pad_safe:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    groups = defaultdict(list)
    for k in order:
        groups[lengths[k]].append(k)
    return [g[s:s + batch_size] for L in sorted(groups, reverse=True) for g in [groups[L]]
            for s in range(0, len(g), batch_size)]


class Extractor:
    """Runs units through an encoder in batches and pools each clip's states into its feature array."""

    def __init__(self, encoder, level, batch_size, logger=None):
        self.enc, self.level, self.batch_size, self.logger = encoder, level, int(batch_size), logger
        self.cuda = encoder.device.type == "cuda"

    def _forward(self, units, lengths):
        """Per unit: ``(sum of its real states, count)`` for UTT, its ``(t, D)`` real states for FRM."""
        import torch

        batch = self.enc.to_device(self.enc.collate(units, lengths))
        with torch.inference_mode():
            states, keep = self.enc.forward(batch)
            if self.level == "UTT":
                sums = (states * keep[..., None].to(states.dtype)).sum(1)
                packed = torch.cat([sums, keep.sum(1, keepdim=True).to(sums.dtype)], 1).cpu().numpy()
                return [(row[:-1], int(row[-1])) for row in packed]
            states, keep = states.cpu().numpy(), keep.cpu().numpy()
        return [states[i][keep[i]] for i in range(len(units))]

    def run_units(self, units, lengths, on_error):
        """Outputs for every unit (None where it failed); a failing batch is split in halves and retried, so
        one bad unit or an out-of-memory error costs only what it must."""
        out = [None] * len(units)
        stack = [b for b in make_batches(lengths, self.batch_size, self.enc.pad_safe)]
        stack.reverse()
        while stack:
            idx = stack.pop()
            try:
                res = self._forward([units[k] for k in idx], [lengths[k] for k in idx])
            except (RuntimeError, ValueError, IndexError) as e:
                if self.cuda:
                    import torch

                    torch.cuda.empty_cache()
                if len(idx) > 1:
                    half = len(idx) // 2
                    stack.extend([idx[half:], idx[:half]])
                else:
                    on_error(idx[0], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            for k, r in zip(idx, res):
                out[k] = r
        return out

    def pool(self, parts):
        """A clip's feature from its units' outputs: the mean of real states (UTT) or their sequence (FRM)."""
        if self.level == "UTT":
            total = sum(p[1] for p in parts)
            if total == 0:
                return None
            return np.sum([p[0] for p in parts], axis=0) / total
        seq = np.concatenate(parts, axis=0)
        return seq if len(seq) else None


def _report_row(name, status, reason="", path="", info=None, rank=0, fingerprint=None):
    info = info or {}
    return {"name": name, "status": status, "reason": reason, "input": path, "duration_s": info.get("duration_s"),
            "windows": info.get("windows"), "frames": info.get("frames"), "tokens": info.get("tokens"),
            "truncated_tokens": info.get("truncated_tokens"), "rank": rank, "input_fingerprint": fingerprint}


def extract_share(names, sources, encoder, out, level, save_dtype, batch_size, workers, rank=0, progress=True,
                  logger=None, buffer_clips=None):
    """Extract ``names`` (this rank's share, already without finished clips); returns report rows."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    ext = Extractor(encoder, level, batch_size, logger)
    rows = []
    buffer_clips = buffer_clips or max(8, 4 * batch_size)
    loader = DataLoader(ClipDataset(names, sources, encoder.preprocessor), batch_size=None, shuffle=False,
                        num_workers=int(workers), collate_fn=_identity,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    bar = tqdm(total=len(names), desc=f"extract{f' rank {rank}' if rank else ''}", unit="clip", disable=not progress,
               dynamic_ncols=True, position=rank)
    counts = {"ok": 0, "failed": 0}

    def fail(name, code, reason, info=None):
        rows.append(_report_row(name, code, reason, sources.input_of(name), info, rank))
        counts["failed"] += 1

    def flush(pending):
        if not pending:
            return
        units, lengths, owner = [], [], []
        for ci, clip in enumerate(pending):
            units.extend(clip["units"])
            lengths.extend(clip["lengths"])
            owner.extend([ci] * len(clip["units"]))
        bad = {}

        def on_error(k, reason):
            bad.setdefault(owner[k], reason)

        outputs = ext.run_units(units, lengths, on_error)
        parts = defaultdict(list)
        for k, o in enumerate(outputs):
            parts[owner[k]].append(o)
        for ci, clip in enumerate(pending):
            name, info = clip["name"], clip["info"]
            if ci in bad:
                fail(name, "encoder_error", f"the encoder failed on this clip: {bad[ci]}", info)
                continue
            feat = ext.pool(parts[ci])
            if feat is None:
                fail(name, "no_frames", "the encoder gave no real frame or token for this clip", info)
                continue
            arr = feat.astype(save_dtype)
            if not np.isfinite(arr).all():
                if np.isfinite(feat).all():
                    fail(name, "overflow", f"values up to {np.abs(feat).max():.3g} exceed {save_dtype}; extract with "
                                           "--save_dtype float32", info)
                else:
                    fail(name, "nonfinite", "the encoder gave NaN or Inf for this clip", info)
                continue
            writer.save_npy(writer.feature_path(out, name), arr)
            rows.append(_report_row(name, "ok", "", sources.input_of(name), info, rank))
            counts["ok"] += 1
        bar.update(len(pending))
        bar.set_postfix(counts)

    pending, n_units = [], 0
    t0 = time.time()
    try:
        for item in loader:
            if "error" in item:
                fail(item["name"], item["error"], item["reason"])
                bar.update(1)
                bar.set_postfix(counts)
                continue
            pending.append(item)
            n_units += len(item["units"])
            if len(pending) >= buffer_clips or n_units >= buffer_clips * 4:
                flush(pending)
                pending, n_units = [], 0
        flush(pending)
    finally:
        bar.close()
    if logger and names:
        dt = time.time() - t0
        logger.info(f"rank {rank}: {len(names)} clips in {dt:.1f}s ({len(names) / max(dt, 1e-9):.2f} clips/s): "
                    f"{counts['ok']} written, {counts['failed']} failed")
    return rows


def input_folders(args, ds, modality=None, whole_frames=False):
    """The input flags when any is given, else the data set's entries (audio files before video tracks, face
    crops before video frames: MERTools' inputs; ``whole_frames``: video frames first, what a multimodal LLM was
    trained on)."""
    modality = modality or args.modality
    flags = {"audio_dir": args.audio_dir, "video_dir": args.video_dir, "face_dir": args.face_dir,
             "subtitles": args.subtitles}
    if any(flags.values()):
        return flags
    if modality == "audio":
        return {"audio_dir": ds.get("audio_dir"), "video_dir": None if ds.get("audio_dir") else ds.get("video_dir")}
    if modality == "visual":
        if whole_frames and ds.get("video_dir"):
            return {"video_dir": ds.get("video_dir")}
        return {"face_dir": ds.get("face_dir"), "video_dir": None if ds.get("face_dir") else ds.get("video_dir")}
    return {"subtitles": ds.get("subtitle_csv")}


def clip_inputs(args, ds, kinds, rule, sample_rate):
    """A :class:`ClipInputs` of ``kinds`` (video, audio, subtitle) for a multimodal LLM's chat input: each from its
    own flag (video: --video_dir or --face_dir; audio: --audio_dir, else the tracks of --video_dir; subtitle:
    --subtitles) where given, else from the data set's entries (whole video frames before face crops)."""
    parts = {}
    for kind in kinds:
        if kind == "video":
            if args.video_dir or args.face_dir:
                where = {"video_dir": args.video_dir, "face_dir": args.face_dir}
            else:
                where = {k: v for k, v in input_folders(args, ds, "visual", whole_frames=True).items()
                         if k in ("video_dir", "face_dir")}
            parts[kind] = Sources("visual", **where, faces=args.faces, face_channels=args.face_channels,
                                  frame_rule=rule)
        elif kind == "audio":
            if args.audio_dir or args.video_dir:
                where = {"audio_dir": args.audio_dir, "video_dir": None if args.audio_dir else args.video_dir}
            else:
                where = {"audio_dir": ds.get("audio_dir"),
                         "video_dir": None if ds.get("audio_dir") else ds.get("video_dir")}
            parts[kind] = Sources("audio", **where, sample_rate=sample_rate)
        else:
            parts[kind] = Sources("text", subtitles=args.subtitles or ds.get("subtitle_csv"),
                                  subtitle_col=args.subtitle_col)
    return ClipInputs(parts)


def probe_inputs(encoder):
    """Two probe units of different lengths for the padding check, or None where inputs have a fixed size."""
    pre = encoder.preprocessor
    if getattr(encoder, "settings", {}).get("part"):
        from extraction import mllm

        pair = mllm.probe_raw(encoder)
        if pair is None:
            return None
        a, b = pair
    elif isinstance(encoder, enc_mod.AudioSSLEncoder):
        rng = np.random.default_rng(0)
        sr = pre.sample_rate
        a = pre(rng.normal(0, 0.1, int(1.3 * sr)).astype(np.float32))
        b = pre(rng.normal(0, 0.1, int(2.1 * sr)).astype(np.float32))
    elif isinstance(encoder, enc_mod.TextEncoder):
        a = pre("this is a short probe")
        b = pre("this is a longer probe sentence with many more words in it than the first one has")
    else:
        return None
    return [a.units[0], b.units[0]], [a.lengths[0], b.lengths[0]]


def default_workers(modality, device):
    """Decoding processes: none for text (tokenising is cheap); on a GPU machine up to 8, to keep the GPU fed;
    on a CPU a quarter of the cores (none on 2 cores: each busy worker takes a core from the model's own
    threads, and on this project's 2-core machine the model lost more than decoding in parallel gained)."""
    if modality == "text":
        return 0
    cores = os.cpu_count() or 1
    return min(8, max(1, cores - 1)) if device.type == "cuda" else min(8, cores // 4)


def check_batching(encoder):
    """Decide whether units of different lengths may share a batch (see Encoder.check_padding)."""
    probe = probe_inputs(encoder)
    if probe is not None:
        encoder.check_padding(*probe)
    else:
        encoder.padding_probe = {"batching": "fixed-size inputs"}
    return encoder.pad_safe


def frame_rule_for(encoder, frames=None, fps=None):
    """The frames a visual clip gives: the user's ``--frames``/``--fps``, else MERTools' count for the family. The
    families MERTools resamples (DINOv2, VideoMAE) always give that many frames, the last repeated, as MERTools'
    resampling does; with ``--frames N`` they give N the same way."""
    if isinstance(encoder, enc_mod.VideoMAEEncoder):
        if fps:
            raise DataError("VideoMAE takes fixed segments of frames: use --frames, not --fps")
        if frames and frames != encoder.num_frames:
            raise DataError(f"VideoMAE '{encoder.ref.label}' takes segments of {encoder.num_frames} frames; "
                            f"--frames {frames} cannot be used with it")
        return FrameRule(encoder.num_frames, None, pad=True)
    if encoder.settings.get("part"):  # a multimodal LLM's frames: a few, uniform (--frames/--fps change it)
        from extraction.mllm import DEFAULT_FRAMES

        return FrameRule(frames or (None if fps else DEFAULT_FRAMES), fps)
    resampled = encoder.family in FAMILY_FRAMES
    if frames or fps:
        return FrameRule(frames, fps, pad=bool(frames) and resampled)
    return FrameRule(FAMILY_FRAMES.get(encoder.family), None, pad=resampled)


def resolve_names(args):
    """``(sorted names, the lists they came from)``: a data set's lists, a --names CSV, or those of the CSV that
    are in the data set; --limit keeps the first N."""
    names, lists = dataset_names(args.dataset) if args.dataset else (None, [])
    if args.names:
        picked = read_names_csv(args.names)
        names = picked if names is None else sorted(set(picked) & set(names))
        lists = [os.path.basename(args.names)]
    if not names:
        raise DataError("no names to extract: give --dataset (a data set of config.DATASETS) or --names CSV")
    names = sorted(set(names))
    return (names[:args.limit] if args.limit else names), lists


def check_args(args):
    if args.level not in LEVELS:
        raise DataError(f"--level '{args.level}': use UTT (one vector per clip) or FRM (a (T, dim) sequence)")
    if args.save_dtype not in SAVE_DTYPES:
        raise DataError(f"--save_dtype '{args.save_dtype}': use float16 or float32")
    if args.batch_size is not None and args.batch_size < 1:
        raise DataError(f"--batch_size {args.batch_size}: give a positive number of units per batch")
    if getattr(args, "feature_name", None):  # the folder's name under features/<dataset>/: one name, not a path
        check_name(args.feature_name, "--feature_name")
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit}: give a positive number of names (the first N, sorted), or leave it out "
                        "for all")


def output_folder(args, encoder, sources):
    """``(folder, feature name)``: --out (named after its last part), or features/<dataset>/<default name>."""
    if args.out:
        return args.out, args.feature_name or os.path.basename(os.path.normpath(args.out))
    feature = args.feature_name or default_feature_name(encoder.ref.short_name, args.level, args.modality,
                                                        sources.subtitle_col, sources.identity().get("frame_source"),
                                                        getattr(encoder, "settings", {}).get("part"),
                                                        getattr(encoder, "default_part", None))
    if not args.dataset:
        raise DataError("give --out (the feature folder) when the names come from --names without --dataset")
    return os.path.join(config.FEATURE_ROOT, args.dataset, feature), feature


def take_folder(out, identity, encoder, sources, names, lists, logger):
    """Rank 0: lock ``out`` for the run, then :func:`open_folder`. Returns ``(lock, verdict, recorded input
    fingerprints)``: a refusal is the verdict, with no lock held and no folder of this run's making left."""
    made = writer.missing_folders(out)
    try:
        lock = writer.lock_folder(out)
    except DataError as e:  # in use by another extraction (its folder holds its lock: left as it is), or not made
        writer.unlock_folder(None, made)
        return None, str(e), None
    try:
        old = open_folder(out, identity, encoder, sources, names, lists, logger)
    except BaseException as e:
        writer.unlock_folder(lock, made)
        if isinstance(e, DataError):
            return None, str(e), None
        raise
    return lock, None, (old or {}).get("input_fingerprints", {})


def open_folder(out, identity, encoder, sources, names, lists, logger):
    """Rank 0: refuse a folder made with other settings, clean what killed runs left, write the manifest;
    returns the folder's earlier manifest (None for a new folder)."""
    os.makedirs(out, exist_ok=True)
    old = writer.check_folder(out, identity)
    removed = writer.clean_stale_tmp(out)
    writer.write_manifest(out, {
        "format": writer.FORMAT, "feature": os.path.basename(os.path.normpath(out)), "settings": identity,
        "status": "running", "model": {"source": encoder.ref.source, "label": encoder.ref.label},
        "padding_probe": encoder.padding_probe, "inputs": sources.describe(),
        "names": {"count": len(names), "lists": lists}, "versions": writer.versions(),
        "runs": (old or {}).get("runs", []), "input_fingerprints": (old or {}).get("input_fingerprints", {})})
    logger.info(f"output {out} ({'resuming: ' + str(old.get('counts', {})) if old else 'new folder'}"
                f"{f'; removed {removed} temporary files of killed runs' if removed else ''})")
    return old


def close_folder(out, rows, names, encoder, world, seconds):
    """Rank 0: every name gets a file or an error record; the report and the manifest; returns the report."""
    seen = {r["name"] for r in rows}
    rows = rows + [_report_row(n, "missing", "no file and no error record (did a process end early?)")
                   for n in names if n not in seen]
    for r in rows:
        if r["status"] in DONE and not os.path.isfile(writer.feature_path(out, r["name"])):
            r.update(status="missing", reason="reported written, but the file is gone")
    report = writer.write_report(out, rows)
    failed = int((~report.status.isin(DONE)).sum())
    counts = {"names": len(names), "written": int((report.status == "ok").sum()),
              "redone": int((report.status == "redone").sum()), "kept": int((report.status == "exists").sum()),
              "failed": failed}
    manifest = writer.read_manifest(out)
    recorded = manifest.get("input_fingerprints") or {}
    for r in rows:  # the input each file was made from; names of other runs keep theirs
        if r["status"] not in DONE:
            recorded.pop(r["name"], None)
        elif r.get("input_fingerprint"):
            recorded[r["name"]] = r["input_fingerprint"]
    manifest.update(status="incomplete" if failed else "complete", counts=counts, dim=encoder.dim,
                    input_fingerprints=dict(sorted(recorded.items())))
    manifest["runs"].append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "processes": world,
                             "device": str(encoder.device), "seconds": round(seconds, 1), **counts})
    writer.write_manifest(out, manifest)
    return report


def run(args, logger):
    """Extract one feature for the names of ``args``; returns the exit status (0 done, 1 some clips failed)."""
    from common.utils import process_device

    shard = Shard()
    t_start = time.time()
    lock = None  # rank 0's hold on the output folder, from before its check to the end of the run
    try:
        check_args(args)
        # under torchrun GPU LOCAL_RANK (--gpu without it), made current before any other CUDA call
        device = process_device(args.device, args.gpu)
        names, lists = resolve_names(args)
        ds = config.DATASETS.get(args.dataset, {}) if args.dataset else {}
        # text inputs need nothing of the model: their table (its names checked too) is read before the model loads
        sources = Sources("text", **input_folders(args, ds), subtitle_col=args.subtitle_col) \
            if args.modality == "text" else None
        encoder = enc_mod.load_encoder(args.model, args.modality, device, dtype=args.dtype, layers=args.layers,
                                       token_pool=args.token_pool, window_s=args.window_s, sample_rate=args.sample_rate,
                                       max_tokens=args.max_tokens, whisper_states=args.whisper_states,
                                       revision=args.revision, trust_remote_code=args.trust_remote_code,
                                       logger=logger if shard.main else None, part=getattr(args, "part", None),
                                       prompt=getattr(args, "prompt", None), inputs=getattr(args, "inputs", None),
                                       device_map=getattr(args, "device_map", None),
                                       load_in=getattr(args, "load_in", None))
        chat = encoder.settings.get("inputs")  # a multimodal LLM's language model: several inputs per clip
        if args.level == "FRM" and encoder.settings.get("token_pool") == "last":
            raise DataError("--level FRM with --token_pool last: the last token is one state; use --level UTT, or "
                            "--token_pool mean for the content tokens' sequence")
        rule = frame_rule_for(encoder, args.frames, args.fps) if args.modality == "visual" or \
            (chat and "video" in chat) else None
        sample_rate = getattr(encoder.preprocessor, "sample_rate", 16000)
        if chat:
            sources = clip_inputs(args, ds, chat, rule, sample_rate)
        elif sources is None:
            sources = Sources(args.modality, **input_folders(args, ds, whole_frames=bool(encoder.settings.get("part"))),
                              subtitle_col=args.subtitle_col, faces=args.faces, face_channels=args.face_channels,
                              frame_rule=rule, sample_rate=sample_rate)
        check_batching(encoder)
        out, feature = output_folder(args, encoder, sources)
        verdict, recorded = None, None
        if shard.main:  # one process decides about the folder; every rank gets its verdict
            identity = {**enc_mod.describe(encoder), "level": args.level, "file_dtype": args.save_dtype,
                        **sources.identity()}
            lock, verdict, recorded = take_folder(out, identity, encoder, sources, names, lists, logger)
        verdict, recorded = shard.broadcast((verdict, recorded))
        if verdict:
            raise DataError(verdict)
    except (DataError, ValueError):
        shard.close()
        raise
    try:
        return _run_in_folder(args, logger, shard, t_start, names, lists, sources, encoder, out, feature, recorded)
    finally:
        if lock is not None:
            writer.unlock_folder(lock)


def split_done(share, out, encoder, level, save_dtype, sources, recorded):
    """``(done, changed, fingerprints, counts)`` of this rank's share: valid files whose input is unchanged,
    valid files whose input changed (to redo), every name's input fingerprint now, and how many were kept
    without a recorded fingerprint or without an input to compare."""
    fps = {n: sources.fingerprint(n) for n in share}
    done, changed, unknown, gone = [], [], 0, 0
    for n in share:
        if not writer.is_valid_feature(writer.feature_path(out, n), encoder.dim, level, save_dtype):
            continue
        was, now = recorded.get(n), fps[n]
        if was is None or now is None or was == now:
            done.append(n)
            unknown += was is None
            gone += was is not None and now is None
        else:
            changed.append(n)
    return done, changed, fps, {"unknown": unknown, "gone": gone}


def _run_in_folder(args, logger, shard, t_start, names, lists, sources, encoder, out, feature, recorded):
    """Steps 3 to 5 of the module docstring, in a folder this run may write (rank 0 holds its lock)."""
    _log_to_file(logger, os.path.join(out, "extract.log" if shard.main else f"extract.rank{shard.rank}.log"))
    logger.info(f"feature {feature}: model {encoder.ref.label} ({encoder.family}, {encoder.ref.source} "
                f"{encoder.ref.path}) on {encoder.device}, loaded in {encoder.load_seconds:.1f}s; level {args.level}; "
                f"settings {encoder.settings}")
    share = shard.take(names)
    t_check = time.time()
    recorded = recorded or {}
    done, changed, fps, kept = split_done(share, out, encoder, args.level, args.save_dtype, sources, recorded)
    for n in changed:  # its old feature goes now: should the new input fail, no stale file stays behind
        os.remove(writer.feature_path(out, n))
    skip = set(done)
    todo = [n for n in share if n not in skip]
    if shard.main:
        logger.info(f"{len(names)} names ({', '.join(lists)}), {shard.world} process(es); input: {sources.describe()}; "
                    f"padding: {encoder.padding_probe}")
    logger.info(f"rank {shard.rank}: {len(share)} names, {len(done)} already extracted, {len(changed)} to redo as "
                f"their input changed (inputs and files checked in {time.time() - t_check:.1f}s), {len(todo)} to do on "
                f"{encoder.device}")
    if kept["unknown"]:
        logger.info(f"rank {shard.rank}: {kept['unknown']} clips have no recorded input fingerprint (extracted "
                    "before fingerprints were recorded): kept as they are, unchecked; their inputs are recorded from "
                    "now on, so a later change is redone")
    if kept["gone"]:
        logger.info(f"rank {shard.rank}: {kept['gone']} clips kept whose input is no longer there (nothing to "
                    "compare)")
    workers = args.workers if args.workers is not None else default_workers(args.modality, encoder.device)
    batch = args.batch_size or encoder.default_batch["cuda" if encoder.device.type == "cuda" else "cpu"]
    rows = [_report_row(n, "exists", "", sources.input_of(n), None, shard.rank, fps[n] or recorded.get(n))
            for n in done]
    new_rows = extract_share(todo, sources, encoder, out, args.level, args.save_dtype, batch, workers,
                             rank=shard.rank, progress=not args.quiet, logger=logger)
    redo = set(changed)
    for r in new_rows:
        r["input_fingerprint"] = fps[r["name"]]
        if r["name"] in redo:
            if r["status"] == "ok":
                r.update(status="redone", reason=INPUT_CHANGED)
            else:
                r["reason"] = f"{INPUT_CHANGED}; now: {r['reason']}"
    all_rows = shard.gather(rows + new_rows)
    status = 0
    if shard.main:
        report = close_folder(out, [r for part in all_rows for r in part], names, encoder, shard.world,
                              time.time() - t_start)
        registered = register_in_dataset(args.dataset, out, feature, args.modality, encoder.dim, args.level,
                                         report.status.isin(DONE).any())
        print(summarize(report, out, feature, args.modality, encoder.dim, registered=registered))
        status = 0 if report.status.isin(DONE).all() else 1
    shard.barrier()
    shard.close()
    return status


def _log_to_file(logger, path):
    """Also write ``logger`` to ``path`` (appended: a resumed run adds to the log of the run it resumes)."""
    import logging

    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)


CONFIG_MODALITY = {"audio": "audio", "visual": "video", "text": "text"}


def register_in_dataset(dataset, out, feature, modality, dim, level, any_written):
    """A data set registered by a ``dataset.yaml`` (config.py) gets the new feature added to it, as
    ``<dataset>-<folder>``, when the folder lies in the data set's folder and is not registered yet; returns
    ``(file, name)`` or None."""
    ds = config.DATASETS.get(dataset) or {}
    path = ds.get("registration")
    if not (path and any_written) or writer.registered_as(out):
        return None
    home = os.path.dirname(os.path.abspath(path))
    if not os.path.abspath(out).startswith(home + os.sep):
        return None
    name = f"{dataset}-{feature}"
    if level == "FRM" and not name.endswith(config.FRAME_LEVEL_SUFFIXES):
        name += "-FRM"
    return config.register_feature(dataset, name, CONFIG_MODALITY[modality], dim, out), name


def summarize(report, out, feature, modality, dim, max_listed=15, registered=None):
    """The end of a run, as text: counts, failures with reasons, what was cut, and the config.py line."""
    counts = report["status"].value_counts()
    failed = report[~report.status.isin(DONE)]
    lines = []
    trunc = report.loc[report.truncated_tokens.fillna(0).astype(float) > 0]
    if len(trunc):
        lines.append(f"{len(trunc)} clips were truncated at the model's token limit "
                     f"({int(trunc.truncated_tokens.astype(float).sum())} tokens dropped; see the report)")
    windows = report.windows.dropna().astype(float)
    if len(windows) and (windows > 1).any():
        lines.append(f"{int((windows > 1).sum())} clips were longer than one window and ran in "
                     f"{int(windows[windows > 1].sum())} windows")
    if len(failed):
        lines.append("failed clips (nothing written for them): " + ", ".join(
            f"{k} {v}" for k, v in failed.status.value_counts().items()))
        for r in failed.head(max_listed).itertuples():
            lines.append(f"  {r.name} [{r.status}]: {r.reason}")
        if len(failed) > max_listed:
            lines.append(f"  ... and {len(failed) - max_listed} more in {os.path.join(out, writer.REPORT)}")
    known = writer.registered_as(out)
    if registered:
        lines.append(f"registered in {registered[0]} as {registered[1]}")
    elif known:
        lines.append(f"registered in config.py as {', '.join(known)}")
    else:
        lines.append("paste into config.py:")
        lines.append("    " + config_line(modality, feature, out, dim))
    redone = f"{counts['redone']} redone (input changed), " if counts.get("redone", 0) else ""
    lines.append(f"done: {len(report)} clips, {counts.get('ok', 0)} written, {redone}{counts.get('exists', 0)} already "
                 f"there, {len(failed)} failed; features in {out}, report {writer.REPORT}")
    return "\n".join(lines)
