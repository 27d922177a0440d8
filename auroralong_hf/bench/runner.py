"""What the benchmarks share: timing, the environment header, the one table printer, `--json` output, the options
of the fresh-process benchmarks and their worker processes.

Output: progress lines go to stderr (`log`); the table goes to stdout, or to stderr with `--json`, when stdout
carries exactly one JSON object (`emit`).

Worker processes: a benchmark that measures memory, or that must not share a process with another contender, runs
each measurement in a fresh process, `python -m auroralong_hf.bench.<module> SPEC.json`. The parent writes the spec
(a JSON object), the module's `worker(spec) -> dict` runs in the child (`run_worker_process`), and its result comes
back as JSON in the file `spec["out"]`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..commands.describe import DEFAULT_QUESTION
from ..create_random import SIZES
from ..modeling.streaming import CHUNK_FRAMES, resolve_chunk_frames

DESCRIBE_QUESTION = DEFAULT_QUESTION  # `auroralong describe`'s default
# the random models' geometry: `auroralong create-random`'s sizes (create_random.size_configs)
SIZES_SOURCE = "auroralong_hf.create_random.SIZES"
WORKER_TIMEOUT_S = 4 * 3600

# ----------------------------------------------------------------------------------------------------------------
# output


def log(message: str) -> None:
    """Progress lines: always on stderr, so stdout carries only the table or the JSON object."""
    print(message, file=sys.stderr, flush=True)


def jsonable(value):
    """`value` with tensors turned into lists and tuples into lists (what json.dumps writes), recursively."""
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def run(benchmark, args: argparse.Namespace) -> int:
    """`auroralong bench KIND`: `benchmark` (a module of this package) measures, then its table goes to stdout
    (stderr with --json) and, with --json, the report as one JSON object to stdout. The exit status is 1 when the
    report lists "errors" (a benchmark that goes on past a figure that failed, as `bench gpu` does), else 0."""
    report = benchmark.measure(args)
    emit(report, benchmark.table(report), args.json)
    return 1 if report.get("errors") else 0


def emit(report: dict, table: str, as_json: bool) -> None:
    """The table for people (stdout; stderr with --json), and with --json the one JSON object on stdout."""
    print(table, file=sys.stderr if as_json else sys.stdout, flush=True)
    if as_json:
        print(json.dumps(report), flush=True)


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart, each as wide as its widest cell: the header, a rule, the rows."""
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(header)]
    fmt = "  ".join(f"{{:<{width}}}" for width in widths)
    return [fmt.format(*header).rstrip(), "  ".join("-" * width for width in widths),
            *(fmt.format(*row).rstrip() for row in rows)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def format_seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.3f} s"


def format_timing(timing: dict | None) -> str:
    """"<min> min, <median> median" of a `summary`, or "-"."""
    if timing is None:
        return "-"
    return f"{format_seconds(timing['min'])} min, {format_seconds(timing['median'])} median"


# ----------------------------------------------------------------------------------------------------------------
# timing


def summary(runs: list[float]) -> dict:
    return {"min": min(runs), "median": statistics.median(runs), "runs": runs}


def time_runs(fn, repeats: int, warmup: int = 1, device: torch.device | None = None) -> dict:
    """Call fn `warmup` times untimed, then `repeats` times timed: {"min", "median", "runs"} in seconds. With a CUDA
    `device`, each run is timed from an idle device to the end of its queued work (`synchronize`)."""
    return time_interleaved({"fn": fn}, repeats, warmup, device)["fn"]


def time_interleaved(fns: dict, repeats: int, warmup: int = 1, device: torch.device | None = None) -> dict:
    """Like `time_runs` for several contenders, taking turns run by run (A B C A B C ...), so that a slow phase of
    the machine hits all of them alike. Returns {name: {"min", "median", "runs"}}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            runs[name].append(time.perf_counter() - start)
    return {name: summary(times) for name, times in runs.items()}


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read after it times the work; nothing to wait for
    on the CPU (or with no device)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# the environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (other processes sharing the CPU make the timings noisy), where the OS says."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def environment(threads: int | None = None, **extra) -> dict:
    """The report's "env": date, torch and python versions, torch threads (`threads`, else torch's), CPU model, then
    `extra` (e.g. load_average_before=load_average())."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": threads or torch.get_num_threads(), "cpu": cpu_model(), **extra,
    }


def header_lines(kind: str, env: dict, details: str = "") -> list[str]:
    """The first two lines of every table: the benchmark and date; versions, threads and CPU, then `details`."""
    return [f"auroralong bench {kind}  {env['date']}",
            f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}{details}"]


def device_details(report: dict, noisy: bool = False) -> str:
    """The rest of the second header line of the fresh-process benchmarks: device, dtype and load averages."""
    env = report["env"]
    return (f", device {report['device']}, {report['dtype']}; 1-minute load average before "
            f"{env['load_average_before']}, after {env['load_average_after']}"
            + (" (other processes on the CPU make timings noisy)" if noisy else ""))


# ----------------------------------------------------------------------------------------------------------------
# options of the fresh-process benchmarks (memory, latency, train)


def add_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=tuple(SIZES), default="small",
                        help="random model geometry (auroralong create-random's sizes): small (default), tiny, 2b "
                             "(the paper's geometry, for a GPU)")


def frame_list(text: str) -> list[int]:
    """argparse type: comma-separated frame counts, each >= 1, sorted without duplicates."""
    try:
        frames = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of frame counts: {text!r}") from error
    if not frames or any(count < 1 for count in frames):
        raise argparse.ArgumentTypeError(f"every frame count must be >= 1, got {text!r}")
    return sorted(set(frames))


def add_streaming_arguments(parser: argparse.ArgumentParser, frames: str, new_tokens: int,
                            repeats: int | None) -> argparse.ArgumentParser:
    """Options of the streaming benchmarks (memory, latency): size, video lengths, chunking, answer length, then
    `add_run_arguments`."""
    add_size_argument(parser)
    parser.add_argument("--frames", type=frame_list, default=frame_list(frames),
                        help=f"video lengths in frames, comma-separated (default {frames})")
    parser.add_argument("--chunk-frames", type=int, default=None,
                        help=f"frames streamed into the RNN state per step (default: the device's, "
                             f"{CHUNK_FRAMES['cpu']} on CPU and {CHUNK_FRAMES['cuda']} on CUDA, as generate and "
                             "`auroralong describe`)")
    parser.add_argument("--new-tokens", type=int, default=new_tokens,
                        help=f"answer tokens decoded greedily (default {new_tokens})")
    if repeats:
        parser.add_argument("--repeats", type=int, default=repeats,
                            help=f"timed runs per contender and length, after one short warm-up (default {repeats})")
    return add_run_arguments(parser)


def check_streaming_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError for a count below 1; an unset --chunk-frames becomes the --device's default."""
    if (args.chunk_frames is not None and args.chunk_frames < 1) or args.new_tokens < 1:
        raise ValueError("--chunk-frames and --new-tokens must be at least 1.")
    args.chunk_frames = resolve_chunk_frames(args.chunk_frames, args.device)
    if getattr(args, "repeats", 1) < 1:
        raise ValueError("--repeats must be at least 1.")


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every fresh-process benchmark shares (bench memory, latency and train)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default; peak = the process's resident set) or cuda (peak = torch's "
                             "max_memory_allocated)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="weights and activations (default float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--no-flush-denormal", action="store_true",
                        help="leave denormal floats on (default: flushed to zero in every run alike)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="worker processes run at once (default 1; more is for quick checks only: memory stays "
                             "per process, but the timings then share the CPU)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (the table goes to stderr)")
    return parser


def run_spec(args: argparse.Namespace) -> dict:
    """The spec fields every worker of a fresh-process benchmark reads (`set_up_worker`)."""
    return {"device": args.device, "dtype": args.dtype, "threads": args.threads,
            "flush_denormal": not args.no_flush_denormal, "seed": args.seed}


# ----------------------------------------------------------------------------------------------------------------
# worker processes


def start_worker(module: str, spec: dict, stem: Path, *, env: dict | None = None,
                 timeout: float = WORKER_TIMEOUT_S) -> tuple[subprocess.CompletedProcess, float, Path]:
    """Write `spec` (with "out" = `stem`.result) to `stem`.json and run `python -m MODULE stem.json` in a fresh
    process with `env` added to this one's environment (warnings off). Returns (the finished process, its wall time
    in seconds, the result file)."""
    out = stem.with_suffix(".result")
    spec_path = stem.with_suffix(".json")
    spec_path.write_text(json.dumps(dict(spec, out=str(out))))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, str(spec_path)],
                          env=dict(os.environ, PYTHONWARNINGS="ignore", **(env or {})), capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.perf_counter() - start, out


def output_tail(proc: subprocess.CompletedProcess, lines: int) -> str:
    """The last `lines` lines of a finished process's stderr (or stdout, when stderr is empty), joined by " | "."""
    return " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-lines:])


def run_worker(module: str, spec: dict, stem: Path, label: str) -> dict:
    """Run `module`'s worker on `spec` in a fresh process (`start_worker`); its result, with the process's wall time
    as "process_wall_s". A failed worker is a RuntimeError naming `label` and the end of its output."""
    log(f"  {label} (fresh process) ...")
    proc, wall, out = start_worker(module, spec, stem)
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: the worker process exited with {proc.returncode}: {output_tail(proc, 6)}")
    result = json.loads(out.read_text())
    result["process_wall_s"] = wall
    return result


def run_workers(module: str, jobs: list[tuple[dict, str]], tmp: Path, parallel: int = 1) -> list[dict]:
    """Each (spec, label) in its own fresh process, `parallel` at a time (1: one after another); results in order.

    Memory figures are per process either way; timings are only meaningful with parallel=1.
    """
    stems = [tmp / f"{module.rsplit('.', 1)[-1]}{i}" for i in range(len(jobs))]
    if parallel <= 1:
        return [run_worker(module, spec, stem, label) for stem, (spec, label) in zip(stems, jobs, strict=True)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(run_worker, module, spec, stem, label)
                   for stem, (spec, label) in zip(stems, jobs, strict=True)]
        return [future.result() for future in futures]


def run_worker_process(worker) -> None:
    """The body of `python -m auroralong_hf.bench.<module> SPEC.json`: `worker(spec)`'s result, a JSON-able dict,
    written to the file spec["out"]."""
    if len(sys.argv) != 2:
        module = getattr(sys.modules["__main__"].__spec__, "name", "auroralong_hf.bench.<module>")
        sys.exit(f"usage: python -m {module} SPEC.json (a worker that `auroralong bench` starts)")
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["out"]).write_text(json.dumps(worker(spec)))


def set_up_worker(spec: dict) -> tuple[torch.device, torch.dtype]:
    """Threads and denormal flushing as the spec asks; (device, dtype) of the spec, CUDA checked."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("flush_denormal"):
        torch.set_flush_denormal(True)
    device = torch.device(spec["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    return device, getattr(torch, spec["dtype"])
