"""`auroralong train`: the command's face (see auroralong_hf/commands/__init__.py); the stages are trained by
auroralong_hf/training/train.py."""

import argparse
import contextlib
import json
import sys

# auroralong_hf.training itself is light (its LoRA presets and sample cap: the standard library only)
from ..training import DEFAULT_MAX_LENGTH, LORA_TARGET_PRESETS

# training.train.STAGES, spelled out so that `--help` loads no torch; train refuses other names.
STAGE_NAMES = ("pretrain", "vision", "language")
TRAINING_OVERRIDES_DEST = "training_overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, choices=list(STAGE_NAMES),
                        help="pretrain: projector only (lr 1e-4, kept ratio 1.0); vision: ViT + projector (4e-5, 1.0); "
                             "language: everything (1e-5, 0.1)")
    parser.add_argument("--data", required=True, help="LLaVA-style JSON / JSONL conversations")
    parser.add_argument("--media-root", required=True, help="folder the records' video / frames / image paths are in")
    parser.add_argument("--allow-outside-media-root", action="store_true",
                        help="read media paths that lead outside --media-root (.., absolute paths, symlinks); "
                             "refused by default")
    parser.add_argument("--model", required=True, help="AuroraLong save_pretrained folder (model + processor)")
    parser.add_argument("--output", required=True, help="folder for checkpoints and the final model")
    parser.add_argument("--lora", action="store_true",
                        help="LoRA on the RWKV-6 projections (language stage); the projector trains in full, the "
                             "vision tower stays frozen")
    parser.add_argument("--lora-targets", choices=list(LORA_TARGET_PRESETS), default="all",
                        help="with --lora: attention (time-mix r/k/v/g/o), ffn (channel-mix key/receptance/value), "
                             "all (both; default) or all-linear (PEFT's, less the projector and the frozen tower)")
    parser.add_argument("--lora-vision", action="store_true", help="with --lora: LoRA on the ViT's projections too")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--lora-alpha", type=int, default=128)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--merge-lora", action="store_true", help="with --lora: also write OUTPUT/final merged")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                        help=f"drop samples longer than this many tokens (default {DEFAULT_MAX_LENGTH}; 0: no cap)")
    parser.add_argument("--skip-bad-samples", action="store_true", help="skip bad records with a warning")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.epilog = ("Any TrainingArguments field may follow, spelled as HfArgumentParser spells it, e.g. "
                     "--max_steps 100 --per_device_train_batch_size 4 --activation_checkpointing "
                     "--resume_from_checkpoint last.")
    keep_unknown_arguments(parser, TRAINING_OVERRIDES_DEST)


def keep_unknown_arguments(parser: argparse.ArgumentParser, dest: str) -> None:
    """Make `parser` (a sub-command's) hand the arguments it does not know to `dest` instead of failing, so the
    TrainingArguments options need not be declared (nor transformers imported) to build the command line."""
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, unknown = parse_known(args, namespace)
        setattr(namespace, dest, list(getattr(namespace, dest, None) or []) + list(unknown))
        return namespace, []

    parser.parse_known_args = parse_known_args


def run(args: argparse.Namespace) -> int:
    """`auroralong train`; with --json, stdout holds the report alone (one JSON object, from rank 0)."""
    from ..training.train import train

    # Trainer prints its log lines on stdout (PrinterCallback, or tqdm.write beside the progress bar) and so does
    # train's checksum line: with --json they go to stderr, so that `auroralong train --json | jq` works.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = train(
            args.stage, args.data, args.media_root, args.model, args.output, lora=args.lora,
            lora_vision=args.lora_vision, lora_targets=args.lora_targets, lora_r=args.lora_r,
            lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, merge=args.merge_lora,
            max_length=args.max_length or None,
            skip_bad_samples=args.skip_bad_samples, allow_outside_media_root=args.allow_outside_media_root,
            training_overrides=getattr(args, TRAINING_OVERRIDES_DEST, []),
        )
    if report["rank"] == 0:
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            where = report["final"] or report["adapter"]
            print(f"{report['stage']}: {report['global_step']} steps, train loss {report['train_loss']:.4f}, "
                  f"{report['trainable_parameters']:,} trainable parameters, {report['tokens_per_frame']} tokens per "
                  f"frame; saved {where}")
    return 0
