"""Random models whose greedy answers are decisive: embeddings and output head spread so that no two logits tie."""

import torch

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration


def spread_logits(model, head_std: float = 0.3):
    """Redraw the input embeddings (std 1) and the output head (std `head_std`) in place; returns the model."""
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
        model.get_output_embeddings().weight.normal_(0, head_std)
    return model


def decisive_auroralong(vision: dict, text: dict, seed: int = 0) -> AuroraLongForConditionalGeneration:
    """An AuroraLong of these tower / language model settings, built after `torch.manual_seed(seed)`, in eval mode."""
    torch.manual_seed(seed)
    model = AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=vision, text_config=text)).eval()
    return spread_logits(model)
