"""`auroralong tome-viz`: the command's face (see auroralong_hf/commands/__init__.py); the drawing is
auroralong_hf/tome_viz.py."""

import json


def add_arguments(parser) -> None:
    parser.add_argument("input", help="an image (anything Pillow reads) or a video (anything PyAV decodes)")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write (replaced atomically)")
    parser.add_argument("--token-kept-ratio", type=float, default=None,
                        help="fraction of the patches kept, in (0, 1] (default: the model config's; 0.1 without "
                             "--model)")
    parser.add_argument("--model", help="a save_pretrained folder of a SigLIP / S-ToMe vision tower; absent: a "
                                        "random tiny encoder on the real 384/16 patch grid")
    parser.add_argument("--frames", type=int, default=4, help="frames drawn, taken evenly from a video (default 4)")
    parser.add_argument("--sort", choices=["ascending", "descending", "none", "random"], default=None,
                        help="token order after each merge (default: the config's, ascending)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random encoder (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """`auroralong tome-viz`: draw, then print where (or one JSON object with --json)."""
    from ..tome_viz import tome_viz

    report = tome_viz(args.input, args.output, token_kept_ratio=args.token_kept_ratio, model_dir=args.model,
                      frames=args.frames, sort=args.sort, seed=args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        frames = ", ".join(str(i) for i in report["frame_indices"])
        print(f"{report['output']}: {len(report['frame_indices'])} frame(s) of {report['input']} (index {frames} of "
              f"{report['total_frames']}), {report['tokens_per_frame']} tokens per frame from {report['num_patches']} "
              f"patches (token_kept_ratio {report['token_kept_ratio']:g}, sort {report['sort']}); {report['model']}")
    return 0
