"""An optional face detector whose weights ship inside a PyPI package: OpenCV's frontal-face Haar cascade.

For clips that come without face crops: :class:`FaceDetector` finds the largest frontal face of a frame
and cuts a square crop around it; :func:`crop_faces` does so for a clip's frames. The cascade file
``haarcascade_frontalface_default.xml`` is part of the ``opencv-python-headless`` wheel (versions below 5;
OpenCV 5 wheels no longer ship the cascades), so nothing is downloaded and it runs on CPU. It finds frontal
and near-frontal faces only; profiles and strongly tilted heads are missed.
"""

import os

import numpy as np

from extraction.media import MediaError
from common.errors import OptionalDependencyError

OPENCV_PIP = 'pip install "opencv-python-headless>=4.8,<5"'
CASCADE = "haarcascade_frontalface_default.xml"


def _cascade_path(cv2):
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(folder, CASCADE) if folder else None
    if path is None or not os.path.isfile(path):
        version = getattr(cv2, "__version__", "?")
        raise OptionalDependencyError(
            f"the face detector needs OpenCV's Haar cascade {CASCADE}, which the installed OpenCV {version} does "
            f"not ship (OpenCV 5 wheels dropped the cascades). Install a 4.x wheel with: {OPENCV_PIP}")
    return path


class FaceDetector:
    """The largest frontal face of an RGB frame, and a square crop around it.

    ``margin``: share of the face side added on each side of the crop; ``size``: side of the returned crop
    in pixels; ``scale_factor``, ``min_neighbors``: OpenCV's ``detectMultiScale`` settings;
    ``min_size_frac``: smallest face side searched for, as a share of the frame's shorter side."""

    def __init__(self, margin=0.2, size=224, scale_factor=1.1, min_neighbors=5, min_size_frac=0.1):
        try:
            import cv2
        except ImportError as e:
            raise OptionalDependencyError(
                f"the face detector needs OpenCV, which could not be imported ({e}). Install it with: {OPENCV_PIP}"
            ) from e
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(_cascade_path(cv2))
        if self._cascade.empty():
            raise OptionalDependencyError(f"OpenCV could not load its Haar cascade {CASCADE}; reinstall it with: "
                                          f"{OPENCV_PIP}")
        self.margin, self.size = float(margin), int(size)
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.min_size_frac = float(min_size_frac)

    def detect(self, frame_rgb):
        """``(x, y, w, h)`` in pixels of the largest face in an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray)
        frame, or None when there is none."""
        frame = np.asarray(frame_rgb)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[-1] != 3):
            raise ValueError(f"FaceDetector: expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
        gray = frame if frame.ndim == 2 else self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
        side = max(1, int(round(self.min_size_frac * min(gray.shape))))
        faces = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
        return int(x), int(y), int(w), int(h)

    def crop(self, frame_rgb):
        """A ``(size, size, 3)`` uint8 RGB crop around the largest face, or None when there is none: a square
        of side ``max(w, h) * (1 + 2 * margin)`` centred on the face, clipped to the frame, then resized."""
        box = self.detect(frame_rgb)
        if box is None:
            return None
        frame = np.asarray(frame_rgb)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        x, y, w, h = box
        half = max(w, h) * (1 + 2 * self.margin) / 2
        cx, cy = x + w / 2, y + h / 2
        x0, x1 = max(0, int(round(cx - half))), min(frame.shape[1], int(round(cx + half)))
        y0, y1 = max(0, int(round(cy - half))), min(frame.shape[0], int(round(cy + half)))
        patch = np.ascontiguousarray(frame[y0:y1, x0:x1])
        shrink = patch.shape[0] > self.size or patch.shape[1] > self.size
        interp = self._cv2.INTER_AREA if shrink else self._cv2.INTER_LINEAR
        return self._cv2.resize(patch, (self.size, self.size), interpolation=interp)


def crop_faces(frames, detector, source=None):
    """One face crop per frame that shows a face, ``(T', size, size, 3)`` uint8 RGB (frames without one are
    dropped). ``source`` (e.g. the clip's path) names the clip in the error raised when no frame has a face:
    MediaError("no_face")."""
    crops = [c for c in (detector.crop(f) for f in frames) if c is not None]
    if not crops:
        what = f" of {source}" if source else ""
        raise MediaError("no_face", f"no face found in any of the {len(frames)} frames{what} (OpenCV's frontal-"
                                    "face cascade; profile views and very small faces are missed).")
    return np.stack(crops)
