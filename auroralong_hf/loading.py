"""Model folders: check one (`check_config_folder`, `check_model_folder`) and load an AuroraLong model with its
processor, overriding the kept ratio, the token order or the dtype (`load_pretrained`).

The one rule for changing the kept ratio is `SiglipToMeVisionConfig.set_token_kept_ratio` (modeling/: `tome_r`
cleared, validated); a loaded model changes it with `AuroraLongForConditionalGeneration.set_token_kept_ratio`, which
keeps the tower's config in step. The processor's `tokens_per_frame` is a plain number that follows the model:
`load_pretrained` sets it after an override, and otherwise refuses a processor that does not match its model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .create_random import quiet_transformers_bars
from .modeling.checkpoint_checks import read_config_json

# What transformers reads the weights from, and what makes a folder's processor (tokenizer included).
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json")
DTYPES = ("float32", "bfloat16", "float16")


def _existing_folder(folder: str | os.PathLike) -> Path:
    """`folder`, user-expanded; FileNotFoundError when there is no such path, ValueError when it is not a folder."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such model folder.")
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (--model takes a save_pretrained folder).")
    return folder


def check_config_folder(folder: str | os.PathLike) -> Path:
    """`folder` (user-expanded) when it is a folder whose config.json is a JSON object; otherwise a clear error
    naming the folder or the file: FileNotFoundError (no such folder) or ValueError (a file, no config.json, a
    config.json that is not UTF-8 JSON or not an object: `read_config_json`). What the object holds is left to the
    config class. Any model type passes (RWKV-6 folders too)."""
    folder = _existing_folder(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: not a model folder, it has no config.json (--model takes a save_pretrained "
                         "folder).")
    read_config_json(folder / "config.json")
    return folder


def check_model_folder(folder: str | os.PathLike) -> Path:
    """`folder` (user-expanded) when it holds an AuroraLong model and its processor: config.json with model_type
    "auroralong", the weights (`WEIGHT_FILES`) and the processor and tokenizer files (`PROCESSOR_FILES`).
    Otherwise FileNotFoundError (no such folder) or ValueError naming the folder and everything it lacks."""
    folder = _existing_folder(folder)
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("the weights (" + " or ".join(WEIGHT_FILES[::2]) + ")")
    missing += [name for name in PROCESSOR_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder}: incomplete model folder, missing {', '.join(missing)} (a complete one is written by "
            "model.save_pretrained + processor.save_pretrained, or `auroralong create-random`)."
        )
    model_type = read_config_json(folder / "config.json").get("model_type")
    if model_type != "auroralong":
        raise ValueError(f"{folder}: not an AuroraLong model folder (config.json has model_type {model_type!r}).")
    return folder


def load_pretrained(
    folder: str | os.PathLike,
    *,
    token_kept_ratio: float | None = None,
    tome_sort: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
):
    """(model in eval mode on `device`, processor) from an AuroraLong folder (`check_model_folder`).

    token_kept_ratio: fraction of each frame's patches the tower keeps, in (0, 1] (default: the folder's); it
        clears the folder's `tome_r`, and the processor's `tokens_per_frame` follows it.
    tome_sort: the token order after merging, one of `configuration_siglip_tome.TOME_SORTS` (default: the folder's).
    dtype: "float32", "bfloat16", "float16", a torch dtype, "auto" (the folder's), or None: float32 on a CPU, the
        folder's elsewhere.

    Errors, each a ValueError naming the folder or the value (or FileNotFoundError for no such folder): not a
    complete AuroraLong folder; a kept ratio or sort the tower refuses (checked before the weights are read); a
    config value the config class refuses; weights that cannot be read (missing, damaged, truncated: "cannot load
    the model"); without a ratio override, a processor whose `tokens_per_frame` is not the model's.
    """
    folder = check_model_folder(folder)
    if isinstance(dtype, str) and dtype not in (*DTYPES, "auto"):
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}, got {dtype!r}.")
    if dtype is None:
        dtype = torch.float32 if torch.device(device).type == "cpu" else "auto"
    elif dtype != "auto" and isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    try:
        config = AutoConfig.from_pretrained(str(folder))
        vision = config.vision_config
        # on the config, before the weights are read: a bad value fails at once, and the model is built with it
        if token_kept_ratio is not None:
            vision.set_token_kept_ratio(token_kept_ratio)
        if tome_sort is not None:
            vision.tome_sort = str(tome_sort)
            vision.validate_architecture()
        with quiet_transformers_bars():  # a command's own work gets progress bars, loading does not
            model = AutoModelForImageTextToText.from_pretrained(str(folder), config=config, dtype=dtype)
        processor = AutoProcessor.from_pretrained(str(folder))
    except StrictDataclassError as error:
        raise ValueError(f"{folder}: {error}") from None
    except (OSError, SafetensorError) as error:  # transformers' "no file named ...", unreadable or damaged files
        raise ValueError(f"{folder}: cannot load the model: {error}") from None
    if token_kept_ratio is not None:  # the override changes the tower's output; the placeholders follow it
        processor.tokens_per_frame = model.tokens_per_frame
    elif processor.tokens_per_frame != model.tokens_per_frame:
        raise ValueError(
            f"{folder}: the processor expects {processor.tokens_per_frame} tokens per frame but the vision tower "
            f"gives {model.tokens_per_frame}: the processor and the model do not belong together."
        )
    return model.to(device).eval(), processor


__all__ = ["DTYPES", "PROCESSOR_FILES", "WEIGHT_FILES", "check_config_folder", "check_model_folder", "load_pretrained"]
