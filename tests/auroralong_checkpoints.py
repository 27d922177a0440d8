"""Test-only writers of tiny AuroraLong source checkpoints in the released xtuner layout (not part of the library).

The layout of weili-0234/AuroraLong-RWKV-VID-2B-xtuner: the RWKV-6 LLM at the root in the RWKV/v6-Finch-HF format
(`write_hf_checkpoint`), `visual_encoder/` (a SiglipVisionModel saved by an older transformers: `vision_model.`-
prefixed tensor names, a config.json of model_type siglip_vision_model holding only non-default fields, and the
SigLIP preprocessor_config.json) and `projector/` (xtuner's ProjectorModel: config.json with visual_hidden_size,
llm_hidden_size, depth, hidden_act, bias and tensors `model.0.*` / `model.2.*`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rwkv6_checkpoints import make_blinkdl_state_dict, write_hf_checkpoint
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

# image 64 / patch 16 = 16 patches; 4 layers (24 in the release) so that truncation to 3 is exercised.
TINY_VISION = {
    "image_size": 64, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
    "num_hidden_layers": 4,
}
# vocab 65536: the processor's <image>/<video> placeholders are World ids 65534/65535.
TINY_TEXT = {"hidden_size": 64, "num_layers": 2, "head_size": 32, "vocab": 65536, "mix_rank": 8, "decay_rank": 16}

SIGLIP_PREPROCESSOR = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor",
    "resample": 3, "rescale_factor": 0.00392156862745098,
}


def make_siglip_vision(seed: int = 0, **overrides) -> SiglipVisionModel:
    """A random SigLIP vision model (with its attention-pooling head, as SigLIP's are), its values spread a little
    more than SigLIP's init so that tokens differ visibly."""
    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(**{**TINY_VISION, **overrides})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.05)
            elif "norm" in name:
                param.copy_(1 + 0.1 * torch.randn_like(param))
    return model


def _save(sd: dict[str, torch.Tensor], path: Path, safetensors: bool) -> Path:
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    if safetensors:
        save_file(sd, str(path), metadata={"format": "pt"})
    else:
        torch.save(sd, path)
    return path


def write_siglip_vision(
    model: SiglipVisionModel,
    folder: str | Path,
    *,
    prefix: bool = True,
    safetensors: bool = True,
    preprocessor: bool = True,
    pos_emb: bool = False,
) -> Path:
    """`folder` as an older transformers' SiglipVisionModel.save_pretrained wrote it: `vision_model.`-prefixed names
    (`prefix=False`: unprefixed, as transformers 5 writes), a config.json of the non-default fields, and SigLIP's
    preprocessor_config.json at the tower's size. `pos_emb=True` adds xtuner AuroraSigEncoder's extra `pos_emb`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {("vision_model." if prefix else "") + k: v for k, v in model.state_dict().items()}
    if pos_emb:
        sd["pos_emb"] = model.state_dict()["embeddings.position_embedding.weight"]
    _save(sd, folder / ("model.safetensors" if safetensors else "pytorch_model.bin"), safetensors)
    config = model.config
    fields = {name: getattr(config, name) for name in TINY_VISION}
    config_json = {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", **fields,
                   "torch_dtype": "float32", "transformers_version": "4.44.2"}
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    if preprocessor:
        size = {"height": config.image_size, "width": config.image_size}
        (folder / "preprocessor_config.json").write_text(json.dumps({**SIGLIP_PREPROCESSOR, "size": size}, indent=2))
    return folder


def write_siglip_full(vision: SiglipVisionModel, folder: str | Path) -> Path:
    """A full SiglipModel folder (vision + a tiny text tower) whose vision part holds `vision`'s weights."""
    folder = Path(folder)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
            "vocab_size": 100, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1}
    model = SiglipModel(SiglipConfig(vision_config=vision.config.to_dict(), text_config=text))
    model.vision_model.load_state_dict(vision.state_dict())
    model.save_pretrained(folder)
    return folder


def make_projector_state_dict(vision_width: int, text_width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """xtuner ProjectorModel tensors: model.0 = Linear(vision, text), model.2 = Linear(text, text)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model.0.weight": torch.randn(text_width, vision_width, generator=g) * vision_width ** -0.5,
        "model.0.bias": torch.randn(text_width, generator=g) * 0.1,
        "model.2.weight": torch.randn(text_width, text_width, generator=g) * text_width ** -0.5,
        "model.2.bias": torch.randn(text_width, generator=g) * 0.1,
    }


def write_projector(sd: dict[str, torch.Tensor], folder: str | Path, *, safetensors: bool = True,
                    config: bool = True) -> Path:
    """xtuner ProjectorModel.save_pretrained: config.json (model_type "projector") + the weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(sd, folder / ("model.safetensors" if safetensors else "pytorch_model.bin"), safetensors)
    if config:
        text_width, vision_width = sd["model.0.weight"].shape
        config_json = {
            "architectures": ["ProjectorModel"],
            "auto_map": {"AutoConfig": "configuration_projector.ProjectorConfig",
                         "AutoModel": "modeling_projector.ProjectorModel"},
            "bias": True, "depth": 2, "hidden_act": "gelu", "llm_hidden_size": text_width, "model_type": "projector",
            "torch_dtype": "float32", "transformers_version": "4.44.2", "visual_hidden_size": vision_width,
        }
        (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    return folder


def write_xtuner_checkpoint(
    root: str | Path,
    *,
    vision: SiglipVisionModel | None = None,
    rwkv_sd: dict[str, torch.Tensor] | None = None,
    projector_sd: dict[str, torch.Tensor] | None = None,
    vision_safetensors: bool = True,
    projector_safetensors: bool = True,
    llm_safetensors: bool = False,
    pos_emb: bool = False,
) -> dict:
    """The whole released layout in `root`; returns the parts written (vision model, BlinkDL-named RWKV tensors,
    projector tensors) so that tests can compose the reference from them."""
    root = Path(root)
    vision = vision if vision is not None else make_siglip_vision()
    rwkv_sd = rwkv_sd if rwkv_sd is not None else make_blinkdl_state_dict(**TINY_TEXT, seed=1)
    projector_sd = projector_sd if projector_sd is not None else make_projector_state_dict(
        vision.config.hidden_size, rwkv_sd["emb.weight"].shape[1], seed=2)
    write_hf_checkpoint(rwkv_sd, root, safetensors=llm_safetensors)
    write_siglip_vision(vision, root / "visual_encoder", safetensors=vision_safetensors, pos_emb=pos_emb)
    write_projector(projector_sd, root / "projector", safetensors=projector_safetensors)
    return {"root": root, "vision": vision, "rwkv_sd": rwkv_sd, "projector_sd": projector_sd}
