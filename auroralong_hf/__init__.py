"""AuroraLong for Hugging Face: importing this package registers every class with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import PrefixChange

from .modeling import (
    CACHE_NAME,
    AuroraLongConfig,
    AuroraLongForConditionalGeneration,
    AuroraLongModel,
    Rwkv6Cache,
    Rwkv6Config,
    Rwkv6ForCausalLM,
    Rwkv6Model,
    SiglipToMeVisionConfig,
    SiglipToMeVisionModel,
    merge_schedule,
    tokens_per_frame,
)
from .processing import AuroraLongProcessor, RwkvWorldTokenizer

__version__ = "0.1.0"

AutoConfig.register(Rwkv6Config.model_type, Rwkv6Config, exist_ok=True)
AutoModel.register(Rwkv6Config, Rwkv6Model, exist_ok=True)
AutoModelForCausalLM.register(Rwkv6Config, Rwkv6ForCausalLM, exist_ok=True)
AutoTokenizer.register(Rwkv6Config, slow_tokenizer_class=RwkvWorldTokenizer, exist_ok=True)

AutoConfig.register(SiglipToMeVisionConfig.model_type, SiglipToMeVisionConfig, exist_ok=True)
AutoModel.register(SiglipToMeVisionConfig, SiglipToMeVisionModel, exist_ok=True)
AutoConfig.register(AuroraLongConfig.model_type, AuroraLongConfig, exist_ok=True)
AutoModel.register(AuroraLongConfig, AuroraLongModel, exist_ok=True)
AutoModelForImageTextToText.register(AuroraLongConfig, AuroraLongForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(AuroraLongConfig, AuroraLongForConditionalGeneration, exist_ok=True)
AutoProcessor.register(AuroraLongConfig, AuroraLongProcessor, exist_ok=True)
# save_pretrained also writes the modeling code and an auto_map, so the folder loads with trust_remote_code=True
# where this package is not installed (the files in modeling/ import each other only relatively).
AuroraLongConfig.register_for_auto_class()
AuroraLongForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
AutoTokenizer.register(AuroraLongConfig, slow_tokenizer_class=RwkvWorldTokenizer, exist_ok=True)

# SigLIP checkpoints name the tower's weights `vision_model.*`; transformers strips that prefix only for its own
# SiglipVisionModel class name, so the subclass gets the same rule.
register_checkpoint_conversion_mapping(
    SiglipToMeVisionModel.__name__, [PrefixChange(prefix_to_remove="vision_model")], overwrite=True
)

__all__ = [
    "CACHE_NAME", "AuroraLongConfig", "AuroraLongForConditionalGeneration", "AuroraLongModel", "AuroraLongProcessor",
    "Rwkv6Cache", "Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "RwkvWorldTokenizer", "SiglipToMeVisionConfig",
    "SiglipToMeVisionModel", "merge_schedule", "tokens_per_frame",
]
