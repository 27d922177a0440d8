"""The demux pass that plans every read of a video file: PyAV reads the video stream's packets (decoding only the
first frame, for its display rotation) and gives the frame count, every frame's presentation time in display order,
the keyframes, the frame size, and whether the file was cut short.

Orientation: a display matrix (phone videos: portrait frames stored as landscape plus a rotation) or, without one,
a `rotate` stream tag (clockwise degrees, older muxers) turns the frames by that multiple of 90 degrees;
`VideoMetadata.width` / `height` are the size shown and `rotation` the angle applied (ffprobe's sign:
counterclockwise degrees, -90 for a typical portrait phone clip). Mirroring in a display matrix is not applied; an
angle that is not a multiple of 90 degrees (within 1 degree) is ignored with a warning naming the file.

Truncation is caught by the container's own frame count (mp4, mov, avi), by a Matroska / WebM track's stated
duration against its last frame, by a GIF's missing trailer, or by the demuxer failing; a file cut inside its last
frame or two can still pass as a shorter video.

Both readers plan with this pass (processing/video_pyav.py, processing/video_decord.py), so both sample the same
frames. PyAV (`av`) is imported where it is used: it is an optional extra.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from fractions import Fraction

from .video_frames import DamagedVideoWarning, VideoMetadata
from .video_source import VideoSource

__all__ = ["StreamProbe", "probe_stream"]


@dataclass
class StreamProbe:
    """What the demux pass found: the plan every read of the file follows (`probe_stream`).

    Positions are either display indices (the frame's place in display order, what sampling picks) or decode
    positions (the packet's place in the file); `decode_pos` maps the first to the second.
    """

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


def probe_stream(src: VideoSource, max_pixels: int | None = None) -> StreamProbe:
    """The demux pass over `src`'s video stream (module docstring). `max_pixels`: frames of more pixels will be
    delivered scaled down to at most that many (`StreamProbe.out_size`). ValueError naming the file for a file
    that cannot be read, has no video stream or no frames, is cut short, or has frames over the source's pixel
    limit (checked before the first frame is decoded)."""
    import av

    container = src.open()
    with container:
        stream = _video_stream(container, src)
        if stream.codec_context is None:
            raise ValueError(f"{src.label}: no decoder for its video codec ({_stream_label(stream)})")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise ValueError(f"{src.label}: the video stream does not state its frame size")
        src.check_frame_size(width, height)  # before the first frame is decoded
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
            if src.timed_out(error, read_from, src.timeouts()[1]):
                raise src.timeout_error(f"reading packet {all_packets + 1}", src.timeouts()[1]) from error
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
    if is_gif and not src.gif_complete():
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
    return StreamProbe(
        metadata, timestamps, pts, stream_index, decode_pos=order, packet_pts=packet_pts, packet_dts=packet_dts,
        keyframes=keys, seekable=seekable and len(keys) > 1, by_order=by_order,
        coded_size=(int(width), int(height)), out_size=_scaled_size(int(width), int(height), max_pixels),
    )


def _signed_degrees(turns: int) -> int:
    """Quarter turns counterclockwise -> degrees in (-180, 180], as ffprobe prints a display rotation."""
    return {0: 0, 1: 90, 2: 180, 3: -90}[turns % 4]


def _scaled_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, to at most `max_pixels` pixels; unchanged when it fits."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _video_stream(container, src: VideoSource):
    import av

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


def _rotation_tag(stream) -> float | None:
    """The `rotate` stream tag (clockwise degrees) as a counterclockwise angle, None without one."""
    for key, value in stream.metadata.items():
        if key.lower() == "rotate":
            try:
                return -float(value)
            except ValueError:
                return None
    return None


def _quarter_turns(angle: float | None, src: VideoSource) -> int:
    """A counterclockwise angle in degrees -> quarter turns for `np.rot90` (0 when none or not a right angle)."""
    if angle is None or not math.isfinite(angle):
        return 0
    turns = round(angle / 90)
    if abs(angle - 90 * turns) > 1:
        warnings.warn(f"{src.label}: a display rotation of {angle:g} degrees is not a multiple of 90; the frames are "
                      "left as stored", DamagedVideoWarning, stacklevel=5)
        return 0
    return turns % 4


def _stream_label(stream) -> str:
    """A stream's kind and codec for messages, e.g. "audio (aac)"."""
    try:
        codec = stream.codec_context.name if stream.codec_context is not None else None
    except Exception:  # noqa: BLE001 - a stream PyAV has no decoder for
        codec = None
    return f"{stream.type} ({codec})" if codec else str(stream.type)



