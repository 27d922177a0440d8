"""LoRA on AuroraLong with PEFT: named target presets for RWKV-6, the adapter setup of `auroralong train --lora`,
and merging an adapter into a plain model.

RWKV-6 has no q_proj: its time-mix projects r, k, v and g, each from its own token-shifted input, through an
`nn.Linear` inside a wrapper that does the shift (`attn.r_proj.linear`, ... , named as fla-hub checkpoints name
them). An adapter belongs on that inner `nn.Linear`: it receives `x + (x_prev - x) * mix`, so LoRA there is
`W' = W + B A` exactly as on any other linear layer, and merges into `linear.weight`. The wrappers themselves
(`attn.v_proj`, `ffn.key`, ...) are not layers PEFT can adapt; naming one (LLaMA-style `["q_proj", "v_proj"]`)
makes PEFT refuse with "Target module DataDependentShiftLinear(... adapters (LoRA) go on its .linear ...) is not
supported", the wrapper's description naming these presets.

| preset      | RWKV-6 modules (each layer)                                                               |
| attention   | time-mix `attn.{r,k,v,g}_proj.linear`, `attn.o_proj`                                      |
| ffn         | channel-mix `ffn.key.linear`, `ffn.receptance.linear`, `ffn.value`                        |
| all         | attention + ffn: every `nn.Linear` of the language model except lm_head                    |
| all-linear  | PEFT's "all-linear", minus the projector and (unless the ViT gets adapters) the vision tower |

For the language model, "all" and PEFT's "all-linear" pick the same layers: Finch's own low-rank token-shift and
decay layers (`attn.x_proj`, `attn.w_proj.linear.lora`) are not `nn.Linear` (modeling_rwkv6.LowRankLinear) and
are left alone by both. PEFT's "all-linear" on a whole AuroraLong also adapts the projector and every SigLIP
linear; `auroralong train` excludes those (the projector trains in full, the tower stays frozen without
`--lora-vision`).

The presets are read by the `auroralong train` face (its `--help` loads no torch), through the light
`auroralong_hf.training` package: torch, transformers and peft are imported by the two functions that need them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# Regexes (PEFT full-matches a string `target_modules` against each module name). The leading `(.*\.)?` lets them
# match in AuroraLong (`model.language_model.layers.N...`), a plain Rwkv6ForCausalLM (`model.layers.N...`) or either
# inside another wrapper.
_RWKV_ATTENTION = r"(.*\.)?layers\.\d+\.attn\.((r|k|v|g)_proj\.linear|o_proj)"
_RWKV_FFN = r"(.*\.)?layers\.\d+\.ffn\.((key|receptance)\.linear|value)"
# SigLIP: attention q/k/v/out projections and the MLP's fc1/fc2.
VISION_LORA_TARGETS = (
    r"(.*\.)?vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
)

LORA_TARGET_PRESETS = {
    "attention": _RWKV_ATTENTION,
    "ffn": _RWKV_FFN,
    "all": f"{_RWKV_ATTENTION}|{_RWKV_FFN}",
    "all-linear": "all-linear",  # resolved by PEFT; `lora_config` excludes the projector and the frozen tower
}
# Trained in full beside the adapters (saved with them); never given adapters of their own.
LORA_FULLY_TRAINED = ("multi_modal_projector",)
_PROJECTOR = r"(.*\.)?multi_modal_projector(\..*)?"
_VISION_TOWER = r"(.*\.)?vision_tower(\..*)?"


def lora_target_modules(preset: str = "all", *, vision: bool = False) -> str:
    """The `target_modules` value for `peft.LoraConfig` that adapts `preset`'s RWKV-6 layers (table above), and with
    `vision` the SigLIP tower's attention and MLP projections too.

    Returns one regex (or "all-linear" for that preset, see `lora_config` for its exclusions).
    ValueError for an unknown preset, naming the presets.
    """
    if preset not in LORA_TARGET_PRESETS:
        raise ValueError(f"Unknown LoRA target preset {preset!r}: choose one of {', '.join(LORA_TARGET_PRESETS)} "
                         "(RWKV-6 has no q_proj; its r/k/v/g projections are attn.{r,k,v,g}_proj.linear).")
    if preset == "all-linear":
        return "all-linear"
    return LORA_TARGET_PRESETS[preset] + (f"|{VISION_LORA_TARGETS}" if vision else "")


def lora_config(preset: str = "all", *, vision: bool = False, r: int = 64, alpha: int = 128, dropout: float = 0.05):
    """The `peft.LoraConfig` of `auroralong train --lora`: adapters on `preset`'s layers (and the ViT's with
    `vision`); the projector is trained in full and saved with the adapter (`modules_to_save`).

    With "all-linear" the projector and, unless `vision`, the vision tower are excluded from the adapters.
    """
    from peft import LoraConfig

    exclude = None
    if preset == "all-linear":
        exclude = _PROJECTOR if vision else f"{_PROJECTOR}|{_VISION_TOWER}"
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                      target_modules=lora_target_modules(preset, vision=vision), exclude_modules=exclude,
                      modules_to_save=list(LORA_FULLY_TRAINED))


def lora_parameter_count(model, r: int, lora_vision: bool, preset: str = "all") -> int:
    """Parameters rank-r LoRA adds to `model` (a plain AuroraLong) on the layers `lora_config(preset, vision=...)`
    adapts: r x (in + out) for each."""
    from torch import nn

    if preset == "all-linear":
        pattern = re.compile(LORA_TARGET_PRESETS["all"] + (f"|{VISION_LORA_TARGETS}" if lora_vision else ""))
    else:
        pattern = re.compile(lora_target_modules(preset, vision=lora_vision))
    return sum(r * (module.in_features + module.out_features) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and pattern.fullmatch(name))


def merge_lora(adapter_dir, output_dir, base_model=None) -> Path:
    """Merge a LoRA adapter folder written by `train` into a plain model + processor folder that loads with
    `AutoModelForImageTextToText`. The base is `base_model` or the adapter's recorded base_model_name_or_path;
    the adapter folder's config.json (the run's config, e.g. its token_kept_ratio) is used for the base."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from ..folder_metadata import answer_generation_config, write_training_card

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if base_model is None:
        base_model = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    config = AutoConfig.from_pretrained(adapter_dir)
    model = AutoModelForImageTextToText.from_pretrained(base_model, config=config)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    processor = AutoProcessor.from_pretrained(adapter_dir)
    merged.generation_config = answer_generation_config(processor.tokenizer)
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_training_card(output_dir, "language (LoRA merged)", base_model)
    return output_dir


__all__ = [
    "LORA_FULLY_TRAINED", "LORA_TARGET_PRESETS", "VISION_LORA_TARGETS", "lora_config", "lora_parameter_count",
    "lora_target_modules", "merge_lora",
]
