"""extraction.media (PyAV decoding, face-crop layouts), extraction.faces (OpenCV's Haar cascade) and
preprocess/make_clip_demo.py. Every medium is synthesised in tmp_path with the module's own writers."""

import os
import pickle
import sys

import numpy as np
import pandas as pd
import pytest

from extraction import media
from extraction.media import MediaError

SR = 16000


def tone(freq, seconds, sr=SR, amp=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x, sr=SR):
    return np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x)


def raises(code, fn, *args, **kwargs):
    with pytest.raises(MediaError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return str(info.value)


def brightness_frames(t, h=48, w=64):
    """Frame i is a flat grey of 10 + 9 i: its mean brightness names it after decoding."""
    return np.broadcast_to((10 + 9 * np.arange(t, dtype=np.uint8))[:, None, None, None], (t, h, w, 3)).copy()


def frame_ids(frames):
    return np.rint((frames.reshape(len(frames), -1).mean(1) - 10) / 9).astype(int).tolist()


# ------------------------------------------------------------------------------------------------ audio


def test_wav_and_flac_round_trip(tmp_path):
    x = tone(440, 1.25) + tone(97, 1.25, amp=0.3)
    for ext in ("wav", "flac"):
        path = tmp_path / f"a.{ext}"
        if ext == "wav":
            media.write_wav(path, x)
        else:
            media.write_audio(path, x, SR)
        y = media.load_audio(path)
        assert y.dtype == np.float32 and y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=1.5 / 32767)
    info = media.probe_media(tmp_path / "a.flac")
    assert info["has_audio"] and not info["has_video"] and info["duration_s"] == pytest.approx(1.25, abs=0.01)
    assert info["sample_rate"] == SR and info["frames"] is None


def test_resampling_44k_stereo_keeps_duration_and_pitch(tmp_path):
    left, right = tone(440, 1.5, sr=44100, amp=0.8), tone(440, 1.5, sr=44100, amp=0.4)
    media.write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 44100)
    y = media.load_audio(tmp_path / "st.wav", sample_rate=SR)
    assert len(y) == 1.5 * SR
    assert peak_hz(y) == pytest.approx(440, abs=1)
    # mono is the mean of the channels (0.6), not FFmpeg's -3 dB float downmix (0.85)
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.6, abs=0.01)
    assert media.load_audio(tmp_path / "st.wav", sample_rate=8000).shape == (12000,)


def test_audio_track_of_an_mp4(tmp_path):
    x = tone(300, 2.0)
    media.write_video(tmp_path / "v.mp4", brightness_frames(20), fps=10, audio=x)
    y = media.load_audio(tmp_path / "v.mp4")
    assert y.shape == x.shape  # the AAC padding is cut to the length the mp4 states
    assert np.abs(y[2048:] - x[2048:]).max() < 0.02  # lossy, after the encoder's first frames
    assert peak_hz(y) == pytest.approx(300, abs=1)
    info = media.probe_media(tmp_path / "v.mp4")
    assert info["has_audio"] and info["has_video"] and info["fps"] == 10 and info["frames"] == 20
    assert (info["width"], info["height"]) == (64, 48) and info["duration_s"] == pytest.approx(2.0, abs=0.05)


def test_audio_errors(tmp_path):
    media.write_video(tmp_path / "silent.mp4", brightness_frames(5), fps=10)
    assert "no audio stream" in raises("no_audio_stream", media.load_audio, tmp_path / "silent.mp4")
    media.write_wav(tmp_path / "empty.wav", np.zeros(0))
    raises("empty_audio", media.load_audio, tmp_path / "empty.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    assert "0 bytes" in raises("unreadable", media.load_audio, tmp_path / "zero.wav")
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    raises("unreadable", media.load_audio, tmp_path / "noise.wav")
    media.write_wav(tmp_path / "ok.wav", tone(440, 0.5))
    (tmp_path / "cut.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:30])  # header cut short
    raises("unreadable", media.load_audio, tmp_path / "cut.wav")
    (tmp_path / "cut.mp3").write_bytes(b"ID3\x04\x00" + np.random.default_rng(1).bytes(300))
    raises("unreadable", media.load_audio, tmp_path / "cut.mp3")
    message = raises("missing_file", media.load_audio, tmp_path / "nope.wav")
    assert "nope.wav" in message
    raises("unreadable", media.load_audio, tmp_path)  # a folder


def test_truncated_files(tmp_path):
    media.write_wav(tmp_path / "ok.wav", tone(440, 1.0))
    (tmp_path / "half.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:-16000])  # the second half cut off
    message = raises("truncated", media.load_audio, tmp_path / "half.wav")  # ffmpeg would decode half without a word
    assert "promises 1.000 s" in message and "holds 0.500 s" in message
    media.write_video(tmp_path / "ok.mp4", brightness_frames(10), fps=10, audio=tone(300, 1.0))
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[:len(data) // 2])  # the index (moov) is at the end: lost
    raises("unreadable", media.load_audio, tmp_path / "half.mp4")
    raises("unreadable", media.load_video_frames, tmp_path / "half.mp4")


def test_cover_picture_is_not_video(tmp_path):
    import av

    path = str(tmp_path / "song.mp3")
    with av.open(path, "w") as container:  # an mp3 with its cover art, as many audio files have
        sound = container.add_stream(media._encoder(("libmp3lame", "mp3")), rate=SR, layout="mono")
        cover = container.add_stream("png")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, SR), np.int16), format="s16", layout="mono")
        frame.sample_rate = SR
        for packet in [*sound.encode(frame), *sound.encode(None)]:
            container.mux(packet)
    info = media.probe_media(path)
    assert info["has_audio"] and not info["has_video"] and info["fps"] is None
    assert "cover picture" in raises("no_video_stream", media.count_video_frames, path)
    assert len(media.load_audio(path)) == pytest.approx(SR, abs=1200)


def test_media_error_survives_pickling():
    e = pickle.loads(pickle.dumps(MediaError("no_face", "clip.mp4: no face")))
    assert e.code == "no_face" and str(e) == "clip.mp4: no face"


# ------------------------------------------------------------------------------------------------ video


@pytest.mark.parametrize("t", [1, 7, 26])
def test_count_video_frames_is_exact(tmp_path, t):
    media.write_video(tmp_path / "v.mp4", brightness_frames(t), fps=25)
    assert media.count_video_frames(tmp_path / "v.mp4") == t


def test_video_errors(tmp_path):
    media.write_wav(tmp_path / "a.wav", tone(440, 0.3))
    raises("no_video_stream", media.count_video_frames, tmp_path / "a.wav")
    raises("no_video_stream", media.load_video_frames, tmp_path / "a.wav")
    raises("missing_file", media.load_video_frames, tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(2).bytes(3000))
    raises("unreadable", media.load_video_frames, tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="even"):
        media.write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8))


def test_sample_frame_indices_uniform_rule():
    s = media.sample_frame_indices
    assert s(10, num_frames=4) == [0, 2, 5, 7]  # step 2.5
    assert s(100, num_frames=8) == [0, 12, 25, 37, 50, 62, 75, 87]  # step 12.5
    assert s(29, num_frames=3) == [0, 9, 19]  # step 9.67
    assert s(3, num_frames=16) == [0, 1, 2]
    padded = s(3, num_frames=16, pad=True)
    assert len(padded) == 16 and padded[:3] == [0, 1, 2] and set(padded[3:]) == {2}
    assert s(16, num_frames=16) == list(range(16))
    assert s(5) == [0, 1, 2, 3, 4]
    assert s(0, num_frames=4) == [] and s(0, fps=2, src_fps=25) == []
    for n_total in range(1, 60):  # the rule never returns more than N indices, nor one out of range
        for n in (1, 3, 7, 8, 16):
            idx = s(n_total, num_frames=n)
            assert len(idx) == min(n, n_total) and idx == sorted(set(idx)) and idx[-1] < n_total


def test_sample_frame_indices_fps():
    s = media.sample_frame_indices
    assert s(25, fps=5, src_fps=25) == [0, 5, 10, 15, 20]
    # 45 frames at 30 fps, 4 fps: times 0, .25, ..., 1.25 s -> frames 0, 7.5, 15, 22.5, 30, 37.5 (half to even)
    assert s(45, fps=4, src_fps=30) == [0, 8, 15, 22, 30, 38]
    assert s(10, fps=50, src_fps=25) == list(range(10))  # faster than the clip: every frame once
    assert s(7, fps=1, src_fps=2.5) == [0, 2, 5]
    with pytest.raises(ValueError):
        s(10, num_frames=4, fps=2, src_fps=25)
    with pytest.raises(ValueError):
        s(10, fps=2)


def test_load_video_frames_order_and_sampling(tmp_path):
    path = tmp_path / "v.mp4"
    media.write_video(path, brightness_frames(26), fps=10)
    every = media.load_video_frames(path)
    assert every.shape == (26, 48, 64, 3) and every.dtype == np.uint8
    assert frame_ids(every) == list(range(26))
    assert frame_ids(media.load_video_frames(path, num_frames=4)) == [0, 6, 13, 19]
    assert frame_ids(media.load_video_frames(path, fps=2.5)) == media.sample_frame_indices(26, fps=2.5, src_fps=10)
    padded = media.load_video_frames(path, num_frames=30, pad=True)
    assert padded.shape[0] == 30 and frame_ids(padded) == list(range(26)) + [25] * 4
    with pytest.raises(ValueError, match="not both"):
        media.load_video_frames(path, num_frames=4, fps=2)
    rgb = np.zeros((3, 32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red stays red: RGB in, RGB out
    media.write_video(tmp_path / "red.mp4", rgb, fps=5)
    r, g, b = media.load_video_frames(tmp_path / "red.mp4")[1, 16, 16].astype(int)
    assert r > 150 and g < 50 and b < 50


# ------------------------------------------------------------------------------------------------ face arrays


def test_face_array_layouts(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 8, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "bgr.npy", rgb[..., ::-1])
    np.testing.assert_array_equal(media.load_face_array(tmp_path / "bgr.npy"), rgb)
    np.save(tmp_path / "rgb.npy", rgb)
    np.testing.assert_array_equal(media.load_face_array(tmp_path / "rgb.npy", channel_order="rgb"), rgb)
    gray = rgb[..., 0]
    for name, arr in (("gray.npy", gray), ("gray1.npy", gray[..., None])):
        np.save(tmp_path / name, arr)
        out = media.load_face_array(tmp_path / name)
        assert out.shape == (4, 8, 6, 3) and (out == gray[..., None]).all()
    np.save(tmp_path / "unit.npy", rgb[..., ::-1] / 255.0)
    np.testing.assert_array_equal(media.load_face_array(tmp_path / "unit.npy"), rgb)
    np.save(tmp_path / "f255.npy", rgb[..., ::-1].astype(np.float32))
    np.testing.assert_array_equal(media.load_face_array(tmp_path / "f255.npy"), rgb)


def test_face_array_errors(tmp_path):
    bad = {
        "image.npy": np.zeros((8, 6, 3), np.uint8),  # one image, not a sequence
        "rgba.npy": np.zeros((2, 8, 6, 4), np.uint8),
        "flat.npy": np.zeros((2, 8), np.uint8),
        "nan.npy": np.full((2, 8, 6, 3), np.nan, np.float32),
        "negative.npy": -np.ones((2, 8, 6, 3), np.float32),
        "big.npy": np.full((2, 8, 6, 3), 300.0),
    }
    for name, arr in bad.items():
        np.save(tmp_path / name, arr)
        message = raises("bad_array", media.load_face_array, tmp_path / name)
        assert name in message and str(arr.shape) in message
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 6, 3), np.uint8))
    raises("no_frames", media.load_face_array, tmp_path / "empty.npy")
    np.save(tmp_path / "objects.npy", np.array([{"frame": 1}], dtype=object), allow_pickle=True)
    assert "pickled" in raises("unreadable", media.load_face_array, tmp_path / "objects.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    raises("unreadable", media.load_face_array, tmp_path / "junk.npy")
    raises("missing_file", media.load_face_array, tmp_path / "nope.npy")


def test_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "s1_aligned"
    folder.mkdir()
    for i in (1, 2, 10):  # natural order: 2 before 10
        size = (20, 16) if i != 10 else (40, 32)  # the last one twice as large: resized to the first
        Image.new("RGB", size, (10 * i, 50, 200)).save(folder / f"frame_det_00_{i}.bmp")
    (folder / "frame_det_00_3.png").write_bytes(b"broken")  # skipped
    (folder / "notes.txt").write_text("ignored")
    frames = media.load_image_folder(folder)
    assert frames.shape == (3, 16, 20, 3) and frames.dtype == np.uint8
    assert frames[:, 5, 5, 0].tolist() == [10, 20, 100] and (frames[..., 2] == 200).all()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"x")
    raises("unreadable", media.load_image_folder, broken)
    (tmp_path / "none").mkdir()
    raises("no_frames", media.load_image_folder, tmp_path / "none")
    raises("missing_file", media.load_image_folder, tmp_path / "absent")


# ------------------------------------------------------------------------------------------------ faces


@pytest.fixture(scope="module")
def hopper():
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def detector():
    from extraction.faces import FaceDetector

    return FaceDetector(size=64)


def test_face_detector_finds_grace_hopper(hopper, detector):
    x, y, w, h = detector.detect(hopper)
    assert abs(x - 155) < 15 and abs(y - 105) < 15 and abs(w - 222) < 25 and abs(h - 222) < 25
    crop = detector.crop(hopper)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def test_crop_faces_in_a_frame_sequence(hopper, detector):
    import cv2

    from extraction.faces import crop_faces

    small = cv2.resize(hopper, (128, 150), interpolation=cv2.INTER_AREA)
    frames = np.full((4, 200, 240, 3), 30, np.uint8)
    for i, x in enumerate((0, 40, None, 110)):  # frame 2 shows no face
        if x is not None:
            frames[i, 25:175, x:x + 128] = small
    crops = crop_faces(frames, detector)
    assert crops.shape == (3, 64, 64, 3)


def test_pattern_frames_have_no_face(tmp_path, detector):
    import make_clip_demo

    from extraction.faces import crop_faces

    frames = make_clip_demo._video(2, 6, np.random.default_rng(0))
    assert detector.detect(frames[0]) is None and detector.crop(frames[0]) is None
    with pytest.raises(MediaError) as info:
        crop_faces(frames, detector, source="clip.mp4")
    assert info.value.code == "no_face" and "6 frames" in str(info.value) and "clip.mp4" in str(info.value)


def test_face_detector_without_opencv(monkeypatch):
    import cv2

    from extraction.faces import FaceDetector
    from common.errors import OptionalDependencyError

    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(OptionalDependencyError, match=r'pip install "opencv-python-headless>=4\.8,<5"'):
        FaceDetector()
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    monkeypatch.setattr(cv2.data, "haarcascades", "/nonexistent/")
    with pytest.raises(OptionalDependencyError, match=r"OpenCV 5.*opencv-python-headless>=4\.8,<5"):
        FaceDetector()


# ------------------------------------------------------------------------------------------------ clip demo


def read_tables(out):
    return {f: pd.read_csv(os.path.join(out, f)) for f in
            ("track1_train_disdim.csv", "test.csv", "test_labels.csv", "unlabeled.csv", "subtitle_chieng.csv")}


@pytest.fixture(scope="module")
def clip_demos(tmp_path_factory):
    import make_clip_demo

    root = tmp_path_factory.mktemp("clipdemo")
    outs = [str(root / "a"), str(root / "b")]
    tables = [make_clip_demo.make_clips(out, n=12, seed=0, progress=False) for out in outs]
    return outs, tables


def test_make_clips_layout(clip_demos):
    import config

    (out, _), (table, _) = clip_demos
    t = read_tables(out)
    names = [f"sample_{i:05d}" for i in range(1, 13)]
    labelled, test, unlabelled = (t[f]["name"].tolist() for f in ("track1_train_disdim.csv", "test.csv",
                                                                  "unlabeled.csv"))
    assert sorted(labelled + test + unlabelled) == names and len(set(labelled + test + unlabelled)) == 12
    assert (len(labelled), len(test), len(unlabelled)) == (7, 3, 2)
    assert t["test_labels.csv"]["name"].tolist() == test
    assert sorted(t["subtitle_chieng.csv"]["name"]) == names
    assert list(t["subtitle_chieng.csv"].columns) == ["name", "chinese", "english"]
    labels = pd.concat([t["track1_train_disdim.csv"], t["test_labels.csv"]])
    assert set(labels["discrete"]) <= set(config.EMO_RULE["MER"]) and labels["valence"].between(-5, 5).all()
    assert set(table["discrete"]) == set(config.EMO_RULE["MER"])  # balanced: every class twice
    assert sorted(os.listdir(os.path.join(out, "audio"))) == [n + ".wav" for n in names]
    assert sorted(os.listdir(os.path.join(out, "video"))) == [n + ".mp4" for n in names]
    assert sorted(os.listdir(os.path.join(out, "openface_face"))) == names
    assert "| train | 7 |" in open(os.path.join(out, "README.md"), encoding="utf-8").read()

    for name, frames, k in zip(table["name"], table["frames"], table["discrete"]):
        audio = media.load_audio(os.path.join(out, "audio", name + ".wav"))
        assert len(audio) == frames * SR // 10 and 1.5 <= len(audio) / SR <= 3.0
        assert media.count_video_frames(os.path.join(out, "video", name + ".mp4")) == frames
        assert media.load_audio(os.path.join(out, "video", name + ".mp4")).shape == audio.shape
        face = media.load_face_array(os.path.join(out, "openface_face", name, name + ".npy"))
        assert face.shape == (frames, 112, 112, 3)
    video = media.load_video_frames(os.path.join(out, "video", "sample_00001.mp4"))
    assert video.shape[1:] == (96, 96, 3)


def test_make_clips_carries_the_class(clip_demos):
    """The audio's pitch rises with the class index, and the video's bright pixels show the class's hue."""
    import colorsys

    import config

    (out, _), (table, _) = clip_demos
    for name, label in zip(table["name"], table["discrete"]):
        k = config.EMO_RULE["MER"].index(label)
        audio = media.load_audio(os.path.join(out, "audio", name + ".wav"))
        assert peak_hz(audio) == pytest.approx(200 * 1.35 ** k, rel=0.05)
        pixels = media.load_video_frames(os.path.join(out, "video", name + ".mp4")).reshape(-1, 3)
        disc = pixels[pixels.max(1) > 150].mean(0) / 255
        hue = colorsys.rgb_to_hsv(*disc)[0]
        assert min(abs(hue - k / 6), 1 - abs(hue - k / 6)) < 0.05


def test_make_clips_is_deterministic(clip_demos, tmp_path):
    import make_clip_demo

    (a, b), (ta, tb) = clip_demos
    pd.testing.assert_frame_equal(ta, tb)
    for f, df in read_tables(a).items():
        pd.testing.assert_frame_equal(df, read_tables(b)[f])
    for name in ta["name"]:
        np.testing.assert_array_equal(media.load_audio(os.path.join(a, "audio", name + ".wav")),
                                      media.load_audio(os.path.join(b, "audio", name + ".wav")))
        face = os.path.join("openface_face", name, name + ".npy")
        np.testing.assert_array_equal(np.load(os.path.join(a, face)), np.load(os.path.join(b, face)))
    video = os.path.join("video", "sample_00003.mp4")
    np.testing.assert_array_equal(media.load_video_frames(os.path.join(a, video)),
                                  media.load_video_frames(os.path.join(b, video)))
    other = make_clip_demo.make_clips(str(tmp_path / "seed1"), n=6, seed=1, progress=False)
    assert not np.array_equal(np.load(os.path.join(a, "openface_face", "sample_00001", "sample_00001.npy")),
                              np.load(tmp_path / "seed1" / "openface_face" / "sample_00001" / "sample_00001.npy"))
    assert len(other) == 6


def test_make_clip_demo_main_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    import make_clip_demo

    calls = []
    monkeypatch.setattr(make_clip_demo, "write_models", lambda out, seed: calls.append((out, seed)))
    out = str(tmp_path / "demo")
    assert make_clip_demo.main(["--out", out, "--n", "6", "--seed", "3"]) == 0
    assert calls == [(out, 3)] and "wrote 6 clips" in capsys.readouterr().out
    assert make_clip_demo.main(["--out", out, "--n", "6"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and out in err and "--overwrite" in err
    assert make_clip_demo.main(["--out", out, "--n", "6", "--overwrite", "--no_models"]) == 0
    assert calls == [(out, 3)] and len(os.listdir(os.path.join(out, "audio"))) == 6
