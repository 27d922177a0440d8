"""Text processing for AuroraLong: the RWKV World tokenizer."""

from .tokenization_rwkv_world import RwkvWorldTokenizer

__all__ = ["RwkvWorldTokenizer"]
