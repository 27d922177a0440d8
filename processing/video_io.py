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

Sampling works on presentation timestamps (read from the container, sorted into display order), never on an
assumed constant frame rate, so variable frame rate files and files whose stream reports no frame count sample
correctly. Times are seconds relative to the first frame:

- `num_frames=N` (takes precedence over `fps`): N target times spaced evenly from the first to the last frame of
  the window; each takes the nearest frame (a tie goes to the earlier frame); duplicates are dropped, so a window
  with fewer than N frames gives all of them (and clustered frames of a variable rate file may give fewer).
- `fps=f` (default 1.0): targets t0, t0 + 1/f, t0 + 2/f, ... up to the window's last frame, t0 being the window's
  first frame; nearest frame each, duplicates dropped. `fps=None` together with `num_frames=None` takes every
  frame of the window.
- `max_frames=M`: at most M frames; a longer selection keeps M of its frames spread evenly (first and last kept).
- `include_last_frame=True`: the window's last frame is always selected (it replaces the last pick when the
  selection is already `max_frames` long).
- `start`, `end`: the window in seconds, both ends inclusive; default the whole video. An `end` past the video's
  end is fine; a window holding no frame is an error that states the video's duration.

Size (PyAV): `max_pixels=P` delivers frames of more than P pixels scaled down in the decoder's own conversion to RGB
(swscale, area averaging), keeping their aspect ratio, to at most P pixels, so that a full-size RGB copy of a large
frame never exists (`VideoMetadata.width` / `height` stay the video's own size). A video whose frames have more than
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
network the decoder reads on instead of jumping to keyframes (a jump is a new request, which PyAV's timeout does not
cover), and `backend="decord"` is refused (decord has no timeout).

Decoding (PyAV) keeps only the sampled frames: each decoded frame is either converted into its row of the
preallocated output (or of the current chunk) or dropped at once, and decoding stops after the last frame
needed. When the next sampled frame lies far ahead, the decoder jumps to the keyframe that frame depends on
(a container seek, checked against the demux pass and abandoned for plain sequential decoding if the container
lands anywhere unexpected); frames are identified by their timestamps, so the result is the same frame for frame
with or without jumps. `backend="decord"` decodes through decord instead when it is installed, with the
same plan (PyAV's demux pass) and so the same frames, as long as decord decodes correctly. Measured with decord
0.6.0: H.264 in mp4 / mkv, VP8 in webm, FFV1 in mkv, MJPEG in avi and MPEG-4 without B-frames in mov match PyAV
pixel for pixel; with B-frames, MPEG-4 Part 2 in mp4 / avi and H.264 in avi / MPEG-TS come back as the wrong
frames (frame 14 for frame 12, ...), so PyAV is the default.

Frames come out as a player shows them:

- Orientation: a display matrix (phone videos: portrait frames stored as landscape plus a rotation) or, without one,
  a `rotate` stream tag (clockwise degrees, older muxers) turns the frames by that multiple of 90 degrees;
  `VideoMetadata.width` / `height` are the size shown and `rotation` the angle applied (ffprobe's sign:
  counterclockwise degrees, -90 for a typical portrait phone clip). Mirroring in a display matrix is not applied;
  an angle that is not a multiple of 90 degrees (within 1 degree) is ignored with a warning naming the file.
- Colour: each frame is converted to RGB with its own matrix (BT.601, BT.709, BT.2020, FCC, SMPTE 240M) and range
  (limited or full), 8 or 10 bits (any depth swscale reads), as tagged in the stream; an untagged matrix is taken
  as BT.709 for HD frames (wider than 1024 or taller than 576 pixels) and BT.601 otherwise, the convention of
  players; an untagged range is limited except for the `yuvj*` formats. The transfer function is not applied:
  HDR (PQ / HLG) frames come out without tone mapping.

Damaged data (PyAV): a packet the decoder rejects, or a frame it flags as corrupt, costs that frame and the frames
decoded after it up to the next keyframe (they may predict from it; the decoder does not say which do). A sampled
time whose frame is lost takes the nearest good frame within `LOST_FRAME_TOLERANCE` seconds (the frame before the
damage or the first good one after it; that frame's index and time are reported in `VideoFrames`), and a
`DamagedVideoWarning` names the file and the times. The read fails (ValueError naming the file) when a lost time
has no good frame that near, or when more than half of the sampled frames are lost. `strict=True` fails at the
first damaged packet or frame instead.

Bad input raises `FileNotFoundError` (missing path) or `ValueError` (empty, truncated or corrupt file, no video
stream, no frames, a window outside the video, bad arguments, bad arrays), the message naming the source
(`TypeError` for a source or argument of the wrong type). Truncation is caught by the container's own frame count
(mp4, mov, avi), by a Matroska / WebM track's stated duration against its last frame, by a GIF's missing trailer,
or by the demuxer / decoder failing; a file cut inside its last frame or two can still pass as a shorter video.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .image_io import upright

__all__ = [
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

BACKENDS = ("pyav", "decord")
_TIE_EPS = 1e-9  # seconds: a target this close to the midpoint of two frames counts as a tie (the earlier wins)
# Jump (seek) to the next sampled frame's keyframe only when that skips at least this many packets; nearer
# targets are reached by decoding on, which costs less than a seek plus a decoder restart.
_SEEK_MIN_PACKETS = 16
# Frame threading pays with many cores; on two it costs more than it gains (measured on 360p H.264).
_THREAD_TYPE = "AUTO" if (os.cpu_count() or 1) >= 4 else "SLICE"
_SAMPLING_KEYS = ("fps", "num_frames", "max_frames", "start", "end", "include_last_frame", "backend", "strict",
                  "max_pixels")
# Seconds: the farthest a good frame may be from a sampled time whose own frame was lost to damage.
LOST_FRAME_TOLERANCE = 1.0
# A read whose lost sampled frames exceed this share of the sampled frames fails.
_MAX_LOST_SHARE = 0.5
# Pixels: the largest frame H.264, HEVC and AV1 define at any level (MaxFS / MaxLumaPs of level 6.2: 139,264
# macroblocks, e.g. 8192 x 4352); a video with larger frames is refused (see the module docstring). None: no limit.
MAX_FRAME_PIXELS: int | None = 139_264 * 256
# Seconds: (opening a URL, including the container's header; waiting for each packet after that).
NETWORK_TIMEOUT: tuple[float, float] = (30.0, 30.0)


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

    `indices` ascend; a frame that stands in for a lost neighbour (see the module docstring) can appear twice."""

    frames: np.ndarray  # [F, H, W, 3] uint8 RGB, F >= 1
    indices: list[int]
    timestamps: list[float]  # relative to the first frame of the video
    metadata: VideoMetadata

    def __len__(self) -> int:
        return len(self.indices)


# --------------------------------------------------------------------------------------------------- sampling


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    numbers = (int, float, Fraction, np.integer, np.floating)
    return isinstance(value, numbers) and not isinstance(value, (bool, np.bool_))


def _check_sampling(fps, num_frames, max_frames, start, end) -> None:
    """ValueError for a bad sampling argument (TypeError for a wrong type)."""
    if num_frames is not None:
        if not _is_int(num_frames):
            raise TypeError(f"num_frames must be an int or None, got {num_frames!r}")
        if num_frames <= 0:
            raise ValueError(f"num_frames must be > 0, got {num_frames}")
    if fps is not None:
        if not _is_real(fps):
            raise TypeError(f"fps must be a number or None, got {fps!r}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a finite number > 0, got {fps}")
    if max_frames is not None:
        if not _is_int(max_frames):
            raise TypeError(f"max_frames must be an int or None, got {max_frames!r}")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be > 0, got {max_frames}")
    for name, value in (("start", start), ("end", end)):
        if value is None:
            continue
        if not _is_real(value):
            raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"end ({end} s) is before start ({start} s)")


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the position of the nearest time in sorted `times` (a tie goes to the earlier frame)."""
    right = np.clip(np.searchsorted(times, targets, side="left"), 1, len(times) - 1)
    left = right - 1
    take_left = (targets - times[left]) <= (times[right] - targets) + _TIE_EPS
    return np.where(take_left, left, right)


def _fps_selection(times: np.ndarray, fps: float) -> np.ndarray:
    """Positions picked by targets times[0] + k / fps, k = 0, 1, ... while <= times[-1] (nearest frame each).

    Computed per frame instead of per target (so a huge fps costs nothing): frame i is picked when some target
    falls in its cell, the times nearer to it than to its neighbours, (mid(i-1, i), mid(i, i+1)], a target on a
    midpoint belonging to the earlier frame, as in `_nearest`.
    """
    n = len(times)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    span = times - times[0]
    last_k = math.floor(span[-1] * fps + _TIE_EPS)
    mids = (span[:-1] + span[1:]) / 2 + _TIE_EPS / 2
    k_low = np.empty(n, dtype=np.float64)  # the first k inside the cell
    k_high = np.empty(n, dtype=np.float64)  # the last k inside the cell
    k_low[0] = 0
    k_low[1:] = np.floor(mids * fps) + 1
    k_high[:-1] = np.floor(mids * fps)
    k_high[-1] = last_k
    np.clip(k_high, None, last_k, out=k_high)
    return np.flatnonzero(k_low <= k_high)


def sample_frame_indices(
    timestamps: Sequence[float],
    *,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    include_last_frame: bool = False,
) -> list[int]:
    """The frame indices (display order, ascending, no duplicates) that the sampling rule picks.

    `timestamps` are every frame's presentation time in seconds, in display order (non-decreasing); `start` and
    `end` are relative to the first of them. See the module docstring for the rule.
    """
    _check_sampling(fps, num_frames, max_frames, start, end)
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError("timestamps must be a non-empty 1-D sequence of seconds (the video has no frames?)")
    if not np.isfinite(times).all():
        raise ValueError("timestamps must be finite")
    if (np.diff(times) < 0).any():
        raise ValueError("timestamps must be in display order (non-decreasing)")
    times = times - times[0]
    lo = 0 if start is None else int(np.searchsorted(times, start - _TIE_EPS, side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end + _TIE_EPS, side="right"))
    if lo >= hi:
        last = float(times[-1])
        raise ValueError(
            f"the window start={start} s, end={end} s holds no frame: the video's {len(times)} frames lie between "
            f"0 and {last:.3f} s (duration {_describe_duration(times)})"
        )
    window = times[lo:hi]
    if num_frames is not None:
        if num_frames >= len(window):
            picked = np.arange(len(window))
        else:
            picked = np.unique(_nearest(window, np.linspace(window[0], window[-1], num_frames)))
    elif fps is not None:
        picked = _fps_selection(window, float(fps))
    else:
        picked = np.arange(len(window))
    if max_frames is not None and len(picked) > max_frames:
        keep = np.floor(np.linspace(0, len(picked) - 1, max_frames) + 0.5).astype(np.int64)
        picked = picked[keep]
    picked = [int(p) + lo for p in picked]
    if include_last_frame and picked[-1] != hi - 1:
        if max_frames is not None and len(picked) >= max_frames:
            picked[-1] = hi - 1
        else:
            picked.append(hi - 1)
    return picked


def _describe_duration(times: np.ndarray) -> str:
    if len(times) >= 2 and times[-1] > times[0]:
        interval = (times[-1] - times[0]) / (len(times) - 1)
        return f"{times[-1] - times[0] + interval:.3f} s"
    return "a single instant"


# ---------------------------------------------------------------------------------------------------- sources


class _Source:
    """A path or a seekable binary file object, with the name used in messages."""

    def __init__(self, source):
        self.fileobj = None
        self.path = None
        self.is_url = False
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


def _stream_label(stream) -> str:
    try:
        codec = stream.codec_context.name if stream.codec_context is not None else None
    except Exception:  # noqa: BLE001 - a stream PyAV has no decoder for
        codec = None
    return f"{stream.type} ({codec})" if codec else str(stream.type)


# ------------------------------------------------------------------------------------------------ PyAV probe


@dataclass
class _Probe:
    metadata: VideoMetadata
    timestamps: list[float]  # display order, seconds relative to the first frame
    pts: list[int]  # display order, stream time base
    stream_index: int
    decode_pos: list[int] = field(default_factory=list)  # display index -> position in decode order
    packet_pts: list[int] = field(default_factory=list)  # decode order
    packet_dts: list[int | None] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)  # decode positions of keyframe packets, ascending
    seekable: bool = False
    by_order: bool = False  # decoded frames are identified by their output order, not by their timestamps
    coded_size: tuple[int, int] = (0, 0)  # (width, height) as decoded, before the rotation
    out_size: tuple[int, int] = (0, 0)  # (width, height) of the delivered frames before the rotation (max_pixels)

    def shape(self) -> tuple[int, int, int]:
        """A delivered frame's shape [H, W, 3] as shown (after the rotation)."""
        width, height = self.out_size
        return (width, height, 3) if self.metadata.rotation in (90, -90) else (height, width, 3)


def _av():
    import av

    return av


def _network_timeout() -> tuple[float, float]:
    """`NETWORK_TIMEOUT` checked: (open, read) seconds, each a finite number > 0."""
    timeout = NETWORK_TIMEOUT
    if _is_real(timeout):
        timeout = (timeout, timeout)
    if not (isinstance(timeout, tuple) and len(timeout) == 2 and all(_is_real(t) for t in timeout)
            and all(math.isfinite(t) and t > 0 for t in timeout)):
        raise ValueError(f"video_io.NETWORK_TIMEOUT must be (open seconds, read seconds), each > 0, got {timeout!r}")
    return float(timeout[0]), float(timeout[1])


def _timeout_error(src: _Source, waiting_for: str, seconds: float) -> ValueError:
    open_s, read_s = _network_timeout()
    return ValueError(
        f"{src.label}: no answer from the server within {seconds:g} s while {waiting_for} (network timeout; "
        f"auroralong_hf.processing.video_io.NETWORK_TIMEOUT = ({open_s:g}, {read_s:g}) seconds to open a URL and to "
        "wait for each read: raise it for a slow server, or download the video first)"
    )


def _timed_out(src: _Source, error: Exception, since: float, limit: float) -> bool:
    """Whether a read of a URL failed because the timeout interrupted it. ffmpeg reports the interruption as
    "Immediate exit requested" (ExitError) from most protocols, as another error from some (https, rtsp)."""
    return src.is_url and (isinstance(error, _av().error.ExitError) or time.monotonic() - since >= limit)


def _open_container(src: _Source):
    av = _av()
    timeout = _network_timeout() if src.is_url else None
    started = time.monotonic()
    try:
        return av.open(src.target(), mode="r", timeout=timeout)
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as error:
        if timeout is not None and _timed_out(src, error, started, timeout[0]):
            raise _timeout_error(src, "opening it", timeout[0]) from error
        raise ValueError(
            f"{src.label}: cannot open as a video (corrupt, truncated or not a video file): {error}"
        ) from error


def _check_frame_size(src: _Source, width: int, height: int) -> None:
    """ValueError when a `width` x `height` frame has more than MAX_FRAME_PIXELS pixels (module docstring)."""
    limit = MAX_FRAME_PIXELS
    if limit is not None and width * height > limit:
        raise ValueError(
            f"{src.label}: refused, its frames are {width}x{height} = {width * height:,} pixels, more than "
            f"auroralong_hf.processing.video_io.MAX_FRAME_PIXELS = {limit:,} (the largest frame of H.264 / HEVC / "
            f"AV1; one such frame decodes to {width * height * 3 / 2**20:,.0f} MiB of RGB): a decompression bomb, or "
            "raise MAX_FRAME_PIXELS (None: no limit) to read it knowingly"
        )


def _scaled_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, to at most `max_pixels` pixels; unchanged when it fits."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _video_stream(container, src: _Source):
    av = _av()
    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    for stream in container.streams.video:
        if attached and stream.disposition & attached:  # cover art, not a video
            continue
        return stream
    if not container.streams:
        raise ValueError(
            f"{src.label}: no streams found (not a video, or truncated: an mp4 cut before its index, the moov box, "
            "shows no streams)"
        )
    kinds = ", ".join(_stream_label(s) for s in container.streams)
    raise ValueError(f"{src.label}: no video stream (streams: {kinds})")


def _declared_end(stream) -> float | None:
    """The video stream's duration in seconds as the container header states it (None when it does not)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska / WebM track tags
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def _gif_complete(src: _Source) -> bool:
    """Whether a GIF file ends with its trailer byte (0x3B): a GIF cut short lacks it."""
    if src.fileobj is not None:
        src.fileobj.seek(-1, io.SEEK_END)
        last = src.fileobj.read(1)
        src.fileobj.seek(0)
    elif src.path is not None and "://" not in src.path:
        with open(src.path, "rb") as handle:
            handle.seek(-1, io.SEEK_END)
            last = handle.read(1)
    else:
        return True
    return last == b"\x3b"


def _rotation_tag(stream) -> float | None:
    """The `rotate` stream tag (clockwise degrees) as a counterclockwise angle, None without one."""
    for key, value in stream.metadata.items():
        if key.lower() == "rotate":
            try:
                return -float(value)
            except ValueError:
                return None
    return None


def _quarter_turns(angle: float | None, src: _Source) -> int:
    """A counterclockwise angle in degrees -> quarter turns for `np.rot90` (0 when none or not a right angle)."""
    if angle is None or not math.isfinite(angle):
        return 0
    turns = round(angle / 90)
    if abs(angle - 90 * turns) > 1:
        warnings.warn(f"{src.label}: a display rotation of {angle:g} degrees is not a multiple of 90; the frames are "
                      "left as stored", DamagedVideoWarning, stacklevel=4)
        return 0
    return turns % 4


def _probe_pyav(src: _Source) -> _Probe:
    av = _av()
    container = _open_container(src)
    with container:
        stream = _video_stream(container, src)
        if stream.codec_context is None:
            raise ValueError(f"{src.label}: no decoder for its video codec ({_stream_label(stream)})")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise ValueError(f"{src.label}: the video stream does not state its frame size")
        _check_frame_size(src, width, height)  # before the first frame is decoded
        time_base = stream.time_base or Fraction(1, 1000)
        packet_pts, packet_dts, durations, keys, all_packets = [], [], [], [], 0
        # PyAV shows the display matrix only on decoded frames: the first packets are decoded until one frame
        # comes out (a few packets at most), the rest of the pass only demuxes.
        angle, probing = None, True
        demuxer = container.demux(stream)
        try:
            while True:
                read_from = time.monotonic()  # when a read began: a network timeout is told from damage by it
                packet = next(demuxer, None)
                if packet is None:
                    break
                if packet.size == 0:
                    continue  # the flush packet at the end
                all_packets += 1
                if probing and all_packets <= 64:
                    try:
                        for frame in packet.decode():
                            angle = frame.rotation or None  # 0: no display matrix (or an upright one)
                            probing = False
                            break
                    except av.error.FFmpegError:
                        pass  # a damaged first packet: the decoding pass deals with it
                if packet.is_discard:
                    continue  # dropped by the decoder (e.g. before an mp4 edit list's start)
                if packet.is_keyframe:
                    keys.append(len(packet_pts))
                packet_pts.append(packet.pts if packet.pts is not None else packet.dts)
                packet_dts.append(packet.dts)
                durations.append(packet.duration or 0)
        except (av.error.FFmpegError, OSError) as error:
            if _timed_out(src, error, read_from, _network_timeout()[1]):
                raise _timeout_error(src, f"reading packet {all_packets + 1}", _network_timeout()[1]) from error
            raise ValueError(
                f"{src.label}: the video stream cannot be read after {all_packets} packets "
                f"(truncated or corrupt file): {error}"
            ) from error
        declared = stream.frames or 0
        declared_end = None if declared else _declared_end(stream)
        is_gif = container.format.name == "gif"
        rate = stream.average_rate or stream.guessed_rate
        reorders = bool(stream.codec_context.has_b_frames)
        stream_index = stream.index
        if angle is None:
            angle = _rotation_tag(stream)
    turns = _quarter_turns(angle, src)
    if not packet_pts:
        raise ValueError(f"{src.label}: the video stream has no frames")
    if declared and all_packets < declared:
        raise ValueError(
            f"{src.label}: the video stream declares {declared} frames but only {all_packets} could be read "
            "(truncated or corrupt file)"
        )
    if is_gif and not _gif_complete(src):
        raise ValueError(f"{src.label}: the GIF ends without its trailer byte (truncated file)")
    # Frames are matched to the demux pass by their timestamps, except where those cannot be trusted: missing
    # (raw streams: the nominal rate is assumed) or in decode order although the codec reorders frames (H.264
    # with B-frames in AVI: the container stores decode times). Then the decoder's output order, which is
    # display order, identifies them, and decoding runs from the start without jumps.
    by_order = any(p is None for p in packet_pts)
    if by_order:
        step = 1 / (float(rate) * float(time_base)) if rate else 1
        packet_pts = [round(k * step) for k in range(len(packet_pts))]
    elif reorders and len(packet_pts) > 2 and all(a < b for a, b in zip(packet_pts, packet_pts[1:], strict=False)):
        by_order = True
    seekable = not by_order and len(set(packet_pts)) == len(packet_pts)
    order = sorted(range(len(packet_pts)), key=packet_pts.__getitem__)
    pts = [packet_pts[k] for k in order]
    num, den = time_base.numerator, time_base.denominator
    timestamps = [(p - pts[0]) * num / den for p in pts]  # integer products: one rounding, no drift
    span = Fraction((pts[-1] - pts[0]) * num, den)
    fps = Fraction(len(pts) - 1) / span if len(pts) >= 2 and span > 0 else (Fraction(rate) if rate else None)
    duration = float(span + 1 / fps) if fps else None
    fps = float(fps) if fps else None
    if declared_end is not None:
        # no frame count in the header (Matroska / WebM) but a duration: frames ending well before it mean the
        # file lost its tail (the absolute end time is compared, which can only err towards accepting)
        last_shown = max(1 / fps if fps else 0, float(durations[order[-1]] * time_base))
        frames_end = float(pts[-1] * time_base) + last_shown
        if frames_end + max(1.0, 0.05 * declared_end) < declared_end:
            raise ValueError(
                f"{src.label}: the header says the video lasts {declared_end:.3f} s but its frames end at "
                f"{frames_end:.3f} s (truncated file)"
            )
    shown = (int(height), int(width)) if turns % 2 else (int(width), int(height))
    metadata = VideoMetadata(src.name, len(pts), fps, duration, *shown, rotation=_signed_degrees(turns))
    return _Probe(
        metadata, timestamps, pts, stream_index, decode_pos=order, packet_pts=packet_pts, packet_dts=packet_dts,
        keyframes=keys, seekable=seekable and len(keys) > 1, by_order=by_order,
        coded_size=(int(width), int(height)), out_size=(int(width), int(height)),
    )


def _signed_degrees(turns: int) -> int:
    """Quarter turns counterclockwise -> degrees in (-180, 180], as ffprobe prints a display rotation."""
    return {0: 0, 1: 90, 2: 180, 3: -90}[turns % 4]


# ---------------------------------------------------------------------------------------------- PyAV decode


class _SeekFailed(Exception):
    """The container did not land where the demux pass says it should: go on without seeking."""


# AVColorSpace numbers (libavutil/pixfmt.h); swscale numbers its YUV -> RGB tables the same way.
_BT709, _BT601 = 1, 5
_MATRICES = {1: "BT.709", 4: "FCC", 5: "BT.601", 6: "BT.601", 7: "SMPTE 240M", 9: "BT.2020", 10: "BT.2020"}
_LIMITED, _FULL = 1, 2  # AVColorRange


def _rgb_options(frame) -> dict:
    """`VideoFrame.to_ndarray` arguments that convert this frame with its own matrix and range (module docstring)."""
    if frame.format.is_rgb or frame.format.has_palette:
        return {}
    matrix = frame.colorspace
    if matrix not in _MATRICES:  # untagged (2), reserved, or one swscale has no table for (YCgCo)
        matrix = _BT709 if frame.width > 1024 or frame.height > 576 else _BT601
    color_range = frame.color_range
    if color_range not in (_LIMITED, _FULL):
        color_range = _FULL if frame.format.name.startswith("yuvj") else _LIMITED
    # PyAV hands the source matrix and range to swscale only when they differ from the destination's; for RGB
    # output the destination matrix is unused, so naming another one makes sure the source's is applied.
    return {"src_colorspace": matrix, "dst_colorspace": _BT601 if matrix == _BT709 else _BT709,
            "src_color_range": color_range, "dst_color_range": _FULL}


# swscale's filter when frames are scaled down to `max_pixels`: area averaging is what a downscale by a large factor
# needs (every source pixel counts), and it is the closest of swscale's filters to the full-size frame resized with
# Pillow's bicubic filter afterwards (mean difference; measured against the full-size path, tests/test_bad_media.py)
_SCALING = "AREA"


def _frame_to_rgb(frame, probe: _Probe, src: _Source) -> np.ndarray:
    """A decoded frame -> [H, W, 3] uint8 RGB as shown: its own colour conversion, scaled to the delivered size in
    the same swscale pass, then the display rotation."""
    width, height = probe.out_size
    options = _rgb_options(frame)
    if (frame.width, frame.height) != probe.coded_size:  # a mid-stream size change: scale to the stream's size
        _check_frame_size(src, frame.width, frame.height)  # the decoder has it already; we make no RGB copy of it
        options.update(width=width, height=height)
    if (width, height) != probe.coded_size:
        options.update(width=width, height=height, interpolation=_SCALING)
    image = frame.to_ndarray(format="rgb24", **options)
    turns = (probe.metadata.rotation // 90) % 4
    return np.rot90(image, turns) if turns else image


def _decode_pyav(src: _Source, probe: _Probe, indices: list[int], strict: bool = False
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, [H, W, 3] uint8) for each wanted display index, ascending, in one pass over the file; the
    index is that of the frame delivered, which differs from the wanted one when a lost frame was replaced."""
    done = 0
    use_seek = probe.seekable and not src.is_url  # a jump over the network is a request no timeout guards
    while done < len(indices):
        try:
            for item in _decode_pass(src, probe, indices[done:], use_seek, strict, len(indices)):
                done += 1
                yield item
        except _SeekFailed:
            use_seek = False  # start again from the file's start, no jumps, for the frames still missing
            continue
        break


def _start_keyframe(probe: _Probe, index: int) -> int:
    """The decode position of the keyframe from which decoding reaches display frame `index` intact."""
    position = probe.decode_pos[index]
    k = bisect_right(probe.keyframes, position) - 1
    if k < 0:
        return 0
    # a frame decoded after the keyframe but shown before it (an open GOP's leading frame) may refer to the
    # previous group: start one keyframe earlier
    if probe.packet_pts[position] < probe.packet_pts[probe.keyframes[k]] and k > 0:
        k -= 1
    return probe.keyframes[k]


class _Losses:
    """Sampled frames lost to damaged data, and the good frames around them (see the module docstring)."""

    def __init__(self, src: _Source, probe: _Probe, total: int):
        self.src, self.probe, self.total = src, probe, total
        self.pending: list[int] = []  # display indices of lost sampled frames awaiting the next good frame
        self.count = 0  # lost sampled frames so far
        self.damaged = 0  # packets rejected and frames flagged corrupt so far

    def lose(self, index: int) -> None:
        self.pending.append(index)
        self.count += 1
        if self.count > _MAX_LOST_SHARE * self.total:
            raise ValueError(
                f"{self.src.label}: {self.count} of {self.total} sampled frames are lost to damaged data "
                f"({self.damaged} damaged packets or frames so far): too little of the video decodes"
            )

    def settle(self, before, after) -> Iterator[tuple[int, np.ndarray]]:
        """Each pending index -> the nearer of the good frames `before` / `after` ((index, frame) or None)."""
        times, label = self.probe.timestamps, self.src.label
        candidates = [good for good in (before, after) if good is not None]
        replaced = []
        for index in self.pending:
            # `min` keeps the first of equals: a tie goes to the earlier frame, as in sampling
            chosen, frame = min(candidates, key=lambda good: abs(times[good[0]] - times[index]), default=(None, None))
            if chosen is None or abs(times[chosen] - times[index]) > LOST_FRAME_TOLERANCE:
                raise ValueError(
                    f"{label}: the frame at {times[index]:.3f} s is lost to damaged data and no good frame lies "
                    f"within {LOST_FRAME_TOLERANCE} s of it ({self.damaged} damaged packets or frames so far)"
                )
            replaced.append(f"{times[index]:.3f} s -> {times[chosen]:.3f} s")
            yield chosen, _frame_to_rgb(frame, self.probe, self.src)
        self.pending = []
        warnings.warn(
            f"{label}: damaged video data ({self.damaged} damaged packets or frames so far); sampled frames lost "
            f"and replaced by the nearest good frame: {', '.join(replaced)}", DamagedVideoWarning, stacklevel=2,
        )


def _decode_pass(src: _Source, probe: _Probe, wanted: list[int], use_seek: bool, strict: bool, total: int):
    av = _av()
    meta = probe.metadata
    pts_sorted = probe.pts
    n = len(pts_sorted)
    position_of_pts = {p: k for k, p in enumerate(probe.packet_pts)} if use_seek else {}
    losses = _Losses(src, probe, total)
    container = _open_container(src)
    with container:
        stream = next(s for s in container.streams if s.index == probe.stream_index)
        stream.thread_type = _THREAD_TYPE
        target = 0  # position in `wanted` of the next frame to deliver
        last_index = -1  # display index of the last frame the decoder gave
        next_packet = 0  # decode position of the next packet to read (tracked when seeking is on)
        landing = None  # after a jump: the decode position of the keyframe the first packet must not pass
        jumped = False
        sought_for = -1  # the wanted frame of the last jump: one jump per frame at most
        tainted = False  # damage was met and no keyframe has come out since: frames now may predict from it
        good = None  # (display index, frame) of the last good frame
        demuxer = container.demux(stream)
        while True:
            if use_seek and landing is None and not losses.pending and target < len(wanted) and \
                    sought_for != wanted[target]:
                start = _start_keyframe(probe, wanted[target])
                if start - next_packet >= _SEEK_MIN_PACKETS:
                    key_pts, key_dts = probe.packet_pts[start], probe.packet_dts[start]
                    offset = key_pts if key_dts is None else min(key_pts, key_dts)
                    try:
                        container.seek(offset, stream=stream, backward=True, any_frame=False)
                    except (av.error.FFmpegError, OSError) as error:
                        raise _SeekFailed from error
                    demuxer = container.demux(stream)
                    landing, jumped, sought_for, last_index = start, True, wanted[target], -1
                    tainted, good, losses.damaged = False, None, 0
            read_from = time.monotonic()
            try:
                packet = next(demuxer, None)
            except (av.error.FFmpegError, OSError) as error:
                if _timed_out(src, error, read_from, _network_timeout()[1]):
                    raise _timeout_error(src, "reading the video", _network_timeout()[1]) from error
                raise ValueError(
                    f"{src.label}: cannot read the video stream (truncated or corrupt file?): {error}"
                ) from error
            if packet is None:
                break
            if packet.size == 0 and packet.pts is not None:
                continue  # an empty packet inside the stream (a dropped frame): feeding it would drain the decoder
            if use_seek and packet.size:
                position = position_of_pts.get(packet.pts if packet.pts is not None else packet.dts)
                if landing is not None:
                    # the first packet after a jump must be a keyframe at or before the one planned
                    if position is None or position > landing or not packet.is_keyframe:
                        raise _SeekFailed
                    landing = None
                if position is not None:
                    next_packet = position + 1
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, OSError) as error:
                if strict or packet.size == 0:
                    raise ValueError(
                        f"{src.label}: cannot decode the video stream near {_packet_time(packet, probe):.3f} s "
                        f"(damaged, truncated or corrupt file): {error}"
                    ) from error
                losses.damaged += 1
                tainted = True
                continue
            for frame in frames:
                pts = frame.pts
                if pts is None or probe.by_order:
                    index = last_index + 1
                else:
                    index = bisect_left(pts_sorted, pts, lo=last_index + 1)
                    if index >= n or pts_sorted[index] != pts:
                        index = bisect_left(pts_sorted, pts)
                        if index >= n or pts_sorted[index] != pts:
                            continue  # not a frame of the demux pass (dropped by the container)
                last_index = index
                if frame.key_frame:
                    tainted = False
                if frame.is_corrupt:
                    if strict:
                        raise ValueError(f"{src.label}: the frame at {probe.timestamps[index]:.3f} s decodes "
                                         "damaged (corrupt data)")
                    losses.damaged += 1
                    tainted = True
                while target < len(wanted) and (wanted[target] < index or (wanted[target] == index and tainted)):
                    if wanted[target] < index and not losses.damaged:
                        if jumped:
                            raise _SeekFailed  # a jump skipped a frame: redo without jumps
                        raise ValueError(
                            f"{src.label}: frame {wanted[target]} ({probe.timestamps[wanted[target]]:.3f} s) could "
                            "not be decoded (corrupt file?)"
                        )
                    if strict:
                        raise ValueError(f"{src.label}: the frame at {probe.timestamps[wanted[target]]:.3f} s is "
                                         "lost to damaged data")
                    losses.lose(wanted[target])
                    target += 1
                if tainted:
                    continue
                if losses.pending:
                    yield from losses.settle(good, (index, frame))
                good = (index, frame)
                if target < len(wanted) and wanted[target] == index:
                    yield index, _frame_to_rgb(frame, probe, src)
                    target += 1
                if target == len(wanted) and not losses.pending:
                    return
        if losses.damaged and not strict:
            for index in wanted[target:]:
                losses.lose(index)
            target = len(wanted)
        if losses.pending:
            yield from losses.settle(good, None)
        if target == len(wanted):
            return
        if jumped:
            raise _SeekFailed
        missing = wanted[target]
        raise ValueError(
            f"{src.label}: the video stream ended before frame {missing} ({probe.timestamps[missing]:.3f} s) could "
            f"be decoded ({meta.num_frames} frames were demuxed): truncated or corrupt file"
        )


def _packet_time(packet, probe: _Probe) -> float:
    pts = packet.pts if packet.pts is not None else packet.dts
    if pts is None or not probe.pts:
        return float("nan")
    return float((pts - probe.pts[0]) * (packet.time_base or 0))


# ---------------------------------------------------------------------------------------------------- decord


def _decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "backend='decord' needs the decord package, which is not installed: `pip install decord==0.6.0`, "
            "or use backend='pyav'"
        ) from error
    return decord


class _DecordReader:
    """decord decodes; the plan (frame count, timestamps) comes from PyAV's demux pass when decord counts the
    same frames, so both backends sample the same frames; otherwise decord's own frame index is used.

    decord applies a display rotation (matrix or `rotate` tag) itself, so its frames are shown as PyAV's
    are; it converts every frame as BT.601 limited range whatever the stream's tags, and a damaged packet is its
    own to handle (the colour and damage rules of the module docstring are PyAV's). decord delivers frames at
    full size; with `max_pixels` they are scaled down afterwards (Pillow's box filter, area averaging as in PyAV's
    path), so the result has the same size but the full-size frames are held meanwhile."""

    def __init__(self, src: _Source, probe: _Probe):
        decord = _decord()
        self.src = src
        self.frame_shape = probe.shape()
        try:
            self.reader = decord.VideoReader(src.target(), ctx=decord.cpu(0))
            count = len(self.reader)
            if count == probe.metadata.num_frames:
                self.metadata, self.timestamps = probe.metadata, probe.timestamps
                return
            if count == 0:
                raise ValueError(f"{src.label}: decord finds no frames in the video stream")
            raw = np.asarray(self.reader.get_frame_timestamp(np.arange(count)))[:, 0].astype(np.float64)
            rate = float(self.reader.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as error:
            raise ValueError(f"{src.label}: decord cannot read this video: {error}") from error
        self.timestamps = (raw - raw[0]).tolist()
        fps, duration = _rate_and_duration(self.timestamps, rate if rate > 0 else None)
        meta = probe.metadata
        self.metadata = VideoMetadata(src.name, count, fps, duration, meta.width, meta.height, meta.rotation)

    def frames(self, indices: list[int]) -> np.ndarray:
        decord = _decord()
        try:
            batch = self.reader.get_batch(list(indices)).asnumpy()
        except (decord.DECORDError, RuntimeError) as error:
            raise ValueError(f"{self.src.label}: decord cannot decode frames {indices[:4]}...: {error}") from error
        meta = self.metadata
        if batch.shape[1:] != (meta.height, meta.width, 3) or batch.dtype != np.uint8:
            raise ValueError(f"{self.src.label}: decord returned frames of shape {batch.shape}, {batch.dtype}")
        if batch.shape[1:] != self.frame_shape:
            from PIL import Image

            size = (self.frame_shape[1], self.frame_shape[0])
            batch = np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BOX))
                              for frame in batch])
        return batch


def _rate_and_duration(timestamps: list[float], nominal: float | None) -> tuple[float | None, float | None]:
    """(average fps, duration) as `VideoMetadata` defines them; `nominal` is used for a single frame."""
    count = len(timestamps)
    fps = (count - 1) / timestamps[-1] if count >= 2 and timestamps[-1] > 0 else nominal
    return fps, (timestamps[-1] + 1 / fps if fps else None)


# ------------------------------------------------------------------------------------------------ public API


def _check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _prefixed(src_label: str, error: ValueError) -> ValueError:
    return ValueError(f"{src_label}: {error}")


def probe_video(source, *, backend: str = "pyav") -> tuple[VideoMetadata, list[float]]:
    """Metadata and every frame's presentation time (seconds from the first frame, display order).

    One demux pass over the video stream's packets with PyAV, decoding only the first frame (its display rotation
    sets the shown width / height; with backend="decord", decord's own frame index replaces the pass when decord
    counts the frames differently).
    """
    _check_backend(backend)
    src = _Source(source)
    probe = _probe_pyav(src)
    if backend == "decord":
        reader = _DecordReader(src, probe)
        return reader.metadata, reader.timestamps
    return probe.metadata, probe.timestamps


def _plan(source, sampling: dict):
    """Open `source`, check the arguments, pick the frames: (source, backend state, metadata, indices, times)."""
    fps, num_frames, max_frames = sampling["fps"], sampling["num_frames"], sampling["max_frames"]
    start, end, backend = sampling["start"], sampling["end"], sampling["backend"]
    max_pixels = sampling.get("max_pixels")
    _check_backend(backend)
    src = _Source(source)
    try:
        _check_sampling(fps, num_frames, max_frames, start, end)
        if max_pixels is not None and (not _is_int(max_pixels) or max_pixels <= 0):
            raise ValueError(f"max_pixels must be an int > 0 or None, got {max_pixels!r}")
        if backend == "decord" and src.is_url:
            raise ValueError("backend='decord' cannot read a URL with a timeout (a server that never answers would "
                             "stall it for ever); use backend='pyav', or download the video first")
    except (TypeError, ValueError) as error:
        raise type(error)(f"{src.label}: {error}") from None
    state = _probe_pyav(src)
    state.out_size = _scaled_size(*state.coded_size, max_pixels)
    if backend == "decord":
        state = _DecordReader(src, state)
    metadata, timestamps = state.metadata, state.timestamps
    try:
        indices = sample_frame_indices(
            timestamps, fps=fps, num_frames=num_frames, max_frames=max_frames, start=start, end=end,
            include_last_frame=sampling["include_last_frame"],
        )
    except ValueError as error:
        raise _prefixed(src.label, error) from None
    return src, state, metadata, indices, [timestamps[i] for i in indices]


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
    """Sample frames from a video file (a path, a URL or an open binary file object). See the module docstring.

    A file object must be seekable and is read from its first byte whatever its position; it is left open.
    Two passes: a demux pass (timestamps, and the first frame for its display rotation) plans the frames, then
    one decoding pass fetches them. `strict=True`: a damaged packet or frame is an error instead of a loss.
    `max_pixels`: frames larger than this come out scaled down to at most this many pixels (module docstring).
    Emits `DamagedVideoWarning` when lost frames were replaced (PyAV backend).
    """
    sampling = dict(fps=fps, num_frames=num_frames, max_frames=max_frames, start=start, end=end,
                    include_last_frame=include_last_frame, backend=backend, strict=strict, max_pixels=max_pixels)
    src, state, metadata, indices, times = _plan(source, sampling)
    if backend == "decord":
        return VideoFrames(state.frames(indices), indices, times, metadata)
    frames = np.empty((len(indices), *state.shape()), dtype=np.uint8)
    delivered = []
    for row, (index, image) in enumerate(_decode_pyav(src, state, indices, strict)):
        frames[row] = image
        delivered.append(index)
    return VideoFrames(frames, delivered, [state.timestamps[i] for i in delivered], metadata)


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
            self._src, self._state, self.metadata, self.indices, self.timestamps = _plan(source, options)
            self._backend, self._strict = options["backend"], options["strict"]
            self.label = self._src.label
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
        is held. ValueError when decoding fails part-way (see the module docstring on damaged data)."""
        if not _is_int(chunk_frames) or chunk_frames <= 0:
            raise ValueError(f"{self.label}: chunk_frames must be an int > 0, got {chunk_frames!r}")
        if not self.is_file:
            return _chunks_of(self._frames, chunk_frames)
        return _file_chunks(self._src, self._state, self.metadata, list(self.indices), list(self.timestamps),
                            chunk_frames, self._backend, self._strict)


def plan_video(video, **sampling) -> VideoPlan:
    """Plan the frames `load_video(video, **sampling)` would give, without decoding them (see `VideoPlan`).

    The arguments are checked and a file probed here, so bad input raises at the call.
    """
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"plan_video got unexpected keyword arguments {sorted(unknown)}")
    if not (isinstance(video, (str, os.PathLike, list, tuple, np.ndarray, VideoFrames)) or _torch_tensor(video)
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
    if not _is_int(chunk_frames) or chunk_frames <= 0:
        label = _Source(source).label if is_file else "<frames>"
        raise ValueError(f"{label}: chunk_frames must be an int > 0, got {chunk_frames!r}")
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"iter_video_chunks got unexpected keyword arguments {sorted(unknown)}")
    return VideoPlan(source, sampling).chunks(chunk_frames)


def _chunks_of(whole: VideoFrames, chunk_frames: int) -> Iterator[VideoFrames]:
    for begin in range(0, len(whole.indices), chunk_frames):
        stop = begin + chunk_frames
        yield VideoFrames(whole.frames[begin:stop], whole.indices[begin:stop], whole.timestamps[begin:stop],
                          whole.metadata)


def _file_chunks(src, state, metadata, indices, times, chunk_frames, backend, strict) -> Iterator[VideoFrames]:
    decoded = None if backend == "decord" else _decode_pyav(src, state, indices, strict)
    for begin in range(0, len(indices), chunk_frames):
        chunk, chunk_times = indices[begin:begin + chunk_frames], times[begin:begin + chunk_frames]
        if decoded is None:
            frames = state.frames(chunk)
        else:
            frames = np.empty((len(chunk), *state.shape()), dtype=np.uint8)
            for row in range(len(chunk)):
                chunk[row], frames[row] = next(decoded)
            chunk_times = [state.timestamps[i] for i in chunk]
        yield VideoFrames(frames, chunk, chunk_times, metadata)
        del frames  # the consumer holds the chunk now, if it wants it


# ------------------------------------------------------------------------------------------ pre-decoded frames


def _torch_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _to_numpy(value, what: str) -> np.ndarray:
    if _torch_tensor(value):
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


def load_video(video, **sampling) -> VideoFrames:
    """A path / PathLike / binary file object -> `read_video(video, **sampling)`; frames -> `frames_from_array`.

    Pre-decoded frames are used as given (the sampling arguments are checked for their names only).
    """
    unknown = set(sampling) - set(_SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"load_video got unexpected keyword arguments {sorted(unknown)}")
    if isinstance(video, (str, os.PathLike)) or (hasattr(video, "read") and hasattr(video, "seek")):
        return read_video(video, **sampling)
    if isinstance(video, (list, tuple, np.ndarray, VideoFrames)) or _torch_tensor(video):
        return frames_from_array(video)
    raise TypeError(
        "a video must be a path, an open binary file object, a list of frames (PIL images / arrays), "
        f"a uint8 array [F, H, W, C] or a torch tensor; got {type(video).__name__}"
    )
