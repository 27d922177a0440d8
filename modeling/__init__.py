"""AuroraLong's models: the RWKV-6 language model (and, later, the S-ToMe vision tower and the full model)."""

from .configuration_rwkv6 import Rwkv6Config
from .modeling_rwkv6 import Rwkv6Cache, Rwkv6ForCausalLM, Rwkv6Model, Rwkv6PreTrainedModel

__all__ = ["Rwkv6Cache", "Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "Rwkv6PreTrainedModel"]
