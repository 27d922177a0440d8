"""`auroralong train`: the paper's three training stages (Table 1) on Hugging Face's `Trainer`.

| stage    | trained                   | peak lr | epochs | token_kept_ratio |
| pretrain | projector (MLP)           | 1e-4    | 1      | 1.0              |
| vision   | ViT + projector           | 4e-5    | 1      | 1.0              |
| language | ViT + projector + RWKV-6  | 1e-5    | 2      | 0.1              |

Every stage: AdamW (betas 0.9 / 0.999, no weight decay), cosine schedule after a linear warm-up over 3% of the steps
(`warmup_steps=0.03`, transformers' spelling of a ratio), loss on the assistant answers only (the collator's labels),
bf16 mixed precision where the device supports it. Any `TrainingArguments` field overrides these, spelled as
`HfArgumentParser` spells it (`--max_steps 100 --learning_rate 2e-5 --report_to none ...`). Table 1's global batch
sizes (128 / 2048 / 512) are per_device_train_batch_size x gradient_accumulation_steps x processes: set them.

The stage's token_kept_ratio is written into the model's vision config for the run and the processor is rebuilt to
match, so the placeholder runs the collator writes have the length the tower produces; both are saved that way.

Outputs in OUTPUT: Trainer checkpoints (`checkpoint-N/`, resumable with `--resume_from_checkpoint PATH|last`),
then `final/` (model + processor, loads with `AutoModelForImageTextToText` / `AutoProcessor`). With `--lora`:
`adapter/` (PEFT adapter + the run's config.json + processor) and, with `--merge-lora`, `final/` holds the merged
plain model. `lora.merge_lora(adapter_dir, output_dir)` merges later.

`--lora` (language stage): adapters on the RWKV-6 layers of `--lora-targets` (lora.py's presets), the projector
trained in full, everything else frozen: the vision tower too, unless `--lora-vision` gives it adapters.

Multi-process: launch with `accelerate launch` (DDP; configs in auroralong_hf/training/configs/); nothing here
distributes by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..output_paths import check_writable, write_failure
from . import DEFAULT_MAX_LENGTH
from .lora import LORA_TARGET_PRESETS, lora_config


@dataclass(frozen=True)
class Stage:
    name: str
    trains: tuple[str, ...]  # parts: "vision_tower", "projector", "language_model"
    learning_rate: float
    num_train_epochs: float
    token_kept_ratio: float


STAGES = {
    "pretrain": Stage("pretrain", ("projector",), 1e-4, 1, 1.0),
    "vision": Stage("vision", ("vision_tower", "projector"), 4e-5, 1, 1.0),
    "language": Stage("language", ("vision_tower", "projector", "language_model"), 1e-5, 2, 0.1),
}

# Parameter-name prefixes of each part of AuroraLongForConditionalGeneration (lm_head belongs to the language model).
PART_PREFIXES = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}

# Parameters the forward never uses: the tower's post-layernorm and pooling head (the projector reads the last
# layer's output before them, as LLaVA does). They stay frozen in every stage: nothing would train them, and DDP
# without find_unused_parameters refuses parameters that get no gradient.
UNUSED_PARAMETERS = re.compile(r"(^|\.)vision_tower\.(.+\.)?(post_layernorm|head)\.")


def part_of(name: str) -> str:
    """The part ("vision_tower", "projector", "language_model") a parameter name belongs to."""
    for part, prefixes in PART_PREFIXES.items():
        if name.startswith(prefixes):
            return part
    raise ValueError(f"Parameter {name!r} belongs to no known part of AuroraLong.")


def apply_stage_freezing(model, stage: str | Stage) -> dict[str, int]:
    """requires_grad = True exactly on the parts `stage` trains; returns trainable parameter counts per part."""
    stage = STAGES[stage] if isinstance(stage, str) else stage
    counts = dict.fromkeys(PART_PREFIXES, 0)
    for name, parameter in model.named_parameters():
        part = part_of(name)
        parameter.requires_grad_(part in stage.trains and not UNUSED_PARAMETERS.search(name))
        if parameter.requires_grad:
            counts[part] += parameter.numel()
    return counts


def trainable_by_part(model) -> dict[str, int]:
    """Trainable parameter counts per part of a plain or PEFT-wrapped AuroraLong (adapters count in their part)."""
    counts = dict.fromkeys(PART_PREFIXES, 0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            counts[part_of(name.removeprefix("base_model.model."))] += parameter.numel()
    return counts


def add_lora(model, stage: Stage, *, lora_vision: bool = False, targets: str = "all", r: int = 64,
             alpha: int = 128, dropout: float = 0.05):
    """Wrap `model` in a PEFT LoRA model: adapters on the RWKV-6 layers of the preset `targets`
    (lora.LORA_TARGET_PRESETS) and, with `lora_vision`, on the ViT's projections; the projector is trained in full
    (saved with the adapter); everything else, the vision tower included, is frozen."""
    from peft import get_peft_model

    if "language_model" not in stage.trains:
        raise ValueError(f"LoRA adapts the RWKV-6 language model, which the {stage.name} stage does not train.")
    model = get_peft_model(model, lora_config(targets, vision=lora_vision, r=r, alpha=alpha, dropout=dropout))
    for name, parameter in model.named_parameters():
        if UNUSED_PARAMETERS.search(name):
            parameter.requires_grad_(False)
    return model


def weights_checksum(model) -> str:
    """sha256 over every parameter's name and bytes (float32), in name order: equal on ranks that agree."""
    import torch

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def stage_training_defaults(stage: Stage, output_dir: str) -> list[str]:
    """Table 1's TrainingArguments, as command-line arguments (user arguments placed after them win)."""
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return [
        "--output_dir", str(output_dir),
        "--learning_rate", str(stage.learning_rate),
        "--num_train_epochs", str(stage.num_train_epochs),
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.03",
        "--adam_beta1", "0.9",
        "--adam_beta2", "0.999",
        "--weight_decay", "0.0",
        "--bf16", str(bf16),
        "--remove_unused_columns", "False",
        "--logging_steps", "10",
        "--save_strategy", "steps",
        "--save_steps", "500",
        "--report_to", "none",
    ]


def parse_training_arguments(stage: Stage, output_dir: str, overrides: list[str]):
    """TrainingArguments from Table 1's defaults and the user's HfArgumentParser-spelled overrides."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    defaults = stage_training_defaults(stage, output_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # a multi-process launch (accelerate launch --multi_gpu / torchrun) on a machine without GPUs: DDP on CPU
        # over gloo (accelerate's own --cpu launcher starts one process unless MPI is set up)
        defaults += ["--use_cpu", "True"]
    parser = HfArgumentParser(TrainingArguments)
    training_args, unknown = parser.parse_args_into_dataclasses(
        args=defaults + list(overrides), return_remaining_strings=True
    )
    if unknown:
        raise ValueError(f"Unknown training argument(s): {' '.join(unknown)} (TrainingArguments fields are spelled "
                         "--max_steps, --learning_rate, --per_device_train_batch_size, ...).")
    if training_args.output_dir != str(output_dir):
        raise ValueError("Give the output folder with --output, not --output_dir.")
    if training_args.remove_unused_columns:
        raise ValueError("remove_unused_columns must stay False: the collator reads the raw records.")
    # TrainingArguments maps the deprecated --gradient_checkpointing* onto --activation_checkpointing* itself
    if training_args.activation_checkpointing and training_args.activation_checkpointing_kwargs is None:
        # non-reentrant checkpointing: gradients reach the trainable parts even where a block's inputs come from
        # frozen ones (e.g. LoRA with frozen embeddings)
        training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
    return training_args


def train(stage: str, data: str, media_root: str, model_dir: str, output_dir: str, *, lora: bool = False,
          lora_vision: bool = False, lora_targets: str = "all", lora_r: int = 64, lora_alpha: int = 128,
          lora_dropout: float = 0.05,
          merge: bool = False, max_length: int | None = DEFAULT_MAX_LENGTH, skip_bad_samples: bool = False,
          allow_outside_media_root: bool = False, training_overrides: list[str] = ()) -> dict:
    """Run one stage; returns a report (plain values). See the module docstring."""
    from transformers import Trainer
    from transformers.trainer_utils import get_last_checkpoint

    from ..folder_metadata import answer_generation_config, write_training_card
    from ..loading import load_pretrained
    from .data import ConversationCollator, load_conversations

    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}: choose one of {', '.join(STAGES)}.")
    spec = STAGES[stage]
    if lora and stage != "language":
        raise ValueError("--lora adapts the RWKV-6 language model, which only the language stage trains.")
    if lora_vision and not lora:
        raise ValueError("--lora-vision adds ViT adapters to a --lora run.")
    if lora_targets not in LORA_TARGET_PRESETS:
        raise ValueError(f"Unknown --lora-targets {lora_targets!r}: choose one of {', '.join(LORA_TARGET_PRESETS)}.")
    if merge and not lora:
        raise ValueError("--merge-lora needs --lora.")
    for path, what in ((data, "data file"), (model_dir, "model folder"), (media_root, "media root")):
        if not Path(path).exists():
            raise FileNotFoundError(f"The {what} {path} does not exist.")
    check_writable(output_dir, what="--output", folder=True)  # now, not after the training
    args = parse_training_arguments(spec, output_dir, training_overrides)

    # the stage's kept ratio, in the model and the processor alike: the collator's placeholder runs match the tower
    model, processor = load_pretrained(model_dir, token_kept_ratio=spec.token_kept_ratio, dtype="float32")
    model.generation_config = answer_generation_config(processor.tokenizer)  # saved with final/ (and checkpoints)
    tokens = model.tokens_per_frame
    counts = apply_stage_freezing(model, spec)
    if lora:
        model = add_lora(model, spec, lora_vision=lora_vision, targets=lora_targets, r=lora_r, alpha=lora_alpha,
                         dropout=lora_dropout)
        counts = trainable_by_part(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    dataset = load_conversations(data)
    collator = ConversationCollator(processor, media_root, max_length=max_length, skip_bad_samples=skip_bad_samples,
                                    allow_outside_media_root=allow_outside_media_root)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      processing_class=processor)
    resume = args.resume_from_checkpoint
    if resume == "last":
        resume = get_last_checkpoint(args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint last: no checkpoint-N folder in {args.output_dir}.")
    result = trainer.train(resume_from_checkpoint=resume)

    rank = trainer.args.process_index
    checksum = weights_checksum(trainer.model)
    print(f"auroralong train: rank {rank} weights sha256 {checksum}", flush=True)
    output = Path(output_dir)
    final, adapter = output / "final", output / "adapter"
    main = trainer.is_world_process_zero()
    if lora:
        def write_adapter(folder):
            trainer.save_model(str(folder))  # adapter + processor, on the main process
            if main:
                trainer.model.config.save_pretrained(folder)  # the run's config (kept ratio), for merge_lora

        save_folder(trainer, adapter, write_adapter)
        if merge and main:
            merged = trainer.model.merge_and_unload()

            def write_merged(folder):
                merged.save_pretrained(folder)
                processor.save_pretrained(folder)
                write_training_card(folder, stage, model_dir)

            save_folder(trainer, final, write_merged, collective=False)
    else:
        def write_final(folder):
            trainer.save_model(str(folder))
            if main:
                write_training_card(folder, stage, model_dir)

        save_folder(trainer, final, write_final)
    trainer.accelerator.wait_for_everyone()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "stage": stage,
        "output_dir": str(output),
        "final": str(final) if (not lora or merge) else None,
        "adapter": str(adapter) if lora else None,
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "logged_losses": losses,
        "learning_rate": args.learning_rate,
        "token_kept_ratio": spec.token_kept_ratio,
        "tokens_per_frame": tokens,
        "trainable_parameters": trainable,
        "trainable_by_part": counts,
        "lora_targets": lora_targets if lora else None,
        "activation_checkpointing": bool(getattr(trainer.model, "is_activation_checkpointing", False)),
        "skipped_samples": dict(getattr(collator, "skipped", {}) or {}),
        "rank": rank,
        "world_size": trainer.args.world_size,
        "weights_sha256": checksum,
    }


def save_folder(trainer, folder: Path, write, *, collective: bool = True) -> None:
    """Write a model folder under a temporary name and rename it to `folder` once complete, so that a failure (a
    full disk) or an interrupt leaves no half-written `folder`; an earlier `folder` (a rerun into the same --output)
    is replaced only by a complete one.

    `write(tmp)` runs on every process when `collective` (Trainer.save_model gathers the weights collectively under
    DeepSpeed / sharded loading, and only the main process writes; hence one temporary name for all processes), on
    the calling process alone otherwise. An I/O error is raised as an OSError naming `folder`.
    """
    import shutil

    main = trainer.is_world_process_zero() or not collective
    barrier = trainer.accelerator.wait_for_everyone if collective else (lambda: None)
    tmp, old = (folder.with_name(f".{folder.name}.{suffix}") for suffix in ("partial", "old"))
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run that was killed while saving
        barrier()
        write(tmp)
        barrier()
        if main:
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not folder.exists():
                old.rename(folder)
        failure = write_failure(error, folder, "the model folder") if isinstance(error, Exception) else None
        if failure is None:
            raise
        raise failure from error


# -- command line -------------------------------------------------------------------------------------------------

TRAINING_OVERRIDES_DEST = "training_overrides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, choices=list(STAGES),
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


def run(args) -> int:
    """`auroralong train`; with --json, stdout holds the report alone (one JSON object, from rank 0)."""
    # Trainer prints its log lines on stdout (PrinterCallback, or tqdm.write beside the progress bar) and so does the
    # checksum line below: with --json they go to stderr, so that `auroralong train --json | jq` works.
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


__all__ = [
    "PART_PREFIXES", "STAGES", "Stage", "UNUSED_PARAMETERS", "add_lora", "add_arguments",
    "apply_stage_freezing", "part_of", "run", "save_folder", "train", "trainable_by_part",
    "weights_checksum",
]
