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
shapes, never assumed; config.json files only contribute epsilons and cross-checks. The names, shapes and maps of the
three layouts are `rwkv6_layout`; reading and checking the files is `checkpoint_io`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers.utils import logging

from ..folder_metadata import answer_generation_config, read_license, write_model_card
from ..modeling.configuration_rwkv6 import Rwkv6Config
from ..modeling.modeling_rwkv6 import Rwkv6ForCausalLM
from ..outputs import check_output_dir, write_folder_atomically
from ..processing.tokenization_rwkv_world import RwkvWorldTokenizer
from .checkpoint_io import (
    build_model,
    check_cast_overflow,
    check_finite_real,
    check_floating,
    find_weight_files,
    read_json,
    read_torch_file,
    read_weight_files,
    resolve_dtype,
    weight_file_tensor_names,
)
from .rwkv6_layout import (
    blinkdl_name_to_hf,
    blinkdl_state_dict_keys,
    blinkdl_to_fla_state_dict,
    count_layers,
    describe_tensor_names,
    expected_blinkdl_shapes,
    expected_fla_shapes,
    fla_state_dict_keys,
    hf_to_blinkdl_keys,
    naming_style,
    read_geometry,
)

logger = logging.get_logger(__name__)

FORMATS = ("blinkdl", "hf", "fla")

# The GroupNorm epsilon of every released Finch model: 1e-5 * head_size_divisor**2 with divisor 8.
FINCH_GROUP_NORM_EPS = 64e-5


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
    files, kind = find_weight_files(path)
    if not files:
        if _single_pth(path) is not None:
            return "blinkdl"
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{path} holds no RWKV-6 weights (no .pth, *.safetensors or pytorch_model*.bin); found: "
            f"{', '.join(found[:20]) if found else 'an empty folder'}."
        )
    keys = weight_file_tensor_names(path, files, kind)
    style = naming_style(keys)
    if style in ("hf", "fla"):
        return style
    config_path = path / "config.json"
    model_type = read_json(config_path).get("model_type") if config_path.is_file() else None
    raise ValueError(
        f"{path} is not a recognised RWKV-6 checkpoint: its weights ({', '.join(f.name for f in files)}) hold "
        f"{describe_tensor_names(keys)}; expected 'rwkv.*' (RWKV/v6-Finch-HF) or 'model.layers.*' (fla) names"
        f"{'' if model_type is None else f' (config.json model_type: {model_type!r})'}."
    )


# ----------------------------------------------------------------------------------------------------------------
# Checking tensor names and shapes


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



def _fit_shapes(
    sd: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path, display=None
) -> dict[str, torch.Tensor]:
    """Check every tensor's shape; a per-channel vector may come as [C] or [1, 1, C] and is reshaped as wanted."""
    check_floating(sd, path, display)
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
    display = blinkdl_name_to_hf if fmt == "hf" else None
    head_name = display("head.weight") if display else "head.weight"
    style = naming_style(sd)
    if style not in (None, "blinkdl"):
        raise ValueError(f"{path} holds {style}-style tensor names, not BlinkDL's (e.g. {sorted(sd)[0]}).")
    num_layers = count_layers(sd, path)
    tied = False
    if "head.weight" not in sd and "emb.weight" in sd:
        # Every released Finch model has its own head; a head-less file is a truncated or partial export.
        raise ValueError(
            f"{path} has no {head_name}. RWKV-6 Finch models do not tie the head to the embedding, so a "
            "checkpoint without a head cannot be converted."
        )
    _check_key_set(sd, blinkdl_state_dict_keys(num_layers), path, "RWKV/v6-Finch-HF" if display else "BlinkDL",
                   display)
    geometry = read_geometry(sd, num_layers, path, "blinkdl")
    sd = _fit_shapes(sd, expected_blinkdl_shapes(geometry), path, display)
    return blinkdl_to_fla_state_dict(sd, num_layers), geometry, tied


def _from_fla(sd, path, config_json, notes) -> tuple[dict[str, torch.Tensor], dict[str, int], bool]:
    num_layers = count_layers(sd, path)
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
    geometry = read_geometry(sd, num_layers, path, "fla")
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
        sd, geometry, tied = _from_blinkdl(check_finite_real(read_torch_file(file), file), file, notes)
        notes.append("BlinkDL .pth: LayerNorm eps 1e-5 and GroupNorm eps 64e-5, as in RWKV-LM.")
    else:
        files, kind = find_weight_files(path)
        raw = read_weight_files(files, kind)
        config_path = path / "config.json"
        config_json = read_json(config_path) if config_path.is_file() else {}
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

    requested_dtype = None if dtype is None else resolve_dtype(dtype, {})  # a bad dtype fails before any loading
    sd, config, fmt, notes = _load(source)
    target_dtype = requested_dtype or resolve_dtype(None, sd)
    if target_dtype == torch.float16:
        notes.append("float16 output: released Finch models can overflow fp16 activations in deep layers "
                     "(BlinkDL's code rescales weights for fp16, this model does not); bfloat16 is safer.")
    if save_tokenizer and config.vocab_size != 65536:
        notes.append(f"The model has {config.vocab_size} embedding rows, the World tokenizer saved with it 65536 ids.")
    config.dtype = target_dtype  # recorded in config.json by save_pretrained
    num_tensors = len(sd)
    num_parameters = sum(t.numel() for name, t in sd.items() if not (config.tie_word_embeddings
                                                                     and name == "lm_head.weight"))

    model = build_model(config, sd, Rwkv6ForCausalLM)
    del sd
    model = model.to(target_dtype).eval()
    check_cast_overflow(model, target_dtype, Path(source).expanduser())

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
    "FINCH_GROUP_NORM_EPS",
    "FORMATS",
    "convert_rwkv6_checkpoint",
    "detect_rwkv6_format",
    "load_rwkv6_checkpoint",
]
