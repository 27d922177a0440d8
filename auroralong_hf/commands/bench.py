"""`auroralong bench KIND`: the command's face (see auroralong_hf/commands/__init__.py); the benchmarks are
auroralong_hf/bench/, one module each."""

import argparse
import importlib

from ..bench import BENCHMARKS


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
    args.command = parser.prog.removeprefix("auroralong ")  # errors read "auroralong bench KIND: error: ..."
    return runner.run(module, parser.parse_args(args.options, namespace=args))

