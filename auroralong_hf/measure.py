"""Peak memory of what runs after a point: one class, `PeakMemory`, for the benchmarks and `auroralong describe`.

- CUDA: `torch.cuda.max_memory_allocated()` after `torch.cuda.reset_peak_memory_stats()`; the baseline is the memory
  allocated when the probe is made.
- CPU on Linux: the process's peak resident set (VmHWM in /proc/self/status) is reset to its current size (VmRSS) by
  writing 5 to /proc/self/clear_refs when the probe is made, so VmHWM at the end is the highest resident set since
  then, the model already loaded included and model building left out.
- Elsewhere: `resource.getrusage(RUSAGE_SELF).ru_maxrss`, the process's lifetime peak. It never goes down, and a
  child started by subprocess inherits its parent's (exec keeps it), so growth measured with it counts only what
  rises above the earlier peak and can read low, even 0.

`PeakMemory(device).report()` gives every figure in MiB (the benchmarks' rows); `growth_bytes()` and `kind` give
one number and the name of its measure (`describe`'s `peak_memory_bytes` and `peak_memory_measure`).
"""

from __future__ import annotations

import gc
import resource
import sys
from pathlib import Path

import torch

MIB = 2**20


def proc_status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS: resident now, VmHWM: the peak of this process image); None where
    the file or the field is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def ru_maxrss_bytes() -> int:
    """getrusage's lifetime peak resident set of this process, in bytes (it is bytes on macOS, KiB elsewhere)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def kib_to_mib(value: int | None) -> float | None:
    return None if value is None else value / 1024


class PeakMemory:
    """Peak memory of what runs after the probe is made (see the module docstring for how it is measured).

    `kind` names the measure `growth_bytes` uses: "cuda_max_allocated", "rss_high_water_mark" (VmHWM, reset at the
    baseline) or "ru_maxrss_delta" (where the peak cannot be reset).
    """

    def __init__(self, device="cpu"):
        gc.collect()
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_baseline_bytes = torch.cuda.memory_allocated(self.device)
        self.build_peak_kib = proc_status_kib("VmHWM")  # the peak before the reset: building the model included
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            self.peak_reset = True
        except OSError:
            self.peak_reset = False
        self.rss_baseline_kib = proc_status_kib("VmRSS")
        self.ru_maxrss_baseline_bytes = ru_maxrss_bytes()
        if self.device.type == "cuda":
            self.kind = "cuda_max_allocated"
        elif self.peak_reset and self.rss_baseline_kib is not None:
            self.kind = "rss_high_water_mark"
        else:
            self.kind = "ru_maxrss_delta"

    def growth_bytes(self) -> int:
        """The peak since the probe was made above the baseline, in bytes, by the measure `kind` names (>= 0)."""
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self.cuda_baseline_bytes)
        if self.kind == "rss_high_water_mark":
            hwm = proc_status_kib("VmHWM")
            if hwm is not None:
                return max(0, (hwm - self.rss_baseline_kib) * 1024)
        return max(0, ru_maxrss_bytes() - self.ru_maxrss_baseline_bytes)

    def report(self) -> dict:
        """Every figure in MiB: `peak_mib`, `baseline_mib`, `growth_mib` and `measure` (CUDA allocations on a CUDA
        device, else the resident set), the resident-set figures (`rss_*`, with `rss_peak_source`: VmHWM, reset at
        the baseline or not, or ru_maxrss where /proc is missing), `build_peak_mib` (VmHWM before the reset) and
        `ru_maxrss_mib` (for information)."""
        hwm = proc_status_kib("VmHWM")
        ru_maxrss_mib = ru_maxrss_bytes() / MIB
        rss_peak = hwm / 1024 if hwm is not None else ru_maxrss_mib
        rss_baseline = self.rss_baseline_kib / 1024 if self.rss_baseline_kib is not None else (
            self.ru_maxrss_baseline_bytes / MIB)
        source = ("VmHWM, reset at the baseline" if self.peak_reset else "VmHWM") if hwm is not None else "ru_maxrss"
        out = {
            "rss_peak_source": source, "rss_baseline_mib": rss_baseline, "rss_peak_mib": rss_peak,
            "rss_growth_mib": rss_peak - rss_baseline, "build_peak_mib": kib_to_mib(self.build_peak_kib),
            "ru_maxrss_mib": ru_maxrss_mib,
        }
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            out.update(measure="CUDA max_memory_allocated", baseline_mib=self.cuda_baseline_bytes / MIB,
                       peak_mib=peak / MIB, growth_mib=(peak - self.cuda_baseline_bytes) / MIB)
        else:
            out.update(measure=f"process resident set ({source})", baseline_mib=rss_baseline,
                       peak_mib=rss_peak, growth_mib=rss_peak - rss_baseline)
        return out


__all__ = ["PeakMemory", "kib_to_mib", "proc_status_kib", "ru_maxrss_bytes"]
