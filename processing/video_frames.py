"""What AuroraLong's video reading hands out: sampled frames with their indices and times (`VideoFrames`), a video's
metadata (`VideoMetadata`), the warning for frames lost to damaged data, and pre-decoded frames (a list of PIL
images / arrays / tensors, a numpy array or a torch tensor) turned into `VideoFrames` (`frames_from_array`).

Every reader (processing/video_pyav.py, processing/video_decord.py) delivers `VideoFrames`; the public entry points
are in processing/video_io.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .image_io import upright

__all__ = ["DamagedVideoWarning", "VideoFrames", "VideoMetadata", "frames_from_array", "is_torch_tensor"]


class DamagedVideoWarning(UserWarning):
    """Some sampled frames of a video were lost to damaged data and replaced by the nearest good frames."""


@dataclass
class VideoMetadata:
    """What is known about a video without decoding it.

    `num_frames` counts the video stream's packets (one per frame), not what the container header claims, so it
    is right for files whose stream reports no count (webm / mkv) and for variable frame rate files. `fps` is the
    average rate `(num_frames - 1) / (last - first timestamp)` (the stream's nominal rate when there is a single
    frame, None when unknown). `duration` is `last - first timestamp + 1 / fps`: the span of the frames plus one
    average frame interval, i.e. the time from the first frame's start to the last frame's end
    (None when fps is unknown). `width` x `height` is the frame size as shown, after `rotation` (degrees
    counterclockwise, ffprobe's sign; 0, 90, 180 or -90) has been applied to the decoded frames.
    """

    source: str  # the path, "<file object>", or "<frames>"
    num_frames: int
    fps: float | None
    duration: float | None
    width: int
    height: int
    rotation: int = 0


@dataclass
class VideoFrames:
    """Sampled frames: `frames[k]` is frame `indices[k]` (display order) shown at `timestamps[k]` seconds.

    `indices` ascend; a frame that stands in for a lost neighbour (processing/video_pyav.py: damaged data) can appear
    twice."""

    frames: np.ndarray  # [F, H, W, 3] uint8 RGB, F >= 1
    indices: list[int]
    timestamps: list[float]  # relative to the first frame of the video
    metadata: VideoMetadata

    def __len__(self) -> int:
        return len(self.indices)


# ------------------------------------------------------------------------------------------ pre-decoded frames


def is_torch_tensor(value) -> bool:
    """Whether `value` is a torch tensor, without importing torch (a tensor implies torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _to_numpy(value, what: str) -> np.ndarray:
    if is_torch_tensor(value):
        value = value.detach().cpu()
        if value.dtype.is_floating_point or value.dtype.is_complex or str(value.dtype) != "torch.uint8":
            raise ValueError(f"<frames>: {what} must be uint8 (0..255), got a {value.dtype} tensor")
        return value.numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"<frames>: {what} must be a numpy array, a torch tensor or a PIL image, got {type(value)}")
    return value


def _channels_last(array: np.ndarray, what: str) -> np.ndarray:
    """[..., H, W, C] or [..., C, H, W] (C in 1, 3, 4) -> [..., H, W, 3] uint8."""
    if array.dtype != np.uint8:
        raise ValueError(f"<frames>: {what} must be uint8 (0..255), got {array.dtype}")
    if array.shape[-1] in (1, 3, 4):
        pass
    elif array.shape[-3] in (1, 3, 4):
        array = np.moveaxis(array, -3, -1)
    else:
        raise ValueError(
            f"<frames>: {what} of shape {tuple(array.shape)} has no channel axis of size 1, 3 or 4 "
            "(expected [..., H, W, C] or [..., C, H, W])"
        )
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]  # RGBA: drop alpha
    if 0 in array.shape:
        raise ValueError(f"<frames>: {what} has an empty axis: shape {tuple(array.shape)}")
    return np.ascontiguousarray(array)


def _image_to_array(image, position: int) -> np.ndarray:
    what = f"frame {position}"
    if hasattr(image, "convert") and hasattr(image, "size") and hasattr(image, "mode"):  # a PIL image
        return np.asarray(upright(image), dtype=np.uint8)
    array = _to_numpy(image, what)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"<frames>: {what} must be [H, W, C], [C, H, W] or [H, W], got shape {tuple(array.shape)}")
    return _channels_last(array, what)


def frames_from_array(video) -> VideoFrames:
    """Pre-decoded frames -> `VideoFrames`, all of them, in the order given.

    Takes a list / tuple of PIL images (any mode, converted to RGB, turned by their EXIF orientation) or of
    [H, W, C] / [C, H, W] / [H, W] uint8 arrays or tensors, or one uint8 numpy array / torch tensor [F, H, W, C] or
    [F, C, H, W] (C = 3; 1 is repeated to RGB, 4 loses its alpha). There are no timestamps: indices are 0 .. F-1
    and each frame's timestamp is its index (as if one frame per second); metadata.fps and metadata.duration are
    None, source "<frames>".
    """
    if isinstance(video, VideoFrames):
        return video
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("<frames>: an empty list of frames")
        arrays = [_image_to_array(image, k) for k, image in enumerate(video)]
        shape = arrays[0].shape
        for k, array in enumerate(arrays):
            if array.shape != shape:
                raise ValueError(
                    f"<frames>: frames of different sizes in one list: frame 0 is {shape[1]}x{shape[0]}, "
                    f"frame {k} is {array.shape[1]}x{array.shape[0]} (width x height)"
                )
        frames = np.stack(arrays)
    else:
        array = _to_numpy(video, "the frames array")
        if array.ndim != 4:
            raise ValueError(
                f"<frames>: a frames array must have rank 4, [F, H, W, C] or [F, C, H, W], got shape "
                f"{tuple(array.shape)}" + (" (a single image? add a leading frame axis)" if array.ndim == 3 else "")
            )
        if array.shape[0] == 0:
            raise ValueError("<frames>: the frames array holds no frame (shape[0] == 0)")
        frames = _channels_last(array, "the frames array")
    count, height, width = frames.shape[:3]
    metadata = VideoMetadata("<frames>", int(count), None, None, int(width), int(height))
    return VideoFrames(frames, list(range(count)), [float(k) for k in range(count)], metadata)
