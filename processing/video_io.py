"""Video input for AuroraLong: open a video, pick frames by their timestamps, decode only those.

Entry points:

- `load_video(video, **sampling)`: a path (str / PathLike), an open binary file object, or pre-decoded frames
  (a list of PIL images / arrays / tensors, a numpy array or a torch tensor) -> `VideoFrames`.
- `read_video(source, ...)`: a file -> the sampled frames, `[F, H, W, 3]` uint8 RGB, with their indices and times.
- `iter_video_chunks(source, chunk_frames, ...)`: the same frames, `chunk_frames` at a time, one decoding pass.
- `plan_video(video, ...)`: the frames the sampling picks, counted before any is decoded (`VideoPlan`), and
  decoded `chunk_frames` at a time on demand; what the processor hands the model for streaming.
- `probe_video(source)`: metadata and every frame's presentation time, from a demux pass (only the first frame is
  decoded, for its display rotation).
- `sample_frame_indices(timestamps, ...)`: the sampling rule alone, on a list of frame times.
- `frames_from_array(video)`: pre-decoded frames -> `VideoFrames`.

How it is done, one module per job:

- processing/video_sampling.py: the sampling rule, on presentation timestamps (never an assumed constant frame
  rate): `fps` (default 1.0) or `num_frames`, `max_frames`, `include_last_frame`, a `start` / `end` window in
  seconds.
- processing/video_source.py: the source (a path, a URL, a file object), checked and named in every message.
- processing/video_probe.py: the demux pass that plans every read (timestamps, keyframes, display rotation,
  truncation).
- processing/video_readers.py: the reader protocol and the readers by `backend` name: processing/video_pyav.py
  (the default: each frame's own colour matrix and range, keyframe jumps, damaged data) and
  processing/video_decord.py (`backend="decord"`, when installed: the same plan, so the same frames as long as
  decord decodes correctly).
- processing/video_frames.py: `VideoFrames`, `VideoMetadata`, `DamagedVideoWarning`, pre-decoded frames.

Size: `max_pixels=P` delivers frames of more than P pixels scaled down, keeping their aspect ratio, to at most P
pixels (`VideoMetadata.width` / `height` stay the video's own size). A video whose frames have more than
`MAX_FRAME_PIXELS` pixels is refused before any frame is decoded (ValueError naming the file and its size): the
limit is that of the codecs' highest levels, beyond which a stream is a decompression bomb rather than a camera's
video (sixteen 8000x8000 H.264 frames make a 190 KB file that decodes to gigabytes). Like Pillow's
`Image.MAX_IMAGE_PIXELS`, it is a module attribute: set `auroralong_hf.processing.video_io.MAX_FRAME_PIXELS` to read
larger frames knowingly (None: no limit).

Network sources: a URL (`http://`, `https://`, `rtmp://`, ...) is opened by ffmpeg with the timeouts
`NETWORK_TIMEOUT` = (seconds to open it, seconds to wait for each packet after that); a server that accepts and
never answers (or stalls part-way) gives a ValueError naming the URL and the timeout instead of a wait without end.
A module attribute (default 30 s each), not an argument: it is a property of the network, the same for every entry
point (processor, describe, lmms-eval, training), and a saved processor config should not carry it. Over the
network the decoder reads on instead of jumping to keyframes, and `backend="decord"` is refused (decord has no
timeout).

Damaged data (PyAV): a sampled frame lost to a damaged packet takes the nearest good frame within
`LOST_FRAME_TOLERANCE` seconds, with a `DamagedVideoWarning` naming the file and the times; too much damage, or
any with `strict=True`, is an error (processing/video_pyav.py).

Bad input raises `FileNotFoundError` (missing path) or `ValueError` (empty, truncated or corrupt file, no video
stream, no frames, a window outside the video, bad arguments, bad arrays), the message naming the source
(`TypeError` for a source or argument of the wrong type).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .video_frames import DamagedVideoWarning, VideoFrames, VideoMetadata, frames_from_array, is_torch_tensor
from .video_pyav import LOST_FRAME_TOLERANCE
from .video_readers import BACKENDS, VideoReader, reader_class
from .video_sampling import check_sampling, is_int, sample_frame_indices
from .video_source import VideoSource

__all__ = [
    "BACKENDS",
    "LOST_FRAME_TOLERANCE",
    "MAX_FRAME_PIXELS",
    "NETWORK_TIMEOUT",
    "DamagedVideoWarning",
    "VideoFrames",
    "VideoMetadata",
    "frames_from_array",
    "VideoPlan",
    "iter_video_chunks",
    "load_video",
    "plan_video",
    "probe_video",
    "read_video",
    "sample_frame_indices",
]

_SAMPLING_KEYS = ("fps", "num_frames", "max_frames", "start", "end", "include_last_frame", "backend", "strict",
                  "max_pixels")
# Pixels: the largest frame H.264, HEVC and AV1 define at any level (MaxFS / MaxLumaPs of level 6.2: 139,264
# macroblocks, e.g. 8192 x 4352); a video with larger frames is refused (see the module docstring). None: no limit.
MAX_FRAME_PIXELS: int | None = 139_264 * 256
# Seconds: (opening a URL, including the container's header; waiting for each packet after that).
NETWORK_TIMEOUT: tuple[float, float] = (30.0, 30.0)


def _source(source) -> VideoSource:
    """`source` checked, with the limits as this module's attributes stand now (a user may have changed them)."""
    return VideoSource(source, network_timeout=NETWORK_TIMEOUT, max_frame_pixels=MAX_FRAME_PIXELS)


def probe_video(source, *, backend: str = "pyav") -> tuple[VideoMetadata, list[float]]:
    """Metadata and every frame's presentation time (seconds from the first frame, display order).

    One demux pass over the video stream's packets with PyAV, decoding only the first frame (its display rotation
    sets the shown width / height; with backend="decord", decord's own frame index replaces the pass when decord
    counts the frames differently).
    """
    reader = reader_class(backend)(_source(source))
    return reader.metadata, reader.timestamps


def _plan(source, sampling: dict) -> tuple[VideoReader, list[int]]:
    """Open `source`, check the arguments, pick the frames: (the reader, the picked display indices)."""
    fps, num_frames, max_frames = sampling["fps"], sampling["num_frames"], sampling["max_frames"]
    start, end, backend = sampling["start"], sampling["end"], sampling["backend"]
    max_pixels = sampling.get("max_pixels")
    reader_type = reader_class(backend)
    src = _source(source)
    try:
        check_sampling(fps, num_frames, max_frames, start, end)
        if max_pixels is not None and (not is_int(max_pixels) or max_pixels <= 0):
            raise ValueError(f"max_pixels must be an int > 0 or None, got {max_pixels!r}")
        if src.is_url and not reader_type.reads_urls:
            raise ValueError(f"backend={backend!r} cannot read a URL with a timeout (a server that never answers "
                             "would stall it for ever); use backend='pyav', or download the video first")
    except (TypeError, ValueError) as error:
        raise type(error)(f"{src.label}: {error}") from None
    reader = reader_type(src, max_pixels)
    try:
        indices = sample_frame_indices(
            reader.timestamps, fps=fps, num_frames=num_frames, max_frames=max_frames, start=start, end=end,
            include_last_frame=sampling["include_last_frame"],
        )
    except ValueError as error:
        raise ValueError(f"{src.label}: {error}") from None
    return reader, indices


def read_video(
    source,
    *,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    include_last_frame: bool = False,
    backend: str = "pyav",
    strict: bool = False,
    max_pixels: int | None = None,
) -> VideoFrames:
    """Sample frames from a video file (a path, a URL or an open binary file object). See the module docstring
    (the sampling rule: processing/video_sampling.py).

    A file object must be seekable and is read from its first byte whatever its position; it is left open.
    Two passes: a demux pass (timestamps, and the first frame for its display rotation) plans the frames, then
    one decoding pass fetches them. `strict=True`: a damaged packet or frame is an error instead of a loss.
    `max_pixels`: frames larger than this come out scaled down to at most this many pixels (module docstring).
    Emits `DamagedVideoWarning` when lost frames were replaced (PyAV backend).
    """
    sampling = dict(fps=fps, num_frames=num_frames, max_frames=max_frames, start=start, end=end,
                    include_last_frame=include_last_frame, backend=backend, strict=strict, max_pixels=max_pixels)
    reader, indices = _plan(source, sampling)
    (frames,) = reader.read(indices, len(indices), strict)  # one chunk; the pass runs to its end
    return frames


class VideoPlan:
    """The frames a sampling rule picks from one video, known before any of them is decoded.

    Made by `plan_video` (a demux pass for a file; nothing for pre-decoded frames). `len(plan)` is the number of
    frames `chunks` will deliver (a lost frame's stand-in keeps the count), `timestamps` their planned times in
    seconds, `metadata` the video's. `chunks(chunk_frames)` decodes them in one pass, `chunk_frames` at a time, and
    may be called again for another pass (a file object is rewound).
    """

    def __init__(self, source, sampling: dict | None = None):
        self.is_file = isinstance(source, (str, os.PathLike)) or hasattr(source, "read")
        if self.is_file:
            options = dict(fps=1.0, num_frames=None, max_frames=None, start=None, end=None, include_last_frame=False,
                           backend="pyav", strict=False, max_pixels=None)
            options.update(sampling or {})
            self._reader, self.indices = _plan(source, options)
            self._strict = options["strict"]
            self.metadata, self.label = self._reader.metadata, self._reader.source.label
            self.timestamps = [self._reader.timestamps[i] for i in self.indices]
        else:
            self._frames = frames_from_array(source)
            self.metadata, self.indices, self.timestamps = (
                self._frames.metadata, self._frames.indices, self._frames.timestamps)
            self.label = "<frames>"

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"VideoPlan({self.label!r}, frames={len(self)})"

    def chunks(self, chunk_frames: int) -> Iterator[VideoFrames]:
        """The planned frames, `chunk_frames` at a time (the last chunk may be shorter); only the chunk being filled
        is held. ValueError when decoding fails part-way (processing/video_pyav.py: damaged data)."""
        if not is_int(chunk_frames) or chunk_frames <= 0:
            raise ValueError(f"{self.label}: chunk_frames must be an int > 0, got {chunk_frames!r}")
        if not self.is_file:
            return _chunks_of(self._frames, chunk_frames)
        return self._reader.read(self.indices, chunk_frames, self._strict)


def plan_video(video, **sampling) -> VideoPlan:
    """Plan the frames `load_video(video, **sampling)` would give, without decoding them (see `VideoPlan`).

    The arguments are checked and a file probed here, so bad input raises at the call.
    """
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"plan_video got unexpected keyword arguments {sorted(unknown)}")
    if not (isinstance(video, (str, os.PathLike, list, tuple, np.ndarray, VideoFrames)) or is_torch_tensor(video)
            or (hasattr(video, "read") and hasattr(video, "seek"))):
        raise TypeError(
            "a video must be a path, an open binary file object, a list of frames (PIL images / arrays), "
            f"a uint8 array [F, H, W, C] or a torch tensor; got {type(video).__name__}"
        )
    return VideoPlan(video, sampling)


def iter_video_chunks(source, chunk_frames: int, **sampling) -> Iterator[VideoFrames]:
    """`read_video`'s frames, `chunk_frames` at a time (the last chunk may be shorter), from one decoding pass.

    The arguments are checked and the file probed at the call (so bad input raises here, not at the first
    `next`); decoding happens as the chunks are taken, and only the chunk being filled is held. Pre-decoded
    frames (anything `frames_from_array` takes) are cut into chunks as they are.
    """
    is_file = isinstance(source, (str, os.PathLike)) or hasattr(source, "read")
    if not is_int(chunk_frames) or chunk_frames <= 0:
        label = _source(source).label if is_file else "<frames>"
        raise ValueError(f"{label}: chunk_frames must be an int > 0, got {chunk_frames!r}")
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"iter_video_chunks got unexpected keyword arguments {sorted(unknown)}")
    return VideoPlan(source, sampling).chunks(chunk_frames)


def _chunks_of(whole: VideoFrames, chunk_frames: int) -> Iterator[VideoFrames]:
    """Pre-decoded frames cut into chunks of `chunk_frames` (views, no copy)."""
    for begin in range(0, len(whole.indices), chunk_frames):
        stop = begin + chunk_frames
        yield VideoFrames(whole.frames[begin:stop], whole.indices[begin:stop], whole.timestamps[begin:stop],
                          whole.metadata)


def load_video(video, **sampling) -> VideoFrames:
    """A path / PathLike / binary file object -> `read_video(video, **sampling)`; frames -> `frames_from_array`.

    Pre-decoded frames are used as given (the sampling arguments are checked for their names only).
    """
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"load_video got unexpected keyword arguments {sorted(unknown)}")
    if isinstance(video, (str, os.PathLike)) or (hasattr(video, "read") and hasattr(video, "seek")):
        return read_video(video, **sampling)
    if isinstance(video, (list, tuple, np.ndarray, VideoFrames)) or is_torch_tensor(video):
        return frames_from_array(video)
    raise TypeError(
        "a video must be a path, an open binary file object, a list of frames (PIL images / arrays), "
        f"a uint8 array [F, H, W, C] or a torch tensor; got {type(video).__name__}"
    )
