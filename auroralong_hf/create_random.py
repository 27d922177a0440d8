"""`auroralong create-random OUT --size tiny|small|2b`: a complete AuroraLong folder (model + processor) with random
weights.

- `tiny`: the real 384/16 patch grid and 23 layers (so the S-ToMe schedule and the 58 tokens per frame are the
  paper's) with very small widths, for tests (about 9 M parameters, most of them the 65536-row embeddings).
- `small`: wider, still quick on a CPU (about 42 M parameters): the embedded default of `auroralong describe`.
- `2b`: the paper's geometry (`AuroraLongConfig()`'s defaults: SigLIP-L/16-384 with 23 layers + Finch 1.6B), for
  benchmarks and training from scratch; about 8 GB in float32, half that with `--dtype bfloat16`.

The weights are the models' own initialisation (SigLIP's, Finch's, the projector's) after `torch.manual_seed(seed)`,
so a size and a seed always give the same model. The folder is written to a temporary sibling that is renamed to
OUT once complete: a failed run leaves nothing behind. The command's options: auroralong_hf/commands/create_random.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
from transformers.utils import logging as hf_logging

from .folder_metadata import answer_generation_config, write_model_card
from .modeling.configuration_auroralong import SIGLIP_L_384_TOME, AuroraLongConfig
from .modeling.configuration_rwkv6 import Rwkv6Config
from .modeling.modeling_auroralong import AuroraLongForConditionalGeneration
from .outputs import check_output_dir, check_writable, write_failure, write_folder_atomically
from .processor_setup import processor_for_vision_config

# Vision: SigLIP fields; text: Rwkv6Config fields. None = the AuroraLongConfig default (the paper's model).
SIZES: dict[str, dict | None] = {
    "tiny": {
        "vision_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 23,
            "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1, "vision_use_head": False,
        },
        "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536},
    },
    "small": {
        "vision_config": {
            "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4, "num_hidden_layers": 23,
            "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1, "vision_use_head": False,
        },
        "text_config": {"hidden_size": 256, "num_hidden_layers": 4, "head_size": 64, "vocab_size": 65536},
    },
    "2b": None,
}
DTYPES = ("float32", "bfloat16", "float16")


def size_configs(size: str) -> dict[str, dict]:
    """{"vision_config": dict, "text_config": dict} of a named size (see SIZES), fresh copies; `2b` spells out the
    paper's geometry (AuroraLongConfig's defaults: the tower's SIGLIP_L_384_TOME and Rwkv6Config's width, depth,
    head size and vocabulary), the fields the other sizes set."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}: choose one of {', '.join(SIZES)}.")
    if SIZES[size] is not None:
        return {key: dict(value) for key, value in SIZES[size].items()}
    text = Rwkv6Config()
    return {"vision_config": dict(SIGLIP_L_384_TOME), "text_config": {
        "hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers, "head_size": text.head_size,
        "vocab_size": text.vocab_size}}


def random_config(size: str, token_kept_ratio: float | None = None):
    """The `AuroraLongConfig` of a named size (see SIZES); `token_kept_ratio` overrides the tower's
    (`SiglipToMeVisionConfig.set_token_kept_ratio`: ValueError outside (0, 1])."""
    config = AuroraLongConfig(**size_configs(size))
    if token_kept_ratio is not None:
        config.vision_config.set_token_kept_ratio(token_kept_ratio)
    return config


@contextlib.contextmanager
def building_on(device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"):
    """Inside the block, modules being constructed create their parameters and buffers on `device` in `dtype` (a
    floating dtype, or its name) directly: no float32 copy on the CPU first, then moved. For the `2b` size on a GPU
    that is the difference between seconds and minutes (and twice the host memory). Random draws come from the
    device's generator, which `torch.manual_seed` seeds as well: a seed still gives one model per device."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_model(size: str, *, seed: int = 0, dtype: str = "float32", token_kept_ratio: float | None = None,
                 device: str | torch.device = "cpu"):
    """(model in eval mode, processor) of a named size, the weights initialised after `torch.manual_seed(seed)`;
    the model's generation config stops at the end of an answer.

    The parameters are created on `device` in `dtype` directly (`building_on`), which matters for `2b`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    config = random_config(size, token_kept_ratio)
    torch.manual_seed(seed)
    with building_on(device, dtype):
        model = AuroraLongForConditionalGeneration(config)
    model.config.dtype = getattr(torch, dtype)  # recorded in config.json
    processor = processor_for_vision_config(config.vision_config)
    model.generation_config = answer_generation_config(processor.tokenizer)  # generate() stops at an answer's end
    return model.eval(), processor


def create_random(output_dir, size: str = "tiny", *, seed: int = 0, dtype: str = "float32",
                  overwrite: bool = False) -> dict:
    """Write a random model of `size` and its processor into `output_dir` (model.save_pretrained +
    processor.save_pretrained); `AutoModelForImageTextToText` / `AutoProcessor.from_pretrained` read it back.

    A non-empty `output_dir` is refused unless `overwrite=True` (FileExistsError), and so is a place no folder can be
    written (`outputs.check_writable`'s errors), before the model is built. The folder is written under a
    temporary name and renamed when complete: a failure (a full disk: OSError naming `output_dir`) or an interrupt
    leaves no half-written folder. Returns a report of plain values.
    """
    output_dir = check_writable(check_output_dir(output_dir, overwrite), what="the output folder", folder=True)
    start = time.perf_counter()
    model, processor = random_model(size, seed=seed, dtype=dtype)
    num_parameters = sum(p.numel() for p in model.parameters())

    def write(folder):
        with quiet_transformers_bars(not sys.stderr.isatty()):
            model.save_pretrained(folder)
        processor.save_pretrained(folder)
        write_model_card(folder, "auroralong", license="mit", summary=(
            f"An AuroraLong model of size `{size}` with RANDOM weights (seed {seed}, {dtype}), written by "
            "`auroralong create-random` for tests, demos and benchmarks: its answers are gibberish."))

    try:
        write_folder_atomically(output_dir, write)  # any failure: no output_dir, or the earlier one as it was
    except Exception as error:
        failure = write_failure(error, output_dir, "the model folder")  # e.g. a full disk, named
        if failure is None:
            raise
        raise failure from error

    files = sorted(p.name for p in output_dir.iterdir())
    return {
        "output_dir": str(output_dir),
        "size": size,
        "seed": seed,
        "dtype": dtype,
        "num_parameters": num_parameters,
        "tokens_per_frame": processor.tokens_per_frame,
        "bytes": sum(os.path.getsize(output_dir / name) for name in files),
        "files": files,
        "seconds": round(time.perf_counter() - start, 3),
    }


@contextlib.contextmanager
def quiet_transformers_bars(quiet: bool = True):
    """Turn transformers' own progress bars (loading and writing weights) off inside the block when `quiet`."""
    enabled = hf_logging.is_progress_bar_enabled()
    if quiet and enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and enabled:
            hf_logging.enable_progress_bar()


__all__ = [
    "DTYPES", "SIZES", "building_on", "create_random", "quiet_transformers_bars", "random_config", "random_model",
    "size_configs",
]
