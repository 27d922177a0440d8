"""`auroralong convert rwkv6 | auroralong | compose`: the command's arguments; the converters themselves
(auroralong_hf/convert/rwkv6.py, auroralong_hf/convert/auroralong.py) import torch and load when it runs."""

import argparse
import json


def add_arguments(parser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    rwkv6 = kinds.add_parser(
        "rwkv6", help="an RWKV-6 checkpoint: BlinkDL .pth, RWKV/v6-Finch-*-HF folder or fla-hub folder"
    )
    rwkv6.add_argument("source")
    rwkv6.add_argument("output")
    rwkv6.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                       help="dtype of the written weights (default: the source's)")
    rwkv6.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    xtuner = kinds.add_parser(
        "auroralong", help="the released xtuner layout (RWKV-6 LLM at the root, visual_encoder/, projector/) -> one "
                           "AuroraLong model + processor folder, the released code's conventions as config switches"
    )
    xtuner.add_argument("source")
    xtuner.add_argument("output")
    xtuner.add_argument("--truncate-vision", action=argparse.BooleanOptionalAction, default=None,
                        help="drop the tower's last layer (features = hidden_states[-2]); default: yes unless it "
                             "already has 23 layers")
    compose = kinds.add_parser(
        "compose", help="a fresh AuroraLong from a SigLIP vision folder and any RWKV-6 checkpoint, projector random "
                        "(the start of stage-1 training)"
    )
    compose.add_argument("--vision", required=True, help="SiglipVisionModel or SiglipModel save_pretrained folder")
    compose.add_argument("--language", required=True, help="RWKV-6: BlinkDL .pth, RWKV/v6-Finch-HF or fla folder")
    compose.add_argument("output")
    compose.add_argument("--vision-layers", type=int, default=None,
                         help="keep only the tower's first N layers (default: all)")
    compose.add_argument("--seed", type=int, default=0, help="seed of the projector's random init (default 0)")
    for sub in (xtuner, compose):
        sub.add_argument("--token-kept-ratio", type=float, default=0.1,
                         help="fraction of each frame's patches kept by S-ToMe, in (0, 1] (default 0.1)")
        sub.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                         help="dtype of the written weights (default: the sources')")
        sub.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        sub.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args) -> int:
    """Convert, then print the report: JSON for rwkv6; readable lines (or JSON with --json) for the others."""
    from ..convert import auroralong, rwkv6

    if args.kind == "rwkv6":
        report = rwkv6.convert_rwkv6_checkpoint(args.source, args.output, dtype=args.dtype, overwrite=args.overwrite)
        print(json.dumps(report, indent=2, default=str))
        return 0
    if args.kind == "compose":
        report = auroralong.compose_auroralong(
            args.vision, args.language, args.output, token_kept_ratio=args.token_kept_ratio,
            vision_layers=args.vision_layers, dtype=args.dtype, overwrite=args.overwrite, seed=args.seed,
        )
    else:
        report = auroralong.convert_auroralong_checkpoint(
            args.source, args.output, token_kept_ratio=args.token_kept_ratio, truncate_vision=args.truncate_vision,
            dtype=args.dtype, overwrite=args.overwrite,
        )
    print(json.dumps(report, indent=2, default=str) if args.json else auroralong.format_report(report))
    return 0
