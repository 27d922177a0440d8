"""A processor for a vision tower: the one place that turns a tower's config into the processor's plain numbers.

`processing/` imports nothing from `modeling/` (so a saved processor loads as remote code on its own); the count of
visual tokens per frame comes from the tower's S-ToMe schedule, which is modeling code. This module, allowed to import
both, computes it and hands the processor the number.
"""

from __future__ import annotations

from transformers import SiglipImageProcessorPil

from .modeling.configuration_auroralong import SIGLIP_L_384_TOME
from .modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame
from .processing.processing_auroralong import AuroraLongProcessor
from .processing.tokenization_rwkv_world import RwkvWorldTokenizer


def vision_config_of(vision_config: SiglipToMeVisionConfig | dict | None) -> SiglipToMeVisionConfig:
    """A `SiglipToMeVisionConfig` from a config, its dict (a `model_type` key is ignored) or None (the paper's
    SigLIP-L/16-384 with S-ToMe)."""
    if isinstance(vision_config, SiglipToMeVisionConfig):
        return vision_config
    fields = dict(SIGLIP_L_384_TOME if vision_config is None else vision_config)
    fields.pop("model_type", None)
    return SiglipToMeVisionConfig(**fields)


def processor_for_vision_config(vision_config: SiglipToMeVisionConfig | dict | None = None, *, image_processor=None,
                                tokenizer=None, **settings) -> AuroraLongProcessor:
    """An `AuroraLongProcessor` for a vision tower: the World tokenizer, SigLIP's preprocessing (bicubic resize to the
    tower's `image_size`, mean = std = 0.5) and the tower's tokens per frame.

    vision_config: the tower's config or its dict; None: the paper's tower (58 tokens per frame).
    image_processor / tokenizer: used instead of the defaults (e.g. a converted checkpoint's preprocessing).
    settings: the processor's other fields (fps, num_frames, frame_separator, ...).
    Raises ValueError when `image_processor` resizes to another size than the tower takes.
    """
    vision = vision_config_of(vision_config)
    side = vision.image_size
    if image_processor is None:
        image_processor = SiglipImageProcessorPil(
            size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
    size = image_processor.size
    if (size["height"], size["width"]) != (side, side):
        raise ValueError(f"The image processor resizes to {size['height']}x{size['width']} but the vision tower "
                         f"takes {side}x{side}.")
    return AuroraLongProcessor(image_processor, tokenizer if tokenizer is not None else RwkvWorldTokenizer(),
                               tokens_per_frame=tokens_per_frame(vision), **settings)


__all__ = ["processor_for_vision_config", "vision_config_of"]
