"""Configuration of AuroraLong: SigLIP with S-ToMe -> 2-layer MLP -> RWKV-6."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_rwkv6 import Rwkv6Config
from .configuration_siglip_tome import SiglipToMeVisionConfig

# The paper's tower: SigLIP-L/16-384 with its last layer removed (features = the 23rd layer's output), 0.1 kept.
SIGLIP_L_384_TOME = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 16,
    "vision_use_head": False,
    "token_kept_ratio": 0.1,
}


@strict
class AuroraLongConfig(PreTrainedConfig):
    r"""
    Args:
        vision_config: `SiglipToMeVisionConfig` (or its dict); default the paper's SigLIP-L/16-384 tower of 23 layers
            with token_kept_ratio 0.1.
        text_config: `Rwkv6Config` (or its dict); default Finch 1.6B.
        projector_hidden_act: Activation between the projector's two linear layers.
        projector_bias: Whether the projector's linear layers have biases.
        image_token_id: Placeholder id of one image token in input_ids (`<image>`, an unused World-vocabulary row).
        video_token_id: Placeholder id of one video token in input_ids (`<video>`).
        vision_feature_layer: Which layer of the tower feeds the projector. Only -1 (the last layer's output, before
            the post-layernorm, as LLaVA does): with token merging, earlier layers hold more tokens than a frame's
            placeholder run, so a checkpoint trained on layer -2 of a 24-layer tower is converted to a 23-layer tower.
    """

    model_type = "auroralong"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=SiglipToMeVisionConfig, init_kwargs=SIGLIP_L_384_TOME),
        "text_config": SubConfigSpec(config_class=Rwkv6Config),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True
    image_token_id: int = 65534
    video_token_id: int = 65535
    vision_feature_layer: int = -1
    tie_word_embeddings: bool = False

    def validate_architecture(self):
        """Part of `@strict` validation: placeholder ids inside the language model's vocabulary."""
        vocab = self.text_config.vocab_size
        for name in ("image_token_id", "video_token_id"):
            if not 0 <= getattr(self, name) < vocab:
                value = getattr(self, name)
                raise ValueError(f"AuroraLongConfig.{name}={value} is outside the vocabulary [0, {vocab}).")
        if self.vision_feature_layer != -1:
            raise ValueError(
                f"AuroraLongConfig.vision_feature_layer must be -1 (got {self.vision_feature_layer}): truncate the "
                "vision tower to the feature layer instead (vision_config.num_hidden_layers)."
            )
        if self.image_token_id == self.video_token_id:
            raise ValueError("AuroraLongConfig.image_token_id and video_token_id must differ.")


__all__ = ["AuroraLongConfig"]
