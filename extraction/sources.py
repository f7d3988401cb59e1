"""Where each clip's input comes from, and its decoding into what an encoder's preprocessor takes.

=========  ============================================================================================
modality   inputs (looked up by clip name; folders are listed once, not probed per name)
=========  ============================================================================================
audio      ``--audio_dir``: ``<name>.wav|flac|mp3|m4a|...``; else ``--video_dir``: the audio track of
           ``<name>.mp4|avi|mkv|...``. Decoded with PyAV, mixed to mono, resampled to the encoder's rate.
visual     ``--face_dir``: MERTools' face crops ``<name>/<name>.npy`` (``(T, H, W, 3)``, BGR as OpenCV
           saved them), or a folder of face images ``<name>/`` or ``<name>_aligned/`` (OpenFace's aligned
           output); or ``--video_dir``: frames of ``<name>.<ext>``, whole (``--faces none``) or the face a
           detector finds in each (``--faces detect``).
text       ``--subtitles``: a CSV with a ``name`` column and the ``--subtitle_col`` column.
=========  ============================================================================================

Every failure is a :class:`extraction.media.MediaError` with a reason code, so that the run can report
the clip and go on.
"""

import hashlib
import os

import config
from extraction import media
from extraction.media import MediaError
from dataloader.files import SUBTITLE_COLUMNS, DataError, index_files, read_names_csv, read_subtitles


class FrameRule:
    """Which frames a visual clip gives: every frame, ``num_frames`` sampled uniformly (MERTools' rule;
    ``pad`` repeats the last up to ``num_frames``, as MERTools' resampling for DINOv2 and VideoMAE does), or
    ``fps`` frames a second (video files only)."""

    def __init__(self, num_frames=None, fps=None, pad=False):
        if num_frames is not None and fps is not None:
            raise DataError("give --frames or --fps, not both")
        self.num_frames, self.fps, self.pad = num_frames, fps, pad

    def describe(self):
        if self.fps:
            return f"{self.fps:g} per second"
        if self.num_frames:
            return f"{self.num_frames} uniform" + (" (last repeated)" if self.pad else "")
        return "all"

    def select(self, frames):
        idx = media.sample_frame_indices(len(frames), num_frames=self.num_frames, pad=self.pad)
        return frames[idx]


class Sources:
    """Input lookup for one modality; built in the main process, then used (copied) by decoding workers."""

    def __init__(self, modality, audio_dir=None, video_dir=None, face_dir=None, subtitles=None, subtitle_col=None,
                 faces="none", face_channels="bgr", frame_rule=None, sample_rate=16000):
        self.modality = modality
        self.faces, self.face_channels = faces, face_channels
        self.frame_rule = frame_rule or FrameRule()
        self.sample_rate = int(sample_rate)
        self.audio, self.video, self.face_entries, self.texts, self.subtitle_col = {}, {}, {}, None, None
        self.parts = []
        self._detector = None
        if faces not in ("none", "detect"):
            raise DataError(f"--faces '{faces}': use none (whole frames) or detect")
        if face_channels not in ("bgr", "rgb"):
            raise DataError(f"--face_channels '{face_channels}': use bgr (MERTools/OpenCV arrays) or rgb")
        if modality == "audio":
            if not (audio_dir or video_dir):
                raise DataError("audio extraction needs --audio_dir (wav/flac/...) or --video_dir (audio tracks), "
                                "or a data set whose config.DATASETS entry has audio_dir or video_dir")
            if audio_dir:
                self.audio = index_files(audio_dir, media.AUDIO_EXTS, "audio")
                self.parts.append(f"{len(self.audio)} audio files in {audio_dir}")
            if video_dir:
                self.video = index_files(video_dir, media.VIDEO_EXTS, "video")
                self.parts.append(f"audio tracks of {len(self.video)} videos in {video_dir}")
        elif modality == "visual":
            if face_dir and video_dir:
                raise DataError("give --face_dir or --video_dir for visual features, not both (one feature folder should "
                                "not mix face crops and video frames)")
            if not (face_dir or video_dir):
                raise DataError("visual extraction needs --face_dir (MERTools face crops or aligned face images) or "
                                "--video_dir, or a data set whose config.DATASETS entry has face_dir or video_dir")
            if face_dir:
                self.face_entries = self._face_index(face_dir)
                self.parts.append(f"face crops of {len(self.face_entries)} clips in {face_dir}")
                if self.frame_rule.fps:
                    raise DataError("--fps needs time stamps, which face crops lack: use --frames N with --face_dir")
            if video_dir:
                self.video = index_files(video_dir, media.VIDEO_EXTS, "video")
                if faces == "detect":  # fail here, once, when OpenCV is missing (each worker builds its own)
                    from extraction.faces import FaceDetector

                    FaceDetector()
                how = "faces found by the detector" if faces == "detect" else "whole frames"
                self.parts.append(f"{how} of {len(self.video)} videos in {video_dir}")
        elif modality == "text":
            if not subtitles:
                raise DataError("text extraction needs --subtitles (a CSV with name and text columns), or a data set "
                                "whose config.DATASETS entry has subtitle_csv")
            self.texts, self.subtitle_col = self._read_subtitles(subtitles, subtitle_col)
            self.parts.append(f"column '{self.subtitle_col}' of {subtitles} ({len(self.texts)} rows)")
        else:
            raise DataError(f"--modality '{modality}': use audio, visual or text")

    @staticmethod
    def _face_index(folder):
        """``{name: ("npy", path) | ("images", folder)}`` from the entries of ``folder``."""
        if not os.path.isdir(folder):
            raise DataError(f"--face_dir '{folder}' is not a folder")
        out = {}
        with os.scandir(folder) as it:
            for e in it:
                if not e.is_dir():
                    continue
                name = e.name[:-len("_aligned")] if e.name.endswith("_aligned") else e.name
                npy = os.path.join(e.path, name + ".npy")
                if os.path.isfile(npy):
                    out[name] = ("npy", npy)
                elif name not in out:
                    out[name] = ("images", e.path)
        return out

    @staticmethod
    def _read_subtitles(path, column):
        """``({name: text}, column)``. The default column is ``chinese`` where there is one (MERTools' default),
        else the first of the teacher client's (text, subtitle, english, chinese)."""
        import pandas as pd

        if column is None and os.path.isfile(path):
            header = [str(c).strip() for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
            column = "chinese" if "chinese" in header else next((c for c in SUBTITLE_COLUMNS if c in header), None)
        return read_subtitles(path, column), column

    def describe(self):
        return "; ".join(self.parts)

    def identity(self):
        """Input settings that change the features (compared across runs into one folder)."""
        if self.modality == "visual":
            return {"frames": self.frame_rule.describe(),
                    "frame_source": "face crops" if self.face_entries else
                    ("detected faces" if self.faces == "detect" else "whole video frames"),
                    "face_channels": self.face_channels if self.face_entries else None}
        if self.modality == "text":
            return {"subtitle_col": self.subtitle_col}
        return {}

    def input_of(self, name):
        """The file (or subtitle column) a clip is read from, for the report."""
        if self.modality == "text":
            return self.subtitle_col
        if self.modality == "visual" and name in self.face_entries:
            return self.face_entries[name][1]
        return self.audio.get(name) or self.video.get(name) or ""

    def fingerprint(self, name):
        """What a clip's feature was made from, in a short string, or None when it has no input now.

        Text: a SHA-256 of the text given to the model. Media: the size and mtime (ns) of the input file, as
        the feature packs check their files (dataloader/features.py); an image folder: a hash of its files'
        names, sizes and mtimes. One ``stat`` per file; the file is not read."""
        if self.modality == "text":
            if name not in self.texts:
                return None
            return "sha256:" + hashlib.sha256(str(self.texts[name]).strip().encode("utf-8")).hexdigest()[:16]
        kind, path = self.face_entries.get(name) or ("file", self.audio.get(name) or self.video.get(name))
        try:
            if kind != "images":
                if not path:
                    return None
                st = os.stat(path)
                return f"{st.st_size}:{st.st_mtime_ns}"
            with os.scandir(path) as it:
                files = sorted((e.name, st.st_size, st.st_mtime_ns) for e in it if e.is_file() for st in [e.stat()])
        except OSError:
            return None
        return f"{len(files)} files:" + hashlib.sha256(repr(files).encode("utf-8")).hexdigest()[:16]

    def missing(self, name):
        """The MediaError for a name with no input."""
        if self.modality == "text":
            return MediaError("missing_text", f"no subtitle row for '{name}'")
        return MediaError("missing_file", f"no input for '{name}' ({self.describe()})")

    def load(self, name):
        """Raw input of ``name``: a float32 waveform (audio), RGB frames ``(T, H, W, 3)`` (visual) or a string."""
        if self.modality == "text":
            if name not in self.texts:
                raise self.missing(name)
            text = str(self.texts[name]).strip()
            if not text or text.lower() == "nan":
                raise MediaError("missing_text", f"the subtitle of '{name}' in column '{self.subtitle_col}' is empty")
            return text
        if self.modality == "audio":
            path = self.audio.get(name) or self.video.get(name)
            if path is None:
                raise self.missing(name)
            return media.load_audio(path, self.sample_rate)
        if name in self.face_entries:
            kind, path = self.face_entries[name]
            frames = media.load_face_array(path, self.face_channels) if kind == "npy" else media.load_image_folder(path)
            return self.frame_rule.select(frames)
        path = self.video.get(name)
        if path is None:
            raise self.missing(name)
        if self.faces == "detect":  # every frame is searched; the rule applies to the frames with a face
            from extraction.faces import FaceDetector, crop_faces

            if self._detector is None:
                self._detector = FaceDetector()
            frames = media.load_video_frames(path, fps=self.frame_rule.fps)
            faces = crop_faces(frames, self._detector, source=path)
            return FrameRule(self.frame_rule.num_frames, None, self.frame_rule.pad).select(faces)
        return media.load_video_frames(path, num_frames=self.frame_rule.num_frames, fps=self.frame_rule.fps,
                                       pad=self.frame_rule.pad)


class ClipInputs:
    """Several inputs of one clip for a multimodal LLM's chat input (``extraction.mllm``): its frames (``video``), its
    audio (``audio``) and its subtitle (``subtitle``), each from a :class:`Sources` of that modality. A clip lacking
    any of them is reported missing; its fingerprint joins theirs, so a change to any input redoes the clip."""

    KINDS = {"video": "visual", "audio": "audio", "subtitle": "text"}

    def __init__(self, parts):
        self.parts = dict(parts)
        self.modality = "multi"
        self.subtitle_col = self.parts["subtitle"].subtitle_col if "subtitle" in self.parts else None
        self.sample_rate = self.parts["audio"].sample_rate if "audio" in self.parts else 16000

    def describe(self):
        return "; ".join(f"{k}: {s.describe()}" for k, s in self.parts.items())

    def identity(self):
        out = {"inputs": list(self.parts)}
        for s in self.parts.values():
            out.update(s.identity())
        return out

    def input_of(self, name):
        return " + ".join(str(s.input_of(name)) for s in self.parts.values())

    def fingerprint(self, name):
        fps = [s.fingerprint(name) for s in self.parts.values()]
        return None if any(f is None for f in fps) else "|".join(fps)

    def load(self, name):
        return {k: s.load(name) for k, s in self.parts.items()}


def dataset_names(dataset):
    """Sorted union of a registered data set's label table, test list and unlabelled list."""
    if dataset not in config.DATASETS:
        raise DataError(f"unknown --dataset '{dataset}': registered are {', '.join(config.DATASETS)} (config.DATASETS)")
    ds = config.DATASETS[dataset]
    names, used = set(), []
    for key in ("label_csv", "test_csv", "unlabeled_csv"):
        path = ds.get(key)
        if path:
            if not os.path.isfile(path):
                raise DataError(f"the {key} of data set '{dataset}' ('{path}') does not exist; write it first (for "
                                "the clip demo: python preprocess/make_clip_demo.py)")
            names.update(read_names_csv(path))
            used.append(os.path.basename(path))
    if not names:
        raise DataError(f"data set '{dataset}' lists no names (label_csv, test_csv and unlabeled_csv are all empty)")
    return sorted(names), used
