"""Convert AuroraLong checkpoints into one `save_pretrained` folder of `AuroraLongForConditionalGeneration` and
`AuroraLongProcessor`.

Two entry points:

* `convert_auroralong_checkpoint`: the released xtuner "LLaVA" layout (weili-0234/AuroraLong-RWKV-VID-2B-xtuner):
  the RWKV-6 LLM at the root in the ``RWKV/v6-Finch-*-HF`` format, a SigLIP vision model in ``visual_encoder/``
  (``save_pretrained`` of a SiglipVisionModel: ``vision_model.``-prefixed tensor names, or unprefixed) and the xtuner
  ``ProjectorModel`` in ``projector/`` (``model.0`` = Linear vision->text, ``model.2`` = Linear text->text). The
  released code's conventions become config switches (see `xtuner_switches`): features from ``hidden_states[-2]``
  of the tower (converted to a tower one layer shorter), the first token dropped, ``r = int(N * (1 - ratio) / L)``
  with L the ORIGINAL tower depth, proportional attention off, token 0 protected.
* `compose_auroralong`: a fresh model from a SigLIP vision checkpoint and any RWKV-6 checkpoint, the projector
  randomly initialised: the starting point of stage-1 training. Default S-ToMe settings.

Every size comes from the sources' own config files and tensor shapes: the language model is read by `rwkv6`, the
vision tower by `siglip`, the projector here. Both write to a temporary sibling folder that is renamed at the end, so
a failure leaves nothing half-written, and refuse a non-empty output folder unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch
from transformers.activations import ACT2FN

from ..folder_metadata import answer_generation_config, read_license, write_model_card
from ..modeling.configuration_auroralong import AuroraLongConfig
from ..modeling.configuration_siglip_tome import tokens_per_frame
from ..modeling.modeling_auroralong import AuroraLongForConditionalGeneration, AuroraLongMultiModalProjector
from ..outputs import check_output_dir, write_folder_atomically
from ..processor_setup import processor_for_vision_config
from .checkpoint_io import (
    SUPPORTED_DTYPES,
    build_model,
    check_cast_overflow,
    check_floating,
    read_json,
    read_weight_files,
    require_folder,
    require_weight_files,
    resolve_dtype,
)
from .rwkv6 import detect_rwkv6_format, load_rwkv6_checkpoint
from .siglip import read_siglip_folder, siglip_image_processor, siglip_tome_config, siglip_tower_state_dict

# The depth of the paper's tower (SigLIP-L/16-384 without its last layer): a visual_encoder/ of this depth is taken
# as already truncated.
TRUNCATED_SIGLIP_L_LAYERS = 23
DEFAULT_TOKEN_KEPT_RATIO = 0.1
_TOWER = "model.vision_tower."
_PROJECTOR = "model.multi_modal_projector."
_LANGUAGE = "model.language_model."


# ----------------------------------------------------------------------------------------------------------------
# Sources


def _read_projector(folder: Path, notes: list[str]) -> dict:
    """xtuner's ProjectorModel folder: Linear(vision->text), activation, Linear(text->text), weights `model.{0,2}.*`."""
    what = "The projector (xtuner ProjectorModel)"
    require_folder(folder, what)
    config_path = folder / "config.json"
    config_json = read_json(config_path) if config_path.is_file() else {}
    if not config_json:
        notes.append(f"{folder} has no config.json: projector sizes read from its tensors, activation 'gelu' and "
                     "bias as the tensors show (xtuner's defaults).")
    files, kind = require_weight_files(folder, what)
    raw = read_weight_files(files, kind)
    tensors = {(k[len("model."):] if k.startswith("model.") else k): (k, t) for k, t in raw.items()}

    depth = config_json.get("depth")
    linear_indices = sorted({int(k.split(".")[0]) for k in tensors if k.split(".")[0].isdigit()})
    if depth is None:
        depth = len(linear_indices)
    if depth != 2:
        raise ValueError(f"{folder}: a projector of depth {depth} (config.json 'depth' / its linear layers); "
                         "AuroraLong's projector has exactly 2 linear layers.")
    bias = config_json.get("bias")
    if bias is None:
        bias = "0.bias" in tensors
    act = config_json.get("hidden_act", "gelu")
    if act not in ACT2FN:
        raise ValueError(f"{config_path}: unknown hidden_act {act!r}.")
    expected = ["0.weight", "2.weight"] + (["0.bias", "2.bias"] if bias else [])
    missing = [f"model.{name}" for name in expected if name not in tensors]
    if missing:
        raise ValueError(
            f"{folder} is not a complete xtuner projector (depth 2, bias={bias}): missing tensors "
            f"({len(missing)}): {', '.join(missing)}; found {', '.join(sorted(raw)) or 'no tensors'}."
        )
    unexpected = sorted(key for name, (key, _) in tensors.items() if name not in expected)
    if unexpected:
        notes.append(f"{folder}: {len(unexpected)} unexpected tensor(s) not converted: {', '.join(unexpected)}")
    w1, w2 = tensors["0.weight"][1], tensors["2.weight"][1]
    if w1.dim() != 2 or w2.dim() != 2 or w2.shape[0] != w2.shape[1] or w1.shape[0] != w2.shape[1]:
        raise ValueError(f"{folder}: projector weights of shapes {tuple(w1.shape)} and {tuple(w2.shape)} do not form "
                         "Linear(vision, text) -> Linear(text, text).")
    text_width, vision_width = w1.shape
    for field, value in (("visual_hidden_size", vision_width), ("llm_hidden_size", text_width)):
        if config_json.get(field) not in (None, value):
            raise ValueError(f"{config_path} says {field}={config_json[field]} but the weights have {value}.")
    check_floating({key: t for name, (key, t) in tensors.items() if name in expected}, folder)
    sd = {_PROJECTOR + "linear_1.weight": w1, _PROJECTOR + "linear_2.weight": w2}
    if bias:
        b1, b2 = tensors["0.bias"][1], tensors["2.bias"][1]
        if tuple(b1.shape) != (text_width,) or tuple(b2.shape) != (text_width,):
            raise ValueError(f"{folder}: projector biases of shapes {tuple(b1.shape)}, {tuple(b2.shape)}; "
                             f"expected ({text_width},).")
        sd.update({_PROJECTOR + "linear_1.bias": b1, _PROJECTOR + "linear_2.bias": b2})
    return {
        "path": folder, "sd": {k: v.contiguous() for k, v in sd.items()}, "hidden_act": act, "bias": bool(bias),
        "visual_hidden_size": int(vision_width), "llm_hidden_size": int(text_width),
        "weight_files": [f.name for f in files], "unexpected": unexpected,
    }


def _read_language(source: Path) -> tuple[dict[str, torch.Tensor], object, str, list[str]]:
    fmt = detect_rwkv6_format(source)
    sd, config, notes = load_rwkv6_checkpoint(source, return_notes=True)
    renamed = {(_LANGUAGE + k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    return renamed, config, fmt, notes


def _check_vocabulary(text_config, path) -> None:
    top = max(AuroraLongConfig.image_token_id, AuroraLongConfig.video_token_id)
    if text_config.vocab_size <= top:
        raise ValueError(
            f"{path}: the language model has {text_config.vocab_size} embedding rows, but AuroraLong's <image> and "
            f"<video> placeholders are the World vocabulary's ids {AuroraLongConfig.image_token_id} and "
            f"{AuroraLongConfig.video_token_id}: a 65536-row RWKV-6 World model is needed."
        )


def _check_ratio(token_kept_ratio) -> float:
    ratio = float(token_kept_ratio)
    if not 0 < ratio <= 1:
        raise ValueError(f"token_kept_ratio must be in (0, 1], got {token_kept_ratio}.")
    return ratio


# ----------------------------------------------------------------------------------------------------------------
# Switches


def xtuner_switches(source_layers: int, num_patches: int, token_kept_ratio: float = DEFAULT_TOKEN_KEPT_RATIO,
                    truncate: bool | None = None) -> tuple[dict, dict[str, dict]]:
    """The vision-config fields that reproduce the released AuroraCap/AuroraLong code on our tower, and why.

    Returns (fields for SiglipToMeVisionConfig, {field: {"value", "why"}}). `truncate=None` truncates unless the
    tower already has the paper's 23 layers.
    """
    if truncate is None:
        truncate = source_layers != TRUNCATED_SIGLIP_L_LAYERS
    layers = source_layers - 1 if truncate else source_layers
    if layers < 1:
        raise ValueError(f"The vision tower has {source_layers} layer(s): nothing is left after dropping the last.")
    r = int(num_patches * (1 - token_kept_ratio) / source_layers)
    if truncate:
        depth_why = (f"the released code feeds hidden_states[-2] (the output of layer {source_layers - 1}, before "
                     f"the post-layernorm) of its {source_layers}-layer tower to the projector; our feature layer is "
                     "always the last, so the tower is truncated and the last layer's weights are dropped (same "
                     "features, one layer less to run)")
    else:
        depth_why = (f"visual_encoder/ already has {source_layers} layers (the paper's SigLIP-L without its last "
                     "layer): taken as already truncated, not truncated again; its last layer feeds the projector")
    switches = {
        "num_hidden_layers": {"value": layers, "why": depth_why},
        "drop_first_token": {"value": True, "why": "the released code drops token 0 after the tower "
                                                    "(hidden_states[...][:, 1:]; for SigLIP a real top-left patch)"},
        "tome_schedule": {"value": "aurora", "why": "the released code's rule r = int(N * (1 - ratio) / L) in every "
                                                    "layer, L = num_hidden_layers of the ORIGINAL tower config"},
        "tome_r": {"value": [r] * layers,
                   "why": f"that rule computed with the original depth L = {source_layers} (N = {num_patches}, "
                          f"ratio {token_kept_ratio:g}: r = {r}), written out per layer because our 'aurora' "
                          f"schedule would divide by the converted tower's {layers} layers; to change the ratio, "
                          "convert again with another --token-kept-ratio"},
        "token_kept_ratio": {"value": token_kept_ratio, "why": "the ratio the tome_r list was computed from "
                                                              "(informational: tome_r wins)"},
        "proportional_attention": {"value": False, "why": "the released code added log(size) along the query axis, "
                                                          "where the softmax cancels it: in effect it was off"},
        "protect_first_token": {"value": True, "why": "the released code's matching keeps token 0 out of merging "
                                                      "(class_token=True)"},
        "tome_sort": {"value": "ascending",
                      "why": "the paper's token order (never-merged tokens first, its best in the order ablation); "
                             "the released AuroraLong code was not readable, so this is the paper's word, not the "
                             "code's"},
        "vision_use_head": {"value": False, "why": "the attention-pooling head is not used for the visual tokens; "
                                                   "its tensors are dropped"},
    }
    return {name: item["value"] for name, item in switches.items()}, switches


# ----------------------------------------------------------------------------------------------------------------
# Building and writing


def _target_dtype(dtype, sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype asked for, else the sources' most common floating dtype by parameter count."""
    if dtype is not None:
        return resolve_dtype(dtype, {})
    counts: Counter = Counter()
    for tensor in sd.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] += tensor.numel()
    stored = counts.most_common(1)[0][0] if counts else torch.float32
    return stored if stored in SUPPORTED_DTYPES else torch.float32


def _write(output_dir: Path, config, sd: dict[str, torch.Tensor], target_dtype: torch.dtype, processor, *,
           summary: str, license: str | None, source) -> int:
    """Build the model from `sd` (no random init), cast, and write model + processor + generation config + model
    card (`summary`, `license`) atomically. `source` names the checkpoint(s) in errors."""
    config.dtype = target_dtype  # recorded in config.json by save_pretrained
    model = build_model(config, sd, AuroraLongForConditionalGeneration)
    model = model.to(target_dtype).eval()
    check_cast_overflow(model, target_dtype, source)
    model.generation_config = answer_generation_config(processor.tokenizer)
    num_parameters = sum(p.numel() for p in model.parameters())

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
        write_model_card(folder, "auroralong", summary=summary, license=license)

    write_folder_atomically(output_dir, write)
    return num_parameters


def _language_report(fmt: str, path, config, notes: list[str]) -> dict:
    return {
        "format": {"hf": "RWKV/v6-Finch-HF", "fla": "fla-hub", "blinkdl": "BlinkDL .pth"}[fmt],
        "path": str(path), "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers, "num_heads": config.num_heads, "head_size": config.head_size,
        "intermediate_size": config.intermediate_size, "layer_norm_eps": config.layer_norm_eps,
        "group_norm_eps": config.group_norm_eps, "notes": notes,
    }


def _vision_report(source: dict, vision_config, info: dict) -> dict:
    return {
        "path": str(source["path"]), "model_type": source["model_type"], "weight_files": source["weight_files"],
        "key_prefix": source["key_prefix"], "hidden_size": vision_config.hidden_size,
        "intermediate_size": vision_config.intermediate_size,
        "num_attention_heads": vision_config.num_attention_heads, "image_size": vision_config.image_size,
        "patch_size": vision_config.patch_size, "num_patches": vision_config.num_patches,
        "source_layers": source["source_layers"], "layers": vision_config.num_hidden_layers,
        "dropped": info["dropped"],
    }


def _finish_report(report: dict, output_dir: Path, target_dtype, vision_config, num_parameters: int) -> dict:
    report.update({
        "output_dir": str(output_dir),
        "dtype": str(target_dtype).removeprefix("torch."),
        "tokens_per_frame": tokens_per_frame(vision_config),
        "merge_schedule": vision_config.merge_schedule(),
        "num_parameters": num_parameters,
        "files": sorted(p.name for p in output_dir.iterdir()),
    })
    return report


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def convert_auroralong_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    token_kept_ratio: float = DEFAULT_TOKEN_KEPT_RATIO,
    truncate_vision: bool | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> dict:
    """Convert the released xtuner layout (root = RWKV-6 LLM, `visual_encoder/`, `projector/`) to one folder.

    The released code's conventions become config switches (`xtuner_switches`); `truncate_vision=None` drops the
    tower's last layer unless it already has 23. `dtype` defaults to the sources' own (by parameter count).
    Returns a report of plain values: formats, sizes, the switches and why, the tensors set aside (by name).
    Errors: FileNotFoundError / ValueError naming the path for a missing part, a missing or truncated weight file,
    missing tensors, inconsistent sizes or weights that are not finite real numbers (NaN, inf, complex; named);
    FileExistsError for a non-empty output folder without `overwrite`; OSError naming the output folder when it
    cannot be written (read-only, disk full), nothing left behind.
    """
    root = require_folder(Path(source).expanduser().absolute(), "AuroraLong xtuner checkpoint")
    output_dir = check_output_dir(output_dir, overwrite)
    ratio = _check_ratio(token_kept_ratio)
    if dtype is not None:
        resolve_dtype(dtype, {})  # a bad dtype fails before any loading
    vision_dir, projector_dir = root / "visual_encoder", root / "projector"
    for folder, what in ((vision_dir, "The vision tower (visual_encoder/)"), (projector_dir, "The projector")):
        if not folder.exists():
            adapter = root / f"{folder.name}_adapter"
            hint = f" ({adapter.name}/ holds a LoRA adapter, which is not supported)" if adapter.exists() else ""
            raise FileNotFoundError(f"{what} not found: {folder}{hint}.")
    try:
        detect_rwkv6_format(root)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"The language model (the RWKV-6 LLM at the root of the xtuner layout) could not be read "
                         f"from {root}: {err}") from err
    notes: list[str] = []

    projector = _read_projector(projector_dir, notes)
    vision = read_siglip_folder(vision_dir, "The vision tower (visual_encoder/)")
    base = siglip_tome_config(vision["fields"])
    vision["source_layers"] = base.num_hidden_layers
    tome, switches = xtuner_switches(base.num_hidden_layers, base.num_patches, ratio, truncate_vision)
    vision_config = siglip_tome_config(vision["fields"], **tome)
    tower_sd, vision_info = siglip_tower_state_dict(vision, vision_config, notes)
    vision_sd = {_TOWER + name: t for name, t in tower_sd.items()}

    language_sd, text_config, fmt, language_notes = _read_language(root)
    _check_vocabulary(text_config, root)
    widths = (("visual_hidden_size", vision_config.hidden_size), ("llm_hidden_size", text_config.hidden_size))
    for field, ours in widths:
        if projector[field] != ours:
            raise ValueError(f"{projector_dir}: the projector's {field} is {projector[field]} but the "
                             f"{'vision tower' if field.startswith('visual') else 'language model'} has {ours}.")

    config = AuroraLongConfig(vision_config=vision_config, text_config=text_config,
                              projector_hidden_act=projector["hidden_act"], projector_bias=projector["bias"],
                              tie_word_embeddings=text_config.tie_word_embeddings)
    image_processor, preprocessor_path = siglip_image_processor(vision_dir, vision_config.image_size, notes)
    processor = processor_for_vision_config(vision_config, image_processor=image_processor)

    sd = {**vision_sd, **projector["sd"], **language_sd}
    target_dtype = _target_dtype(dtype, sd)
    summary = (f"Converted by `auroralong convert auroralong` from the xtuner release layout `{root.name}` (the RWKV-6 "
               "LLM at its root, visual_encoder/, projector/); the released code's conventions are config switches.")
    num_parameters = _write(output_dir, config, sd, target_dtype, processor, summary=summary,
                            license=read_license(root), source=root)
    report = {
        "command": "convert auroralong",
        "source": str(root),
        "format": "xtuner LLaVA layout (AuroraCap / AuroraLong release): RWKV-6 LLM at the root, visual_encoder/, "
                  "projector/",
        "language": _language_report(fmt, root, text_config, language_notes),
        "vision": _vision_report(vision, vision_config, vision_info),
        "projector": {"path": str(projector_dir), "init": "converted", "weight_files": projector["weight_files"],
                      "visual_hidden_size": projector["visual_hidden_size"],
                      "llm_hidden_size": projector["llm_hidden_size"], "hidden_act": projector["hidden_act"],
                      "bias": projector["bias"]},
        "switches": {f"vision_config.{name}": item for name, item in switches.items()},
        "unexpected_tensors": vision_info["unexpected"] + projector["unexpected"],
        "preprocessor_config": preprocessor_path,
        "notes": notes,
    }
    return _finish_report(report, output_dir, target_dtype, vision_config, num_parameters)


def compose_auroralong(
    vision: str | os.PathLike,
    language: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    token_kept_ratio: float = DEFAULT_TOKEN_KEPT_RATIO,
    vision_layers: int | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> dict:
    """A fresh AuroraLong from a SigLIP vision folder (SiglipVisionModel or full SiglipModel, `vision_model.`
    prefix or not) and any RWKV-6 checkpoint (BlinkDL .pth, RWKV/v6-Finch-HF, fla): the projector randomly
    initialised by the model's own init (seeded), the tower as-is (or its first `vision_layers` layers), default
    S-ToMe settings (kept ratio `token_kept_ratio`, even schedule, proportional attention on, token 0 protected)."""
    vision_dir = require_folder(Path(vision).expanduser().absolute(), "SigLIP vision checkpoint")
    language_path = Path(language).expanduser().absolute()
    if not language_path.exists():
        raise FileNotFoundError(f"RWKV-6 checkpoint not found: {language_path}")
    output_dir = check_output_dir(output_dir, overwrite)
    ratio = _check_ratio(token_kept_ratio)
    if dtype is not None:
        resolve_dtype(dtype, {})
    notes: list[str] = []

    source = read_siglip_folder(vision_dir, "The SigLIP vision checkpoint")
    base = siglip_tome_config(source["fields"])
    source["source_layers"] = base.num_hidden_layers
    layers = base.num_hidden_layers if vision_layers is None else int(vision_layers)
    if not 1 <= layers <= base.num_hidden_layers:
        raise ValueError(f"vision_layers must be in [1, {base.num_hidden_layers}] (the tower's depth), got {layers}.")
    vision_config = siglip_tome_config(source["fields"], num_hidden_layers=layers, token_kept_ratio=ratio,
                                   vision_use_head=False)
    tower_sd, vision_info = siglip_tower_state_dict(source, vision_config, notes)
    vision_sd = {_TOWER + name: t for name, t in tower_sd.items()}

    language_sd, text_config, fmt, language_notes = _read_language(language_path)
    _check_vocabulary(text_config, language_path)

    config = AuroraLongConfig(vision_config=vision_config, text_config=text_config,
                              tie_word_embeddings=text_config.tie_word_embeddings)
    # The projector: built for real and initialised by the model's own _init_weights, under a fixed seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = AuroraLongMultiModalProjector(config)
        AuroraLongForConditionalGeneration._init_weights(_InitHost(config), projector)
    projector_sd = {_PROJECTOR + k: v for k, v in projector.state_dict().items()}

    image_processor, preprocessor_path = siglip_image_processor(vision_dir, vision_config.image_size, notes)
    processor = processor_for_vision_config(vision_config, image_processor=image_processor)
    sd = {**vision_sd, **projector_sd, **language_sd}
    target_dtype = _target_dtype(dtype, {**vision_sd, **language_sd})
    summary = (f"Composed by `auroralong convert compose` from the SigLIP tower `{vision_dir.name}` and the RWKV-6 "
               f"checkpoint `{language_path.name}`. The projector is RANDOMLY initialised (seed {seed}): train it "
               "(`auroralong train --stage pretrain`) before use.")
    # Each part keeps its licence; one is written only when both sources' cards agree.
    licenses = {read_license(vision_dir), read_license(language_path) if language_path.is_dir() else None}
    num_parameters = _write(output_dir, config, sd, target_dtype, processor, summary=summary,
                            license=licenses.pop() if len(licenses) == 1 else None,
                            source=f"{vision_dir} + {language_path}")
    truncated = layers < base.num_hidden_layers
    switches = {
        "vision_config.num_hidden_layers": {
            "value": layers,
            "why": (f"--vision-layers: the first {layers} of {base.num_hidden_layers} layers; the last one feeds the "
                    "projector" if truncated else "the tower as-is; its last layer feeds the projector"),
        },
        "vision_config.token_kept_ratio": {"value": ratio, "why": "fraction of the patches kept per frame"},
        "vision_config.tome_schedule": {"value": vision_config.tome_schedule,
                                        "why": "S-ToMe default: merges spread evenly over the layers"},
        "vision_config.proportional_attention": {"value": vision_config.proportional_attention,
                                                 "why": "S-ToMe default: log(size) on every key"},
        "vision_config.protect_first_token": {"value": vision_config.protect_first_token, "why": "S-ToMe default"},
        "vision_config.drop_first_token": {"value": vision_config.drop_first_token, "why": "S-ToMe default"},
        "vision_config.vision_use_head": {"value": False, "why": "the attention-pooling head is not used for the "
                                                                 "visual tokens; its tensors are dropped"},
    }
    report = {
        "command": "convert compose",
        "source": {"vision": str(vision_dir), "language": str(language_path)},
        "format": "composed: SigLIP vision checkpoint + RWKV-6 checkpoint, projector randomly initialised",
        "language": _language_report(fmt, language_path, text_config, language_notes),
        "vision": _vision_report(source, vision_config, vision_info),
        "projector": {"init": f"random (the model's own init, seed {seed})",
                      "visual_hidden_size": vision_config.hidden_size, "llm_hidden_size": text_config.hidden_size,
                      "hidden_act": config.projector_hidden_act, "bias": config.projector_bias},
        "switches": switches,
        "unexpected_tensors": vision_info["unexpected"],
        "preprocessor_config": preprocessor_path,
        "notes": notes,
    }
    return _finish_report(report, output_dir, target_dtype, vision_config, num_parameters)


class _InitHost:
    """Stands in for the model in `_init_weights`, which only reads `config` (and `lm_head`, absent here)."""

    def __init__(self, config):
        self.config = config


# ----------------------------------------------------------------------------------------------------------------
# Printing


def format_report(report: dict) -> str:
    """The report as readable lines: sizes, the switches and why, what was set aside, notes."""
    lines = [f"{report['command']}: {report['format']}", f"  output: {report['output_dir']} ({report['dtype']}, "
             f"{report['num_parameters']:,} parameters; files: {', '.join(report['files'])})"]
    lang = report["language"]
    lines.append(f"  language: {lang['format']} at {lang['path']}: {lang['num_hidden_layers']} layers, hidden "
                 f"{lang['hidden_size']}, {lang['num_heads']} heads of {lang['head_size']}, FFN "
                 f"{lang['intermediate_size']}, vocab {lang['vocab_size']}")
    vis = report["vision"]
    lines.append(f"  vision: {vis['model_type']} at {vis['path']} ({', '.join(vis['weight_files'])}, key prefix "
                 f"{vis['key_prefix']}): {vis['source_layers']} -> {vis['layers']} layers, hidden "
                 f"{vis['hidden_size']}, MLP {vis['intermediate_size']}, {vis['num_attention_heads']} heads, "
                 f"{vis['image_size']}px / {vis['patch_size']} = {vis['num_patches']} patches")
    proj = report["projector"]
    lines.append(f"  projector: {proj['init']}: Linear {proj['visual_hidden_size']} -> {proj['llm_hidden_size']}, "
                 f"{proj['hidden_act']}, Linear {proj['llm_hidden_size']} -> {proj['llm_hidden_size']}, "
                 f"bias {proj['bias']}")
    lines.append(f"  tokens per frame: {report['tokens_per_frame']} (merges per layer {report['merge_schedule']})")
    lines.append("  switches:")
    for name, item in report["switches"].items():
        lines.append(f"    {name} = {item['value']}: {item['why']}")
    for why, names in vis["dropped"].items():
        shown = ", ".join(names[:16]) + (f", ... ({len(names)} in all)" if len(names) > 16 else "")
        lines.append(f"  dropped ({why}): {shown}")
    if report["unexpected_tensors"]:
        lines.append(f"  unexpected tensors, not converted: {', '.join(report['unexpected_tensors'])}")
    else:
        lines.append("  unexpected tensors: none; missing tensors: none")
    for note in report["notes"] + lang["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


__all__ = ["compose_auroralong", "convert_auroralong_checkpoint", "format_report", "xtuner_switches"]
