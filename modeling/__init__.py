"""AuroraLong's models: the RWKV-6 language model (its state and `generate` beside it), the S-ToMe vision tower and
the full model."""

from .cache_rwkv6 import CACHE_NAME, Rwkv6Cache
from .configuration_auroralong import AuroraLongConfig
from .configuration_rwkv6 import Rwkv6Config
from .configuration_siglip_tome import SiglipToMeVisionConfig, merge_schedule, tokens_per_frame
from .modeling_auroralong import AuroraLongForConditionalGeneration, AuroraLongModel
from .modeling_rwkv6 import FEED_CHUNK_TOKENS, Rwkv6ForCausalLM, Rwkv6Model, Rwkv6PreTrainedModel
from .modeling_siglip_tome import SiglipToMeVisionModel, SiglipToMeVisionOutput

__all__ = [
    "CACHE_NAME", "FEED_CHUNK_TOKENS", "AuroraLongConfig", "AuroraLongForConditionalGeneration", "AuroraLongModel",
    "Rwkv6Cache", "Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6PreTrainedModel", "SiglipToMeVisionConfig",
    "SiglipToMeVisionModel", "SiglipToMeVisionOutput", "merge_schedule", "tokens_per_frame",
]
