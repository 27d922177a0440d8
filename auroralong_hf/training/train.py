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

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from transformers import HfArgumentParser, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..folder_metadata import answer_generation_config, write_training_card
from ..loading import load_pretrained
from ..outputs import check_writable, write_failure, write_folder_atomically
from . import DEFAULT_MAX_LENGTH
from .data import ConversationCollator, load_conversations
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

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def stage_training_defaults(stage: Stage, output_dir: str) -> list[str]:
    """Table 1's TrainingArguments, as command-line arguments (user arguments placed after them win)."""

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
    """Write a model folder with `outputs.write_folder_atomically`: under a temporary name, renamed to `folder` once
    complete, so that a failure (a full disk) or an interrupt leaves no half-written `folder`; an earlier `folder` (a
    rerun into the same --output) is replaced only by a complete one.

    `write(tmp)` runs on every process when `collective` (Trainer.save_model gathers the weights collectively under
    DeepSpeed / sharded loading, and only the main process writes; hence one temporary folder for all processes: the
    main process makes it and sends its name to the others), on the calling process alone otherwise. An I/O error
    is raised as an OSError naming `folder`.
    """
    def write_everywhere(tmp: Path) -> None:
        if collective:
            broadcast_object_list([str(tmp)])
        write(tmp)
        if collective:
            trainer.accelerator.wait_for_everyone()  # every process has written before the main one renames

    try:
        if trainer.is_world_process_zero() or not collective:
            write_folder_atomically(folder, write_everywhere)
        else:
            write(Path(broadcast_object_list([None])[0]))
            trainer.accelerator.wait_for_everyone()
    except Exception as error:
        failure = write_failure(error, folder, "the model folder")
        if failure is None:
            raise
        raise failure from error


__all__ = [
    "PART_PREFIXES", "STAGES", "Stage", "UNUSED_PARAMETERS", "add_lora", "apply_stage_freezing", "part_of",
    "save_folder", "train", "trainable_by_part", "weights_checksum",
]
