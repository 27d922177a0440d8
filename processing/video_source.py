"""Where a video's bytes come from: a local path, a URL or an open binary file object (`VideoSource`), checked before
any reader touches it, named the same way in every message, and opened as a PyAV container under the media limits.

The limits are the settings of processing/video_io.py (`NETWORK_TIMEOUT`, `MAX_FRAME_PIXELS`, module attributes a
user may change), handed to each `VideoSource` when it is made: a URL is opened with the timeouts (seconds to open
it, seconds to wait for each packet after that), so that a server that accepts and never answers (or stalls
part-way) gives a ValueError naming the URL and the timeout instead of a wait without end; a frame larger than the
pixel limit is refused before it is decoded.

PyAV (`av`) is imported where a container is opened, as everywhere in processing/: it is an optional extra.
"""

from __future__ import annotations

import io
import math
import os
import time

from .video_sampling import is_real

__all__ = ["VideoSource"]


class VideoSource:
    """A path, a URL or a seekable binary file object, with the name used in messages.

    `name` is what `VideoMetadata.source` records (the path, or "<file object>"); `label` starts every message
    (the path, or "<file object NAME>"). `network_timeout`: (open seconds, read seconds) for a URL, a single number
    meaning both, checked when a URL is opened; `max_frame_pixels`: the largest frame (in pixels) a reader may decode,
    None for no limit.

    Raises FileNotFoundError (a missing path), ValueError (a directory, an empty file, a text-mode / unseekable file
    object) or TypeError (anything else), naming the source.
    """

    def __init__(self, source, *, network_timeout, max_frame_pixels: int | None):
        self.fileobj = None
        self.path = None
        self.is_url = False
        self.network_timeout = network_timeout
        self.max_frame_pixels = max_frame_pixels
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            self.path = path
            self.name = path
            self.label = path
            if "://" in path:  # a URL: PyAV / ffmpeg opens it
                self.is_url = True
                return
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such video file")
            if os.path.isdir(path):
                raise ValueError(f"{path}: is a directory, not a video file")
            if os.path.getsize(path) == 0:
                raise ValueError(f"{path}: empty file (0 bytes), not a video")
        elif hasattr(source, "read") and hasattr(source, "seek"):
            self.fileobj = source
            self.name = "<file object>"
            inner = getattr(source, "name", None)
            self.label = f"<file object {inner}>" if isinstance(inner, str) else "<file object>"
            if isinstance(source, io.TextIOBase):
                raise ValueError(f"{self.label}: a text-mode file; open the video in binary mode ('rb')")
            seekable = getattr(source, "seekable", None)
            if seekable is not None and not seekable():
                raise ValueError(f"{self.label}: the file object is not seekable (needed to read a video)")
            try:
                size = source.seek(0, io.SEEK_END)
                source.seek(0)
            except (OSError, ValueError) as error:
                raise ValueError(f"{self.label}: cannot seek in the file object: {error}") from error
            if size == 0:
                raise ValueError(f"{self.label}: empty file (0 bytes), not a video")
        else:
            raise TypeError(
                f"a video source must be a path or an open binary file object, got {type(source).__name__}"
            )

    def target(self):
        """What to hand to av.open / decord (a file object is rewound to its start first)."""
        if self.fileobj is not None:
            self.fileobj.seek(0)
            return self.fileobj
        return self.path

    # ------------------------------------------------------------------------------------------------ network

    def timeouts(self) -> tuple[float, float]:
        """`network_timeout` checked: (open, read) seconds, each a finite number > 0."""
        timeout = self.network_timeout
        if is_real(timeout):
            timeout = (timeout, timeout)
        if not (isinstance(timeout, tuple) and len(timeout) == 2 and all(is_real(t) for t in timeout)
                and all(math.isfinite(t) and t > 0 for t in timeout)):
            raise ValueError(
                f"video_io.NETWORK_TIMEOUT must be (open seconds, read seconds), each > 0, got {timeout!r}")
        return float(timeout[0]), float(timeout[1])

    def timeout_error(self, waiting_for: str, seconds: float) -> ValueError:
        """The error for a server that did not answer within `seconds` while `waiting_for` (e.g. "opening it")."""
        open_s, read_s = self.timeouts()
        return ValueError(
            f"{self.label}: no answer from the server within {seconds:g} s while {waiting_for} (network timeout; "
            f"auroralong_hf.processing.video_io.NETWORK_TIMEOUT = ({open_s:g}, {read_s:g}) seconds to open a URL and "
            "to wait for each read: raise it for a slow server, or download the video first)"
        )

    def timed_out(self, error: Exception, since: float, limit: float) -> bool:
        """Whether a read of a URL begun at `since` (time.monotonic) failed because the timeout interrupted it.
        ffmpeg reports the interruption as "Immediate exit requested" (ExitError) from most protocols, as another
        error from some (https, rtsp)."""
        import av

        return self.is_url and (isinstance(error, av.error.ExitError) or time.monotonic() - since >= limit)

    def open(self):
        """An `av` input container; ValueError naming the source when it cannot be opened (or a URL's server does
        not answer within the open timeout)."""
        import av

        timeout = self.timeouts() if self.is_url else None
        started = time.monotonic()
        try:
            return av.open(self.target(), mode="r", timeout=timeout)
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as error:
            if timeout is not None and self.timed_out(error, started, timeout[0]):
                raise self.timeout_error("opening it", timeout[0]) from error
            raise ValueError(
                f"{self.label}: cannot open as a video (corrupt, truncated or not a video file): {error}"
            ) from error

    # ------------------------------------------------------------------------------------------------- limits

    def check_frame_size(self, width: int, height: int) -> None:
        """ValueError when a `width` x `height` frame has more than `max_frame_pixels` pixels (a decompression bomb:
        processing/video_io.py, MAX_FRAME_PIXELS)."""
        limit = self.max_frame_pixels
        if limit is not None and width * height > limit:
            raise ValueError(
                f"{self.label}: refused, its frames are {width}x{height} = {width * height:,} pixels, more than "
                f"auroralong_hf.processing.video_io.MAX_FRAME_PIXELS = {limit:,} (the largest frame of H.264 / HEVC / "
                f"AV1; one such frame decodes to {width * height * 3 / 2**20:,.0f} MiB of RGB): a decompression bomb, "
                "or raise MAX_FRAME_PIXELS (None: no limit) to read it knowingly"
            )

    def gif_complete(self) -> bool:
        """Whether a GIF file ends with its trailer byte (0x3B): a GIF cut short lacks it (True for a URL)."""
        if self.fileobj is not None:
            self.fileobj.seek(-1, io.SEEK_END)
            last = self.fileobj.read(1)
            self.fileobj.seek(0)
        elif self.path is not None and "://" not in self.path:
            with open(self.path, "rb") as handle:
                handle.seek(-1, io.SEEK_END)
                last = handle.read(1)
        else:
            return True
        return last == b"\x3b"
