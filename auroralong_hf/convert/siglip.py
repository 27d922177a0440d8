"""SigLIP vision checkpoints, read into this package's S-ToMe tower: the vision half of both AuroraLong conversions.

A source is a `save_pretrained` folder of a SiglipVisionModel (tensor names with or without ``vision_model.``) or of
a full SiglipModel (its vision part is taken, the text tower set aside), or xtuner's ``visual_encoder/`` (which may
also hold ``pos_emb``, its encoder's copy of the position embedding). The geometry comes from the folder's
config.json; the tower may be cut to its first layers; the preprocessing is SigLIP's, with the folder's
preprocessor_config.json values.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import SiglipImageProcessorPil

from ..modeling.configuration_siglip_tome import SiglipToMeVisionConfig
from ..modeling.modeling_siglip_tome import SiglipToMeVisionModel
from .checkpoint_io import check_floating, read_json, read_weight_files, require_folder, require_weight_files

# SigLIP vision geometry fields carried over from a source config.json (absent ones take SigLIP's defaults, as
# transformers does when it reads such a file: older versions wrote only the non-default values).
SIGLIP_VISION_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels", "image_size",
    "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout",
)
SIGLIP_VISION_MODEL_TYPES = ("siglip_vision_model", "auroralong_siglip_tome")
# Preprocessing fields adopted from a vision folder's preprocessor_config.json.
_IMAGE_PROCESSOR_FIELDS = (
    "image_mean", "image_std", "resample", "rescale_factor", "do_rescale", "do_normalize", "do_resize",
    "do_convert_rgb",
)

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")
_VISION_PREFIX = "vision_model."


def siglip_tome_config(fields: dict, **tome) -> SiglipToMeVisionConfig:
    """The S-ToMe tower's config from a source's SigLIP fields (`read_siglip_folder(...)["fields"]`) and S-ToMe
    settings (`tome`, which win over `fields`)."""
    return SiglipToMeVisionConfig(**{**fields, **tome})


def read_siglip_folder(folder: Path, what: str) -> dict:
    """A SigLIP vision checkpoint folder: its vision config fields, its tensors (names without `vision_model.`)
    and what was set aside. A full SiglipModel folder gives its vision part. `what` names the source in errors:
    FileNotFoundError for a missing folder, config.json or weights; ValueError for another model type, a tensor
    stored twice, or an unreadable or non-finite weight file."""
    require_folder(folder, what)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{what} has no config.json: {config_path} (needed for heads, epsilon, activation).")
    config_json = read_json(config_path)
    model_type = config_json.get("model_type")
    if model_type == "siglip":
        vision_json = config_json.get("vision_config") or {}
        if not isinstance(vision_json, dict):
            raise ValueError(f"{config_path}: 'vision_config' is not an object.")
    elif model_type in SIGLIP_VISION_MODEL_TYPES or model_type is None:
        vision_json = config_json
    else:
        raise ValueError(
            f"{config_path} has model_type {model_type!r}; expected a SigLIP vision model ('siglip_vision_model', "
            "or a full 'siglip' model whose vision part is taken). Only SigLIP towers are supported."
        )
    fields = {name: vision_json[name] for name in SIGLIP_VISION_FIELDS if vision_json.get(name) is not None}

    files, kind = require_weight_files(folder, what)
    raw = read_weight_files(files, kind)
    tensors: dict[str, torch.Tensor] = {}
    shown: dict[str, str] = {}  # our name -> the source's name, for messages
    text_tower: list[str] = []
    prefixed = 0
    for key, tensor in raw.items():
        if key.startswith(_VISION_PREFIX):
            name = key[len(_VISION_PREFIX):]
            prefixed += 1
        elif key.startswith("text_model.") or key in ("logit_scale", "logit_bias"):
            text_tower.append(key)
            continue
        else:
            name = key
        if name in tensors:
            raise ValueError(f"{folder}: tensor {name} is stored twice ({shown[name]} and {key}).")
        tensors[name], shown[name] = tensor, key
    return {
        "path": folder, "config_path": config_path, "model_type": model_type, "fields": fields,
        "tensors": tensors, "shown": shown, "text_tower": sorted(text_tower),
        "weight_files": [f.name for f in files],
        "key_prefix": _key_prefix(prefixed, len(tensors) - int("pos_emb" in tensors)),
    }


def _key_prefix(prefixed: int, total: int) -> str:
    """How the vision tensors were named (`pos_emb`, an attribute of xtuner's encoder class, never has a prefix)."""
    if prefixed and prefixed == total:
        return _VISION_PREFIX
    return "mixed" if prefixed else "none"


def siglip_tower_state_dict(source: dict, vision_config, notes: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Our tower's tensors (`SiglipToMeVisionModel` names) from `read_siglip_folder`'s result, layers past the
    config's depth dropped; `source["source_layers"]` is the source's depth. Returns `(state_dict, info)`, info
    holding what was set aside (`dropped`: reason -> source names) and the `unexpected` source names (also noted
    in `notes`). Raises ValueError naming missing tensors, layers beyond the config and shape mismatches."""
    with init_empty_weights(include_buffers=False):
        tower = SiglipToMeVisionModel(vision_config)
    expected = {name: tuple(t.shape) for name, t in tower.state_dict().items()}
    tensors, shown, path = dict(source["tensors"]), source["shown"], source["path"]
    source_layers = source["source_layers"]
    kept_layers = vision_config.num_hidden_layers

    dropped: dict[str, list[str]] = {}
    # xtuner's AuroraSigEncoder registers `pos_emb` (its copy of the position embedding, which its forward writes
    # back into the embedding before every call): it is the effective position embedding when both are present.
    if "pos_emb" in tensors:
        pos_emb = tensors.pop("pos_emb")
        name = "embeddings.position_embedding.weight"
        if name not in tensors:
            tensors[name] = pos_emb
            notes.append(f"{path}: position embedding taken from 'pos_emb' (AuroraSigEncoder's copy).")
        elif not torch.equal(tensors[name], pos_emb):
            tensors[name] = pos_emb
            notes.append(f"{path}: 'pos_emb' differs from {shown[name]}; using 'pos_emb', which the released "
                         "encoder copies into the embedding before every forward.")
        dropped["duplicate of the position embedding"] = [shown.get("pos_emb", "pos_emb")]
    if "embeddings.position_ids" in tensors:
        tensors.pop("embeddings.position_ids")
        dropped["position_ids buffer (rebuilt by the model)"] = [shown["embeddings.position_ids"]]

    beyond = sorted({int(m.group(1)) for k in tensors if (m := _LAYER.match(k))} - set(range(source_layers)))
    if beyond:
        raise ValueError(
            f"{source['config_path']} says num_hidden_layers={source_layers} but the weights also hold layer(s) "
            f"{', '.join(map(str, beyond))}: the config and the weights disagree."
        )
    kept: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, tensor in tensors.items():
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= kept_layers:
            dropped.setdefault(f"encoder.layers.{layer.group(1)}: past the truncated tower's {kept_layers} layers",
                               []).append(shown[name])
        elif name.startswith("head.") and name not in expected:
            dropped.setdefault("attention-pooling head (unused by AuroraLong)", []).append(shown[name])
        elif name in expected:
            kept[name] = tensor
        else:
            unexpected.append(shown[name])
    missing = sorted(name for name in expected if name not in kept)
    if missing:
        prefix = _VISION_PREFIX if source["key_prefix"] == _VISION_PREFIX else ""
        raise ValueError(
            f"{path} is not a complete SigLIP vision checkpoint for its config ({source_layers} layers, hidden "
            f"{vision_config.hidden_size}): missing tensors ({len(missing)}): "
            f"{', '.join(prefix + name for name in missing)}"
        )
    check_floating({shown[name]: t for name, t in kept.items()}, path)
    wrong = [f"{shown[name]} {tuple(t.shape)} (expected {expected[name]})"
             for name, t in kept.items() if tuple(t.shape) != expected[name]]
    if wrong:
        raise ValueError(
            f"{path}: tensors whose shapes do not match {source['config_path']} ({len(wrong)}): {'; '.join(wrong)}"
        )
    if unexpected:
        notes.append(f"{path}: {len(unexpected)} unexpected tensor(s) not converted: {', '.join(sorted(unexpected))}")
    if source["text_tower"]:
        dropped["SigLIP text tower (a full SiglipModel folder; only its vision part is used)"] = source["text_tower"]
    info = {"dropped": {why: sorted(names) for why, names in dropped.items()}, "unexpected": sorted(unexpected)}
    return {name: t.contiguous() for name, t in kept.items()}, info


def siglip_image_processor(vision_dir: Path, image_size: int, notes: list[str]):
    """SigLIP's preprocessing at the tower's input size, with the vision folder's preprocessor_config.json values.

    Returns `(image_processor, path of the preprocessor_config.json used, or None)`; what differs is noted."""
    kwargs = {"size": {"height": image_size, "width": image_size}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    path = vision_dir / "preprocessor_config.json"
    if path.is_file():
        settings = read_json(path)
        kwargs.update({k: settings[k] for k in _IMAGE_PROCESSOR_FIELDS if settings.get(k) is not None})
        size = settings.get("size")
        if isinstance(size, dict) and {size.get("height"), size.get("width")} - {image_size}:
            notes.append(f"{path} resizes to {size}; the tower takes {image_size}x{image_size}, which is used.")
        kind = settings.get("image_processor_type")
        if kind not in (None, "SiglipImageProcessor", "SiglipImageProcessorFast", "SiglipImageProcessorPil"):
            notes.append(f"{path} is a {kind}; only its mean/std/resample/rescale settings are used.")
    else:
        notes.append(f"{vision_dir} has no preprocessor_config.json: SigLIP's preprocessing (bicubic resize to "
                     f"{image_size}x{image_size}, mean = std = 0.5).")
    return SiglipImageProcessorPil(**kwargs), (str(path) if path.is_file() else None)


__all__ = [
    "SIGLIP_VISION_FIELDS",
    "SIGLIP_VISION_MODEL_TYPES",
    "read_siglip_folder",
    "siglip_image_processor",
    "siglip_tome_config",
    "siglip_tower_state_dict",
]
