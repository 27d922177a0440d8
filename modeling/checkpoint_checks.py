"""Checks that make `from_pretrained` refuse a checkpoint it would otherwise load as garbage: damaged files,
missing weights, NaN / inf weights. Shared by every model class here (`CompleteCheckpointMixin`), the converters
(`non_finite_tensors`) and the package's folder checks (`read_config_json`, the one check of a config.json)."""

import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PretrainedConfig

# Weights are checked for NaN / inf in these dtypes; other storage (integer or quantised, float8) is not real weights
# as stored, or has no reduction kernels everywhere.
_CHECKED_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_JSON_TYPES = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", int: "a JSON number",
               float: "a JSON number", type(None): "JSON null"}


def non_finite_tensors(named_tensors) -> list[str]:
    """The names of the tensors holding NaN or +-inf, among `(name, tensor)` pairs.

    Only real floating-point tensors that hold data are looked at: meta tensors (not materialised: offloaded by a
    device_map, or built under `init_empty_weights`), integer / quantised / float8 storage and empty tensors are
    skipped. The cost is one float32 sum per tensor (memory-bound; a NaN or inf anywhere makes the total non-finite)
    and one host sync per device; tensors are looked at element-wise only when a total is not finite (which a
    finite sum overflowing float32 would also give: those are then found finite).
    """
    tensors = [(name, t) for name, t in named_tensors
               if t.dtype in _CHECKED_FLOAT_DTYPES and t.device.type != "meta" and t.numel()]
    sums: dict[torch.device, list[torch.Tensor]] = {}
    with torch.no_grad():
        for _, t in tensors:
            sums.setdefault(t.device, []).append(t.sum(dtype=torch.float32))
        if all(bool(torch.isfinite(torch.stack(per_device).sum())) for per_device in sums.values()):
            return []
        return [name for name, t in tensors if not bool(torch.isfinite(t).all())]


def _with_variant(name: str, variant) -> str:
    """transformers' weight-file naming: model.safetensors -> model.fp16.safetensors (the variant before the suffix)."""
    if not variant:
        return name
    parts = name.split(".")
    return ".".join(parts[:-1] + [variant] + parts[-1:])


def read_config_json(path) -> dict:
    """The object a config.json at `path` holds; ValueError naming the file when it cannot be read, is not UTF-8
    JSON, or holds anything but one JSON object (a list, a string, ...). What the object holds is left to the config
    class."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path}: not a readable JSON file ({err}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {_JSON_TYPES.get(type(data), type(data).__name__)}, not a model "
                         "configuration (one JSON object, as save_pretrained writes it).")
    return data


def check_checkpoint_folder(folder, *, config: bool = True, weights: bool = True, variant=None) -> list[str]:
    """Refuse, as a ValueError naming the file and the reason, a local checkpoint folder that transformers would
    fail on with an error that does not say which file is at fault, or not why.

    `config`: config.json, if present, must be valid JSON holding one object. `weights`: every safetensors file
    transformers would read (model[.variant].safetensors, or the shards its index names) must be complete: the
    safetensors library parses its header and checks that the header's data offsets cover the file exactly, so an
    empty or truncated file is caught without reading the tensors. Absent files are left to transformers.
    Returns the names of the tensors the safetensors files hold (empty when none were read).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if config and config_path.is_file():
        read_config_json(config_path)
    if not weights:
        return []
    index_path = folder / _with_variant("model.safetensors.index.json", variant)
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"{index_path}: not a readable safetensors index ({err}).") from None
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise ValueError(f"{index_path} has no 'weight_map' object of tensor name -> shard file.")
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = [folder / _with_variant("model.safetensors", variant)]
    return [name for path in files if path.is_file() for name in _safetensors_keys(path)]


def _safetensors_keys(path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as file:
            return list(file.keys())
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: the file cannot be used either way
        size = path.stat().st_size
        what = "empty (0 bytes)" if size == 0 else f"truncated or damaged ({size:,} bytes; safetensors: {err})"
        raise ValueError(f"{path}: not a complete safetensors file: {what}. Write or download it again.") from None


_LAYER_KEY = re.compile(r"^(.*?)\.?layers\.(\d+)\.")


def check_layer_counts(config, tensor_names: list[str], where) -> None:
    """Refuse a configuration that asks for more layers (`num_hidden_layers` of the config or of any of its
    sub-configs) than any stack of `layers.N.` tensors of the checkpoint holds: the layers past them would be built
    and filled with random values (a 3000-layer config.json on a 24-layer checkpoint asks for ~170B parameters) only
    to be refused as missing weights after. Fewer layers than the checkpoint holds are fine (a truncated tower)."""
    stacks: dict[str, int] = {}
    for name in tensor_names:
        match = _LAYER_KEY.match(name)
        if match:
            stacks[match[1]] = max(stacks.get(match[1], 0), int(match[2]) + 1)
    if not stacks:
        return
    held = max(stacks.values())
    configs = {"": config} | {f"{key}.": getattr(config, key, None) for key in getattr(config, "sub_configs", {})}
    for prefix, sub in configs.items():
        layers = getattr(sub, "num_hidden_layers", None)
        if isinstance(layers, int) and layers > held:
            found = ", ".join(f"{stack or 'layers'}: {n}" for stack, n in sorted(stacks.items()))
            raise ValueError(
                f"{where}: the configuration asks for {layers} layers ({prefix}num_hidden_layers) but the checkpoint "
                f"holds at most {held} ({found}): config.json does not belong to these weights."
            )


class CompleteCheckpointMixin:
    """`from_pretrained` refuses a checkpoint that lacks weights the model has, holds NaN / inf weights, or whose
    files are damaged.

    transformers reports missing weights as "newly initialized", but those owned by a child of a module that
    `_init_weights` initialises as a whole (a token-shift `mu`, a projector's linear) stay uninitialised memory
    (values up to 1e38, or NaN), and a converted or trained folder is never meant to be partly random: a missing
    weight is a broken or foreign checkpoint, reported here naming the folder and the weights. NaN / inf weights
    make every output NaN (greedy decoding then answers nothing, without an error), so they are refused by name.
    A local folder's config.json and safetensors files are checked first (`check_checkpoint_folder`), so that an
    empty or truncated weight file, or a config.json that is a JSON list, is an error naming that file.
    Huge but finite weights are let through: no bound holds for every trained model, and the uninitialised memory
    that produces them is refused as missing weights.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        folder = os.path.join(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if os.path.isdir(folder) and kwargs.get("gguf_file") is None:
            tensor_names = check_checkpoint_folder(
                folder, config=kwargs.get("config") is None, variant=kwargs.get("variant"),
                weights=kwargs.get("state_dict") is None and kwargs.get("use_safetensors") is not False,
            )
            if tensor_names:
                config = kwargs.get("config")
                if not isinstance(config, PretrainedConfig):
                    config = cls.config_class.from_pretrained(folder)
                check_layer_counts(config, tensor_names, pretrained_model_name_or_path)
        wants_info = kwargs.get("output_loading_info", False)
        kwargs["output_loading_info"] = True
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
            raise ValueError(
                f"{pretrained_model_name_or_path}: the checkpoint lacks {len(missing)} of the model's weights "
                f"({shown}); they would be left uninitialised. The folder is incomplete or belongs to another "
                "configuration (check config.json against the weights)."
            )
        non_finite = non_finite_tensors(model.named_parameters())
        if non_finite:
            shown = ", ".join(non_finite[:6]) + (f" and {len(non_finite) - 6} more" if len(non_finite) > 6 else "")
            dtypes = sorted({str(model.get_parameter(name).dtype).removeprefix("torch.") for name in non_finite})
            hint = (" float16 holds at most 65504 in magnitude: load it in bfloat16 or float32."
                    if dtypes == ["float16"] else " The checkpoint is damaged, or its training diverged.")
            raise ValueError(
                f"{pretrained_model_name_or_path}: {len(non_finite)} weight(s) hold NaN or infinite values as loaded "
                f"({', '.join(dtypes)}): {shown}; every output would be NaN.{hint}"
            )
        return (model, info) if wants_info else model


__all__ = [
    "CompleteCheckpointMixin", "check_checkpoint_folder", "check_layer_counts", "non_finite_tensors",
    "read_config_json",
]
