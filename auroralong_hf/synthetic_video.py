"""The synthetic video: a red ball bouncing from left to right over grass, under a sky with a sun, drawn frame by
frame with numpy and encoded with PyAV.

It is the clip that ships with the package (auroralong_hf/data/sample.mp4, what `auroralong describe` answers about
without VIDEO) and the video file that `bench memory` decodes. The shipped clip was made once, from the repository
root, with the defaults (encoders differ in their bytes, so it is not regenerated at install or test time):

    python -c "from auroralong_hf.synthetic_video import *; write_synthetic_video('auroralong_hf/data/sample.mp4', 48)"

The tests' own media (tests/videos.py) are separate: they draw what each test needs to see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CROSSING_S = 6.0  # the ball crosses the frame once every 6 s (the sample clip's length), then starts again
BOUNCE_S = 1.6  # and bounces every 1.6 s
BALL_RADIUS = 14  # pixels
# Encoder options: H.264 at CRF 28 keeps the 6 s sample clip about 8 KB; MPEG-4 Part 2 is cheap to decode.
CODEC_OPTIONS = {"libx264": {"crf": "28", "preset": "veryslow"}, "mpeg4": {"qscale": "3"}}


def synthetic_frame(t: float, width: int, height: int) -> np.ndarray:
    """The picture at `t` seconds: (height, width, 3) uint8 RGB."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.stack([100 + 60 * y / height, 160 + 50 * y / height, np.full(y.shape, 235.0)], -1).astype(np.uint8)
    image[y > 0.7 * height] = (60, 150, 60)
    image[(x - 0.82 * width) ** 2 + (y - 0.18 * height) ** 2 < (0.07 * width) ** 2] = (250, 220, 60)
    cx = 20 + (width - 40) * ((t / CROSSING_S) % 1.0)
    cy = 0.7 * height - BALL_RADIUS - abs(np.sin(np.pi * t / BOUNCE_S)) * 0.36 * height
    image[(x - cx) ** 2 + (y - cy) ** 2 < BALL_RADIUS ** 2] = (220, 40, 40)
    return image


def write_synthetic_video(path, num_frames: int, *, fps: int = 8, size: tuple[int, int] = (256, 192),
                          codec: str = "libx264") -> Path:
    """Write `num_frames` frames of the bouncing ball at `fps` frames per second and `size` = (width, height) pixels
    (even numbers: yuv420p) to the video file `path` (its container from its extension, e.g. .mp4); returns `path`.

    `codec`: "libx264" (H.264, one key frame: the smallest file; the defaults make the shipped sample clip) or
    "mpeg4" (MPEG-4 Part 2). ValueError for another codec. Needs PyAV.
    """
    import av  # optional extra: PyAV

    if codec not in CODEC_OPTIONS:
        raise ValueError(f"Unknown codec {codec!r}: choose one of {', '.join(CODEC_OPTIONS)}.")
    width, height = size
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(CODEC_OPTIONS[codec], **({"g": str(num_frames)} if codec == "libx264" else {}))
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i / fps, width, height), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


__all__ = ["CODEC_OPTIONS", "synthetic_frame", "write_synthetic_video"]
