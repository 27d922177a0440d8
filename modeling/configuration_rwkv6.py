"""Configuration of the RWKV-6 "Finch" language model."""

import os

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

WKV_BACKENDS = ("auto", "fla", "torch")
WKV_BACKEND_ENV = "AURORALONG_WKV_BACKEND"
DECODE_IMPLEMENTATIONS = ("auto", "eager", "static", "cuda_graph")


@strict
class Rwkv6Config(PreTrainedConfig):
    r"""
    Geometry of an RWKV-6 "Finch" model. Defaults are Finch 1.6B (24 layers, 2048 wide, 32 heads of 64).

    Args:
        vocab_size: Vocabulary size (65536 for the World tokenizer).
        hidden_size: Model width C. Must be a multiple of `head_size`.
        num_hidden_layers: Number of blocks.
        head_size: Width of one WKV head (64 in every released Finch model); heads = C / head_size.
        intermediate_size: Channel-mix width F; None derives Finch's `int(C * 3.5) // 32 * 32`.
        time_mix_lora_rank: Rank of the data-dependent token-shift LoRA (`time_maa_w1/w2`);
            None derives 32 (64 when C >= 4096).
        time_decay_lora_rank: Rank of the data-dependent decay LoRA (`time_decay_w1/w2`);
            None derives 64 (128 when C >= 4096).
        layer_norm_eps: Epsilon of every LayerNorm.
        group_norm_eps: Epsilon of the per-head GroupNorm on the WKV output. The official models use 64e-5
            (1e-5 * head_size_divisor**2); fla-hub configs say 1e-5, which changes logits noticeably.
        wkv_backend: "auto" (fla's Triton kernels on CUDA when fla is installed, pure PyTorch elsewhere),
            "fla" or "torch". The environment variable `AURORALONG_WKV_BACKEND` overrides it at run time.
        wkv_chunk_size: Chunk length of the pure-PyTorch chunked WKV.
        decode_implementation: How `generate` runs each token it decodes (the prompt is unaffected): "auto" (a
            CUDA-graph-captured one-token step when the model sits on one CUDA device, the plain forward elsewhere),
            "eager" (the plain forward: the exact path, on every device), "static" (the captured step's code run
            without a graph: for checking it) or "cuda_graph". `generate(decode_implementation=...)` overrides it
            for one call. See decode_step_rwkv6.py.
        initializer_range: Std of the normal init of embeddings and the head.
        use_cache: Whether forward returns the recurrent state by default.
        tie_word_embeddings: Whether the head shares the embedding matrix (False in released Finch models).
    """

    model_type = "auroralong_rwkv6"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the state's output field (5.24 name, 5.23 name)

    vocab_size: int = 65536
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    head_size: int = 64
    intermediate_size: int | None = None
    time_mix_lora_rank: int | None = None
    time_decay_lora_rank: int | None = None
    layer_norm_eps: float = 1e-5
    group_norm_eps: float = 64e-5
    wkv_backend: str = "auto"
    wkv_chunk_size: int = 16
    decode_implementation: str = "auto"
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        wide = self.hidden_size >= 4096
        if self.intermediate_size is None:
            self.intermediate_size = int(self.hidden_size * 3.5) // 32 * 32
        if self.time_mix_lora_rank is None:
            self.time_mix_lora_rank = 64 if wide else 32
        if self.time_decay_lora_rank is None:
            self.time_decay_lora_rank = 128 if wide else 64
        super().__post_init__(**kwargs)

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_size

    @property
    def layer_types(self) -> list[str]:
        return ["linear_attention"] * self.num_hidden_layers

    def validate_architecture(self):
        """Part of `@strict` validation: every size positive, C a multiple of the head size, a known backend."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "head_size", "intermediate_size",
                     "time_mix_lora_rank", "time_decay_lora_rank", "wkv_chunk_size"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"Rwkv6Config.{name} must be a positive integer, got {value}.")
        if self.hidden_size % self.head_size != 0:
            raise ValueError(
                f"Rwkv6Config.hidden_size ({self.hidden_size}) must be a multiple of head_size ({self.head_size})."
            )
        for name in ("layer_norm_eps", "group_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Rwkv6Config.{name} must be > 0, got {getattr(self, name)}.")
        if self.wkv_backend not in WKV_BACKENDS:
            raise ValueError(f"Rwkv6Config.wkv_backend must be one of {WKV_BACKENDS}, got {self.wkv_backend!r}.")
        if self.decode_implementation not in DECODE_IMPLEMENTATIONS:
            raise ValueError(f"Rwkv6Config.decode_implementation must be one of {DECODE_IMPLEMENTATIONS}, got "
                             f"{self.decode_implementation!r}.")

    def resolved_wkv_backend(self) -> str:
        """The backend asked for: the environment variable wins over the config field."""
        backend = os.environ.get(WKV_BACKEND_ENV, "").strip().lower() or self.wkv_backend
        if backend not in WKV_BACKENDS:
            raise ValueError(f"{WKV_BACKEND_ENV} must be one of {WKV_BACKENDS}, got {backend!r}.")
        return backend


__all__ = ["Rwkv6Config"]
