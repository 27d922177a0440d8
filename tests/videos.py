"""Synthetic test videos whose pixels say which frame they are.

Every frame is a 4 x 4 grid of black or white cells: the 16 bits of the frame's index, most significant bit first,
row by row (cell (0, 0) is bit 15). Cells are a quarter of the frame each way (8 x 8 pixels in a 32 x 32 frame,
one DCT block), so lossy codecs at the qualities used here (mpeg4, H.264, VP8, MJPEG, GIF's palette) keep every
cell far from mid-grey; `decode_frame_index` reads the index back and refuses a frame whose cells are not clean,
which catches a frame decoded from the wrong references (a bad seek) as well as a wrong frame.

`write_video` writes constant or variable frame rate files in mp4, mov, mkv, webm, avi and gif with PyAV's
bundled ffmpeg, and returns a `SyntheticVideo` with what a reader must find: the frame count and every frame's
presentation time in seconds, relative to the first frame. The other writers make the bad inputs: an audio-only
file, a video stream without frames, a file cut short, an empty file, random bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 4  # 4 x 4 cells: 16 bits, frame indices 0 .. 65535
BLACK, WHITE = 16, 235  # studio-range extremes: no clipping in YUV round trips
CLEAN = 64  # a decoded cell's mean must lie within this distance of black or white


@dataclass
class SyntheticVideo:
    path: Path
    num_frames: int
    timestamps: list[float]  # every frame's presentation time, seconds, relative to the first frame
    fps: float | None  # the nominal rate (None for variable frame rate files)
    codec: str
    width: int
    height: int

    @property
    def span(self) -> float:
        """Seconds from the first frame to the last (VideoMetadata.duration adds one frame interval)."""
        return self.timestamps[-1] - self.timestamps[0]


def index_frame(index: int, width: int = 32, height: int = 32) -> np.ndarray:
    """The RGB frame [height, width, 3] uint8 that shows `index` (0 <= index < 2**16) as a 4 x 4 bit grid."""
    if not 0 <= index < 2 ** (GRID * GRID):
        raise ValueError(f"frame index {index} does not fit in {GRID * GRID} bits")
    bits = [(index >> (GRID * GRID - 1 - k)) & 1 for k in range(GRID * GRID)]
    cells = np.where(np.array(bits, dtype=bool).reshape(GRID, GRID), WHITE, BLACK).astype(np.uint8)
    ys = np.arange(height) * GRID // height
    xs = np.arange(width) * GRID // width
    return np.repeat(cells[ys][:, xs][:, :, None], 3, axis=2)


def decode_frame_index(frame) -> int:
    """The index shown by a decoded frame ([H, W, 3] or [H, W] array, or a PIL image); ValueError if not clean."""
    array = np.asarray(frame)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64).mean(axis=2)
    height, width = array.shape
    value = 0
    for row in range(GRID):
        for col in range(GRID):
            y0, y1 = row * height // GRID, (row + 1) * height // GRID
            x0, x1 = col * width // GRID, (col + 1) * width // GRID
            my, mx = max(1, (y1 - y0) // 4), max(1, (x1 - x0) // 4)  # the cell's centre: away from edge ringing
            mean = float(array[y0 + my:y1 - my, x0 + mx:x1 - mx].mean())
            if abs(mean - WHITE) <= CLEAN:
                bit = 1
            elif abs(mean - BLACK) <= CLEAN:
                bit = 0
            else:
                raise ValueError(f"cell ({row}, {col}) has mean {mean:.1f}: not a clean index frame")
            value = (value << 1) | bit
    return value


# container -> (codec, pixel format, encoder options)
FORMATS = {
    "mp4": ("mpeg4", "yuv420p", {"qscale": "2", "g": "12", "bf": "2"}),  # B-frames, open GOPs
    "mov": ("mpeg4", "yuv420p", {"qscale": "2", "g": "10"}),
    "mkv": ("ffv1", "yuv420p", {}),  # lossless
    "webm": ("libvpx", "yuv420p", {"b": "2M", "crf": "4", "g": "15"}),
    "avi": ("mjpeg", "yuvj420p", {"qscale": "2"}),
    "gif": ("gif", "rgb8", {}),
}


def write_video(
    path,
    num_frames: int | None = None,
    fps: float = 10,
    *,
    pts_ms: list[int] | None = None,
    size: tuple[int, int] = (32, 32),
    codec: str | None = None,
    pix_fmt: str | None = None,
    options: dict | None = None,
    container_options: dict | None = None,
    audio: bool = False,
    first_index: int = 0,
) -> SyntheticVideo:
    """Write frames showing indices first_index, first_index + 1, ... to `path` (the format from its suffix).

    Constant frame rate: `num_frames` frames at `fps`. Variable frame rate: `pts_ms`, each frame's presentation
    time in milliseconds (stream time base 1/1000; gif keeps 1/100 s, so give multiples of 10 there).
    `audio` adds a short mono AAC/PCM track before the video stream.
    """
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    default_codec, default_pix_fmt, default_options = FORMATS[suffix]
    codec = codec or default_codec
    if codec != default_codec:
        default_pix_fmt, default_options = "yuv420p", {}
    pix_fmt = pix_fmt or default_pix_fmt
    width, height = size
    variable = pts_ms is not None
    if variable:
        num_frames = len(pts_ms)
        if any(b <= a for a, b in zip(pts_ms, pts_ms[1:], strict=False)):
            raise ValueError("pts_ms must increase")
    rate = Fraction(fps).limit_denominator(100_000)
    with av.open(str(path), "w", options=container_options or {}) as container:
        if audio:
            audio_stream = container.add_stream("pcm_s16le" if suffix in ("avi", "mov", "mkv") else "aac", rate=8000)
        if variable:
            stream = container.add_stream(codec)
            stream.codec_context.time_base = Fraction(1, 100 if suffix == "gif" else 1000)
            stream.time_base = stream.codec_context.time_base
        else:
            stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {**default_options, **(options or {})}
        if audio:
            seconds = (pts_ms[-1] / 1000 if variable else num_frames / float(rate)) + 0.5
            _mux_tone(container, audio_stream, int(8000 * seconds), period=7, amplitude=4000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(first_index + i, width, height), format="rgb24")
            if variable:
                frame.pts = pts_ms[i] // 10 if suffix == "gif" else pts_ms[i]
                frame.time_base = stream.codec_context.time_base
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    timestamps = [(p - pts_ms[0]) / 1000 for p in pts_ms] if variable else [i / float(rate) for i in range(num_frames)]
    return SyntheticVideo(path, num_frames, timestamps, None if variable else float(rate), codec, width, height)


def irregular_pts_ms(num_frames: int, seed: int = 0, step: int = 10) -> list[int]:
    """Strictly increasing presentation times (ms, multiples of `step`) with irregular gaps of 10 ms .. 1 s."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([1, 2, 3, 5, 8, 20, 40, 100], size=num_frames - 1) * step
    return [0, *np.cumsum(gaps).astype(int).tolist()]


def write_audio_only(path) -> Path:
    """An audio-only file (AAC in mp4 / m4a, PCM in wav or mkv): no video stream."""
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le" if suffix in ("wav", "mkv") else "aac", rate=8000)
        _mux_tone(container, stream, 8000, period=5, amplitude=8000)
    return path


def _mux_tone(container, stream, num_samples: int, period: float, amplitude: int) -> None:
    """Encode and mux a mono 8 kHz sine tone of `num_samples` samples into `stream` of `container`."""
    samples = (np.sin(np.arange(num_samples) / period) * amplitude).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 8000
    frame.pts = 0
    for packet in stream.encode(frame):
        container.mux(packet)
    container.mux(stream.encode())


def write_zero_frames(path) -> Path:
    """An AVI whose video stream (MJPEG, 32 x 32) holds not a single frame."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
        container.start_encoding()
    return path


def write_truncated(source, path, fraction: float = 0.5) -> Path:
    """The first `fraction` of `source`'s bytes."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def write_empty(path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def write_random_bytes(path, size: int = 20_000, seed: int = 0) -> Path:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)
