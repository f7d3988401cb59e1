"""Each clip's media and subtitle: the files of a clip found once per folder, read for a request, and the subtitle
appended to the prompt."""

import base64
import logging
import mimetypes
import os
from dataclasses import dataclass, field

from common.errors import DataError
from dataloader.files import index_files, natural_key

LOG = logging.getLogger("mer.teacher")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_EXTS = (".wav", ".mp3", ".flac")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MEDIA_KINDS = ("video", "audio", "frames", "none")
MIME = {".mp4": "video/mp4", ".avi": "video/avi", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
        ".webm": "video/webm", ".wav": "audio/wav", ".mp3": "audio/mp3", ".flac": "audio/flac",
        ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
        ".bmp": "image/bmp"}
SUBTITLE_BLOCK = {
    "en": "\n\nSubtitle of the clip (what is said in it):\n<<<\n{text}\n>>>\n",
    "zh": "\n\n视频字幕（视频中所说的话）：\n<<<\n{text}\n>>>\n",
}
NO_SUBTITLE = {"en": "(no subtitle)", "zh": "（无字幕）"}


@dataclass
class MediaItem:
    """One media file of a clip: ``kind`` is video, audio or image; ``size`` in bytes."""
    kind: str
    path: str
    mime: str
    size: int

    def b64(self):
        with open(self.path, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")

    def ext(self):
        return os.path.splitext(self.path)[1].lower().lstrip(".")


@dataclass
class ClipInput:
    """What one clip sends: its media items, its subtitle (None: no subtitle list given), and notes."""
    name: str
    items: list = field(default_factory=list)
    subtitle: str = None
    warnings: list = field(default_factory=list)
    error: str = None

    @property
    def kinds(self):
        return sorted({"frames" if i.kind == "image" else i.kind for i in self.items})


def _mime(path):
    ext = os.path.splitext(path)[1].lower()
    return MIME.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def even_subsample(items, k):
    """``k`` items spread evenly over ``items`` (the middle of each of k equal stretches); all if fewer."""
    n = len(items)
    if k is None or k <= 0 or n <= k:
        return list(items)
    return [items[(2 * i + 1) * n // (2 * k)] for i in range(k)]


class MediaSource:
    """Finds each clip's media: ``<video_dir>/<name>.<mp4|avi|mkv|mov|webm>``, ``<audio_dir>/<name>.<wav|mp3|
    flac>``, ``<frames_dir>/<name>/*.<jpg|png|...>`` (``max_frames`` of them, evenly spread, in natural
    order), and its subtitle. ``media`` lists the kinds to send; ``("none",)`` sends the subtitle alone.

    The folders are listed once at construction (fast over 100,000 files); frame folders are read per clip.
    """

    def __init__(self, media=("video",), video_dir=None, audio_dir=None, frames_dir=None, max_frames=8,
                 subtitles=None):
        media = [m.strip().lower() for m in (media.split(",") if isinstance(media, str) else media) if m.strip()]
        bad = [m for m in media if m not in MEDIA_KINDS]
        if bad or not media:
            raise DataError(f"--media {','.join(media)}: choose from {', '.join(MEDIA_KINDS)} (comma separated)")
        if "none" in media and len(media) > 1:
            raise DataError("--media none (text only) cannot be combined with other media")
        self.media = media
        self.text_only = media == ["none"]
        dirs = {"video": video_dir, "audio": audio_dir, "frames": frames_dir}
        for kind in media:
            if kind != "none" and not dirs[kind]:
                raise DataError(f"--media {kind} needs --{kind}_dir")
        if self.text_only and subtitles is None:
            raise DataError("--media none sends the subtitle alone: give --subtitles")
        self.max_frames = max_frames
        self.subtitles = subtitles
        self._video = index_files(video_dir, VIDEO_EXTS, "video") if "video" in media else {}
        self._audio = index_files(audio_dir, AUDIO_EXTS, "audio") if "audio" in media else {}
        self._frames = {}
        if "frames" in media:
            if not os.path.isdir(frames_dir):
                raise DataError(f"--frames_dir '{frames_dir}' is not a folder")
            with os.scandir(frames_dir) as it:
                self._frames = {e.name: e.path for e in it if e.is_dir()}

    def coverage(self, names):
        """``{kind: number of names with a file}`` for each requested kind (and ``subtitle``)."""
        out = {}
        index = {"video": self._video, "audio": self._audio, "frames": self._frames}
        for kind in self.media:
            if kind != "none":
                out[kind] = sum(1 for n in names if n in index[kind])
        if self.subtitles is not None:
            out["subtitle"] = sum(1 for n in names if self.subtitles.get(n))
        return out

    def _frame_files(self, name):
        folder = self._frames.get(name)
        if folder is None:
            return []
        with os.scandir(folder) as it:
            files = [e.path for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
        files.sort(key=lambda p: natural_key(os.path.basename(p)))
        return even_subsample(files, self.max_frames)

    def find(self, name):
        """The :class:`ClipInput` of ``name``; ``error`` set when none of the requested media exists."""
        clip = ClipInput(name=name)
        if self.subtitles is not None:
            clip.subtitle = self.subtitles.get(name, "")
            if not clip.subtitle:
                clip.warnings.append("no subtitle")
        if self.text_only:
            if not clip.subtitle:
                clip.error = "text-only mode (--media none) but the clip has no subtitle"
            return clip
        missing = []
        for kind in self.media:
            paths = {"video": [self._video.get(name)], "audio": [self._audio.get(name)],
                     "frames": self._frame_files(name)}[kind]
            paths = [p for p in paths if p]
            if not paths:
                missing.append(kind)
            for p in paths:
                clip.items.append(MediaItem("image" if kind == "frames" else kind, p, _mime(p), os.path.getsize(p)))
        if not clip.items:
            clip.error = f"no media found for the clip (looked for: {', '.join(self.media)})"
        elif missing:
            clip.warnings.append("missing " + ", ".join(missing))
        return clip


def with_subtitle(prompt, subtitle, lang="en"):
    """The prompt with the subtitle: in place of a ``{SUBTITLE}`` placeholder if the prompt has one, else
    appended in a delimited block. ``subtitle`` None (no subtitle list given) leaves the prompt alone."""
    lang = lang if lang in SUBTITLE_BLOCK else "en"
    text = subtitle if subtitle else NO_SUBTITLE[lang]
    if "{SUBTITLE}" in prompt:
        return prompt.replace("{SUBTITLE}", text if subtitle is not None else NO_SUBTITLE[lang])
    if subtitle is None:
        return prompt
    return prompt.rstrip("\n") + SUBTITLE_BLOCK[lang].format(text=text)
