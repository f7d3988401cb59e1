"""Clip decoding with PyAV, the face-crop layouts, and small writers for demos and tests.

Readers turn a clip into encoder input or raise :class:`MediaError`, whose ``code`` goes into the extraction
report:

* :func:`load_audio`: float32 mono samples at a given rate from any audio file or the audio track of a video
* :func:`load_video_frames`: RGB frames of the first video stream, all of them or sampled (:func:`sample_frame_indices`)
* :func:`load_face_array`: a MERTools ``openface_face/<name>/<name>.npy`` array of face crops
* :func:`load_image_folder`: a folder of aligned face images (OpenFace's ``<name>_aligned/``)

PyAV bundles its own FFmpeg, so no system ``ffmpeg`` is needed. Writers (:func:`write_wav`,
:func:`write_audio`, :func:`write_video`) produce files the readers read back exactly, for the clip demo
and the tests.
"""

import os
from fractions import Fraction

import numpy as np

from dataloader.files import natural_key

AUDIO_EXTS = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".mpg", ".mpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")

# Encoders tried in order by the writers: the first one the bundled FFmpeg has is used.
# mpeg4 first: the bundled libx264 does not give the same bytes (nor the same decoded frames) twice across
# processes, even single-threaded, and the demo and the tests want reproducible files.
VIDEO_CODECS = ("mpeg4", "libx264")
AUDIO_CODECS_IN_VIDEO = ("aac", "libmp3lame", "mp3", "pcm_s16le")
AUDIO_CODEC_BY_EXT = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac", ".aac": "aac",
                      ".ogg": "libvorbis", ".opus": "libopus"}
_ISO_BMFF = ("mov", "mp4", "m4a")  # containers whose edit list states the exact length of an AAC track


class MediaError(Exception):
    """A clip whose input cannot be turned into encoder input. ``code`` is a short reason code for the
    extraction report, ``str(e)`` one human sentence naming the file and what is wrong.

    Codes: ``missing_file``, ``unreadable``, ``truncated``, ``no_audio_stream``, ``empty_audio``,
    ``no_video_stream``, ``no_frames``, ``no_face``, ``bad_array``."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # keeps both arguments across processes (worker pools pickle exceptions)
        return type(self), (self.code, str(self))


def _av():
    import av
    return av


def _require(path, folder=False):
    """``path`` as a string; MediaError("missing_file") when it does not exist, ("unreadable") when it is
    a folder where a file is expected (or the reverse) or an empty file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError("missing_file", f"{path} does not exist.")
    if folder and not os.path.isdir(path):
        raise MediaError("unreadable", f"{path} is a file, not a folder of images.")
    if not folder:
        if os.path.isdir(path):
            raise MediaError("unreadable", f"{path} is a folder, not a media file.")
        if os.path.getsize(path) == 0:
            raise MediaError("unreadable", f"{path} is an empty file (0 bytes).")
    return path


class _Container:
    """``av.open(path)`` as a context manager that turns FFmpeg's errors into MediaError("unreadable")."""

    def __init__(self, path):
        self.path = path
        self.container = None

    def __enter__(self):
        av = _av()
        try:
            self.container = av.open(self.path)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise MediaError("unreadable", f"{self.path} cannot be opened as media: {_reason(e)}.") from None
        return self.container

    def __exit__(self, exc_type, exc, tb):
        self.container.close()
        if exc_type is None or isinstance(exc, MediaError):
            return False
        if isinstance(exc, (_av().error.FFmpegError, OSError)):
            raise MediaError("unreadable", f"{self.path} cannot be decoded: {_reason(exc)}.") from None
        return False


def _reason(e):
    """FFmpeg's own words for an error, without the errno and the repeated file name."""
    text = getattr(e, "strerror", None) or str(e)
    return str(text).rstrip(".")


def _decode(container, stream, errors):
    """Frames of ``stream`` in presentation order. A packet that does not decode is skipped and a demuxer
    that breaks off (a truncated file) ends the stream, as ffmpeg does; both are appended to ``errors``."""
    av = _av()
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            errors.append(e)
            try:
                yield from stream.codec_context.decode(None)  # frames still held by the decoder
            except av.error.FFmpegError:
                pass
            return
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as e:
            errors.append(e)


def _streams(container, kind):
    """The container's ``"audio"`` or ``"video"`` streams; a cover picture (the attached picture of an mp3 or
    m4a file) is not video."""
    streams = list(getattr(container.streams, kind))
    if kind == "video":
        cover = _av().stream.Disposition.attached_pic
        streams = [s for s in streams if not s.disposition & cover]
    return streams


def _first_stream(container, kind, path, code):
    streams = _streams(container, kind)
    if not streams:
        cover = _av().stream.Disposition.attached_pic
        present = sorted({"cover picture" if s.disposition & cover else s.type for s in container.streams})
        present = present or ["none"]
        raise MediaError(code, f"{path} has no {kind} stream (streams present: {', '.join(present)}).")
    return streams[0]


# ---------------------------------------------------------------------------------------------------------
# audio


def load_audio(path, sample_rate=16000):
    """Samples of the first audio stream of ``path`` (an audio file or a video's audio track) as float32
    mono ``(n,)`` in [-1, 1] at ``sample_rate`` Hz.

    Channels are mixed to mono as their mean (what ``ffmpeg -ac 1`` does for stereo into 16-bit; FFmpeg's
    float downmix sums the two at -3 dB, which would leave [-1, 1]). An AAC track in an MP4/MOV/M4A
    container is cut to the length its edit list states (the encoder pads the last frame). A WAV file that
    holds less than its header promises (a copy cut short) raises MediaError("truncated"), where FFmpeg would
    decode what is there without a word."""
    av = _av()
    path = _require(path)
    extent = _wav_extent(path)
    if extent is not None and extent[0] - extent[1] > WAV_SHORTFALL_S:
        raise MediaError("truncated", f"{path} is cut short: its header promises {extent[0]:.3f} s of audio, the "
                                      f"file holds {extent[1]:.3f} s.")
    chunks, errors = [], []
    with _Container(path) as container:
        stream = _first_stream(container, "audio", path, "no_audio_stream")
        stream.thread_type = "AUTO"
        resampler, setup = None, None
        for frame in _decode(container, stream, errors):
            frame_setup = (frame.format.name, frame.layout.name, frame.sample_rate)
            if frame_setup != setup:  # a stream that changes format midway gets a fresh resampler
                if resampler is not None:
                    chunks.extend(_mono(f) for f in resampler.resample(None))
                resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                setup = frame_setup
            frame.pts = None  # the resampler need not follow timestamps (some files have none or gaps)
            chunks.extend(_mono(f) for f in resampler.resample(frame))
        if resampler is not None:
            chunks.extend(_mono(f) for f in resampler.resample(None))
        declared = _declared_samples(container, stream, sample_rate)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        if errors:
            raise MediaError("unreadable", f"{path}: no audio could be decoded ({_reason(errors[0])}).")
        raise MediaError("empty_audio", f"{path} has an audio stream with no samples.")
    if declared is not None and declared < samples.size <= declared + 2 * sample_rate // 10:
        samples = samples[:declared]
    return np.clip(samples, -1.0, 1.0, out=samples)


WAV_SHORTFALL_S = 0.01  # a WAV file short of its header's length by more than this is reported truncated
_WAV_PCM_TAGS = (1, 3, 6, 7, 0xFFFE)  # PCM, IEEE float, A-law, mu-law, extensible: a length exact to the sample


def _wav_extent(path):
    """``(promised, held)`` seconds of a RIFF/WAVE file's sample data: what its header's data chunk states and
    what the file holds of it. None for any other file, a compressed format (its byte rate is an average), or a
    header that states no length (a streaming writer's 0 or 0xFFFFFFFF)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        byte_rate = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(16)
                if len(fmt) < 16 or n < 16:
                    return None
                tag, _, _, byte_rate = struct.unpack("<HHII", fmt[:12])
                if tag not in _WAV_PCM_TAGS or not byte_rate:
                    return None
                f.seek(n - 16 + (n & 1), os.SEEK_CUR)
            elif cid == b"data":
                if byte_rate is None or n in (0, 0xFFFFFFFF):
                    return None
                return n / byte_rate, min(n, size - f.tell()) / byte_rate
            else:
                f.seek(n + (n & 1), os.SEEK_CUR)


def _mono(frame):
    x = frame.to_ndarray()  # planar float: (channels, n)
    return (x[0] if x.shape[0] == 1 else x.mean(axis=0)).astype(np.float32, copy=False)


def _declared_samples(container, stream, sample_rate):
    """The exact length of an AAC track in an ISO-BMFF container, in samples at ``sample_rate``, else None."""
    names = set(container.format.name.split(","))
    if stream.codec_context.name != "aac" or not names & set(_ISO_BMFF) or not stream.duration:
        return None
    return int(round(float(stream.duration * stream.time_base) * sample_rate))


# ---------------------------------------------------------------------------------------------------------
# video


def probe_media(path):
    """What a clip holds, from its headers (no decoding).

    Returns ``{"has_audio", "has_video", "duration_s", "fps", "frames", "width", "height", "sample_rate",
    "channels"}``; numbers are None where the file does not say. ``frames`` is the header's frame count (0 in
    some containers, then None): :func:`count_video_frames` gives the exact one."""
    path = _require(path)
    with _Container(path) as container:
        video = next(iter(_streams(container, "video")), None)
        audio = next(iter(_streams(container, "audio")), None)
        duration = None
        if container.duration is not None:
            duration = container.duration / _av().time_base
        elif video is not None and video.duration:
            duration = float(video.duration * video.time_base)
        info = {"has_audio": audio is not None, "has_video": video is not None, "duration_s": duration,
                "fps": None, "frames": None, "width": None, "height": None, "sample_rate": None, "channels": None}
        if video is not None:
            rate = _frame_rate(video)
            info.update(fps=float(rate) if rate else None, frames=int(video.frames) or None,
                        width=video.codec_context.width or None, height=video.codec_context.height or None)
        if audio is not None:
            info.update(sample_rate=audio.codec_context.sample_rate or None,
                        channels=audio.codec_context.layout.nb_channels or None)
    return info


def _frame_rate(stream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def count_video_frames(path):
    """The exact number of frames of the first video stream, counted by demuxing its packets (no decoding;
    header counts such as ``stream.frames`` are 0 or estimates in some containers)."""
    path = _require(path)
    av = _av()
    n = 0
    with _Container(path) as container:
        stream = _first_stream(container, "video", path, "no_video_stream")
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # a truncated file: count what is there, as decoding would
                break
            if packet.size:  # the demuxer ends each stream with an empty flush packet
                n += 1
    return n


def sample_frame_indices(n_total, num_frames=None, fps=None, src_fps=None, pad=False):
    """Which of ``n_total`` frames (0-based, increasing) to keep.

    * neither ``num_frames`` nor ``fps``: every frame.
    * ``num_frames=N``: MERTools' uniform rule, ``n = min(N, n_total)`` indices
      ``np.arange(0, n_total, n_total / n).astype(int)[:N]``; with ``pad`` the last index is repeated up
      to N entries (e.g. 10 frames, N=4: [0, 2, 5, 7]).
    * ``fps=F`` (with the clip's ``src_fps``): for each time k/F inside the clip, the frame nearest to it,
      ``min(n_total - 1, round(k * src_fps / F))``, without repeats.
    """
    n_total = int(n_total)
    if num_frames is not None and fps is not None:
        raise ValueError("sample_frame_indices: give num_frames or fps, not both")
    if n_total < 0:
        raise ValueError(f"sample_frame_indices: n_total must be >= 0, got {n_total}")
    if num_frames is not None and int(num_frames) < 1:
        raise ValueError(f"sample_frame_indices: num_frames must be >= 1, got {num_frames}")
    if fps is not None and (not fps or fps <= 0 or not src_fps or src_fps <= 0):
        raise ValueError(f"sample_frame_indices: fps sampling needs fps > 0 and the clip's src_fps > 0, "
                         f"got fps={fps}, src_fps={src_fps}")
    if n_total == 0:
        return []
    if num_frames is not None:
        want = int(num_frames)
        n = min(want, n_total)
        idx = np.arange(0, n_total, n_total / n).astype(int).tolist()[:want]
        if pad:
            idx += [idx[-1]] * (want - len(idx))
        return idx
    if fps is not None:
        fps, src_fps = float(fps), float(src_fps)
        duration = n_total / src_fps
        k = np.arange(int(np.ceil(duration * fps)) + 1)
        k = k[k / fps < duration]
        idx = np.minimum(n_total - 1, np.round(k * src_fps / fps).astype(int))
        return sorted(set(idx.tolist()))
    return list(range(n_total))


def load_video_frames(path, num_frames=None, fps=None, pad=False):
    """Frames of the first video stream as ``(T, H, W, 3)`` uint8 RGB, chosen by
    :func:`sample_frame_indices` (all of them by default; an index repeated by ``pad`` repeats its frame).

    The frames are counted by demuxing first, then decoded once, converting only the chosen ones. Should
    the stream decode fewer frames than it has packets, a chosen index past the end gets the last frame."""
    n_total = count_video_frames(path)
    path = os.fspath(path)
    if n_total == 0:
        raise MediaError("no_frames", f"{path} has a video stream with no frames.")
    errors, chosen, last = [], {}, None
    with _Container(path) as container:
        stream = _first_stream(container, "video", path, "no_video_stream")
        stream.thread_type = "AUTO"
        src_fps = _frame_rate(stream)
        if fps is not None and not src_fps:
            raise MediaError("unreadable", f"{path} does not state its frame rate, so it cannot be sampled at "
                                           f"{fps} fps.")
        idx = sample_frame_indices(n_total, num_frames, fps, src_fps, pad)
        wanted, stop = set(idx), max(idx)
        size = None
        for i, frame in enumerate(_decode(container, stream, errors)):
            last = frame
            if i in wanted:
                size = size or (frame.width, frame.height)  # a stream that changes size keeps the first one's
                chosen[i] = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            if i >= stop:
                break
        if not chosen and last is None:
            if errors:
                raise MediaError("unreadable", f"{path}: no video frame could be decoded ({_reason(errors[0])}).")
            raise MediaError("no_frames", f"{path} has a video stream but no frame decodes.")
        if len(chosen) < len(wanted):
            size = size or (last.width, last.height)
            tail = last.to_ndarray(format="rgb24", width=size[0], height=size[1])
            chosen = {i: chosen.get(i, tail) for i in wanted}
    return np.stack([chosen[i] for i in idx])


# ---------------------------------------------------------------------------------------------------------
# face crops


def load_face_array(path, channel_order="bgr"):
    """A MERTools face-crop array (``openface_face/<name>/<name>.npy``) as ``(T, H, W, 3)`` uint8 RGB.

    MERTools saves crops from OpenCV, hence BGR by default (``channel_order="rgb"`` for arrays already in
    RGB). Grayscale ``(T, H, W)`` or ``(T, H, W, 1)`` arrays are stacked to three channels; float arrays
    with values in [0, 1] are scaled by 255, those in [0, 255] rounded, as are integer arrays in [0, 255]."""
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    path = _require(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        why = "holds pickled objects" if "pickle" in str(e) else f"is not a .npy array ({e})"
        raise MediaError("unreadable", f"{path} {why}; expected a (T, H, W, 3) uint8 array.") from None
    except (OSError, EOFError) as e:
        raise MediaError("unreadable", f"{path} cannot be read as a .npy array ({e}).") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise MediaError("unreadable", f"{path} is an .npz archive, not a (T, H, W, 3) array.")
    desc = f"shape {arr.shape}, dtype {arr.dtype}"
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[1] > 4:
        raise MediaError("bad_array", f"{path} looks like one (H, W, C) image ({desc}); expected (T, H, W, 3) "
                                      "face crops.")
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise MediaError("bad_array", f"{path} has {desc}; expected (T, H, W, 3) face crops or (T, H, W) "
                                      "grayscale.")
    if arr.shape[0] == 0:
        raise MediaError("no_frames", f"{path} holds no frames ({desc}).")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise MediaError("bad_array", f"{path} has empty frames ({desc}).")
    arr = _to_uint8(arr, path, desc)
    if arr.ndim == 3:
        return np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr[..., ::-1]) if channel_order == "bgr" else arr


def _to_uint8(arr, path, desc):
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "fiu":
        raise MediaError("bad_array", f"{path} has {desc}; expected uint8 pixels (or floats in [0, 1]).")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise MediaError("bad_array", f"{path} has {desc} with NaN or infinite values.")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 255:
        raise MediaError("bad_array", f"{path} has {desc} with values in [{lo}, {hi}]; expected [0, 1] or "
                                      "[0, 255].")
    if arr.dtype.kind == "f" and hi <= 1.0:
        arr = arr * 255.0
    return np.rint(arr).astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)


def load_image_folder(folder):
    """The images of ``folder`` (jpg/png/bmp; OpenFace's ``<name>_aligned/frame_det_00_000001.bmp`` and the
    like) in natural order, as ``(T, H, W, 3)`` uint8 RGB. Images whose size differs from the first one's are
    resized to it (bilinear); an image that does not decode is skipped."""
    from PIL import Image

    folder = _require(folder, folder=True)
    names = sorted((f for f in os.listdir(folder)
                    if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, f))), key=natural_key)
    if not names:
        raise MediaError("no_frames", f"{folder} holds no image ({', '.join(IMAGE_EXTS)}).")
    frames, size, first_error = [], None, None
    for name in names:
        try:
            with Image.open(os.path.join(folder, name)) as im:
                im = im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            first_error = first_error or f"{name}: {e}"
            continue
        size = size or im.size
        if im.size != size:
            im = im.resize(size, Image.BILINEAR)
        frames.append(np.asarray(im, dtype=np.uint8))
    if not frames:
        raise MediaError("unreadable", f"{folder}: none of its {len(names)} images decodes ({first_error}).")
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------------------
# writers (demos and tests)


def _encoder(names):
    av = _av()
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except ValueError:  # av.codec.codec.UnknownCodecError
            continue
    raise RuntimeError(f"the bundled FFmpeg has none of the encoders {', '.join(names)}")


def _pcm16(samples):
    """Float samples in [-1, 1], ``(n,)`` or ``(n, channels)``, as int16 ``(n, channels)``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"audio samples must be (n,) or (n, channels), got shape {x.shape}")
    return np.rint(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def _audio_frame(pcm, sample_rate):
    av = _av()
    layout = {1: "mono", 2: "stereo"}.get(pcm.shape[1], f"{pcm.shape[1]}c")
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.reshape(1, -1)), format="s16", layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = 0
    return frame, layout


def write_audio(path, samples, sample_rate=16000, codec=None, container_format=None):
    """Write float samples in [-1, 1], ``(n,)`` mono or ``(n, channels)``, as 16-bit audio; the encoder
    and the container follow the extension (wav: PCM, flac, mp3, m4a: AAC) unless given."""
    av = _av()
    path = os.fspath(path)
    pcm = _pcm16(samples)
    ext = os.path.splitext(path)[1].lower()
    codec = codec or AUDIO_CODEC_BY_EXT.get(ext, "pcm_s16le")
    if codec == "libmp3lame":
        codec = _encoder(("libmp3lame", "mp3"))
    frame, layout = _audio_frame(pcm, sample_rate)
    with av.open(path, "w", format=container_format or ("wav" if ext == ".wav" else None)) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        container.start_encoding()  # writes the header even when there is no sample to mux
        if len(pcm):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav(path, samples, sample_rate=16000):
    """Write float mono samples in [-1, 1] as a 16-bit PCM wav file."""
    write_audio(path, samples, sample_rate, codec="pcm_s16le", container_format="wav")


def write_video(path, frames, fps=25, audio=None, sample_rate=16000):
    """Write ``(T, H, W, 3)`` uint8 RGB frames (H and W even) as a video whose frames decode back in order,
    one packet per frame (``count_video_frames(path) == T``): MPEG-4 part 2 at a fixed quantiser of 2 (H.264
    at CRF 12 where an FFmpeg lacks it), yuv420p, encoded single-threaded so that the same frames give the
    same bytes. ``audio`` (float mono in [-1, 1] at ``sample_rate``) is muxed in as an AAC track (MP3 or PCM
    where AAC is missing)."""
    av = _av()
    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"write_video: yuv420p needs an even height and width, got {h}x{w}")
    codec = _encoder(VIDEO_CODECS)
    with av.open(path, "w") as container:
        video = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.codec_context.thread_count = 1  # the same bytes on any machine (threads change the slices)
        if codec == "mpeg4":  # a fixed quantiser of 2 (ffmpeg's -q:v 2): near-lossless at any frame size
            video.codec_context.qscale = True
            video.codec_context.global_quality = 2 * 118  # FF_QP2LAMBDA
        else:
            video.options = {"crf": "12", "preset": "fast"}
        sound = None
        if audio is not None:
            sound = container.add_stream(_encoder(AUDIO_CODECS_IN_VIDEO), rate=sample_rate, layout="mono")
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            pcm = _pcm16(audio)
            if len(pcm):
                for packet in sound.encode(_audio_frame(pcm, sample_rate)[0]):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
