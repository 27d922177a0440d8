"""The video reader protocol, and the readers by backend name.

A reader is made from a `VideoSource` (and an optional `max_pixels`); making it probes the video, so that its
`metadata` and `timestamps` (every frame's time in seconds from the first frame, display order) are known before any
frame is decoded, and sampling can pick frames from them. `read(indices, chunk_frames, strict)` then decodes the
picked frames in one pass, `chunk_frames` at a time. The entry points of processing/video_io.py hold a reader and
never ask which backend it is.

Readers: `pyav` (processing/video_pyav.py, the default) and `decord` (processing/video_decord.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Protocol, runtime_checkable

from .video_decord import DecordReader
from .video_frames import VideoFrames, VideoMetadata
from .video_pyav import PyAVReader
from .video_source import VideoSource

__all__ = ["BACKENDS", "READERS", "VideoReader", "reader_class"]


@runtime_checkable
class VideoReader(Protocol):
    """One video, probed and ready to decode. Constructed as `Reader(source: VideoSource, max_pixels=None)`:
    frames of more than `max_pixels` pixels are delivered scaled down to at most that many (aspect ratio kept).
    """

    reads_urls: ClassVar[bool]  # False: the reader has no network timeout, so it refuses URLs
    source: VideoSource
    metadata: VideoMetadata
    timestamps: list[float]  # every frame's, seconds from the first frame, display order

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """A delivered frame's shape [H, W, 3] (as shown: after the display rotation and `max_pixels`)."""

    def read(self, indices: list[int], chunk_frames: int, strict: bool = False) -> Iterator[VideoFrames]:
        """The frames at display indices `indices` (ascending), `chunk_frames` at a time (the last chunk may be
        shorter), each chunk `[F, H, W, 3]` uint8 RGB with its indices and times. A frame lost to damaged data may
        come back as a nearby stand-in with its own index and time (PyAV); `strict=True` makes that an error."""


READERS: dict[str, type[VideoReader]] = {"pyav": PyAVReader, "decord": DecordReader}
BACKENDS = tuple(READERS)


def reader_class(backend) -> type[VideoReader]:
    """The reader for a backend name; ValueError naming the choices for any other."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return READERS[backend]
