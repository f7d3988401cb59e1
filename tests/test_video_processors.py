"""The Pillow stand-ins for transformers' video processors and ``load_processor`` (extraction/video_processors.py).

The hand-checked cases pin what the real classes do (Qwen2-VL's patch layout, temporal padding, ``smart_resize``
and its per-frame cap; InternVL's fixed size and normalisation); the tiny checkpoints check that the processors
assembled around a stand-in expand the video placeholder as the grid implies. Measured against the real classes
(torchvision 0.28, CPU; random-noise and smooth frames of 37x53 to 720x1280 px, Qwen2-VL at the tiny, default and
Qwen2.5-VL checkpoint sizes, InternVL at 28, 384 and 448 px): keys, dtypes, shapes, grids and input ids equal;
99.2 % of resized pixels equal, 0.8 % one level apart, 0.004 % two, none more (0.03 after CLIP normalisation,
0.035 after ImageNet's); without resizing the outputs are equal to the bit."""

import pickle

import numpy as np
import pytest

from extraction import video_processors as V

QWEN_TINY = {"size": {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, "patch_size": 14,
             "temporal_patch_size": 2, "merge_size": 2}


def _indexed_clip(frames, height, width):
    """Float frames whose every value is its own flat index over (t, y, x, c)."""
    return np.arange(frames * height * width * 3, dtype=np.float32).reshape(frames, height, width, 3)


def test_qwen_patch_layout_and_odd_frame_padding():
    vp = V.PilQwen2VLVideoProcessor(**QWEN_TINY)
    T, H, W, p, m, tp = 3, 56, 56, 14, 2, 2
    clip = _indexed_clip(T, H, W)
    out = vp(videos=[clip], do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np")
    px, grid = out["pixel_values_videos"], out["video_grid_thw"]
    assert grid.tolist() == [[2, 4, 4]] and grid.dtype == np.int64  # 3 frames -> 2 temporal patches (padded)
    assert px.shape == (2 * 4 * 4, 3 * tp * p * p) and px.dtype == np.float32
    gh, gw = H // p, W // p
    expected = np.empty_like(px)
    for k in range(len(px)):  # patch k: (temporal patch, merge-block row, block column, row in block, column)
        gt, rest = divmod(k, gh * gw)
        block, inner = divmod(rest, m * m)
        bh, bw = divmod(block, gw // m)
        mh, mw = divmod(inner, m)
        for j in range(px.shape[1]):  # element j: (channel, frame, y, x)
            c, rest_j = divmod(j, tp * p * p)
            tt, rest_j = divmod(rest_j, p * p)
            py, pxx = divmod(rest_j, p)
            t = min(gt * tp + tt, T - 1)  # the padding frame repeats the last one
            y, x = (bh * m + mh) * p + py, (bw * m + mw) * p + pxx
            expected[k, j] = ((t * H + y) * W + x) * 3 + c
    np.testing.assert_array_equal(px, expected)
    # frame 3 (padding) is frame 2: the second temporal patch holds frame 2 twice
    assert (px[16:, :p * p] == px[16:, p * p:2 * p * p]).all()


@pytest.mark.parametrize("hw, factor, lo, hi, expected", [
    ((28, 28), 28, 56 * 56, 14 * 14 * 4 * 1280, (56, 56)),  # below min_pixels: scaled up
    ((100, 200), 28, 784, 3136, (28, 56)),  # above max_pixels: scaled down, floored to the factor
    ((480, 640), 28, 3136, 12845056, (476, 644)),  # within: the nearest multiples
    ((37, 53), 28, 784, 3136, (28, 56)),
    ((64, 80), 28, 128 * 28 * 28, 28 * 28 * 768, (308, 364)),  # the class defaults scale small frames up
])
def test_smart_resize(hw, factor, lo, hi, expected):
    assert V.smart_resize(*hw, factor=factor, min_pixels=lo, max_pixels=hi) == expected


def test_smart_resize_refuses_extreme_aspect():
    with pytest.raises(ValueError, match="aspect ratio"):
        V.smart_resize(1, 201)


def test_qwen_resize_grid_and_pixel_cap():
    vp = V.PilQwen2VLVideoProcessor(min_pixels=3136, max_pixels=12845056, max_video_tokens=10)  # legacy keys
    assert (vp.size["shortest_edge"], vp.size["longest_edge"]) == (3136, 12845056)
    assert vp.frame_size(4, 480, 640) == (476, 644)  # unset: no cap, the real class's current default
    # capped: 10 tokens * 28 * 28 * 0.9 = 7056 px over 4 frames in pairs -> 3528 px a frame (>= 1.05 * 3136)
    assert vp.frame_size(4, 480, 640, cap_pixels_per_frame=True) == (28, 56)
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (5, 120, 160, 3), dtype=np.uint8), rng.integers(0, 256, (2, 37, 53, 3), np.uint8)]
    out = V.PilQwen2VLVideoProcessor(**QWEN_TINY)(videos=clips, return_tensors="pt", return_metadata=True)
    assert out["video_grid_thw"].tolist() == [[3, 2, 4], [1, 2, 4]]
    assert tuple(out["pixel_values_videos"].shape) == (24 + 8, 1176)
    assert [m.total_num_frames for m in out["video_metadata"]] == [5, 2]
    assert V.PilQwen2VLVideoProcessor(**QWEN_TINY).get_num_of_video_patches(5, 120, 160, {}) == 24
    # call-time kwargs win over the saved ones, unknown ones are ignored
    out = V.PilQwen2VLVideoProcessor(**QWEN_TINY)(videos=clips[:1], size={"shortest_edge": 3136,
                                                                         "longest_edge": 12845056}, foo=1)
    assert out["video_grid_thw"].tolist() == [[3, 8, 12]]


def test_internvl_constant_frames_normalised():
    vp = V.PilInternVLVideoProcessor.from_dict({"size": {"height": 28, "width": 28},
                                                "image_mean": [0.485, 0.456, 0.406],
                                                "image_std": [0.229, 0.224, 0.225],
                                                "video_processor_type": "InternVLVideoProcessor"})
    rgb = np.array([10, 128, 250], dtype=np.uint8)
    clip = np.broadcast_to(rgb, (3, 40, 50, 3)).copy()
    out = vp(videos=[clip, clip[:, :20]], return_tensors="pt")["pixel_values_videos"]
    assert tuple(out.shape) == (2, 3, 3, 28, 28) and str(out.dtype) == "torch.float32"
    expected = (rgb / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected[:, None, None], out.shape), atol=1e-5)
    assert V.PilInternVLVideoProcessor().size.height == 384  # the class default (checkpoints save 448)
    assert vp.to_dict()["video_processor_type"] == "InternVLVideoProcessor"  # saves as the real class


def test_frames_as_pil_images_and_grey():
    from PIL import Image

    vp = V.PilQwen2VLVideoProcessor(**QWEN_TINY)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    a = vp(videos=[frames], return_tensors="np")["pixel_values_videos"]
    b = vp(videos=[[Image.fromarray(f) for f in frames]], return_tensors="np")["pixel_values_videos"]
    np.testing.assert_array_equal(a, b)
    grey = vp(videos=[frames[..., :1]], return_tensors="np")["pixel_values_videos"]  # converted to RGB
    assert grey.shape == a.shape


@pytest.fixture(scope="module")
def tiny_mllms(tmp_path_factory):
    from extraction.tiny_models import save_tiny_internvl, save_tiny_qwen2_5_omni, save_tiny_qwen2_5_vl

    root = tmp_path_factory.mktemp("mllms")
    return {"qwen2_5_vl": save_tiny_qwen2_5_vl(str(root / "qwen2_5_vl")),
            "internvl": save_tiny_internvl(str(root / "internvl")),
            "qwen2_5_omni": save_tiny_qwen2_5_omni(str(root / "qwen2_5_omni"))}


def _expected_backend():
    from transformers.utils import is_torchvision_available

    return "torchvision" if is_torchvision_available() else "pil"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_5_omni", "internvl"])
def test_load_processor_expands_the_video_placeholder(tiny_mllms, family):
    from extraction.encoders import ModelRef

    processor, backend = V.load_processor(ModelRef(tiny_mllms[family]))
    assert backend == _expected_backend()
    content = [{"type": "video"}] + ([{"type": "audio"}] if family == "qwen2_5_omni" else []) + \
        [{"type": "text", "text": "how do i feel"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    frames = np.random.default_rng(2).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    kw = {"audio": [np.zeros(16000, dtype=np.float32)]} if family == "qwen2_5_omni" else {}
    out = processor(text=[text], videos=[frames], return_tensors="pt", **kw)
    ids = out["input_ids"][0].tolist()
    if family == "internvl":  # one 28 px tile per frame, image_seq_length (4) tokens each
        assert tuple(out["pixel_values"].shape) == (3, 3, 28, 28)
        assert ids.count(processor.image_token_id) == 3 * processor.image_seq_length == 12
    else:
        grid = out["video_grid_thw"][0].tolist()
        assert grid[0] == 2  # 3 frames -> 2 temporal patches
        assert out["pixel_values_videos"].shape[0] == grid[0] * grid[1] * grid[2]
        assert ids.count(processor.video_token_id) == grid[0] * grid[1] * grid[2] // 4
        if family == "qwen2_5_omni":  # the processor's own videos_kwargs size (128..768 * 28 * 28) wins
            assert grid[1:] == [22, 26]
        else:  # the checkpoint's 784..3136 px
            assert grid[1:] == [2, 4]
    if backend == "pil":
        assert type(processor).__name__ == type(processor).__mro__[1].__name__  # the real class's name
        again = pickle.loads(pickle.dumps(processor))  # (spawned DataLoader workers)
        assert again(text=[text], videos=[frames], return_tensors="pt", **kw)["input_ids"].tolist() == \
            out["input_ids"].tolist()


def test_load_processor_raises_other_errors(tmp_path):
    with pytest.raises(OSError):
        V.load_processor(str(tmp_path / "missing"))
