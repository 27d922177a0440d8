"""The `auroralong` command line: describe, create-random, generate, convert, tome-viz, bench, train.

Building the parser imports only light modules (argument declarations): `auroralong --help` loads neither torch nor
transformers when started through the console script (see `auroralong_cli` and the `auroralong_hf` docstring for why
Auto registration waits). A command's heavy modules are imported when it runs, after `main` registered the Auto
classes; tests/test_cli.py checks the import of the parser.
"""

import argparse
import importlib
import json
import os
import re
import sys
import time

import auroralong_hf

from .bench import BENCHMARKS
from .create_random import add_create_random_arguments, run_create_random
from .describe import add_describe_arguments, check_config_folder, run_describe
from .training.train import add_train_arguments, run_train


def _generate(args) -> int:
    """Continue a text prompt: an RWKV-6 folder, an AuroraLong folder (text only, through its language model's
    state) or, without --model, a small random RWKV-6."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .folder_metadata import answer_generation_config
    from .modeling import CACHE_NAME, AuroraLongForConditionalGeneration, Rwkv6Config, Rwkv6ForCausalLM
    from .processing import RwkvWorldTokenizer

    if args.model:
        check_config_folder(args.model)  # a clear error for a path that is not a model folder (not a Hub id)
        try:
            # AutoModelForCausalLM maps an AuroraLong config to AuroraLongForConditionalGeneration (registration)
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
            tokenizer = AutoTokenizer.from_pretrained(args.model)
        except SafetensorError as error:  # a damaged weights file; its message does not say which folder
            raise ValueError(f"{args.model}: cannot load the model: {error}") from None
        source = args.model
    else:
        torch.manual_seed(args.seed)
        config = Rwkv6Config(hidden_size=256, num_hidden_layers=4)
        model = Rwkv6ForCausalLM(config).to(getattr(torch, args.dtype))
        tokenizer = RwkvWorldTokenizer()
        model.generation_config = answer_generation_config(tokenizer)
        source = "a small random RWKV-6 (4 layers, 256 wide; random weights, so the text is gibberish)"
    model.eval()
    is_auroralong = isinstance(model, AuroraLongForConditionalGeneration)
    language_model = model.model.language_model if is_auroralong else model.model

    inputs = tokenizer(args.prompt, return_tensors="pt")
    start = time.perf_counter()
    with torch.inference_mode():
        # end of sequence and padding: the folder's generation_config.json (the end of an answer, "\n\n")
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=args.sample, return_dict_in_generate=True,
        )
    seconds = time.perf_counter() - start
    new_tokens = output.sequences[0, inputs["input_ids"].shape[1]:]
    state = getattr(output, CACHE_NAME)
    state_bytes = state.nbytes
    report = {
        "model": source,
        "model_class": type(model).__name__,
        "prompt": args.prompt,
        "answer": tokenizer.decode(new_tokens, skip_special_tokens=True),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": int(new_tokens.numel()),
        "seconds": round(seconds, 3),
        "state_bytes": state_bytes,
        "wkv_backend": language_model.wkv_backend(model.device),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['prompt']}{report['answer']}")
        print(f"-- {source}; {report['prompt_tokens']} prompt + {report['new_tokens']} new tokens in "
              f"{seconds:.2f} s; recurrent state {state_bytes / 2**20:.2f} MiB ({report['wkv_backend']} WKV)",
              file=sys.stderr)
    return 0


def _convert_rwkv6(args) -> int:
    from .convert_rwkv6 import convert_rwkv6_checkpoint

    report = convert_rwkv6_checkpoint(args.source, args.output, dtype=args.dtype, overwrite=args.overwrite)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _bench(args) -> int:
    """`auroralong bench KIND OPTIONS`: the benchmark's module (auroralong_hf.bench.BENCHMARKS) imports torch, so its
    own options are declared and parsed only now, in a second step (`auroralong bench KIND --help` lists them)."""
    benchmark = BENCHMARKS[args.kind]
    module = importlib.import_module(benchmark.module)
    parser = argparse.ArgumentParser(prog=f"auroralong bench {args.kind}", description=benchmark.description)
    module.add_arguments(parser)
    runner = importlib.import_module("auroralong_hf.bench.runner")
    return runner.run(module, parser.parse_args(args.options, namespace=args))


def _tome_viz(args) -> int:
    from .tome_viz import tome_viz

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auroralong", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="continue a text prompt with an RWKV-6 model")
    generate.add_argument("prompt", nargs="?", default="The Eiffel tower is in the city of")
    generate.add_argument("--model", help="a save_pretrained folder; absent: a small random model")
    generate.add_argument("--max-new-tokens", type=int, default=24)
    generate.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    generate.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--json", action="store_true", help="print one JSON object")
    generate.set_defaults(run=_generate)

    convert = commands.add_parser("convert", help="convert checkpoints into save_pretrained folders")
    convert_kinds = convert.add_subparsers(dest="kind", required=True)
    rwkv6 = convert_kinds.add_parser(
        "rwkv6", help="an RWKV-6 checkpoint: BlinkDL .pth, RWKV/v6-Finch-*-HF folder or fla-hub folder"
    )
    rwkv6.add_argument("source")
    rwkv6.add_argument("output")
    rwkv6.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                       help="dtype of the written weights (default: the source's)")
    rwkv6.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    rwkv6.set_defaults(run=_convert_rwkv6)

    # convert auroralong / convert compose (auroralong_hf/convert_auroralong.py, imported only when they run)
    def _convert_auroralong(args) -> int:
        from .convert_auroralong import run_cli

        return run_cli(args)

    xtuner = convert_kinds.add_parser(
        "auroralong", help="the released xtuner layout (RWKV-6 LLM at the root, visual_encoder/, projector/) -> one "
                           "AuroraLong model + processor folder, the released code's conventions as config switches"
    )
    xtuner.add_argument("source")
    xtuner.add_argument("output")
    xtuner.add_argument("--truncate-vision", action=argparse.BooleanOptionalAction, default=None,
                        help="drop the tower's last layer (features = hidden_states[-2]); default: yes unless it "
                             "already has 23 layers")
    compose = convert_kinds.add_parser(
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
        sub.set_defaults(run=_convert_auroralong)

    bench = commands.add_parser(
        "bench", help="efficiency benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="efficiency benchmarks:\n" + "\n".join(
            f"  {kind:8s} {benchmark.description}" for kind, benchmark in BENCHMARKS.items()),
    )
    bench.add_argument("kind", choices=list(BENCHMARKS), help="the benchmark (listed above)")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the benchmark's options: `auroralong bench KIND --help` lists them")
    bench.set_defaults(run=_bench)

    viz = commands.add_parser(
        "tome-viz", help="draw S-ToMe's merged groups and the tokens' visiting order over an image or video's frames"
    )
    viz.add_argument("input", help="an image (anything Pillow reads) or a video (anything PyAV decodes)")
    viz.add_argument("-o", "--output", required=True, help="the PNG to write (replaced atomically)")
    viz.add_argument("--token-kept-ratio", type=float, default=None,
                     help="fraction of the patches kept, in (0, 1] (default: the model config's; 0.1 without --model)")
    viz.add_argument("--model", help="a save_pretrained folder of a SigLIP / S-ToMe vision tower; absent: a random "
                                     "tiny encoder on the real 384/16 patch grid")
    viz.add_argument("--frames", type=int, default=4, help="frames drawn, taken evenly from a video (default 4)")
    viz.add_argument("--sort", choices=["ascending", "descending", "none", "random"], default=None,
                     help="token order after each merge (default: the config's, ascending)")
    viz.add_argument("--seed", type=int, default=0, help="seed of the random encoder (default 0)")
    viz.add_argument("--json", action="store_true", help="print one JSON object")
    viz.set_defaults(run=_tome_viz)

    describe = commands.add_parser(
        "describe", help="answer a question about a video, streaming it through the RNN state; report the cost"
    )
    add_describe_arguments(describe)
    describe.set_defaults(run=run_describe)
    create = commands.add_parser("create-random", help="write a model + processor folder with random weights")
    add_create_random_arguments(create)
    create.set_defaults(run=run_create_random)

    train = commands.add_parser(
        "train", help="train a stage (pretrain | vision | language) on LLaVA-style conversations with HF Trainer; "
                      "TrainingArguments options (--max_steps, ...) pass through; multi-GPU: accelerate launch"
    )
    add_train_arguments(train)
    train.set_defaults(run=run_train)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that bad input raises, which the command line reports as one `error:` line (exit 2).

    - ValueError: our own checks name the thing and the reason; it includes json.JSONDecodeError and
      UnicodeDecodeError (a file that is not JSON or not UTF-8).
    - OSError: what the operating system says about a path (FileNotFoundError, FileExistsError, PermissionError,
      IsADirectoryError, NotADirectoryError, a full disk's ENOSPC, a read-only file system's EROFS, network errors
      and timeouts), reported with the path it names.
    - RuntimeError: torch's errors about its inputs (a .pth that is not a checkpoint, out of memory).
    - safetensors' SafetensorError: a weights or state file that is truncated or not safetensors.
    - huggingface_hub's StrictDataclassError: a config.json value that the config class's validation refuses.
    - PyAV's FFmpegError: a media file or stream that ffmpeg cannot read.

    Nothing broader, Exception in particular: a TypeError, AttributeError, KeyError, IndexError, ... out of a command
    is a bug in this package, and its traceback is what a report of it needs. Imported here, when an error is being
    handled, so that building the parser stays light.
    """
    from av.error import FFmpegError
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    return ValueError, OSError, RuntimeError, SafetensorError, StrictDataclassError, FFmpegError


def error_line(error: BaseException) -> str:
    """One line saying what went wrong: `PATH: REASON` for an OSError (or PyAV's FFmpegError) that names its path,
    else the message; the line breaks some libraries put in their messages are folded into spaces."""
    filename, reason = getattr(error, "filename", None), getattr(error, "strerror", None)
    if filename is not None and reason:
        where = os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)
        if isinstance(getattr(error, "filename2", None), str):  # rename, link: the source and the destination
            where += f" -> {error.filename2}"
        text = f"{where}: {reason}"
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text.strip())


def main(argv=None) -> int:
    """Run the command line; returns the exit status: 0, 2 for bad input (one `auroralong CMD: error: ...` line on
    stderr, no traceback) or 130 when interrupted (Ctrl-C).

    130 and not 2 on Ctrl-C: 128 + SIGINT is what a shell reports for a program that the interrupt ended, so scripts
    and `make` tell "the user stopped it" from "the input was bad". The commands write their outputs (states, model
    folders, images) under a temporary name that is removed on any exception, KeyboardInterrupt included, and renamed
    when complete, so an interrupt leaves no half-written output (Trainer's own checkpoint-N folders aside).
    """
    args = build_parser().parse_args(argv)
    try:
        # deferred while the parser was built (console script); a no-op when the package registered on import
        auroralong_hf.register_auto_classes()
        return args.run(args)
    except KeyboardInterrupt:
        print(f"auroralong {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"auroralong {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
