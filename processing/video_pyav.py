"""The PyAV video reader: plans with the demux pass (processing/video_probe.py), then decodes only the sampled
frames in one pass over the file, upright (the probe's display rotation) and in RGB.

Decoding keeps only the sampled frames: each decoded frame is either converted into its row of the current chunk
or dropped at once, and decoding stops after the last frame needed. When the next sampled frame lies far ahead
(`SEEK_MIN_PACKETS` packets or more), the decoder jumps to the keyframe that frame depends on (a container seek,
checked against the demux pass and abandoned for plain sequential decoding if the container lands anywhere
unexpected); frames are identified by their timestamps, so the result is the same frame for frame with or without
jumps. Over the network the decoder reads on instead of jumping (a jump is a new request, which PyAV's timeout does
not cover).

Colour: each frame is converted to RGB with its own matrix (BT.601, BT.709, BT.2020, FCC, SMPTE 240M) and range
(limited or full), 8 or 10 bits (any depth swscale reads), as tagged in the stream; an untagged matrix is taken as
BT.709 for HD frames (wider than 1024 or taller than 576 pixels) and BT.601 otherwise, the convention of players; an
untagged range is limited except for the `yuvj*` formats. The transfer function is not applied: HDR (PQ / HLG)
frames come out without tone mapping. With `max_pixels`, larger frames are scaled down in the same swscale pass
(area averaging), keeping their aspect ratio, so that a full-size RGB copy of a large frame never exists.

Damaged data: a packet the decoder rejects, or a frame it flags as corrupt, costs that frame and the frames
decoded after it up to the next keyframe (they may predict from it; the decoder does not say which do). A sampled
time whose frame is lost takes the nearest good frame within `LOST_FRAME_TOLERANCE` seconds (the frame before the
damage or the first good one after it; that frame's index and time are reported in `VideoFrames`), and a
`DamagedVideoWarning` names the file and the times. The read fails (ValueError naming the file) when a lost time
has no good frame that near, or when more than half of the sampled frames are lost. `strict=True` fails at the
first damaged packet or frame instead.

PyAV (`av`) is imported where it is used: it is an optional extra.
"""

from __future__ import annotations

import os
import time
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

import numpy as np

from .video_frames import DamagedVideoWarning, VideoFrames
from .video_probe import StreamProbe, probe_stream
from .video_source import VideoSource

__all__ = ["LOST_FRAME_TOLERANCE", "SEEK_MIN_PACKETS", "PyAVReader", "decode_pass", "frame_to_rgb"]

# Jump (seek) to the next sampled frame's keyframe only when that skips at least this many packets; nearer
# targets are reached by decoding on, which costs less than a seek plus a decoder restart.
SEEK_MIN_PACKETS = 16
# Frame threading pays with many cores; on two it costs more than it gains (measured on 360p H.264).
_THREAD_TYPE = "AUTO" if (os.cpu_count() or 1) >= 4 else "SLICE"
# Seconds: the farthest a good frame may be from a sampled time whose own frame was lost to damage.
LOST_FRAME_TOLERANCE = 1.0
# A read whose lost sampled frames exceed this share of the sampled frames fails.
_MAX_LOST_SHARE = 0.5


class PyAVReader:
    """A video read with PyAV (the `VideoReader` protocol of processing/video_readers.py).

    Made from a `VideoSource`: the demux pass runs here (ValueError naming the file for an unreadable, truncated
    or oversized video), giving `metadata` and `timestamps` (every frame's time in seconds from the first frame,
    display order). `max_pixels`: frames of more pixels are delivered scaled down to at most that many;
    `frame_shape` is a delivered frame's [H, W, 3].
    """

    reads_urls = True  # every read waits at most the source's network timeout

    def __init__(self, source: VideoSource, max_pixels: int | None = None):
        self.source = source
        self.probe = probe_stream(source, max_pixels)
        self.metadata, self.timestamps = self.probe.metadata, self.probe.timestamps

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.probe.shape()

    def read(self, indices: list[int], chunk_frames: int, strict: bool = False) -> Iterator[VideoFrames]:
        """Frames `indices` (display order, ascending) from one decoding pass, `chunk_frames` at a time (the last
        chunk may be shorter); only the chunk being filled is held. A lost frame's stand-in takes its place, with
        its own index and time. ValueError when decoding fails (module docstring; `strict=True`: at any damage)."""
        decoded = _decode(self.source, self.probe, indices, strict)
        for begin in range(0, len(indices), chunk_frames):
            chunk = indices[begin:begin + chunk_frames]
            frames = np.empty((len(chunk), *self.frame_shape), dtype=np.uint8)
            for row in range(len(chunk)):
                chunk[row], frames[row] = next(decoded)
            yield VideoFrames(frames, chunk, [self.timestamps[i] for i in chunk], self.metadata)
            del frames  # the consumer holds the chunk now, if it wants it
        # every frame is out: finishing the pass closes the file and warns about frames lost at the very end
        next(decoded, None)


# ----------------------------------------------------------------------------------------------------- decode


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


def frame_to_rgb(frame, probe: StreamProbe, src: VideoSource) -> np.ndarray:
    """A decoded frame -> [H, W, 3] uint8 RGB as shown: its own colour conversion, scaled to the delivered size in
    the same swscale pass, then the display rotation."""
    width, height = probe.out_size
    options = _rgb_options(frame)
    if (frame.width, frame.height) != probe.coded_size:  # a mid-stream size change: scale to the stream's size
        src.check_frame_size(frame.width, frame.height)  # the decoder has it already; we make no RGB copy of it
        options.update(width=width, height=height)
    if (width, height) != probe.coded_size:
        options.update(width=width, height=height, interpolation=_SCALING)
    image = frame.to_ndarray(format="rgb24", **options)
    turns = (probe.metadata.rotation // 90) % 4
    return np.rot90(image, turns) if turns else image


def _decode(src: VideoSource, probe: StreamProbe, indices: list[int], strict: bool = False
            ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, [H, W, 3] uint8) for each wanted display index, ascending, in one pass over the file; the
    index is that of the frame delivered, which differs from the wanted one when a lost frame was replaced."""
    done = 0
    use_seek = probe.seekable and not src.is_url  # a jump over the network is a request no timeout guards
    while done < len(indices):
        try:
            for item in decode_pass(src, probe, indices[done:], use_seek, strict, len(indices)):
                done += 1
                yield item
        except _SeekFailed:
            use_seek = False  # start again from the file's start, no jumps, for the frames still missing
            continue
        break


def _start_keyframe(probe: StreamProbe, index: int) -> int:
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

    def __init__(self, src: VideoSource, probe: StreamProbe, total: int):
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
            yield chosen, frame_to_rgb(frame, self.probe, self.src)
        self.pending = []
        warnings.warn(
            f"{label}: damaged video data ({self.damaged} damaged packets or frames so far); sampled frames lost "
            f"and replaced by the nearest good frame: {', '.join(replaced)}", DamagedVideoWarning, stacklevel=2,
        )


def decode_pass(src: VideoSource, probe: StreamProbe, wanted: list[int], use_seek: bool, strict: bool, total: int
                ) -> Iterator[tuple[int, np.ndarray]]:
    """One pass over the file for the display indices `wanted` (ascending): (delivered index, [H, W, 3] uint8) each.

    `use_seek`: jump to a far frame's keyframe (raises `_SeekFailed` when a jump lands anywhere unexpected, for
    `_decode` to start again without jumps); `total`: the read's sampled frame count, against which the share of
    lost frames is measured.
    """
    import av

    meta = probe.metadata
    pts_sorted = probe.pts
    n = len(pts_sorted)
    position_of_pts = {p: k for k, p in enumerate(probe.packet_pts)} if use_seek else {}
    losses = _Losses(src, probe, total)
    container = src.open()
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
                if start - next_packet >= SEEK_MIN_PACKETS:
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
                if src.timed_out(error, read_from, src.timeouts()[1]):
                    raise src.timeout_error("reading the video", src.timeouts()[1]) from error
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
                    yield index, frame_to_rgb(frame, probe, src)
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


def _packet_time(packet, probe: StreamProbe) -> float:
    pts = packet.pts if packet.pts is not None else packet.dts
    if pts is None or not probe.pts:
        return float("nan")
    return float((pts - probe.pts[0]) * (packet.time_base or 0))


