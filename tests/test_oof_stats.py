"""Issue 23, items 14 and 15: out-of-fold rows never choose their fold model's epoch (an inner split of each
fold's training rows does), and the normalisation statistics of features stream in float64 without holding
every frame."""

import tracemalloc

import numpy as np
import pytest

from dataloader import SampleSet
from dataloader.features import FeatureStore


# ------------------------------------------------------------------------------------------------------
# case 15: frame statistics streamed in float64
# ------------------------------------------------------------------------------------------------------
def _frames(rng, n_clips, dim, mean=1e4, std=1e-2, max_t=40):
    """A frame-level store of ``n_clips`` clips (1..max_t frames each) with a large mean and a small std, and
    all its frames as one float64 array (the reference)."""
    lens = rng.integers(1, max_t + 1, n_clips)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    data = (mean + std * rng.standard_normal((int(offsets[-1]), dim))) * (1 + np.arange(dim) / dim)
    names = [f"c{i:05d}" for i in range(n_clips)]
    return FeatureStore("frames", dim, True, names, data, offsets), names, data


def test_case15_frame_statistics_stream_in_float64():
    from dataloader.dataset import streamed_moments

    rng = np.random.default_rng(15)
    store, names, data = _frames(rng, 300, 6)
    want_mean, want_std = data.mean(0), data.std(0)
    # the case is hard: float32, or a float64 sum of squares minus the squared mean, miss it by far
    x32 = data.astype(np.float32)
    naive_std = np.sqrt(np.maximum((data ** 2).mean(0) - data.mean(0) ** 2, 0))
    assert np.abs(x32.std(0, dtype=np.float32) / want_std - 1).max() > 1e-3
    assert np.abs(naive_std / want_std - 1).max() > 1e-6
    # one clip per chunk, a few clips per chunk, everything in one chunk: numpy's float64 figures to ~1e-10
    for per_chunk in (1, 7, len(names)):
        starts = store.offsets[:-1]
        chunks = (data[starts[i]:store.offsets[min(i + per_chunk, len(names))]]
                  for i in range(0, len(names), per_chunk))
        mean, std, n = streamed_moments(chunks, 6)
        assert n == len(data) and mean.dtype == std.dtype == np.float64
        np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(std, want_std, rtol=1e-10)
    # SampleSet.feature_stats streams the clips of its list (a shuffled subset here): the same figures
    rows = rng.permutation(len(names))[:200]
    subset = SampleSet([store], [names[i] for i in rows])
    idx = np.concatenate([np.arange(store.offsets[i], store.offsets[i + 1]) for i in rows])
    (mean, std), = subset.feature_stats()
    np.testing.assert_allclose(mean.double().numpy(), data[idx].mean(0), rtol=1e-7)
    np.testing.assert_allclose(std.double().numpy(), data[idx].std(0), rtol=1e-6)
    # an utterance-level list (copied to the device, or read from the pack) streams in chunks too
    utt = FeatureStore("utt", 6, False, names, data[store.offsets[:-1]])
    for mmap in (False, True):
        (mean, std), = SampleSet([utt], names, mmap=mmap).feature_stats()
        np.testing.assert_allclose(mean.double().numpy(), utt.data.mean(0), rtol=1e-7)
        np.testing.assert_allclose(std.double().numpy(), utt.data.std(0), rtol=1e-6)


def test_case15_frame_statistics_never_hold_all_frames(monkeypatch):
    """The peak memory of feature_stats on a frame-level list stays far below one float64 copy of its frames."""
    import dataloader.dataset as ds

    rng = np.random.default_rng(16)
    store, names, data = _frames(rng, 400, 64, max_t=60)  # about 12,000 frames: 6 MB as float64
    all_frames = data.nbytes
    samples = SampleSet([store], names, mmap=True)
    # chunks of 256 frames, so that streaming shows at this size
    monkeypatch.setattr(ds, "STATS_CHUNK_VALUES", 64 * 256, raising=False)
    tracemalloc.start()
    try:
        (mean, std), = samples.feature_stats()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < all_frames / 8, f"peak {peak} bytes against {all_frames} bytes of frames"
    np.testing.assert_allclose(mean.double().numpy(), data.mean(0), rtol=1e-7)
    np.testing.assert_allclose(std.double().numpy(), data.std(0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------------
# case 14: fold models choose their epochs on an inner split, never on their out-of-fold rows
# ------------------------------------------------------------------------------------------------------
def _fold_runs(tiny, folder, tag, k=3):
    """One tiny run per fold list of ``folder`` (``--test`` too): their summaries."""
    from conftest import train_args
    from engine.trainer import train

    return [train(train_args(tiny, "--split", str(folder / f"fold{j}.json"), "--epochs", "4", "--test",
                             "--run_name", f"{tag}-fold{j}")) for j in range(k)]


def test_case14_fold_models_never_select_epochs_on_their_out_of_fold_rows(tiny, capsys):
    import ensemble as cli
    import pandas as pd
    import torch

    from dataloader.files import read_split_json
    from dataloader.splits import build

    labels = str(tiny.tmp / "labels.csv")
    lists = tiny.tmp / "train_lst" / "tiny"
    build(labels, "TINY", str(lists / "inner"), kfold=3)  # the default fold lists
    oof_names = []
    for j, s in enumerate(_fold_runs(tiny, lists / "inner", "inner")):
        split = read_split_json(str(lists / "inner" / f"fold{j}.json"))
        held = split["valid_info"]["names"]
        oof_names += held
        ckpt = torch.load(f"{s['run_dir']}/best.pth", weights_only=True)
        chose = ckpt.get("selected_on") or {}
        # the names that chose the epoch are the fold's inner select list: neither its out-of-fold nor its
        # training rows
        assert chose.get("list") == "select_info", chose
        assert set(chose["names"]) == set(split["select_info"]["names"])
        assert not set(chose["names"]) & set(held) and not set(chose["names"]) & set(split["train_info"]["names"])
        metrics = pd.read_csv(f"{s['run_dir']}/metrics.csv")
        assert s["epoch_selection"] == "select_info"
        assert metrics.loc[s["best_epoch"] - 1, "select_f1"] == metrics["select_f1"].max()
        valid = pd.read_csv(f"{s['run_dir']}/valid_pred.csv")
        assert valid["name"].astype(str).tolist() == held and (valid["chose_epoch"] == 0).all()
    assert sorted(oof_names) == sorted(tiny.labels["name"].iloc[:120])

    # the former lists, kept by a flag: the same out-of-fold rows, which then choose the epoch
    build(labels, "TINY", str(lists / "oof"), kfold=3, epoch_selection="out_of_fold")
    for j, s in enumerate(_fold_runs(tiny, lists / "oof", "oof")):
        split = read_split_json(str(lists / "oof" / f"fold{j}.json"))
        inner = read_split_json(str(lists / "inner" / f"fold{j}.json"))
        assert "select_info" not in split and split["valid_info"]["names"] == inner["valid_info"]["names"]
        assert sorted(split["train_info"]["names"]) == sorted(inner["train_info"]["names"]
                                                             + inner["select_info"]["names"])
        ckpt = torch.load(f"{s['run_dir']}/best.pth", weights_only=True)
        assert ckpt["selected_on"]["list"] == "valid_info" and s["epoch_selection"] == "valid_info"
        assert set(ckpt["selected_on"]["names"]) == set(split["valid_info"]["names"])
        assert (pd.read_csv(f"{s['run_dir']}/valid_pred.csv")["chose_epoch"] == 1).all()

    # the ensemble's report says which selection ran
    runs = str(tiny.tmp / "saved" / "tiny" / "seed0" / "*")
    for tag, said in (("inner", "epoch selection: inner split (each fold list's select_info); none of the members' "
                                "120 out-of-fold predictions chose"),
                      ("oof", "epoch selection: ON THE OUT-OF-FOLD ROWS (120 of the members' 120 out-of-fold "
                              "predictions chose")):
        argv = ["--preds", f"{runs}/{tag}-fold?", "--valid_preds", f"{runs}/{tag}-fold?",
                "--out", str(tiny.tmp / tag / "submission.csv")]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert said in out, out
    # fold files without the mark (an older version's): unknown, said so
    old = tiny.tmp / "old"
    old.mkdir()
    for j in range(2):
        df = pd.read_csv(next((tiny.tmp / "saved" / "tiny" / "seed0").glob(f"*/inner-fold{j}")) / "valid_pred.csv")
        df.drop(columns="chose_epoch").to_csv(old / f"m-fold{j}.csv", index=False)
    from ensembling.oof import epoch_selection
    sel = epoch_selection([[str(old / "m-fold0.csv"), str(old / "m-fold1.csv")]])
    assert not sel.held_out and len(sel.unknown) == 2 and sel.line().startswith("epoch selection: unknown")


def test_case14_select_lists_that_overlap_or_cannot_be_drawn_are_refused(tmp_path):
    import json

    import pandas as pd

    from common.errors import DataError
    from dataloader.files import read_split_json
    from dataloader.splits import build

    info = {"names": ["a", "b"], "emos": ["happy", "sad"]}
    doc = {"train_info": info, "valid_info": {"names": ["c"], "emos": ["sad"]},
           "select_info": {"names": ["b", "d"], "emos": ["sad", "happy"]}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"1 names in both select_info and train_info: b; .*build_splits\.py --kfold"):
        read_split_json(str(tmp_path / "s.json"))
    # 2 of a class in 2 folds: 1 training row in a fold, too few to hold some out for epoch selection
    pd.DataFrame({"name": [f"n{i}" for i in range(12)], "discrete": ["happy"] * 10 + ["sad"] * 2,
                  "valence": 0.0}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DataError, match=r"fold 0 of .*: class 'sad' has 1 training rows, too few .*--epoch_selection "
                                        r"out_of_fold"):
        build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "k"), kfold=2)
    assert not (tmp_path / "k").exists()  # nothing written
    build(str(tmp_path / "l.csv"), "MER", str(tmp_path / "k"), kfold=2, epoch_selection="out_of_fold")
    assert "select_info" not in read_split_json(str(tmp_path / "k" / "fold0.json"))


def test_case14_pseudo_labels_keep_a_fold_lists_selection_rows_out_and_the_list_keeps_them(tmp_path):
    """A fold list's select_info rows never get pseudo labels, and the stage-2 list written from it keeps them,
    so its epoch is still chosen on them."""
    import pandas as pd

    from dataloader.files import read_split_json
    from pseudo.drivers import forbidden_names, write_pseudo_split

    info = lambda names, emo: {"names": names, "emos": [emo] * len(names), "vals": [0.0] * len(names)}  # noqa: E731
    doc = {"train_info": info(["a", "b"], "joy"), "valid_info": info(["v"], "sad"), "select_info": info(["s"], "joy")}
    banned = forbidden_names(doc, {})
    assert banned == {"v", "s"}
    frame = pd.DataFrame({"name": ["u1"], "emo": ["sad"], "source": ["teacher"], "confidence": [0.9], "weight": [1.0]})
    path = write_pseudo_split(str(tmp_path / "p.json"), doc, frame, forbidden=banned)
    out = read_split_json(path)
    assert out["select_info"]["names"] == ["s"] and out["train_info"]["names"] == ["a", "b", "u1"]
    leak = frame.assign(name=["s"])
    with pytest.raises(Exception, match="validation/test names"):
        write_pseudo_split(str(tmp_path / "q.json"), doc, leak, forbidden=banned)
