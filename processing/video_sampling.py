"""Frame sampling for AuroraLong's video reading: which frames of a video to decode, chosen by their timestamps.

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

`check_sampling` checks these arguments (ValueError, TypeError for a wrong type); `is_int` / `is_real` are the type
tests every video argument uses (a bool is neither, numpy scalars are).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = ["check_sampling", "is_int", "is_real", "sample_frame_indices"]

_TIE_EPS = 1e-9  # seconds: a target this close to the midpoint of two frames counts as a tie (the earlier wins)


def is_int(value) -> bool:
    """Whether `value` is an integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """Whether `value` is a real number (int, float, Fraction, numpy scalar), not a bool."""
    numbers = (int, float, Fraction, np.integer, np.floating)
    return isinstance(value, numbers) and not isinstance(value, (bool, np.bool_))


def check_sampling(fps, num_frames, max_frames, start, end) -> None:
    """ValueError for a bad sampling argument (TypeError for a wrong type)."""
    if num_frames is not None:
        if not is_int(num_frames):
            raise TypeError(f"num_frames must be an int or None, got {num_frames!r}")
        if num_frames <= 0:
            raise ValueError(f"num_frames must be > 0, got {num_frames}")
    if fps is not None:
        if not is_real(fps):
            raise TypeError(f"fps must be a number or None, got {fps!r}")
        if not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a finite number > 0, got {fps}")
    if max_frames is not None:
        if not is_int(max_frames):
            raise TypeError(f"max_frames must be an int or None, got {max_frames!r}")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be > 0, got {max_frames}")
    for name, value in (("start", start), ("end", end)):
        if value is None:
            continue
        if not is_real(value):
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
    check_sampling(fps, num_frames, max_frames, start, end)
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
