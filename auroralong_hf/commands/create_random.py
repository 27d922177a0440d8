"""`auroralong create-random`: the command's face (see auroralong_hf/commands/__init__.py); the folders are written
by auroralong_hf/create_random.py."""

import argparse
import json

# create_random.SIZES and DTYPES, spelled out so that `--help` loads no torch; create_random refuses other names.
SIZE_NAMES = ("tiny", "small", "2b")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the folder to write (refused when not empty, unless --overwrite)")
    parser.add_argument("--size", choices=list(SIZE_NAMES), default="tiny",
                        help="tiny: tests (384/16 grid, tiny widths); small: quick demos; 2b: the paper's geometry")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation (default 0)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                        help="dtype of the weights (2b: ~8 GB in float32, ~4 GB in bfloat16)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    """Write the folder, then print the report (one JSON object)."""
    from ..create_random import create_random

    report = create_random(args.output, args.size, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite)
    print(json.dumps(report, indent=2))
    return 0
