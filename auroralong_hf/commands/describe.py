"""`auroralong describe [VIDEO] [-q QUESTION]`: the command's face (see auroralong_hf/commands/__init__.py); the
pipeline is auroralong_hf/describe.py, imported when the command runs. The command's defaults live here, and
`describe.describe` takes them as its own.
"""

import argparse
import json

DEFAULT_QUESTION = "What happens in this video?"
DEFAULT_MAX_FRAMES = 7200  # two hours at 1 fps; 0: no cap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", nargs="?", default=None,
                        help="a video file (anything PyAV decodes); absent: the short clip that ships with the package")
    parser.add_argument("-q", "--question", default=DEFAULT_QUESTION, help=f"default: {DEFAULT_QUESTION!r}")
    parser.add_argument("--model", help="an AuroraLong save_pretrained folder (model + processor); absent: an "
                                        "embedded untrained random model")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--fps", type=float, default=None, help="frames sampled per second (default: the "
                                                                "processor's, 1.0)")
    frames.add_argument("--num-frames", type=int, default=None, help="sample this many frames, spread evenly")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                        help=f"refuse a video that samples to more frames than this (default {DEFAULT_MAX_FRAMES}; "
                             "0: no cap)")
    parser.add_argument("--token-kept-ratio", type=float, default=None,
                        help="fraction of each frame's patches (576 at 384/16) kept by S-ToMe, in (0, 1] "
                             "(default: the model's)")
    parser.add_argument("--chunk-frames", type=int, default=None,
                        help="frames decoded and encoded at a time (default: the device's, 8 on CPU, 64 on CUDA; "
                             "modeling/streaming.py CHUNK_FRAMES)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (default 64)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample")
    parser.add_argument("--save-state", metavar="PATH", help="write the RNN state after the video (safetensors)")
    parser.add_argument("--state", metavar="PATH", help="answer from a state saved by --save-state, without a video")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: float32 on CPU, the folder's dtype on CUDA")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..describe import describe

    report = describe(
        args.video, args.question, model_dir=args.model, fps=args.fps, num_frames=args.num_frames,
        token_kept_ratio=args.token_kept_ratio, chunk_frames=args.chunk_frames, max_new_tokens=args.max_new_tokens,
        max_frames=args.max_frames, sample=args.sample, seed=args.seed, state=args.state, save_state=args.save_state,
        dtype=args.dtype, device=args.device,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    source = f"state {report['state']}" if report["state"] else report["video"]
    print(report["answer"])
    print(f"-- {report['model']}")
    print(f"-- {source}: {report['frames']} frames x {report['tokens_per_frame']} tokens = "
          f"{report['visual_tokens']} visual tokens; state {report['state_bytes'] / 2**20:.2f} MiB; "
          f"{report['seconds']:.2f} s (+ {report['load_seconds']:.2f} s loading); peak memory "
          f"+{report['peak_memory_bytes'] / 2**20:.1f} MiB over the loaded model ({report['peak_memory_measure']}, "
          f"{report['device']})")
    return 0


__all__ = ["DEFAULT_MAX_FRAMES", "DEFAULT_QUESTION", "add_arguments", "run"]
