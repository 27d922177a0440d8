"""AuroraLong for Hugging Face: importing this package registers every class with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from .modeling import Rwkv6Cache, Rwkv6Config, Rwkv6ForCausalLM, Rwkv6Model
from .processing import RwkvWorldTokenizer

__version__ = "0.1.0"

AutoConfig.register(Rwkv6Config.model_type, Rwkv6Config, exist_ok=True)
AutoModel.register(Rwkv6Config, Rwkv6Model, exist_ok=True)
AutoModelForCausalLM.register(Rwkv6Config, Rwkv6ForCausalLM, exist_ok=True)
AutoTokenizer.register(Rwkv6Config, slow_tokenizer_class=RwkvWorldTokenizer, exist_ok=True)

__all__ = ["Rwkv6Cache", "Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "RwkvWorldTokenizer"]
