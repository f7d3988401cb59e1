"""The packed feature loader: validation errors, cache behaviour, padding and batching."""

import os
import time

import numpy as np
import pytest

from dataloader import SampleSet, load_features, pack_feature
from common.errors import DataError


def _write(root, arrays):
    os.makedirs(root, exist_ok=True)
    for name, arr in arrays.items():
        np.save(os.path.join(root, name + ".npy"), arr)


def test_missing_file_names_the_samples_and_the_fix(tiny):
    store = load_features(["tiny-signal"])[0]
    with pytest.raises(DataError) as e:
        store.rows(["s0000", "ghost1", "ghost2"], source="my list")
    msg = str(e.value)
    assert "2 of 3 names in my list" in msg and "ghost1, ghost2" in msg and "check_feat_dim" in msg


def test_one_misshapen_file_is_named(tmp_path):
    root = str(tmp_path / "f")
    _write(root, {"a": np.zeros(4, np.float32), "b": np.zeros(4, np.float32), "c": np.zeros(5, np.float32)})
    with pytest.raises(DataError) as e:
        pack_feature("f", root, 4, False, cache_root=str(tmp_path / "cache"), progress=False)
    assert "1 of 3 files" in str(e.value) and "c.npy (5,)" in str(e.value)


def test_config_dim_disagreeing_with_every_file_points_at_config(tmp_path):
    root = str(tmp_path / "f")
    _write(root, {n: np.zeros(6, np.float32) for n in "abc"})
    with pytest.raises(DataError, match="every file disagrees with the dim 4 in config.py"):
        pack_feature("f", root, 4, False, cache_root=str(tmp_path / "cache"), progress=False)


def test_nan_and_inf_files_are_named(tmp_path):
    root = str(tmp_path / "f")
    _write(root, {"ok": np.ones(3, np.float32), "nan": np.array([1, np.nan, 0], np.float32),
                  "inf": np.array([np.inf, 0, 0], np.float32)})
    with pytest.raises(DataError) as e:
        pack_feature("f", root, 3, False, cache_root=str(tmp_path / "cache"), progress=False)
    assert "2 files hold NaN or Inf" in str(e.value) and "inf.npy" in str(e.value) and "nan.npy" in str(e.value)


def test_pickled_or_broken_file_is_unreadable_not_executed(tmp_path):
    root = str(tmp_path / "f")
    _write(root, {"ok": np.ones(3, np.float32)})
    np.save(os.path.join(root, "obj.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(os.path.join(root, "cut.npy"), "wb") as f:
        f.write(b"\x93NUMPY garbage")
    with pytest.raises(DataError) as e:
        pack_feature("f", root, 3, False, cache_root=str(tmp_path / "cache"), progress=False)
    assert "2 unreadable files" in str(e.value)


def test_missing_folder_and_unknown_feature(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        pack_feature("f", str(tmp_path / "nowhere"), 3, False, cache_root=str(tmp_path), progress=False)
    with pytest.raises(KeyError, match="not registered"):
        load_features(["nope"])


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path):
    root, cache = str(tmp_path / "f"), str(tmp_path / "cache")
    _write(root, {"a": np.zeros(3, np.float32), "b": np.ones(3, np.float32)})
    s1 = pack_feature("f", root, 3, False, cache_root=cache, progress=False)
    meta = [os.path.join(dp, f) for dp, _, fs in os.walk(cache) for f in fs if f == "meta.json"][0]
    stamp = os.stat(meta).st_mtime_ns
    s2 = pack_feature("f", root, 3, False, cache_root=cache, progress=False)
    assert os.stat(meta).st_mtime_ns == stamp and s2.names == ["a", "b"]
    time.sleep(0.01)
    _write(root, {"b": np.full(3, 7, np.float32), "c": np.full(3, 2, np.float32)})
    s3 = pack_feature("f", root, 3, False, cache_root=cache, progress=False)
    assert s3.names == ["a", "b", "c"]
    np.testing.assert_array_equal(s3.gather(s3.rows(["b", "c"]))[0], [[7, 7, 7], [2, 2, 2]])
    assert s1.data.shape == (2, 3)


def test_frame_level_padding_mask_and_even_subsampling(tmp_path):
    root = str(tmp_path / "au")
    seqs = {"short": np.arange(3 * 2, dtype=np.float32).reshape(3, 2) + 1,
            "long": np.arange(10 * 2, dtype=np.float32).reshape(10, 2) + 1}
    _write(root, seqs)
    store = pack_feature("au", root, 2, True, cache_root=str(tmp_path / "c"), progress=False)
    x, mask = store.gather(store.rows(["short", "long"]))
    assert x.shape == (2, 10, 2) and mask.sum(1).tolist() == [3, 10]
    np.testing.assert_array_equal(x[0, :3], seqs["short"])  # real frames first, then zero padding
    np.testing.assert_array_equal(x[0, 3:], 0)
    x, mask = store.gather(store.rows(["short", "long"]), max_len=5)
    assert x.shape == (2, 5, 2) and mask.sum(1).tolist() == [3, 5]
    np.testing.assert_array_equal(x[1], seqs["long"][[0, 2, 4, 6, 8]])  # evenly spaced frames


def test_mmap_sample_set_reads_batches_from_the_pack_with_the_same_values(tiny):
    stores = load_features(["tiny-signal", "tiny-au"])
    assert isinstance(stores[0].data, np.memmap)  # packs open memory-mapped: no load cost
    ram = SampleSet(stores, tiny.names[:20], tiny.y[:20], max_len=8)
    mapped = SampleSet(stores, tiny.names[:20], tiny.y[:20], max_len=8, mmap=True)
    assert mapped._dense[0] is None and ram._dense[0] is not None
    a, b = ram.batch([3, 1, 7]), mapped.batch([3, 1, 7])
    for x, y in zip(a["feats"], b["feats"]):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    for (m1, s1), (m2, s2) in zip(ram.feature_stats(), mapped.feature_stats()):
        assert np.allclose(m1, m2) and np.allclose(s1, s2)


def test_fast_reader_matches_numpy_on_every_layout(tmp_path):
    from dataloader.features import read_npy
    rng = np.random.default_rng(0)
    cases = {"f32": rng.normal(size=7).astype(np.float32), "f16": rng.normal(size=(3, 5)).astype(np.float16),
             "f64": rng.normal(size=(1, 4)), "big": rng.normal(size=3).astype(">f4"),
             "fortran": np.asfortranarray(rng.normal(size=(4, 3)).astype(np.float32)),
             "int": np.arange(6, dtype=np.int16), "scalar": np.float32(3.5)}
    for name, arr in cases.items():
        path = str(tmp_path / f"{name}.npy")
        np.save(path, arr)
        got = read_npy(path)
        np.testing.assert_array_equal(got, np.load(path))
        assert got.dtype == np.load(path).dtype and got.shape == np.load(path).shape
    with open(tmp_path / "f32.npy", "rb") as f:
        data = f.read()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="truncated"):
        read_npy(str(tmp_path / "cut.npy"))


def test_batches_cover_every_sample_once_in_a_seeded_order(tiny):
    stores = load_features(["tiny-signal", "tiny-au"])
    s = SampleSet(stores, tiny.names[:50], tiny.y[:50], max_len=6)
    order1 = np.concatenate([b["idx"] for b in s.iter_batches(16, shuffle=True, seed=3)])
    order2 = np.concatenate([b["idx"] for b in s.iter_batches(16, shuffle=True, seed=3)])
    order3 = np.concatenate([b["idx"] for b in s.iter_batches(16, shuffle=True, seed=4)])
    assert sorted(order1) == list(range(50)) and (order1 == order2).all() and (order1 != order3).any()
    b = s.batch([4, 2])
    assert b["feats"][0].shape == (2, 8) and b["feats"][1].shape[0] == 2 and b["feats"][1].shape[1] <= 6
    assert b["labels"].tolist() == [tiny.y[4], tiny.y[2]] and b["masks"][0] is None
    assert s.num_batches(16) == 4
