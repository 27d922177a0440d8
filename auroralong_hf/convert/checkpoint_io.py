"""Checkpoint files, read and checked; the model built from their tensors. Shared by both converters.

Reading: a pickled state dict (``.pth`` / ``pytorch_model.bin``, only ever with ``torch.load(weights_only=True)``),
safetensors files, a transformers-style folder's weight files (sharded through an index json or not), JSON files.
Every failure is a ValueError naming the file: an unreadable or truncated file, something that is not a state dict
of tensors, a `.pth` pre-converted by the `rwkv` pip package, a shard repeating another's tensors.

Checking: weights must be finite real floating-point numbers (`check_finite_real`, `check_floating`) and must stay
finite once cast to the output dtype (`check_cast_overflow`); each error lists the tensors by name.

Building: `build_model` puts a state dict into a model class without random initialisation (the writing step of
both converters, before `save_pretrained`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from safetensors.torch import load_file

from ..modeling.checkpoint_checks import non_finite_tensors

# The dtypes a converted folder may be written in, by every name a user may give them.
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_SAFETENSORS_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"


# ----------------------------------------------------------------------------------------------------------------
# Reading files


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
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


def read_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU; any failure becomes a ValueError naming the file."""
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


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"Could not read {path} as safetensors: {type(err).__name__}: {err}") from err


def read_json(path: Path) -> dict:
    """A JSON file holding an object; a ValueError naming the file if it cannot be read or holds something else."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not read {path} as JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return data


def find_weight_files(folder: Path) -> tuple[list[Path], str | None]:
    """The weight files of a transformers-style folder (shards resolved through an index json) and their kind
    ("safetensors" or "bin"); `([], None)` when it has none. An index naming missing shards is a ValueError."""
    for index_name, kind in ((_SAFETENSORS_INDEX, "safetensors"), (_BIN_INDEX, "bin")):
        index_path = folder / index_name
        if index_path.is_file():
            weight_map = read_json(index_path).get("weight_map")
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


def require_folder(path: Path, what: str) -> Path:
    """`path`, which must be an existing folder: FileNotFoundError / ValueError naming `what` otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{what} must be a folder: {path}")
    return path


def require_weight_files(folder: Path, what: str) -> tuple[list[Path], str]:
    """`find_weight_files(folder)`, which must find some: a FileNotFoundError naming `what` and listing the folder
    otherwise."""
    files, kind = find_weight_files(folder)
    if not files:
        found = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"{what} has no weights in {folder} (no model.safetensors, pytorch_model.bin or a sharded index); "
            f"found: {', '.join(found[:20]) if found else 'an empty folder'}."
        )
    return files, kind


def read_weight_files(files: list[Path], kind: str) -> dict[str, torch.Tensor]:
    """Every tensor of `files` (as found by `find_weight_files`), each file checked by `check_finite_real`; a
    tensor stored in two shards is a ValueError."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = check_finite_real(read_safetensors_file(path) if kind == "safetensors" else read_torch_file(path), path)
        clash = sorted(set(part) & set(state))
        if clash:
            raise ValueError(f"{path} repeats tensors already read from another shard: {', '.join(clash[:10])}")
        state.update(part)
    return state


def weight_file_tensor_names(folder: Path, files: list[Path], kind: str) -> list[str]:
    """Tensor names of a folder's weights, cheaply where possible (index json or safetensors headers)."""
    for index_name in (_SAFETENSORS_INDEX, _BIN_INDEX):
        if (folder / index_name).is_file():
            return list(read_json(folder / index_name)["weight_map"])
    keys: list[str] = []
    for path in files:
        keys.extend(_safetensors_keys(path) if kind == "safetensors" else read_torch_file(path))
    return keys


# ----------------------------------------------------------------------------------------------------------------
# Checking values


def check_finite_real(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse complex tensors and NaN / inf values, naming the file and the tensors (the file's own names).

    Weights of these models are real numbers: casting a complex tensor would silently drop its imaginary part, and
    one NaN or inf weight makes every output NaN (greedy decoding then answers nothing, without an error). Large
    but finite values are kept: no bound holds for every trained checkpoint. Returns `sd` unchanged.
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


def check_floating(sd: dict[str, torch.Tensor], path, display=None) -> None:
    """Refuse tensors that are not floating point where the model's layout needs weights (integer, bool).

    `display(name)` gives the name to show in the error (e.g. the source file's own naming); default the name."""
    wrong = [f"{display(name) if display else name} ({str(t.dtype).removeprefix('torch.')})"
             for name, t in sd.items() if not t.is_floating_point()]
    if wrong:
        raise ValueError(f"{path}: tensors that are not floating point ({len(wrong)}): {'; '.join(sorted(wrong))}. "
                         "Model weights are floating-point numbers.")


def check_cast_overflow(model, dtype: torch.dtype, source) -> None:
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


# ----------------------------------------------------------------------------------------------------------------
# Building the model to write


def resolve_dtype(dtype, sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The output dtype: the one asked for (a torch.dtype or a name such as "bf16"), else the checkpoint's own
    (its most common floating dtype by tensor count; float32 if that is not one of SUPPORTED_DTYPES).
    An unsupported dtype is a ValueError."""
    if dtype is None:
        counts = Counter(t.dtype for t in sd.values() if t.is_floating_point())
        stored = counts.most_common(1)[0][0] if counts else torch.float32
        return stored if stored in SUPPORTED_DTYPES else torch.float32
    resolved = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if resolved not in SUPPORTED_DTYPES:
        raise ValueError(f"Unsupported dtype {dtype!r}: use float32, bfloat16 or float16.")
    return resolved


def build_model(config, sd: dict[str, torch.Tensor], model_class):
    """`model_class(config)` holding exactly the tensors of `sd` (their dtype kept; tied weights tied).

    A tensor missing from `sd`, or one the model does not have, is a RuntimeError listing both sets by name.
    """
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


__all__ = [
    "SUPPORTED_DTYPES",
    "build_model",
    "check_cast_overflow",
    "check_finite_real",
    "check_floating",
    "find_weight_files",
    "read_json",
    "read_safetensors_file",
    "read_torch_file",
    "read_weight_files",
    "require_folder",
    "require_weight_files",
    "resolve_dtype",
    "weight_file_tensor_names",
]
