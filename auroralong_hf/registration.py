"""Auto registration: every class of this package with transformers' Auto classes, and remote code for saved folders.

`register_auto_classes()` runs when `auroralong_hf` is imported (see the package docstring for the one exception, the
`auroralong` command line, which calls it before running a command). It imports torch, transformers and every model:
seconds, which is why the package face is lazy and this lives in its own module.
"""

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
    AuroraLongConfig,
    AuroraLongForConditionalGeneration,
    AuroraLongModel,
    Rwkv6Config,
    Rwkv6ForCausalLM,
    Rwkv6Model,
    SiglipToMeVisionConfig,
    SiglipToMeVisionModel,
)
from .processing import AuroraLongProcessor, RwkvWorldTokenizer


def register_auto_classes() -> None:
    """Register configs, models, processor and tokenizer with the Auto classes (idempotent: `exist_ok=True`)."""
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
    AutoTokenizer.register(AuroraLongConfig, slow_tokenizer_class=RwkvWorldTokenizer, exist_ok=True)

    # save_pretrained also writes the code and an auto_map, so a folder loads with trust_remote_code=True where this
    # package is not installed: the model (modeling/ files import each other only relatively), the processor
    # (processing_auroralong.py and the readers it imports; nothing from modeling/) and the tokenizer (its module;
    # its vocabulary file is saved beside it by save_vocabulary).
    AuroraLongConfig.register_for_auto_class()
    AuroraLongForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    AuroraLongProcessor.register_for_auto_class()
    RwkvWorldTokenizer.register_for_auto_class()

    # SigLIP checkpoints name the tower's weights `vision_model.*`; transformers strips that prefix only for its own
    # SiglipVisionModel class name, so the subclass gets the same rule.
    register_checkpoint_conversion_mapping(
        SiglipToMeVisionModel.__name__, [PrefixChange(prefix_to_remove="vision_model")], overwrite=True
    )


__all__ = ["register_auto_classes"]
