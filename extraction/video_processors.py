"""Video processors of the multimodal LLMs without torchvision: NumPy + Pillow re-implementations and a loader.

transformers' video processors (``Qwen2VLVideoProcessor``: Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni;
``InternVLVideoProcessor``: InternVL) derive from ``BaseVideoProcessor``, which needs torchvision: without it
``AutoProcessor.from_pretrained`` raises ImportError on these checkpoints, although the tokenizer, the image
processor (Pillow backend) and the feature extractor all load. :func:`load_processor` loads the real processor
whenever it loads; otherwise it assembles the same processor class from those parts and a Pillow video processor
built from the checkpoint's saved video-processor settings, and says which one it returned (``video_backend``:
``"torchvision"`` or ``"pil"``), so that features are recorded with the pixels they were made from.

:class:`PilQwen2VLVideoProcessor` and :class:`PilInternVLVideoProcessor` follow the real classes' default path
(frames given, no frame sampling): RGB conversion, resize, rescale, normalise, and for Qwen the temporal padding
and the patch layout. Everything but the resize is exact (float32, the same operations in the same order: equal to
the bit without resizing). On the CPU the real classes resize uint8 frames with torch's native uint8 antialiased
kernel (bicubic: a port of Pillow's, width pass then height pass, each rounded to 8 bits); these resize them with
Pillow's ``Image.resize`` in that pass order (:func:`_resize_8bit`). The two differ only in the fixed-point
rounding of the filter weights: measured on noise and smooth frames from 37x53 to 720x1280 px, 99.2 % of resized
pixels are equal, 0.8 % one level (of 255) apart, 0.004 % two, none more; after normalisation at most 0.030 (CLIP
mean/std) or 0.035 (ImageNet's). Output keys, dtypes, shapes and grids are the real classes'. (With
``device="cuda"`` torchvision resizes in float32 instead, without the clipping to 8 bits between passes: measured
with that float path on the CPU, up to 24 levels from the uint8 result on noise, one on smooth frames.)
"""

import math

import numpy as np

from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ChannelDimension, PILImageResampling,
                                      SizeDict, get_image_size_for_max_height_width, infer_channel_dimension_format)
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import make_batched_metadata, make_batched_videos


def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280):
    """Qwen2-VL's frame size: both sides multiples of ``factor``, ``min_pixels`` <= area <= ``max_pixels``, the
    aspect ratio kept as well as that allows (a copy of ``transformers``' ``smart_resize``)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patchify(videos, patch_size, merge_size, temporal_patch_size):
    """``(B, T, C, H, W)`` -> ``((B, t * h * w, C * tp * p * p), t, h, w)``, Qwen2-VL's patch layout: a clip with
    a frame count that is not a multiple of ``temporal_patch_size`` has its last frame repeated; patches run over
    (temporal patch, merge-block row, merge-block column, row in block, column in block), each one flattened as
    (channel, frame, y, x)."""
    batch, frames, channels, height, width = videos.shape
    if pad := -frames % temporal_patch_size:
        videos = np.concatenate([videos, np.repeat(videos[:, -1:], pad, axis=1)], axis=1)
        frames += pad
    factor = patch_size * merge_size
    if height % factor or width % factor:
        raise ValueError(f"frames of {height}x{width} px do not split into {factor} px blocks (patch {patch_size} x "
                         f"merge {merge_size}); resize them (do_resize=True)")
    grid_t, grid_h, grid_w = frames // temporal_patch_size, height // patch_size, width // patch_size
    patches = videos.reshape(batch, grid_t, temporal_patch_size, channels, grid_h // merge_size, merge_size,
                             patch_size, grid_w // merge_size, merge_size, patch_size)
    patches = patches.transpose(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return (patches.reshape(batch, grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size ** 2),
            grid_t, grid_h, grid_w)


_RESAMPLE_BY_NAME = {"nearest": PILImageResampling.NEAREST, "nearest-exact": PILImageResampling.NEAREST,
                     "bilinear": PILImageResampling.BILINEAR, "bicubic": PILImageResampling.BICUBIC,
                     "box": PILImageResampling.BOX, "hamming": PILImageResampling.HAMMING,
                     "lanczos": PILImageResampling.LANCZOS}


def _pil_resample(resample):
    """A ``PILImageResampling`` (or its int) as is; torchvision's ``InterpolationMode`` by its name."""
    if resample is None:
        return PILImageResampling.BILINEAR  # TorchvisionBackend.resize's default
    if isinstance(resample, (int, PILImageResampling)):
        return PILImageResampling(int(resample))
    return _RESAMPLE_BY_NAME[str(getattr(resample, "value", resample)).lower()]


def _resize_8bit(img, width, height, resample):
    """Width first, then height, each pass rounded to 8 bits: the order of torch's native uint8 antialiased
    kernel (which torchvision uses for bicubic uint8 frames on the CPU). Pillow, asked for both at once, shrinks
    the height first when the width grows; the two orders differ by up to 22 levels (measured) where the bicubic
    kernel overshoots (noise, hard edges), since the intermediate image is clipped to 0..255."""
    if img.width != width and img.height != height:
        img = img.resize((width, img.height), resample)
    return img.resize((width, height), resample)


def resize_frames(video, height, width, resample):
    """``(T, C, H, W)`` frames -> ``(T, C, height, width)`` with Pillow's ``Image.resize``: uint8 frames as 8-bit
    images (RGB, or a channel at a time; see :func:`_resize_8bit`), other dtypes a channel at a time as 32-bit
    float images."""
    from PIL import Image

    frames, channels, h, w = video.shape
    if (h, w) == (height, width):
        return video
    resample = _pil_resample(resample)
    if video.dtype == np.uint8 and channels == 3:
        out = [np.asarray(_resize_8bit(Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0)), "RGB"), width,
                                       height, resample)).transpose(2, 0, 1) for f in video]
        return np.stack(out)
    mode, dtype = ("L", np.uint8) if video.dtype == np.uint8 else ("F", np.float32)
    out = np.empty((frames, channels, height, width), dtype=dtype)
    for t in range(frames):
        for c in range(channels):
            img = Image.fromarray(np.ascontiguousarray(video[t, c], dtype=dtype), mode)
            out[t, c] = np.asarray(_resize_8bit(img, width, height, resample) if mode == "L"
                                   else img.resize((width, height), resample))
    return out if video.dtype == np.uint8 else out.astype(video.dtype, copy=False)


def rescale_and_normalize(video, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
    """``TorchvisionBackend.rescale_and_normalize`` in NumPy, the same float32 operations: rescale and normalise
    fused into ``(x - mean / rescale_factor) / (std / rescale_factor)``."""
    if do_rescale and do_normalize:
        scale = np.float32(1.0 / rescale_factor)
        mean = np.asarray(image_mean, dtype=np.float32).reshape(-1) * scale
        std = np.asarray(image_std, dtype=np.float32).reshape(-1) * scale
    else:
        mean = np.asarray(image_mean, dtype=np.float32).reshape(-1) if do_normalize else None
        std = np.asarray(image_std, dtype=np.float32).reshape(-1) if do_normalize else None
    if do_normalize:
        shape = (-1, 1, 1) if mean.size > 1 else ()
        return (video.astype(np.float32) - mean.reshape(shape)) / std.reshape(shape)
    if do_rescale:
        return video.astype(np.float32) * np.float32(rescale_factor)
    return video


def center_crop(video, height, width):
    """``TorchvisionBackend.center_crop``: zero-pad a side shorter than the crop, then crop the middle."""
    h, w = video.shape[-2:]
    if height > h or width > w:
        top, left = max(0, (height - h) // 2), max(0, (width - w) // 2)
        bottom, right = max(0, (height - h + 1) // 2), max(0, (width - w + 1) // 2)
        video = np.pad(video, [(0, 0), (0, 0), (top, bottom), (left, right)])
        h, w = video.shape[-2:]
    top, left = int((h - height) / 2.0), int((w - width) / 2.0)
    return video[..., top:top + height, left:left + width]


def convert_to_rgb(video):
    """``BaseVideoProcessor.convert_to_rgb`` on ``(T, C, H, W)``: grey repeated to three channels; RGBA without
    transparency loses its alpha channel, with transparency it is blended onto white (kept in float, as the real
    one does, but rounded back to uint8 for uint8 input, which Pillow resizes)."""
    channels = video.shape[1]
    if channels == 1:
        return np.repeat(video, 3, axis=1)
    if channels != 4:
        return video
    if not (video[:, 3] < 255).any():
        return video[:, :3]
    alpha = (video[:, 3:4] / 255.0).astype(np.float32)
    blended = (1 - alpha) * 255 + alpha * video[:, :3]
    return np.clip(np.round(blended), 0, 255).astype(np.uint8) if video.dtype == np.uint8 else blended


def _target_size(height, width, size):
    """``TorchvisionBackend.resize``'s output size for a ``SizeDict``."""
    if size.shortest_edge and size.longest_edge:
        return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
    if size.shortest_edge:
        return get_resize_output_image_size(np.empty((1, height, width)), size=size.shortest_edge,
                                            default_to_square=False, input_data_format=ChannelDimension.FIRST)
    if size.max_height and size.max_width:
        return get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
    if size.height and size.width:
        return size.height, size.width
    raise ValueError(f"Size must contain 'height' and 'width' keys, or 'max_height' and 'max_width', or "
                     f"'shortest_edge' key. Got {size}.")


class _PilVideoProcessor(VideoProcessorMixin):
    """What the Pillow video processors share: ``BaseVideoProcessor``'s attribute handling, input preparation and
    ``preprocess`` flow, in NumPy. It derives from ``VideoProcessorMixin`` (importable without torchvision), so
    ``from_dict``, ``from_pretrained``, ``to_dict`` and ``save_pretrained`` are transformers' own; ``to_dict``
    saves the real class's name."""

    backend = "pil"
    real_class = None  # the name of the transformers class this one stands in for

    def __init__(self, **kwargs):
        super().__init__(**kwargs)  # ImageProcessingMixin: every saved setting becomes an attribute
        self._set_attributes(**kwargs)  # the valid kwargs resolved against the class defaults, standardised

    def to_dict(self):
        out = super().to_dict()
        out["video_processor_type"] = self.real_class
        return out

    def __call__(self, videos=None, return_tensors=None, **kwargs):
        return self.preprocess(videos, return_tensors=return_tensors, **kwargs)

    def preprocess(self, videos, **kwargs):
        """``BaseVideoProcessor.preprocess``: the call's kwargs over the instance's settings (unknown ones are
        ignored), then :meth:`_preprocess`. Frames are taken as given (no sampling)."""
        valid = set(self.valid_kwargs.__annotations__)
        kwargs = {k: v for k, v in kwargs.items() if k in valid or k == "return_tensors"}
        for name in valid:
            kwargs.setdefault(name, getattr(self, name, None))
        if kwargs.pop("do_sample_frames") and (kwargs.get("num_frames") is not None or kwargs.get("fps") is not None):
            raise NotImplementedError(f"{type(self).__name__} (the Pillow stand-in for {self.real_class}) does not "
                                      "sample frames: pass the frames to use, with do_sample_frames=False")
        if isinstance(videos, str) or (isinstance(videos, (list, tuple)) and videos and isinstance(videos[0], str)):
            raise ValueError(f"{type(self).__name__} takes decoded frames, not paths or URLs")
        videos = make_batched_videos(videos)
        metadata = make_batched_metadata(videos, video_metadata=kwargs.pop("video_metadata"))
        videos = self._prepare_input_videos(videos, kwargs.pop("do_convert_rgb"), kwargs.pop("input_data_format"))
        kwargs = self._standardize_kwargs(**kwargs)
        self._validate_preprocess_kwargs(**kwargs)
        for name in ("data_format", "device"):
            kwargs.pop(name, None)
        return_metadata = kwargs.pop("return_metadata")
        out = self._preprocess(videos=videos, **kwargs)
        if return_metadata:
            out["video_metadata"] = metadata
        return out

    @staticmethod
    def _prepare_input_videos(videos, do_convert_rgb, input_data_format):
        """Each video as a ``(T, C, H, W)`` array (``BaseVideoProcessor._prepare_input_videos``: the channel
        layout is inferred from the first video unless given)."""
        prepared = []
        for video in videos:
            video = np.asarray(video.numpy() if hasattr(video, "numpy") else video)
            if video.ndim != 4 or not len(video):
                raise ValueError(f"a video is (frames, height, width, channels) or (frames, channels, height, width) "
                                 f"with at least one frame; got shape {video.shape}")
            if input_data_format is None:
                input_data_format = infer_channel_dimension_format(video)
            if ChannelDimension(input_data_format) == ChannelDimension.LAST:
                video = video.transpose(0, 3, 1, 2)
            if do_convert_rgb:
                video = convert_to_rgb(video)
            prepared.append(np.ascontiguousarray(video))
        return prepared

    @staticmethod
    def _batch(data, return_tensors):
        """A ``BatchFeature`` as the real classes return one: torch tensors (converted to ``return_tensors``)."""
        import torch
        from transformers import BatchFeature

        tensors = {k: [torch.from_numpy(np.ascontiguousarray(v)) for v in val] if isinstance(val, list)
                   else torch.from_numpy(np.ascontiguousarray(val)) for k, val in data.items()}
        return BatchFeature(data=tensors, tensor_type=return_tensors)


class PilQwen2VLVideosKwargs(VideosKwargs, total=False):
    """The settings ``Qwen2VLVideoProcessor`` takes beyond the common ones (transformers routes a processor call's
    kwargs named here to the video processor)."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_frames: int
    max_frames: int
    cap_pixels_per_frame: bool
    max_video_tokens: int


class PilQwen2VLVideoProcessor(_PilVideoProcessor):
    """``Qwen2VLVideoProcessor`` (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni) in NumPy and Pillow.

    ``videos``: a list of clips, each ``(T, H, W, 3)`` uint8 (or ``(T, 3, H, W)``, a list of frames or PIL
    images). Each clip is resized to :func:`smart_resize` of its frame size (multiples of ``patch_size *
    merge_size``, area within ``size["shortest_edge"]``..``size["longest_edge"]``; with
    ``cap_pixels_per_frame=True`` the upper bound is also an even share of ``max_video_tokens`` over the clip's
    frames, as qwen-vl-utils does; unset means off, the real class's current default), rescaled, normalised and cut
    into patches (:func:`patchify`). Returns ``pixel_values_videos`` ``(sum of t*h*w, 3 * temporal_patch_size *
    patch_size ** 2)`` float32 and ``video_grid_thw`` ``(clips, 3)`` int64 (plus ``video_metadata`` when
    ``return_metadata``)."""

    real_class = "Qwen2VLVideoProcessor"
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    min_frames = 4
    max_frames = 768
    do_sample_frames = False
    cap_pixels_per_frame = None
    max_video_tokens = 128000
    valid_kwargs = PilQwen2VLVideosKwargs
    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, **kwargs):
        size = kwargs.pop("size", None)  # as the real class: min_pixels / max_pixels (legacy configs) set the size
        size = dict(self.size) if size is None else size
        if (min_pixels := kwargs.pop("min_pixels", None)) is not None:
            size["shortest_edge"] = min_pixels
            size.pop("min_pixels", None)
        if (max_pixels := kwargs.pop("max_pixels", None)) is not None:
            size["longest_edge"] = max_pixels
            size.pop("max_pixels", None)
        super().__init__(size=size, **kwargs)

    def _standardize_kwargs(self, size=None, min_pixels=None, max_pixels=None, **kwargs):
        if min_pixels is not None or max_pixels is not None:  # call-time min/max pixels (deprecated upstream)
            size = dict(size) if isinstance(size, (dict, SizeDict)) else {}
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
            size = SizeDict(**size)
        return super()._standardize_kwargs(size=size, **kwargs)

    def frame_size(self, num_frames, height, width, size=None, patch_size=None, merge_size=None,
                   temporal_patch_size=None, cap_pixels_per_frame=None):
        """The resized ``(height, width)`` of a clip's frames (``Qwen2VLVideoProcessor.resize``'s choice)."""
        size = SizeDict(**size) if isinstance(size, dict) else size or self.size
        factor = (patch_size or self.patch_size) * (merge_size or self.merge_size)
        if not size.shortest_edge or not size.longest_edge:
            raise ValueError(f"`size` dict must contain 'shortest_edge' and 'longest_edge' keys but got {size}.")
        max_pixels = size.longest_edge
        if cap_pixels_per_frame:
            total_pixels = int(self.max_video_tokens * factor * factor * 0.9)
            tp = temporal_patch_size or self.temporal_patch_size
            max_pixels = max(min(max_pixels, total_pixels * tp // num_frames), int(size.shortest_edge * 1.05))
        return smart_resize(height, width, factor=factor, min_pixels=size.shortest_edge, max_pixels=max_pixels)

    def _preprocess(self, videos, do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean,
                    image_std, patch_size=None, temporal_patch_size=None, merge_size=None, cap_pixels_per_frame=None,
                    return_tensors=None, **kwargs):
        pixels, grids = [], []
        for video in videos:
            if do_resize:
                h, w = self.frame_size(len(video), *video.shape[-2:], size=size, patch_size=patch_size,
                                       merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                                       cap_pixels_per_frame=cap_pixels_per_frame)
                video = resize_frames(video, h, w, resample)
            video = rescale_and_normalize(video, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
            patches, t, h, w = patchify(video[None], patch_size, merge_size, temporal_patch_size)
            pixels.append(patches[0])
            grids.append([t, h, w])
        return self._batch({"pixel_values_videos": np.concatenate(pixels),
                            "video_grid_thw": np.asarray(grids, dtype=np.int64)}, return_tensors)

    def get_num_of_video_patches(self, num_frames, height, width, videos_kwargs=None):
        """The number of patches of a ``num_frames`` x ``height`` x ``width`` clip (the real class's method, which
        the processors use to count placeholder tokens)."""
        videos_kwargs = videos_kwargs or {}
        size = videos_kwargs.get("size", None) or self.size
        patch_size = videos_kwargs.get("patch_size", None) or self.patch_size
        merge_size = videos_kwargs.get("merge_size", None) or self.merge_size
        temporal_patch_size = videos_kwargs.get("temporal_patch_size", None) or self.temporal_patch_size
        factor = patch_size * merge_size
        resized_height, resized_width = smart_resize(height, width, factor, min_pixels=size["shortest_edge"],
                                                     max_pixels=size["longest_edge"])
        grid_h, grid_w = resized_height // patch_size, resized_width // patch_size
        grid_t = (num_frames + -num_frames % temporal_patch_size) // temporal_patch_size
        return grid_t * grid_h * grid_w


class PilInternVLVideosKwargs(VideosKwargs, total=False):
    initial_shift: bool | float | int


class PilInternVLVideoProcessor(_PilVideoProcessor):
    """``InternVLVideoProcessor`` in NumPy and Pillow: every frame resized to ``size`` (384 x 384 by default; the
    checkpoints save 448), bicubic, rescaled and normalised. Returns ``pixel_values_videos``: one ``(T, 3, S, S)``
    float32 tensor per clip, stacked to ``(clips, T, 3, S, S)`` by ``return_tensors`` (the InternVL processor asks
    for ``"pt"``), as the real class does."""

    real_class = "InternVLVideoProcessor"
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    initial_shift = True
    do_sample_frames = False
    valid_kwargs = PilInternVLVideosKwargs

    def _preprocess(self, videos, do_resize, size, resample, do_center_crop, crop_size, do_rescale, rescale_factor,
                    do_normalize, image_mean, image_std, return_tensors=None, **kwargs):
        out = []
        for video in videos:
            if do_resize:
                video = resize_frames(video, *_target_size(*video.shape[-2:], size), resample)
            if do_center_crop:
                video = center_crop(video, crop_size.height, crop_size.width)
            out.append(rescale_and_normalize(video, do_rescale, rescale_factor, do_normalize, image_mean, image_std))
        return self._batch({"pixel_values_videos": out}, return_tensors)


PIL_VIDEO_PROCESSORS = {cls.real_class: cls for cls in (PilQwen2VLVideoProcessor, PilInternVLVideoProcessor)}


# -------------------------------------------------------------------------------------------------
# Loading a processor
# -------------------------------------------------------------------------------------------------

def _needs_torchvision(exc):
    """Whether ``exc`` (or an exception it was raised from) is transformers asking for torchvision."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if "torchvision" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _processor_subclass(cls):
    """``cls`` (a transformers processor class) accepting a Pillow video processor.

    ``ProcessorMixin.__init__`` checks every part against its base class by name; the video processor's is
    ``VideoProcessorMixin``, which transformers exports only when torchvision is installed, so the check fails
    without it for any video processor. The subclass overrides that check for the ``video_processor`` argument
    alone, letting our Pillow classes through (every other part is checked as before). It keeps ``cls``'s name, so
    ``type(processor).__name__`` and a saved ``processor_class`` are the real ones; its ``__qualname__``
    (``Pil<name>``) is found by this module's ``__getattr__``, so the processor pickles (spawned workers)."""
    if cls.__name__ in _SUBCLASSES:
        return _SUBCLASSES[cls.__name__]

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and isinstance(argument, _PilVideoProcessor):
            return type(argument)
        return cls.check_argument_for_proper_class(self, argument_name, argument)

    sub = type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                      "__module__": __name__, "__qualname__": f"Pil{cls.__name__}",
                                      "__doc__": f"{cls.__name__} with a Pillow video processor."})
    _SUBCLASSES[cls.__name__] = sub
    return sub


_SUBCLASSES = {}


def __getattr__(name):  # PEP 562: Pil<ProcessorClass>, the subclasses above, for unpickling
    import transformers

    if name.startswith("Pil") and name.endswith("Processor") and hasattr(transformers, name[3:]):
        return _processor_subclass(getattr(transformers, name[3:]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Ref:
    """A folder or hub id where a ``ModelRef`` is not given."""

    def __init__(self, path, revision=None):
        self.path, self.revision, self.source, self.trust_remote_code = str(path), revision, "hub", False

    def from_pretrained(self, cls, **kw):
        return cls.from_pretrained(self.path, revision=self.revision, **kw)


def load_processor(ref, processor_class=None, revision=None):
    """The model's processor and how it processes video: ``(processor, video_backend)``.

    ``ref``: an ``extraction.encoders.ModelRef`` (its ``from_pretrained``, ``path``, ``revision``, ``source``) or a
    folder / hub id (with ``revision``). ``AutoProcessor`` first: where it loads, ``video_backend`` is
    ``"torchvision"`` (``None`` when the processor has no video processor). Where it fails because torchvision is
    missing, the processor class (``processor_class``: a class or its name; by default the checkpoint's
    ``processor_class``, else the model type's) is assembled as ``from_pretrained`` would, from the checkpoint's
    tokenizer, image processor (Pillow backend), feature extractor, chat template and processor settings, with the
    Pillow stand-in for its video processor, built from the saved video-processor settings (processor_config.json,
    else video_preprocessor_config.json, else preprocessor_config.json, as transformers reads them), and
    ``video_backend`` is ``"pil"``. Any other failure, or a video processor without a stand-in, raises the
    original error."""
    import transformers

    if not hasattr(ref, "from_pretrained"):
        ref = _Ref(ref, revision)
    try:
        processor = ref.from_pretrained(transformers.AutoProcessor)
        return processor, ("torchvision" if getattr(processor, "video_processor", None) is not None else None)
    except Exception as e:  # noqa: BLE001 - anything but a missing torchvision is raised again below
        if not _needs_torchvision(e):
            raise
        error = e
    try:
        return _assemble(ref, processor_class), "pil"
    except _NoStandIn:
        raise error from None
    except Exception as e:  # the stand-in failed too: both errors, the original as the cause
        raise e from error


class _NoStandIn(Exception):
    pass


def _assemble(ref, processor_class):
    import transformers
    from transformers.processing_utils import ProcessorMixin

    where = dict(revision=ref.revision if getattr(ref, "source", "hub") == "hub" else None)
    processor_dict, _ = ProcessorMixin.get_processor_dict(ref.path, **where)
    video_dict, _ = VideoProcessorMixin.get_video_processor_dict(ref.path, **where)
    processor_class = processor_class or processor_dict.get("processor_class")
    model_type = None
    if processor_class is None or not video_dict.get("video_processor_type"):
        model_type = getattr(ref.from_pretrained(transformers.AutoConfig), "model_type", None)
    if processor_class is None:
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        processor_class = PROCESSOR_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, processor_class, None) if isinstance(processor_class, str) else processor_class
    video_cls = PIL_VIDEO_PROCESSORS.get(_video_processor_name(video_dict, model_type))
    if cls is None or video_cls is None:
        raise _NoStandIn()
    parts = []
    for attribute in cls.get_attributes():
        if attribute == "video_processor":
            parts.append(video_cls.from_dict(video_dict))
        elif attribute == "tokenizer":
            parts.append(ref.from_pretrained(transformers.AutoTokenizer))
        elif attribute == "image_processor":
            parts.append(ref.from_pretrained(transformers.AutoImageProcessor, backend="pil"))
        elif attribute == "feature_extractor":
            parts.append(ref.from_pretrained(transformers.AutoFeatureExtractor))
        else:
            raise _NoStandIn()
    return _processor_subclass(cls).from_args_and_dict(parts, processor_dict)


# AutoVideoProcessor's classes for these model types (its own table names none of them without torchvision)
_MODEL_TYPE_VIDEO_PROCESSOR = {"qwen2_vl": "Qwen2VLVideoProcessor", "qwen2_5_vl": "Qwen2VLVideoProcessor",
                               "qwen2_5_omni": "Qwen2VLVideoProcessor", "internvl": "InternVLVideoProcessor"}


def _video_processor_name(video_dict, model_type):
    """The video processor class ``AutoVideoProcessor`` would pick: the saved ``video_processor_type``, a legacy
    ``...ImageProcessor`` type renamed, else the model type's."""
    name = video_dict.get("video_processor_type")
    if not name and (image_type := video_dict.get("image_processor_type", "")):
        renamed = image_type.replace("ImageProcessor", "VideoProcessor")
        name = renamed if renamed in PIL_VIDEO_PROCESSORS else None
    return name or _MODEL_TYPE_VIDEO_PROCESSOR.get(model_type)
