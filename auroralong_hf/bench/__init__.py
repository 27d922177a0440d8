"""`auroralong bench KIND`: the efficiency benchmarks, one module each, sharing `runner` (worker processes, the
environment header, the table printer, `--json`, timing).

Each benchmark module exposes `add_arguments(parser)`, `measure(args) -> dict` (the report) and
`table(report) -> str`, which `runner.run(module, args)` puts together; those that need a fresh process per run also
have `worker(spec)`, started as `python -m auroralong_hf.bench.<module> SPEC.json`. This file imports nothing heavy:
`auroralong bench --help` (auroralong_hf/commands/bench.py) lists BENCHMARKS without loading torch.
"""

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
    "gpu": Benchmark("the GPU path's figures (decode, prefill, tower, streaming describe, a transformer of its size, a "
                     "training step) beside their goals, in one process, models built on the GPU",
                     "auroralong_hf.bench.gpu"),
}

__all__ = ["BENCHMARKS", "Benchmark"]
