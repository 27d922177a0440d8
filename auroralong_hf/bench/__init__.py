"""`auroralong bench KIND`: the efficiency benchmarks, one module each, sharing `runner` (worker processes, the
environment header, the table printer, `--json`, timing).

Each benchmark module exposes `add_arguments(parser)`, `measure(args) -> dict` (the report) and
`table(report) -> str`, which `runner.run(module, args)` puts together; those that need a fresh process per run also
have `worker(spec)`, started as `python -m auroralong_hf.bench.<module> SPEC.json`. This file imports nothing heavy:
`auroralong bench --help` lists BENCHMARKS without loading torch.
"""

import argparse
import importlib
from typing import NamedTuple


class Benchmark(NamedTuple):
    description: str  # one line, for `auroralong bench --help`
    module: str  # the module that declares its options and runs it


BENCHMARKS = {
    "lm": Benchmark("RWKV-6 language model: WKV, prefill and decode against their bounds", "auroralong_hf.bench.lm"),
    "vision": Benchmark("S-ToMe vision tower: frames/s at several kept ratios against their FLOP bounds",
                        "auroralong_hf.bench.vision"),
    "memory": Benchmark("peak memory of streaming describe at several video lengths (1,024 vs 64 frames), fresh "
                        "process each", "auroralong_hf.bench.memory"),
    "latency": Benchmark("RWKV-6 LM (streaming) vs a transformer of the same shape (sdpa, KV cache) on the same "
                         "visual tokens: memory and latency ratios", "auroralong_hf.bench.latency"),
    "train": Benchmark("samples/s and peak memory of a language-stage training step, gradient checkpointing off and "
                       "on", "auroralong_hf.bench.train"),
}



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = "efficiency benchmarks:\n" + "\n".join(
        f"  {kind:8s} {benchmark.description}" for kind, benchmark in BENCHMARKS.items())
    parser.add_argument("kind", choices=list(BENCHMARKS), help="the benchmark (listed above)")
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="the benchmark's options: `auroralong bench KIND --help` lists them")


def run(args: argparse.Namespace) -> int:
    """`auroralong bench KIND OPTIONS`: the benchmark's module imports torch, so its own options are declared and
    parsed only now, in a second step (`auroralong bench KIND --help` lists them)."""
    benchmark = BENCHMARKS[args.kind]
    module = importlib.import_module(benchmark.module)
    parser = argparse.ArgumentParser(prog=f"auroralong bench {args.kind}", description=benchmark.description)
    module.add_arguments(parser)
    runner = importlib.import_module("auroralong_hf.bench.runner")
    return runner.run(module, parser.parse_args(args.options, namespace=args))


__all__ = ["BENCHMARKS", "Benchmark", "add_arguments", "run"]
