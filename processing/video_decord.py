"""The decord video reader (`backend="decord"`): decord decodes, with the plan of PyAV's demux pass
(processing/video_probe.py), and so the same frames as the PyAV reader, as long as decord decodes correctly.

Measured with decord 0.6.0: H.264 in mp4 / mkv, VP8 in webm, FFV1 in mkv, MJPEG in avi and MPEG-4 without B-frames
in mov match PyAV pixel for pixel; with B-frames, MPEG-4 Part 2 in mp4 / avi and H.264 in avi / MPEG-TS come back as
the wrong frames (frame 14 for frame 12, ...), so PyAV is the default. decord has no network timeout, so it does
not read URLs (`reads_urls = False`).

decord (an optional extra, x86-64 wheels only) is imported where it is used, inside a try block, so that a model
folder's remote code loads without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from .video_frames import VideoFrames, VideoMetadata
from .video_probe import probe_stream
from .video_source import VideoSource

__all__ = ["DecordReader"]


def _decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "backend='decord' needs the decord package, which is not installed: `pip install decord==0.6.0`, "
            "or use backend='pyav'"
        ) from error
    return decord


class DecordReader:
    """A video read with decord (the `VideoReader` protocol of processing/video_readers.py).

    The plan (frame count, timestamps) comes from PyAV's demux pass when decord counts the same frames, so both
    backends sample the same frames; otherwise decord's own frame index is used. ImportError (with the way out)
    when decord is not installed; ValueError naming the file when decord cannot read it.

    decord applies a display rotation (matrix or `rotate` tag) itself, so its frames are shown as PyAV's are; it
    converts every frame as BT.601 limited range whatever the stream's tags, and a damaged packet is its own to
    handle (the colour and damage rules of processing/video_pyav.py are PyAV's; `strict` has no effect here).
    decord delivers frames at full size; with `max_pixels` they are scaled down afterwards (Pillow's box filter,
    area averaging as in PyAV's path), so the result has the same size but the full-size frames are held meanwhile.
    """

    reads_urls = False  # decord has no timeout: a server that never answers would stall it for ever

    def __init__(self, source: VideoSource, max_pixels: int | None = None):
        probe = probe_stream(source, max_pixels)
        decord = _decord()
        self.source = source
        self.frame_shape = probe.shape()
        try:
            self.reader = decord.VideoReader(source.target(), ctx=decord.cpu(0))
            count = len(self.reader)
            if count == probe.metadata.num_frames:
                self.metadata, self.timestamps = probe.metadata, probe.timestamps
                return
            if count == 0:
                raise ValueError(f"{source.label}: decord finds no frames in the video stream")
            raw = np.asarray(self.reader.get_frame_timestamp(np.arange(count)))[:, 0].astype(np.float64)
            rate = float(self.reader.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as error:
            raise ValueError(f"{source.label}: decord cannot read this video: {error}") from error
        self.timestamps = (raw - raw[0]).tolist()
        fps, duration = _rate_and_duration(self.timestamps, rate if rate > 0 else None)
        meta = probe.metadata
        self.metadata = VideoMetadata(source.name, count, fps, duration, meta.width, meta.height, meta.rotation)

    def read(self, indices: list[int], chunk_frames: int, strict: bool = False) -> Iterator[VideoFrames]:
        """Frames `indices` (display order, ascending), `chunk_frames` at a time (one decord batch per chunk; the
        last chunk may be shorter). ValueError naming the file when decord fails."""
        for begin in range(0, len(indices), chunk_frames):
            chunk = indices[begin:begin + chunk_frames]
            yield VideoFrames(self._frames(chunk), chunk, [self.timestamps[i] for i in chunk], self.metadata)

    def _frames(self, indices: list[int]) -> np.ndarray:
        decord = _decord()
        try:
            batch = self.reader.get_batch(list(indices)).asnumpy()
        except (decord.DECORDError, RuntimeError) as error:
            raise ValueError(f"{self.source.label}: decord cannot decode frames {indices[:4]}...: {error}") from error
        meta = self.metadata
        if batch.shape[1:] != (meta.height, meta.width, 3) or batch.dtype != np.uint8:
            raise ValueError(f"{self.source.label}: decord returned frames of shape {batch.shape}, {batch.dtype}")
        if batch.shape[1:] != self.frame_shape:
            size = (self.frame_shape[1], self.frame_shape[0])
            batch = np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BOX))
                              for frame in batch])
        return batch


def _rate_and_duration(timestamps: list[float], nominal: float | None) -> tuple[float | None, float | None]:
    """(average fps, duration) as `VideoMetadata` defines them; `nominal` is used for a single frame."""
    count = len(timestamps)
    fps = (count - 1) / timestamps[-1] if count >= 2 and timestamps[-1] > 0 else nominal
    return fps, (timestamps[-1] + 1 / fps if fps else None)
