"""The benchmarks' package layout: a light registry, one module per benchmark with the command interface, the sizes of
`auroralong create-random`, and the shared pieces they measure with (PeakMemory, Rwkv6Cache.nbytes)."""

import argparse
import importlib
import mmap
import subprocess
import sys

import pytest
import torch

from auroralong_hf.bench import BENCHMARKS
from auroralong_hf.cli import main
from auroralong_hf.create_random import SIZES, random_config, size_configs
from auroralong_hf.measure import PeakMemory
from auroralong_hf.modeling import AuroraLongConfig, Rwkv6Cache, Rwkv6Config

IMPORTS_OF_THE_REGISTRY = """
import sys
import auroralong_cli
import auroralong_hf.bench
print(sorted(name for name in ("torch", "transformers", "numpy") if name in sys.modules))
"""


def test_the_registry_imports_nothing_heavy():
    result = subprocess.run([sys.executable, "-c", IMPORTS_OF_THE_REGISTRY], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-3000:]


@pytest.mark.parametrize("kind", list(BENCHMARKS))
def test_every_benchmark_module_has_the_command_interface(kind, capsys):
    benchmark = BENCHMARKS[kind]
    module = importlib.import_module(benchmark.module)
    assert module.__name__ == f"auroralong_hf.bench.{kind}"
    for name in ("add_arguments", "measure", "table"):
        assert callable(getattr(module, name)), f"{benchmark.module}.{name}"
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert "--json" in parser.format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", kind, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: auroralong bench {kind}") and benchmark.description in " ".join(out.split())


@pytest.mark.parametrize("kind", ["lm", "memory", "latency", "train"])
def test_fresh_process_benchmarks_have_a_worker(kind):
    assert callable(importlib.import_module(BENCHMARKS[kind].module).worker)


def test_sizes_are_create_randoms():
    for kind in ("memory", "latency", "train"):
        parser = importlib.import_module(BENCHMARKS[kind].module).add_arguments(argparse.ArgumentParser())
        size = next(action for action in parser._actions if action.dest == "size")
        assert tuple(size.choices) == tuple(SIZES) and size.default == "small"
    for name in SIZES:
        configs = size_configs(name)
        assert set(configs) == {"vision_config", "text_config"}
        assert set(configs["text_config"]) == {"hidden_size", "num_hidden_layers", "head_size", "vocab_size"}
        assert random_config(name).to_dict() == AuroraLongConfig(**configs).to_dict()
    paper = size_configs("2b")  # spelled out from AuroraLongConfig's defaults
    assert AuroraLongConfig(**paper).to_dict() == AuroraLongConfig().to_dict()
    assert paper["text_config"] == {"hidden_size": 2048, "num_hidden_layers": 24, "head_size": 64,
                                    "vocab_size": 65536}


def test_state_nbytes():
    config = Rwkv6Config(hidden_size=64, num_hidden_layers=2, head_size=32, vocab_size=128)
    state = Rwkv6Cache(config, 3, dtype=torch.bfloat16)
    # per layer: 2 shift vectors [B, C] in bf16, WKV [B, H, K, K] in fp32
    assert state.nbytes == 2 * (2 * 3 * 64 * 2 + 3 * 2 * 32 * 32 * 4)


def test_peak_memory_on_cpu():
    probe = PeakMemory("cpu")
    # 64 MiB of fresh anonymous pages, each touched: a tensor of that size may instead reuse heap memory that is
    # already resident (malloc's reuse depends on what ran before in this process), which raises no peak
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\1" * len(block))
    report = probe.report()
    block.close()
    assert report["measure"].startswith("process resident set") and report["peak_mib"] >= report["baseline_mib"]
    assert report["growth_mib"] == pytest.approx(report["peak_mib"] - report["baseline_mib"])
    assert probe.kind in ("rss_high_water_mark", "ru_maxrss_delta") and probe.growth_bytes() >= 0
    if probe.kind == "rss_high_water_mark":
        assert report["growth_mib"] > 50 and probe.growth_bytes() > 50 * 2**20
