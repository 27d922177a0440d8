"""Convert RWKV-6 "Finch" checkpoints into this package's `Rwkv6ForCausalLM` (transformers `save_pretrained` form).

Three source formats are understood (see `detect_rwkv6_format`):

* ``"blinkdl"``: an official RWKV-LM ``.pth`` file (``emb.weight``, ``blocks.{i}.att.time_maa_x``, ...), or a
  folder holding exactly one such file. It is a pickle, read only with ``torch.load(..., weights_only=True)``.
* ``"hf"``: a ``RWKV/v6-Finch-*-HF`` folder (remote-code ``Rwkv6ForCausalLM``): the BlinkDL tensors under
  ``rwkv.``-prefixed names (``rwkv.embeddings.weight``, ``rwkv.blocks.{i}.attention.*``,
  ``rwkv.blocks.{i}.feed_forward.*``, ``rwkv.ln_out.*``) and an unprefixed ``head.weight``; ``pytorch_model.bin``
  or safetensors, optionally sharded with an index json.
* ``"fla"``: a flash-linear-attention folder (``fla-hub/rwkv6-*-finch``): ``model.layers.{i}.attn.*`` names, which
  are also the names of this package's model, so the tensors are only checked, not rearranged.

The geometry (width, depth, heads, head size, FFN width, both LoRA ranks, vocabulary) is always read from the tensor
shapes, never assumed; config.json files only contribute epsilons and cross-checks.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import torch
from transformers.utils import logging

from .folder_metadata import answer_generation_config, read_license, write_model_card
from .modeling.checkpoint_checks import non_finite_tensors
from .modeling.configuration_rwkv6 import Rwkv6Config
from .outputs import check_output_dir, write_folder_atomically
from .processing.tokenization_rwkv_world import RwkvWorldTokenizer

logger = logging.get_logger(__name__)

FORMATS = ("blinkdl", "hf", "fla")

# The GroupNorm epsilon of every released Finch model: 1e-5 * head_size_divisor**2 with divisor 8.
FINCH_GROUP_NORM_EPS = 64e-5

# BlinkDL's time_maa_w1 / time_maa_w2 hold the five token-shift LoRA groups in the order w, k, v, r, g; fla (and this
# package) keep them in the order r, w, k, v, g (the order of `x_bias`). FLA_GROUP_FROM_BLINKDL[n] is the BlinkDL group
# index of fla group n.
BLINKDL_MIX_GROUPS = ("w", "k", "v", "r", "g")
FLA_MIX_GROUPS = ("r", "w", "k", "v", "g")
FLA_GROUP_FROM_BLINKDL = tuple(BLINKDL_MIX_GROUPS.index(name) for name in FLA_MIX_GROUPS)  # (3, 0, 1, 2, 4)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"


# ----------------------------------------------------------------------------------------------------------------
# Reading files


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """Read a pickled state dict safely (weights_only=True); any failure becomes a ValueError naming the file."""
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            # mmap only works for the zip serialization; a legacy (or damaged) file gets a plain second try so the
            # reported error is the loader's own.
            if "mmap" not in str(err):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the path; the library's exception types vary
        raise ValueError(
            f"Could not read {path} as a PyTorch checkpoint (torch.load with weights_only=True): "
            f"{type(err).__name__}: {err}"
        ) from err
    return _as_tensor_dict(data, path)


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        data = load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ... all mean "unreadable file"
        raise ValueError(f"Could not read {path} as safetensors: {type(err).__name__}: {err}") from err
    return _as_tensor_dict(data, path)


def _as_tensor_dict(data, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a state dict (found a {type(data).__name__}).")
    if "_strategy" in data or "_version" in data:
        raise ValueError(
            f"{path} was pre-converted by the `rwkv` pip package for a strategy (it has '_strategy'/'_version' "
            "entries and transposed weights); convert the original RWKV-LM .pth instead."
        )
    not_tensors = sorted(str(k) for k, v in data.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path} holds entries that are not tensors: {', '.join(not_tensors[:10])}")
    return dict(data)


def _check_values(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse complex tensors and NaN / inf values, naming the file and the tensors (the file's own names).

    Weights of these models are real numbers: casting a complex tensor would silently drop its imaginary part, and
    one NaN or inf weight makes every output NaN (greedy decoding then answers nothing, without an error). Large
    but finite values are kept: no bound holds for every trained checkpoint.
    """
    complex_valued = sorted(name for name, t in sd.items() if t.is_complex())
    if complex_valued:
        raise ValueError(
            f"{path} holds complex-valued tensors ({len(complex_valued)}): {_name_list(complex_valued)}. The weights "
            "of these models are real numbers: this is not such a checkpoint, or it is damaged."
        )
    non_finite = non_finite_tensors(sd.items())
    if non_finite:
        raise ValueError(
            f"{path} holds tensors with NaN or infinite values ({len(non_finite)}): {_name_list(non_finite)}. A "
            "model converted from them would output NaN: the checkpoint is damaged, or its training diverged."
        )
    return sd


def _check_floating(sd: dict[str, torch.Tensor], path, display=None) -> None:
    """Refuse tensors that are not floating point where the model's layout needs weights (integer, bool)."""
    wrong = [f"{display(name) if display else name} ({str(t.dtype).removeprefix('torch.')})"
             for name, t in sd.items() if not t.is_floating_point()]
    if wrong:
        raise ValueError(f"{path}: tensors that are not floating point ({len(wrong)}): {'; '.join(sorted(wrong))}. "
                         "Model weights are floating-point numbers.")


def _check_cast(model, dtype: torch.dtype, source) -> None:
    """Refuse weights that became infinite when cast to the output dtype (float16 holds at most 65504)."""
    overflowed = non_finite_tensors(model.named_parameters())
    if overflowed:
        raise ValueError(
            f"{source}: {len(overflowed)} weight(s) overflow {str(dtype).removeprefix('torch.')} (they become "
            f"infinite when cast): {_name_list(overflowed)}. Convert with dtype bfloat16 or float32 (--dtype)."
        )


def _name_list(names, limit: int = 10) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"Could not read {path} as safetensors: {type(err).__name__}: {err}") from err


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not read {path} as JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return data


def _weight_files(folder: Path) -> tuple[list[Path], str | None]:
    """The weight files of a transformers-style folder (shards resolved through an index json) and their kind."""
    for index_name, kind in ((_SAFETENSORS_INDEX, "safetensors"), (_BIN_INDEX, "bin")):
        index_path = folder / index_name
        if index_path.is_file():
            weight_map = _read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_path} has no 'weight_map'.")
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise ValueError(f"{index_path} names shard files that do not exist: {', '.join(missing)}")
            return [folder / n for n in names], kind
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"], "safetensors"
    if (folder / "pytorch_model.bin").is_file():
        return [folder / "pytorch_model.bin"], "bin"
    safetensors_files = sorted(folder.glob("*.safetensors"))
    if safetensors_files:
        return safetensors_files, "safetensors"
    bin_files = sorted(folder.glob("*.bin"))
    if bin_files:
        return bin_files, "bin"
    return [], None


def _load_weight_files(files: list[Path], kind: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = _check_values(_safetensors_load(path) if kind == "safetensors" else _torch_load(path), path)
        clash = sorted(set(part) & set(state))
        if clash:
            raise ValueError(f"{path} repeats tensors already read from another shard: {', '.join(clash[:10])}")
        state.update(part)
    return state


def _key_style(keys) -> str | None:
    """Which naming a set of tensor names uses: "blinkdl", "hf", "fla" or None."""
    keys = list(keys)
    if any(k.startswith("rwkv.") for k in keys):
        return "hf"
    if any(k.startswith(("model.layers.", "model.embeddings.")) for k in keys):
        return "fla"
    if "emb.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "blinkdl"
    return None


def _describe_keys(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    if not keys:
        return "no tensors"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} tensors ({shown}{', ...' if len(keys) > limit else ''})"


# ----------------------------------------------------------------------------------------------------------------
# Format detection


def _check_exists(source) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"RWKV-6 checkpoint not found: {path}")
    return path


def _single_pth(folder: Path) -> Path | None:
    pth_files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".pth")
    if len(pth_files) > 1:
        raise ValueError(
            f"{folder} holds several .pth files ({', '.join(p.name for p in pth_files)}); pass the one to convert."
        )
    return pth_files[0] if pth_files else None


def detect_rwkv6_format(source: str | os.PathLike) -> str:
    """Which RWKV-6 checkpoint format `source` is: "blinkdl", "hf" or "fla".

    A ``.pth`` file, or a folder whose only weights are exactly one ``.pth`` file, is BlinkDL's. A folder with
    transformers-style weights (safetensors or ``pytorch_model.bin``, possibly sharded) is told apart by its tensor
    names: ``rwkv.``-prefixed names are the ``RWKV/v6-Finch-*-HF`` format, ``model.layers.*`` names are fla's.
    Anything else raises ValueError naming the path and what was found there; a missing path raises
    FileNotFoundError.
    """
    path = _check_exists(source)
    if path.is_file():
        if path.suffix == ".pth":
            return "blinkdl"
        raise ValueError(
            f"{path} is not a recognised RWKV-6 checkpoint: expected a BlinkDL .pth file or a folder "
            f"(found a file with suffix {path.suffix!r})."
        )
    files, kind = _weight_files(path)
    if not files:
        if _single_pth(path) is not None:
            return "blinkdl"
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{path} holds no RWKV-6 weights (no .pth, *.safetensors or pytorch_model*.bin); found: "
            f"{', '.join(found[:20]) if found else 'an empty folder'}."
        )
    keys = _folder_keys(path, files, kind)
    style = _key_style(keys)
    if style in ("hf", "fla"):
        return style
    config_path = path / "config.json"
    model_type = _read_json(config_path).get("model_type") if config_path.is_file() else None
    raise ValueError(
        f"{path} is not a recognised RWKV-6 checkpoint: its weights ({', '.join(f.name for f in files)}) hold "
        f"{_describe_keys(keys)}; expected 'rwkv.*' (RWKV/v6-Finch-HF) or 'model.layers.*' (fla) names"
        f"{'' if model_type is None else f' (config.json model_type: {model_type!r})'}."
    )


def _folder_keys(folder: Path, files: list[Path], kind: str) -> list[str]:
    """Tensor names of a folder's weights, cheaply where possible (index json or safetensors headers)."""
    for index_name in (_SAFETENSORS_INDEX, _BIN_INDEX):
        if (folder / index_name).is_file():
            return list(_read_json(folder / index_name)["weight_map"])
    keys: list[str] = []
    for path in files:
        keys.extend(_safetensors_keys(path) if kind == "safetensors" else _torch_load(path))
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Key names and geometry

_BLINKDL_ATT = (
    "time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g",
    "time_maa_w1", "time_maa_w2", "time_decay", "time_decay_w1", "time_decay_w2", "time_faaaa",
    "receptance.weight", "key.weight", "value.weight", "gate.weight", "output.weight",
    "ln_x.weight", "ln_x.bias",
)
_BLINKDL_FFN = ("time_maa_k", "time_maa_r", "key.weight", "value.weight", "receptance.weight")
_FLA_LAYER = (
    "attn_norm.weight", "attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias",
    "attn.x_proj.0.mu", "attn.x_proj.0.linear.weight", "attn.x_proj.2.weight", "attn.x_bias",
    "attn.r_proj.linear.weight", "attn.w_proj.linear.lora.0.weight", "attn.w_proj.linear.lora.2.weight",
    "attn.w_proj.linear.lora.2.bias", "attn.k_proj.linear.weight", "attn.v_proj.linear.weight",
    "attn.g_proj.linear.weight", "attn.bonus", "attn.g_norm.weight", "attn.g_norm.bias", "attn.o_proj.weight",
    "ffn.key.mu", "ffn.key.linear.weight", "ffn.value.weight", "ffn.receptance.mu", "ffn.receptance.linear.weight",
)

_LAYER_INDEX = re.compile(r"^(?:blocks|model\.layers)\.(\d+)\.")


def _num_layers(keys, path) -> int:
    indices = {int(m.group(1)) for k in keys if (m := _LAYER_INDEX.match(k))}
    if not indices:
        raise ValueError(f"{path}: found no layers ('blocks.N.*' / 'model.layers.N.*') among {_describe_keys(keys)}.")
    return max(indices) + 1


def blinkdl_state_dict_keys(num_layers: int, *, with_head: bool = True) -> list[str]:
    """Every tensor name of a BlinkDL RWKV-6 checkpoint with `num_layers` blocks."""
    keys = ["emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"]
    for i in range(num_layers):
        keys += [f"blocks.{i}.{ln}.{p}" for ln in ("ln1", "ln2") for p in ("weight", "bias")]
        keys += [f"blocks.{i}.att.{name}" for name in _BLINKDL_ATT]
        keys += [f"blocks.{i}.ffn.{name}" for name in _BLINKDL_FFN]
    keys += ["ln_out.weight", "ln_out.bias"]
    if with_head:
        keys.append("head.weight")
    return keys


def fla_state_dict_keys(num_layers: int, *, with_head: bool = True) -> list[str]:
    """Every tensor name of an fla / auroralong `Rwkv6ForCausalLM` with `num_layers` layers."""
    keys = ["model.embeddings.weight", "model.layers.0.pre_norm.weight", "model.layers.0.pre_norm.bias"]
    for i in range(num_layers):
        keys += [f"model.layers.{i}.{name}" for name in _FLA_LAYER]
    keys += ["model.norm.weight", "model.norm.bias"]
    if with_head:
        keys.append("lm_head.weight")
    return keys


def _check_key_set(found, expected, path, fmt: str, display=None) -> None:
    """Raise ValueError listing missing and unexpected tensor names (shown through `display`, e.g. HF names)."""
    found, expected = set(found), set(expected)
    display = display or (lambda name: name)
    missing = sorted(display(k) for k in expected - found)
    unexpected = sorted(display(k) for k in found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected)}")
        raise ValueError(f"{path} is not a complete RWKV-6 checkpoint in {fmt} naming: " + "; ".join(parts))


def _shape(sd: dict[str, torch.Tensor], name: str, ndim: int, path) -> tuple[int, ...]:
    tensor = sd[name]
    if tensor.dim() != ndim:
        raise ValueError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {ndim} dimensions.")
    return tuple(tensor.shape)


# Where each layout keeps the tensors the geometry is read from. The LoRA factors are [C, r] in BlinkDL's layout and
# transposed ([r, C], nn.Linear weights) in fla's: `lora_axis` is the axis that holds the rank.
_GEOMETRY_TENSORS = {
    "blinkdl": {
        "embedding": "emb.weight", "bonus": "blocks.0.att.time_faaaa", "ffn_key": "blocks.0.ffn.key.weight",
        "mix_lora": "blocks.0.att.time_maa_w1", "decay_lora": "blocks.0.att.time_decay_w1",
        "receptance": "blocks.0.att.receptance.weight", "lora_axis": 1,
    },
    "fla": {
        "embedding": "model.embeddings.weight", "bonus": "model.layers.0.attn.bonus",
        "ffn_key": "model.layers.0.ffn.key.linear.weight", "mix_lora": "model.layers.0.attn.x_proj.0.linear.weight",
        "decay_lora": "model.layers.0.attn.w_proj.linear.lora.0.weight",
        "receptance": "model.layers.0.attn.r_proj.linear.weight", "lora_axis": 0,
    },
}


def _geometry(sd: dict[str, torch.Tensor], num_layers: int, path, layout: str) -> dict[str, int]:
    """The Finch geometry of a state dict in `layout` ("blinkdl" or "fla"), read from its tensor shapes."""
    names = _GEOMETRY_TENSORS[layout]
    shape = lambda key: _shape(sd, names[key], 2, path)  # noqa: E731
    vocab, hidden = shape("embedding")
    heads, head_size = shape("bonus")
    ffn, att = shape("ffn_key")[0], shape("receptance")[0]
    mix5, decay = shape("mix_lora")[names["lora_axis"]], shape("decay_lora")[names["lora_axis"]]
    if att != hidden:
        raise ValueError(
            f"{path}: {names['receptance']} is {att} wide but the hidden size is {hidden}; Finch models have "
            "dim_att == n_embd (fla: expand_k = expand_v = 1) and this converter supports only that."
        )
    if heads * head_size != hidden:
        raise ValueError(f"{path}: {names['bonus']} is [{heads}, {head_size}] but the hidden size is {hidden}.")
    if mix5 % 5:
        raise ValueError(f"{path}: {names['mix_lora']} has rank {mix5}, not a multiple of 5 (five LoRA groups).")
    return {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": num_layers, "head_size": head_size,
        "intermediate_size": ffn, "time_mix_lora_rank": mix5 // 5, "time_decay_lora_rank": decay,
    }


def expected_fla_shapes(geometry: dict[str, int], *, with_head: bool = True) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of `Rwkv6ForCausalLM` (fla naming) for the given geometry."""
    V, C, L = geometry["vocab_size"], geometry["hidden_size"], geometry["num_hidden_layers"]
    K = geometry["head_size"]
    H = C // K
    F, R, D = geometry["intermediate_size"], geometry["time_mix_lora_rank"], geometry["time_decay_lora_rank"]
    per_layer = {
        "attn_norm.weight": (C,), "attn_norm.bias": (C,), "ffn_norm.weight": (C,), "ffn_norm.bias": (C,),
        "attn.x_proj.0.mu": (C,), "attn.x_proj.0.linear.weight": (5 * R, C), "attn.x_proj.2.weight": (C, 5 * R),
        "attn.x_bias": (5, C),
        "attn.r_proj.linear.weight": (C, C), "attn.k_proj.linear.weight": (C, C),
        "attn.v_proj.linear.weight": (C, C), "attn.g_proj.linear.weight": (C, C),
        "attn.w_proj.linear.lora.0.weight": (D, C), "attn.w_proj.linear.lora.2.weight": (C, D),
        "attn.w_proj.linear.lora.2.bias": (C,),
        "attn.bonus": (H, K), "attn.g_norm.weight": (C,), "attn.g_norm.bias": (C,), "attn.o_proj.weight": (C, C),
        "ffn.key.mu": (C,), "ffn.key.linear.weight": (F, C), "ffn.value.weight": (C, F),
        "ffn.receptance.mu": (C,), "ffn.receptance.linear.weight": (C, C),
    }
    shapes = {"model.embeddings.weight": (V, C), "model.layers.0.pre_norm.weight": (C,),
              "model.layers.0.pre_norm.bias": (C,)}
    for i in range(L):
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in per_layer.items()})
    shapes.update({"model.norm.weight": (C,), "model.norm.bias": (C,)})
    if with_head:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def expected_blinkdl_shapes(geometry: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a BlinkDL RWKV-6 checkpoint for the given geometry."""
    V, C, L = geometry["vocab_size"], geometry["hidden_size"], geometry["num_hidden_layers"]
    K = geometry["head_size"]
    F, R, D = geometry["intermediate_size"], geometry["time_mix_lora_rank"], geometry["time_decay_lora_rank"]
    vec = (1, 1, C)
    att = {f"time_maa_{g}": vec for g in ("x", "w", "k", "v", "r", "g")}
    att.update({
        "time_maa_w1": (C, 5 * R), "time_maa_w2": (5, R, C), "time_decay": vec, "time_decay_w1": (C, D),
        "time_decay_w2": (D, C), "time_faaaa": (C // K, K), "receptance.weight": (C, C), "key.weight": (C, C),
        "value.weight": (C, C), "gate.weight": (C, C), "output.weight": (C, C), "ln_x.weight": (C,),
        "ln_x.bias": (C,),
    })
    ffn = {"time_maa_k": vec, "time_maa_r": vec, "key.weight": (F, C), "value.weight": (C, F),
           "receptance.weight": (C, C)}
    shapes = {"emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)}
    for i in range(L):
        shapes.update({f"blocks.{i}.{ln}.{p}": (C,) for ln in ("ln1", "ln2") for p in ("weight", "bias")})
        shapes.update({f"blocks.{i}.att.{name}": shape for name, shape in att.items()})
        shapes.update({f"blocks.{i}.ffn.{name}": shape for name, shape in ffn.items()})
    shapes.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return shapes


def _fit_shapes(
    sd: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path, display=None
) -> dict[str, torch.Tensor]:
    """Check every tensor's shape; a per-channel vector may come as [C] or [1, 1, C] and is reshaped as wanted."""
    _check_floating(sd, path, display)
    out, wrong = {}, []
    for name, tensor in sd.items():
        want = shapes[name]
        if tuple(tensor.shape) != want:
            vector = sum(s != 1 for s in want) == 1 and sum(s != 1 for s in tensor.shape) <= 1
            if vector and tensor.numel() == max(want):
                tensor = tensor.reshape(want)
            else:
                shown = display(name) if display else name
                wrong.append(f"{shown} {tuple(tensor.shape)} (expected {want})")
                continue
        out[name] = tensor.contiguous()
    if wrong:
        raise ValueError(f"{path}: tensors with unexpected shapes ({len(wrong)}): {'; '.join(wrong)}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Renaming


_HF_BLOCK = re.compile(r"^rwkv\.blocks\.(\d+)\.(pre_ln|ln1|ln2|attention|feed_forward)\.(.+)$")


def hf_to_blinkdl_keys(sd: dict[str, torch.Tensor], path="<state dict>") -> dict[str, torch.Tensor]:
    """Rename RWKV/v6-Finch-HF tensors to BlinkDL names (values untouched).

    The HF format stores the same, *unscaled* tensors as the .pth: its `rescale_every` only divides
    `attention.output` / `feed_forward.value` in memory for fp16 inference, never on disk.
    """
    renamed, unknown = {}, []
    for key, tensor in sd.items():
        if key == "head.weight":
            new = key
        elif key.startswith("rwkv.embeddings."):
            new = "emb." + key[len("rwkv.embeddings."):]
        elif key.startswith("rwkv.ln_out."):
            new = "ln_out." + key[len("rwkv.ln_out."):]
        elif m := _HF_BLOCK.match(key):
            layer, part, rest = m.groups()
            part = {"pre_ln": "ln0", "attention": "att", "feed_forward": "ffn"}.get(part, part)
            new = f"blocks.{layer}.{part}.{rest}"
        else:
            unknown.append(key)
            continue
        renamed[new] = tensor
    if unknown:
        raise ValueError(f"{path}: unexpected tensors for the RWKV/v6-Finch-HF format: {', '.join(sorted(unknown))}")
    return renamed


def _blinkdl_name_to_hf(key: str) -> str:
    if key.startswith("emb."):
        return "rwkv.embeddings." + key[len("emb."):]
    if key.startswith("ln_out."):
        return "rwkv." + key
    if key.startswith("blocks.") and key.count(".") >= 3:
        _, layer, part, rest = key.split(".", 3)
        part = {"ln0": "pre_ln", "att": "attention", "ffn": "feed_forward"}.get(part, part)
        return f"rwkv.blocks.{layer}.{part}.{rest}"
    return key  # head.weight (unprefixed in the HF format) and anything unknown


def blinkdl_to_hf_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename BlinkDL tensors to RWKV/v6-Finch-HF names (values untouched); the inverse of `hf_to_blinkdl_keys`."""
    return {_blinkdl_name_to_hf(key): tensor for key, tensor in sd.items()}


def blinkdl_to_fla_state_dict(sd: dict[str, torch.Tensor], num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """BlinkDL RWKV-6 tensors -> fla / auroralong `Rwkv6ForCausalLM` tensors (renamed, re-ordered, transposed).

    The token-shift LoRA: BlinkDL computes z = tanh(xxx @ time_maa_w1) ([.., 5R], groups w,k,v,r,g) and
    m_n = z_n @ time_maa_w2[n]; fla computes z = x_proj.0.linear(xxx) ([.., 5R], groups r,w,k,v,g) and contracts
    group n with x_proj.2.weight.view(C, 5, R)[:, n, :]. So linear.weight = time_maa_w1 with its column groups
    re-ordered, transposed; x_proj.2.weight[:, n, :] = time_maa_w2[group n]^T; x_bias stacks the static
    time_maa_{r,w,k,v,g}. The decay LoRA becomes w_proj.linear.lora (weights transposed, time_decay as the bias).
    """
    if num_layers is None:
        num_layers = _num_layers(sd, "<state dict>")
    flat = lambda t: t.reshape(-1)  # noqa: E731 - [1, 1, C] -> [C]
    out = {
        "model.embeddings.weight": sd["emb.weight"],
        "model.layers.0.pre_norm.weight": sd["blocks.0.ln0.weight"],
        "model.layers.0.pre_norm.bias": sd["blocks.0.ln0.bias"],
        "model.norm.weight": sd["ln_out.weight"],
        "model.norm.bias": sd["ln_out.bias"],
    }
    if "head.weight" in sd:
        out["lm_head.weight"] = sd["head.weight"]
    order = list(FLA_GROUP_FROM_BLINKDL)
    for i in range(num_layers):
        b, att, ffn, p = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"model.layers.{i}."
        w1 = sd[att + "time_maa_w1"]  # [C, 5R], groups w,k,v,r,g
        w2 = sd[att + "time_maa_w2"]  # [5, R, C], groups w,k,v,r,g
        hidden, mix5 = w1.shape
        rank = mix5 // 5
        out.update({
            p + "attn_norm.weight": sd[b + "ln1.weight"], p + "attn_norm.bias": sd[b + "ln1.bias"],
            p + "ffn_norm.weight": sd[b + "ln2.weight"], p + "ffn_norm.bias": sd[b + "ln2.bias"],
            p + "attn.x_proj.0.mu": flat(sd[att + "time_maa_x"]),
            p + "attn.x_proj.0.linear.weight": w1.reshape(hidden, 5, rank)[:, order].reshape(hidden, mix5).t(),
            p + "attn.x_proj.2.weight": w2[order].permute(2, 0, 1).reshape(hidden, mix5),
            p + "attn.x_bias": torch.stack([flat(sd[att + f"time_maa_{g}"]) for g in FLA_MIX_GROUPS]),
            p + "attn.r_proj.linear.weight": sd[att + "receptance.weight"],
            p + "attn.k_proj.linear.weight": sd[att + "key.weight"],
            p + "attn.v_proj.linear.weight": sd[att + "value.weight"],
            p + "attn.g_proj.linear.weight": sd[att + "gate.weight"],
            p + "attn.w_proj.linear.lora.0.weight": sd[att + "time_decay_w1"].t(),
            p + "attn.w_proj.linear.lora.2.weight": sd[att + "time_decay_w2"].t(),
            p + "attn.w_proj.linear.lora.2.bias": flat(sd[att + "time_decay"]),
            p + "attn.bonus": sd[att + "time_faaaa"],
            p + "attn.g_norm.weight": sd[att + "ln_x.weight"], p + "attn.g_norm.bias": sd[att + "ln_x.bias"],
            p + "attn.o_proj.weight": sd[att + "output.weight"],
            p + "ffn.key.mu": flat(sd[ffn + "time_maa_k"]),
            p + "ffn.key.linear.weight": sd[ffn + "key.weight"],
            p + "ffn.value.weight": sd[ffn + "value.weight"],
            p + "ffn.receptance.mu": flat(sd[ffn + "time_maa_r"]),
            p + "ffn.receptance.linear.weight": sd[ffn + "receptance.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _blinkdl_path(path: Path) -> Path:
    if path.is_file():
        return path
    pth = _single_pth(path)
    if pth is None:
        raise ValueError(f"{path} holds no .pth file.")
    return pth


def _from_blinkdl(sd, path, notes, *, fmt: str = "blinkdl") -> tuple[dict[str, torch.Tensor], dict[str, int], bool]:
    """Validate BlinkDL-named tensors; returns fla-named tensors, the geometry and whether the head is tied.

    For an HF source (`fmt="hf"`, tensors already renamed to BlinkDL names) errors quote the HF names.
    """
    display = _blinkdl_name_to_hf if fmt == "hf" else None
    head_name = display("head.weight") if display else "head.weight"
    style = _key_style(sd)
    if style not in (None, "blinkdl"):
        raise ValueError(f"{path} holds {style}-style tensor names, not BlinkDL's (e.g. {sorted(sd)[0]}).")
    num_layers = _num_layers(sd, path)
    tied = False
    if "head.weight" not in sd and "emb.weight" in sd:
        # Every released Finch model has its own head; a head-less file is a truncated or partial export.
        raise ValueError(
            f"{path} has no {head_name}. RWKV-6 Finch models do not tie the head to the embedding, so a "
            "checkpoint without a head cannot be converted."
        )
    _check_key_set(sd, blinkdl_state_dict_keys(num_layers), path, "RWKV/v6-Finch-HF" if display else "BlinkDL",
                   display)
    geometry = _geometry(sd, num_layers, path, "blinkdl")
    sd = _fit_shapes(sd, expected_blinkdl_shapes(geometry), path, display)
    return blinkdl_to_fla_state_dict(sd, num_layers), geometry, tied


def _from_fla(sd, path, config_json, notes) -> tuple[dict[str, torch.Tensor], dict[str, int], bool]:
    num_layers = _num_layers(sd, path)
    tied = False
    if "lm_head.weight" not in sd and "model.embeddings.weight" in sd:
        if config_json.get("tie_word_embeddings") is True:
            tied = True
            sd = {**sd, "lm_head.weight": sd["model.embeddings.weight"]}
            notes.append("lm_head.weight is absent and config.json sets tie_word_embeddings: the head is tied.")
        else:
            raise ValueError(
                f"{path} has no lm_head.weight and its config.json does not set tie_word_embeddings=true "
                "(RWKV-6 Finch models have an untied head)."
            )
    _check_key_set(sd, fla_state_dict_keys(num_layers), path, "fla")
    geometry = _geometry(sd, num_layers, path, "fla")
    return sd, geometry, tied


def _cross_check(config_json: dict, geometry: dict[str, int], names: dict[str, str], path, notes) -> None:
    """Note (not fail on) config.json values that disagree with the tensor shapes; the shapes win."""
    for ours, theirs in names.items():
        value = config_json.get(theirs)
        if value is not None and value != geometry[ours]:
            notes.append(
                f"{path / 'config.json'} says {theirs}={value} but the tensors have {ours}={geometry[ours]}; "
                "using the tensor shapes."
            )


def load_rwkv6_checkpoint(source: str | os.PathLike, *, return_notes: bool = False):
    """Read an RWKV-6 checkpoint in any of the three formats (see `detect_rwkv6_format`).

    Returns `(state_dict, config)`: the tensors under this package's (= fla's) names in their stored dtype, and an
    `Rwkv6Config` whose geometry comes from the tensor shapes (epsilons from the source's config.json where it has
    one). With `return_notes=True` it returns `(state_dict, config, notes)`, notes being a list of sentences about
    choices made (e.g. the GroupNorm eps kept at 64e-5 for an fla source); they are also logged.
    Errors: FileNotFoundError for a missing path; ValueError naming the file for an unknown format, an unreadable or
    truncated file, missing/unexpected tensors (listed by name), inconsistent shapes, or tensors that are not finite
    real floating-point numbers (NaN, inf, complex, integer; listed by name).
    """
    sd, config, _fmt, notes = _load(source)
    for note in notes:
        logger.info(note)
    if return_notes:
        return sd, config, notes
    return sd, config


def _load(source) -> tuple[dict[str, torch.Tensor], Rwkv6Config, str, list[str]]:
    path = _check_exists(source)
    fmt = detect_rwkv6_format(path)
    notes: list[str] = []
    layer_norm_eps = 1e-5
    group_norm_eps = FINCH_GROUP_NORM_EPS
    if fmt == "blinkdl":
        file = _blinkdl_path(path)
        sd, geometry, tied = _from_blinkdl(_check_values(_torch_load(file), file), file, notes)
        notes.append("BlinkDL .pth: LayerNorm eps 1e-5 and GroupNorm eps 64e-5, as in RWKV-LM.")
    else:
        files, kind = _weight_files(path)
        raw = _load_weight_files(files, kind)
        config_path = path / "config.json"
        config_json = _read_json(config_path) if config_path.is_file() else {}
        if not config_json:
            notes.append(f"{path} has no config.json: using the RWKV-LM epsilons (LayerNorm 1e-5, GroupNorm 64e-5).")
        if fmt == "hf":
            # The HF files hold the same unscaled tensors as the .pth: `rescale_every` (default 6) is applied by
            # their modeling code in memory, at fp16 inference only, so nothing has to be undone here.
            sd, geometry, tied = _from_blinkdl(hf_to_blinkdl_keys(raw, path), path, notes, fmt="hf")
            layer_norm_eps = float(config_json.get("layer_norm_epsilon", layer_norm_eps))
            divisor = config_json.get("head_size_divisor")
            if divisor is not None:
                group_norm_eps = 1e-5 * float(divisor) ** 2
            if config_json.get("attention_hidden_size") not in (None, geometry["hidden_size"]):
                notes.append(f"config.json attention_hidden_size={config_json['attention_hidden_size']} ignored.")
            _cross_check(config_json, geometry, {"hidden_size": "hidden_size", "vocab_size": "vocab_size",
                                                 "num_hidden_layers": "num_hidden_layers",
                                                 "head_size": "head_size", "intermediate_size": "intermediate_size"},
                         path, notes)
        else:
            sd, geometry, tied = _from_fla(raw, path, config_json, notes)
            if config_json.get("model_type") == Rwkv6Config.model_type:
                # Already this package's own format (a re-conversion): its epsilons are trustworthy.
                layer_norm_eps = float(config_json.get("layer_norm_eps", layer_norm_eps))
                group_norm_eps = float(config_json.get("group_norm_eps", group_norm_eps))
            else:
                layer_norm_eps = float(config_json.get("norm_eps", layer_norm_eps))
                # fla's config has one `norm_eps` for LayerNorm and GroupNorm alike (1e-5 in fla-hub configs); the
                # trained models used 64e-5 in their GroupNorm, and 1e-5 changes the logits badly.
                notes.append(
                    f"fla config norm_eps={config_json.get('norm_eps', 1e-5)} is used for the LayerNorms only; "
                    f"the GroupNorm eps is kept at {FINCH_GROUP_NORM_EPS} (the value the Finch models were trained "
                    "with; fla applies norm_eps there too, which is wrong for these checkpoints)."
                )
                num_heads = config_json.get("num_heads")
                if num_heads is not None and num_heads != geometry["hidden_size"] // geometry["head_size"]:
                    notes.append(f"config.json num_heads={num_heads} disagrees with attn.bonus; using the tensors.")
            _cross_check(config_json, geometry, {"hidden_size": "hidden_size", "vocab_size": "vocab_size",
                                                 "num_hidden_layers": "num_hidden_layers",
                                                 "intermediate_size": "intermediate_size"}, path, notes)
    sd = _fit_shapes(sd, expected_fla_shapes(geometry), path)
    config = Rwkv6Config(
        **geometry,
        layer_norm_eps=layer_norm_eps,
        group_norm_eps=group_norm_eps,
        tie_word_embeddings=tied,
    )
    return sd, config, fmt, notes


# ----------------------------------------------------------------------------------------------------------------
# Conversion


def _resolve_dtype(dtype, sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The output dtype: the one asked for, else the checkpoint's own (its most common floating dtype)."""
    supported = (torch.float32, torch.bfloat16, torch.float16)
    if dtype is None:
        counts = Counter(t.dtype for t in sd.values() if t.is_floating_point())
        stored = counts.most_common(1)[0][0] if counts else torch.float32
        return stored if stored in supported else torch.float32
    resolved = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if resolved not in supported:
        raise ValueError(f"Unsupported dtype {dtype!r}: use float32, bfloat16 or float16.")
    return resolved


def _build_model(config, sd: dict[str, torch.Tensor], model_class=None):
    """`model_class(config)` (default Rwkv6ForCausalLM) holding exactly the tensors of `sd`."""
    if model_class is None:
        from .modeling.modeling_rwkv6 import Rwkv6ForCausalLM as model_class

    from accelerate import init_empty_weights

    # Build the parameters on the meta device and adopt the checkpoint's tensors (no random init, no second copy of
    # a 7B model); buffers are built normally, so non-persistent ones (SigLIP's position_ids) keep their values.
    # Fall back to a normal build if the model keeps any meta tensor that the state dict does not provide.
    with init_empty_weights(include_buffers=False):
        model = model_class(config)
    _strict_load(model, sd, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = model_class(config)
        _strict_load(model, sd, assign=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


def _strict_load(model, sd, *, assign: bool) -> None:
    expected = set(model.state_dict())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"The converted tensors do not match {type(model).__name__}: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}."
        )
    model.load_state_dict(sd, strict=True, assign=assign)


def convert_rwkv6_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    save_tokenizer: bool = True,
) -> dict:
    """Convert an RWKV-6 checkpoint (BlinkDL .pth, RWKV/v6-Finch-HF or fla folder) to a `save_pretrained` folder.

    The model (safetensors + config.json) and the World tokenizer are written to a temporary sibling folder that
    is renamed to `output_dir` only once everything succeeded, so a failed conversion leaves nothing behind.
    A non-empty `output_dir` is refused unless `overwrite=True`. `dtype` (float32 / bfloat16 / float16) defaults
    to the checkpoint's own dtype; weights it cannot hold (beyond 65504 for float16) are a ValueError naming them.
    An output folder that cannot be written (read-only, disk full) is an OSError naming it, nothing left behind.
    Returns a report of plain values (JSON-serialisable, printable).
    """
    output_dir = check_output_dir(output_dir, overwrite)

    requested_dtype = None if dtype is None else _resolve_dtype(dtype, {})  # a bad dtype fails before any loading
    sd, config, fmt, notes = _load(source)
    target_dtype = requested_dtype or _resolve_dtype(None, sd)
    if target_dtype == torch.float16:
        notes.append("float16 output: released Finch models can overflow fp16 activations in deep layers "
                     "(BlinkDL's code rescales weights for fp16, this model does not); bfloat16 is safer.")
    if save_tokenizer and config.vocab_size != 65536:
        notes.append(f"The model has {config.vocab_size} embedding rows, the World tokenizer saved with it 65536 ids.")
    config.dtype = target_dtype  # recorded in config.json by save_pretrained
    num_tensors = len(sd)
    num_parameters = sum(t.numel() for name, t in sd.items() if not (config.tie_word_embeddings
                                                                     and name == "lm_head.weight"))

    model = _build_model(config, sd)
    del sd
    model = model.to(target_dtype).eval()
    _check_cast(model, target_dtype, Path(source).expanduser())

    tokenizer = RwkvWorldTokenizer()
    # the World ids whether or not the tokenizer is saved beside the model (save_tokenizer)
    model.generation_config = answer_generation_config(tokenizer)
    source_path = Path(source).expanduser()

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if save_tokenizer:
            tokenizer.save_pretrained(folder)
        write_model_card(
            folder, "rwkv6", license=read_license(source_path if source_path.is_dir() else source_path.parent),
            summary=f"Converted by `auroralong convert rwkv6` from the {fmt} checkpoint `{source_path.name}`.",
        )

    write_folder_atomically(output_dir, write)

    return {
        "format": fmt,
        "source": str(Path(source).expanduser().absolute()),
        "output_dir": str(output_dir),
        "dtype": str(target_dtype).removeprefix("torch."),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_heads": config.num_heads,
        "head_size": config.head_size,
        "intermediate_size": config.intermediate_size,
        "time_mix_lora_rank": config.time_mix_lora_rank,
        "time_decay_lora_rank": config.time_decay_lora_rank,
        "layer_norm_eps": config.layer_norm_eps,
        "group_norm_eps": config.group_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "num_tensors": num_tensors,
        "num_parameters": num_parameters,
        "tokenizer_saved": save_tokenizer,
        "files": sorted(p.name for p in output_dir.iterdir()),
        "notes": notes,
    }


__all__ = [
    "FORMATS",
    "blinkdl_state_dict_keys",
    "expected_blinkdl_shapes",
    "blinkdl_to_fla_state_dict",
    "blinkdl_to_hf_keys",
    "convert_rwkv6_checkpoint",
    "detect_rwkv6_format",
    "expected_fla_shapes",
    "fla_state_dict_keys",
    "hf_to_blinkdl_keys",
    "load_rwkv6_checkpoint",
]
