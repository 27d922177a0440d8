"""Media shaped like users' files, made by the tests (PyAV and Pillow only), each with what a player shows.

- `write_clip`: a two-colour picture (one colour in the top-left quadrant, another elsewhere) encoded losslessly
  from Y'CbCr values computed here from the standard's own equations (BT.601 / BT.709 / BT.2020 matrix, limited or
  full range, 8 or 10 bits), tagged with that matrix and range, optionally turned for display by a display matrix
  (mp4 / mov: the track header's matrix) or a `rotate` stream tag (mkv). `Clip.shown` is the RGB picture a player
  shows: the source picture turned clockwise by the rotation.
- `write_exif_jpeg`: a JPEG whose pixels are stored turned, with the EXIF Orientation tag that turns them back.
- `write_damaged_h264`: H.264 index frames (tests/videos.py) with fixed keyframes and a few bytes of one packet
  flipped, the way a bad sector or a broken download damages a file.
- `write_vfr_h264`: a variable frame rate H.264 clip (irregular presentation times, tests/videos.py's writer).
Odd sizes: `write_clip(..., size=(33, 17), codec="vp9")` (4:2:0 with odd dimensions, as browsers record WebM).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image
from videos import SyntheticVideo, irregular_pts_ms, write_video

CORNER, REST = (200, 50, 50), (40, 160, 90)  # RGB: the top-left quadrant and the rest of a `write_clip` picture
# Kr, Kb of each matrix (ITU-R BT.601-7, BT.709-6, BT.2020-2) and its AVColorSpace number in a stream's tags
MATRICES = {"bt601": (0.299, 0.114, 6), "bt709": (0.2126, 0.0722, 1), "bt2020": (0.2627, 0.0593, 9)}
# codec -> (container suffix, PyAV encoder, lossless options)
CODECS = {
    "h264": ("mp4", "libx264", {"qp": "0"}),
    "vp9": ("webm", "libvpx-vp9", {"lossless": "1"}),
    "ffv1": ("mkv", "ffv1", {}),
}
_LIMITED, _FULL = 1, 2  # AVColorRange


@dataclass
class Clip:
    path: Path
    shown: np.ndarray  # [H, W, 3] uint8: the picture a player shows (every frame is this picture)
    rotation: int  # clockwise degrees a player turns the stored frames
    num_frames: int


def ycbcr(rgb, matrix: str, full_range: bool, bits: int) -> tuple[int, int, int]:
    """Integer Y', Cb, Cr of an 8-bit RGB colour (gamma-encoded values taken as R'G'B')."""
    kr, kb, _ = MATRICES[matrix]
    r, g, b = (v / 255 for v in rgb)
    y = kr * r + (1 - kr - kb) * g + kb * b
    pb, pr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    top = 2 ** bits - 1
    if full_range:
        return round(top * y), round(2 ** (bits - 1) + top * pb), round(2 ** (bits - 1) + top * pr)
    scale = 2 ** (bits - 8)
    return round(scale * (16 + 219 * y)), round(scale * (128 + 224 * pb)), round(scale * (128 + 224 * pr))


def _planes_frame(width: int, height: int, corner, rest, matrix, full_range, bits) -> av.VideoFrame:
    """A 4:2:0 frame holding the two-colour picture (the quadrant's edges fall on even pixels: exact chroma)."""
    pix_fmt = "yuv420p10le" if bits == 10 else "yuv420p"
    dtype = np.dtype("<u2") if bits == 10 else np.dtype(np.uint8)
    frame = av.VideoFrame(width, height, pix_fmt)
    values = [ycbcr(corner, matrix, full_range, bits), ycbcr(rest, matrix, full_range, bits)]
    qw, qh = (width // 2) // 2 * 2, (height // 2) // 2 * 2  # the quadrant, in luma pixels (even)
    for k, plane in enumerate(frame.planes):
        sub = 1 if k == 0 else 2
        data = np.full((plane.height, plane.line_size // dtype.itemsize), values[1][k], dtype)
        data[: qh // sub, : qw // sub] = values[0][k]
        plane.update(data.tobytes())
    frame.colorspace = MATRICES[matrix][2]
    frame.color_range = _FULL if full_range else _LIMITED
    return frame


def source_picture(width: int, height: int, corner=CORNER, rest=REST) -> np.ndarray:
    """The stored (unturned) two-colour RGB picture of `write_clip`."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = rest
    picture[: (height // 2) // 2 * 2, : (width // 2) // 2 * 2] = corner
    return picture


def turned_clockwise(picture: np.ndarray, degrees: int) -> np.ndarray:
    """`picture` turned clockwise by a multiple of 90 degrees (np.rot90 turns counterclockwise for k > 0)."""
    return np.ascontiguousarray(np.rot90(picture, k=-(degrees // 90) % 4))


def write_clip(path, *, matrix: str = "bt709", full_range: bool = False, bits: int = 8, codec: str = "h264",
               size: tuple[int, int] = (64, 32), rotation: int = 0, rotate_tag: bool = False, num_frames: int = 3,
               corner=CORNER, rest=REST, tagged: bool = True) -> Clip:
    """A lossless clip of the two-colour picture (see the module docstring); `path`'s suffix is replaced by the
    codec's container. `rotation` (clockwise degrees) goes into a display matrix, or with `rotate_tag` into a
    `rotate` tag (mkv). `tagged=False` leaves the matrix and range untagged (as many files are)."""
    suffix, encoder, options = CODECS[codec]
    if rotate_tag:
        suffix = "mkv"
    path = Path(path).with_suffix("." + suffix)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=10)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p10le" if bits == 10 else "yuv420p"
        stream.options = dict(options)
        if tagged:
            stream.codec_context.colorspace = MATRICES[matrix][2]
            stream.codec_context.color_range = _FULL if full_range else _LIMITED
        if rotate_tag and rotation:
            stream.metadata["rotate"] = str(rotation)
        for index in range(num_frames):
            frame = _planes_frame(width, height, corner, rest, matrix, full_range, bits)
            if not tagged:
                frame.colorspace, frame.color_range = 2, 0  # unspecified
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    if rotation and not rotate_tag:
        set_display_rotation(path, rotation)
    shown = turned_clockwise(source_picture(width, height, corner, rest), rotation)
    return Clip(path, shown, rotation, num_frames)


def set_display_rotation(path, clockwise: int) -> None:
    """Write a rotation into the video track header's matrix of an mp4 / mov file (as phones record portrait)."""
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[clockwise % 360]
    data = bytearray(Path(path).read_bytes())
    box = data.find(b"tkhd")
    if box < 0:
        raise ValueError(f"{path}: no track header box")
    version = data[box + 4]
    # after the type: version + flags (4), times / track id / reserved / duration (20 or 32), reserved (8),
    # layer, alternate group, volume, reserved (8), then the 3 x 3 matrix of 32-bit big-endian numbers
    offset = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    # QuickTime's matrix maps (x, y, 1) row vectors: x' = a x + c y, y' = b x + d y (y down), 16.16 fixed point
    a, b, c, d = cos, sin, -sin, cos
    data[offset:offset + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
    Path(path).write_bytes(bytes(data))


# EXIF Orientation -> the transpose that turns the displayed picture into the stored one (the inverse of what a
# viewer applies): 3 = turned 180, 6 = the viewer turns 90 clockwise, 8 = the viewer turns 90 counterclockwise
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def write_exif_jpeg(path, orientation: int = 6, size: tuple[int, int] = (64, 32)) -> Clip:
    """A JPEG of the two-colour picture as a viewer shows it (`size` = shown width x height), stored turned, with
    the EXIF Orientation tag that turns it back (3, 6 or 8)."""
    path = Path(path)
    shown = source_picture(*size)
    stored = Image.fromarray(shown).transpose(_STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    stored.save(path, quality=95, subsampling=0, exif=exif)
    return Clip(path, shown, {3: 180, 6: 90, 8: 270}[orientation], 1)


@dataclass
class DamagedVideo:
    video: SyntheticVideo
    damaged_frame: int  # the index of the frame whose packet was damaged
    keyframes: list[int]  # frame indices of the keyframes


def write_damaged_h264(path, num_frames: int = 100, fps: float = 25, gop: int = 25,
                       damaged_frames: tuple[int, ...] = (52,), at: str = "end") -> DamagedVideo:
    """H.264 index frames with a keyframe every `gop` frames (no B-frames, no scene-cut keyframes) and 8 bytes
    flipped in the packet of each of `damaged_frames`: near its end (`at="end"`: picture data, which the decoder
    conceals and flags corrupt) or a third of the way in (`at="third"`: in a small packet, the slice header, which
    makes the decoder reject the packet)."""
    video = write_video(path, num_frames, fps, size=(64, 64), codec="libx264",
                        options={"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0",
                                 "crf": "12"})
    with av.open(str(path)) as container:
        packets = [(p.pts, p.pos, p.size, p.is_keyframe) for p in container.demux(container.streams.video[0])
                   if p.size]
    packets.sort()  # presentation order: without B-frames the k-th packet is frame k
    data = bytearray(Path(path).read_bytes())
    for frame in damaged_frames:
        _, position, size, _ = packets[frame]
        start = position + (size - 10 if at == "end" else size // 3)
        data[start:start + 8] = bytes(value ^ 0xFF for value in data[start:start + 8])
    Path(path).write_bytes(bytes(data))
    keyframes = [k for k, packet in enumerate(packets) if packet[3]]
    return DamagedVideo(video, damaged_frames[0], keyframes)


def write_vfr_h264(path, num_frames: int = 20, seed: int = 3) -> SyntheticVideo:
    """A variable frame rate H.264 mp4 of index frames (irregular gaps of 10 ms to 1 s)."""
    return write_video(path, pts_ms=irregular_pts_ms(num_frames, seed=seed), size=(64, 64), codec="libx264")
