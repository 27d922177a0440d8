"""The one-token decode step with static buffers, captured once as a CUDA graph and replayed for every token.

Decoding one token through RWKV-6 is a few hundred small kernels (24 layers x dozens of projections, norms and
element-wise ops) on a few KB of activations: on a GPU the launches, not the arithmetic or the weight traffic, set its
time, and batch 16 costs what batch 1 costs. `Rwkv6DecodeStep` runs the model's own layers on STATIC tensors (the
input ids [B, 1], every layer's state, the logits), writing the new state into them in place, so that the whole step
can be recorded once with `torch.cuda.CUDAGraph` and replayed with a single launch (PyTorch's "whole network capture").
Its eager twin (`capture=False`) runs the same code without a graph on any device; on CPU it gives exactly the
logits and states of the model's plain forward with a cache (tests/test_decode_step.py).

The user's `Rwkv6Cache` stays the source of truth. When a cache comes to the step its tensors are copied into the
static buffers and the cache is pointed at them, so it follows every replay without a copy; anything that rebinds
the cache's tensors between steps (beam search reordering rows, `reset`) is noticed (by identity) and copied in again.
`release()` gives the cache tensors of its own again (copies of the buffers), which `generate` does when it ends, so
no state outlives a generation aliased to buffers the next one overwrites.

`Rwkv6GenerationMixin.generate` uses the step for the tokens it decodes (not for the prompt), as chosen by
`decode_implementation` (the generate argument, else `Rwkv6Config.decode_implementation`; see
`resolve_decode_implementation`). A decoded token is always real: transformers extends the attention mask with ones
at each step, so the step takes no mask.

A graph replays every kernel of the step, about 41 a layer. With transformers' `compile_config` (`generate(...,
compile_config=CompileConfig())`, transformers' own switch for compiled decoding) the step's code is first compiled
by `torch.compile`, which fuses its element-wise chains (token shift, mixes, GroupNorm, gate, the one-token WKV) into
a few kernels a layer; the graph then replays those. Compiling costs tens of seconds the first time in a process
(inductor caches its kernels on disk for the next), so it is asked for, not the default.
"""

import threading
import warnings
import weakref

import torch
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache_rwkv6 import CACHE_NAME, Rwkv6Cache
from .configuration_rwkv6 import DECODE_IMPLEMENTATIONS

# Runs of the step on a side stream before capture, as PyTorch's CUDA-graph recipe asks: lazy initialisation
# (cuBLAS handles and workspaces, Triton's compilation and autotuning of fla's kernels) must happen outside the graph.
WARMUP_STEPS = 3


def resolve_decode_implementation(model, requested: str | None = None) -> str:
    """How `generate` decodes `model`'s tokens: "eager", "static" or "cuda_graph".

    `requested` (the generate argument; None: the text config's `decode_implementation`) is one of
    `DECODE_IMPLEMENTATIONS`: "eager" is the model's plain forward for every token (the exact path); "static" the
    static-buffer step run eagerly (the graph's twin, any device: for checking the graph); "cuda_graph" that step
    captured and replayed (CUDA only); "auto" is "cuda_graph" when the model sits whole on one CUDA device (no CPU or
    disk offload, no DeepSpeed ZeRO-3 partitioning: a graph replays the weights' addresses of its capture) and its
    language model and head hold only this model's own layers (`has_only_own_layers`), "eager" elsewhere. Raises
    ValueError for an unknown name, or "cuda_graph" off CUDA.
    """
    choice = requested if requested is not None else model.config.get_text_config().decode_implementation
    if choice not in DECODE_IMPLEMENTATIONS:
        raise ValueError(f"decode_implementation must be one of {DECODE_IMPLEMENTATIONS}, got {choice!r}.")
    devices = sorted(map(str, (getattr(model, "hf_device_map", None) or {"": model.device}).values()))
    whole_on_one_gpu = model.device.type == "cuda" and len(devices) == 1 and not is_deepspeed_zero3_enabled()
    if choice == "auto":
        return "cuda_graph" if whole_on_one_gpu and has_only_own_layers(model) else "eager"
    if choice == "cuda_graph" and not whole_on_one_gpu:
        where = "partitioned by DeepSpeed ZeRO-3" if is_deepspeed_zero3_enabled() else f"on {', '.join(devices)}"
        raise ValueError(f"decode_implementation='cuda_graph' needs the whole model on one CUDA device (it is "
                         f"{where}); use 'eager' or 'auto'.")
    return choice


def compile_options(compile_config, capture: bool) -> dict | None:
    """`torch.compile` keyword arguments for the step from transformers' `CompileConfig` (None: no compiling).
    Modes that capture CUDA graphs themselves ("reduce-overhead", CompileConfig's default, and "max-autotune") lose
    that part when the step captures its own graph: a graph cannot be captured inside another's capture."""
    if compile_config is None:
        return None
    options = {"backend": compile_config.backend, "fullgraph": compile_config.fullgraph,
               "dynamic": compile_config.dynamic}
    if compile_config.options is not None:  # torch.compile takes a mode or options, not both
        return {**options, "options": compile_config.options}
    mode = compile_config.mode
    if capture:
        mode = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)
    return {**options, "mode": mode}


def decode_one_token(language_model, head, input_ids, attn_shift, ffn_shift, wkv, backend: str, chunk_size: int):
    """The model's one-token forward on the step's buffers: the same modules and calls as `Rwkv6Model.forward` with
    a cache and no padding, then the head. The new state is written into the buffers in place; returns the logits
    [B, 1, V]. A free function (not a method) so that `torch.compile` sees only tensors and modules."""
    hidden_states = language_model.embeddings(input_ids)
    for i, block in enumerate(language_model.layers):
        hidden_states, new_attn_shift, new_ffn_shift, new_wkv = block(
            hidden_states, attn_shift[i], ffn_shift[i], wkv[i], None, backend, chunk_size
        )
        attn_shift[i].copy_(new_attn_shift)
        ffn_shift[i].copy_(new_ffn_shift)
        wkv[i].copy_(new_wkv)
    return head(language_model.norm(hidden_states))


def has_only_own_layers(model) -> bool:
    """Whether the language model and head are built of the RWKV-6 layers and torch.nn modules alone. Layers put in
    by other libraries (PEFT's adapters, quantised linears) may branch on Python state (an adapter disabled,
    merged, swapped) that a captured graph would freeze at capture, so "auto" leaves such models eager."""
    language_model = model.get_decoder()
    own = type(language_model).__module__  # every RWKV-6 layer is defined beside Rwkv6Model
    return all(type(module).__module__ == own or type(module).__module__.startswith("torch.nn.")
               for root in (language_model, model.get_output_embeddings()) for module in root.modules())


class Rwkv6DecodeStep:
    """One decoded token of an RWKV-6 causal LM (`Rwkv6ForCausalLM`, `AuroraLongForConditionalGeneration`), on static
    buffers, optionally replayed from a CUDA graph.

    `step(input_ids, cache)` takes ids [B, 1] (real tokens: no attention mask) and an `Rwkv6Cache` of B rows, advances
    the cache by one token (state, `seen_tokens`, fingerprint) and returns a `CausalLMOutputWithPast` (logits
    [B, 1, V] in the model's dtype, a copy; the cache in its `CACHE_NAME` field), as the model's forward does.

    The buffers are sized at the first call and rebuilt (and the graph recaptured) when the batch size, the state's
    dtype, the device, the WKV backend or, for a graph, the weights' storage (a `model.to(...)`, a merged adapter)
    change. With `capture=True` the model must sit on one CUDA device; a capture that fails warns and leaves the step
    running eagerly (same results, no speed-up). One step at a time: calls hold a lock, and a cache coming in releases
    the one bound before it (correct, but two generations interleaved on one model copy their state at every token).
    """

    # model -> its step: beside the model, not in it, so that copying or pickling a model never meets a CUDA graph
    _steps: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, model, capture: bool, compile_config=None):
        self._model = weakref.ref(model)  # the model does not live on because of its step
        self.capture = capture
        self.compile_options = compile_options(compile_config, capture)
        # compiled once per step; the WKV then runs on the PyTorch path (`wkv6_step`), which the compiler fuses
        # (fla's kernel is opaque to it)
        self._decode = decode_one_token if self.compile_options is None else torch.compile(
            decode_one_token, **self.compile_options)
        self.capture_failed = False  # set once a capture failed: the step then runs eagerly, without retrying
        self.graph: torch.cuda.CUDAGraph | None = None
        self._key = None  # what the buffers (and the graph) were built for
        self._cache: Rwkv6Cache | None = None  # the cache pointed at the buffers, if any
        self._lock = threading.Lock()
        self._free_buffers()

    @classmethod
    def for_model(cls, model, capture: bool, compile_config=None) -> "Rwkv6DecodeStep":
        """The model's step, kept across `generate` calls (a graph is captured, and the code compiled, once, not per
        answer); a new one when asked for another `capture` or compiling (transformers' `CompileConfig` or None)."""
        step = cls._steps.get(model)
        if step is None or step.capture != capture or step.compile_options != compile_options(compile_config, capture):
            if step is not None:
                step.release()
            step = cls._steps[model] = cls(model, capture, compile_config)
        return step

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this decode step no longer exists.")
        return model

    @property
    def batch_size(self) -> int | None:
        return None if self._key is None else self._key[0]

    def _free_buffers(self):
        self.graph = None  # before the tensors its memory pool refers to
        self.input_ids: torch.Tensor | None = None
        self.attn_shift: list[torch.Tensor] = []
        self.ffn_shift: list[torch.Tensor] = []
        self.wkv: list[torch.Tensor] = []
        self.logits: torch.Tensor | None = None
        self._key = None

    def __call__(self, input_ids: torch.LongTensor, cache: Rwkv6Cache) -> CausalLMOutputWithPast:
        if not isinstance(cache, Rwkv6Cache):
            raise TypeError(f"The decode step needs an Rwkv6Cache, got {type(cache).__name__}.")
        if input_ids is None or input_ids.dim() != 2 or input_ids.shape[1] != 1:
            shape = None if input_ids is None else list(input_ids.shape)
            raise ValueError(f"The decode step takes one token per sequence, ids [batch, 1]; got {shape}.")
        # normal tensors even under a caller's inference_mode: the buffers are updated in place by later calls,
        # which may run outside it (an inference tensor refuses that)
        with self._lock, torch.inference_mode(False), torch.no_grad():
            self._prepare(input_ids, cache)
            self.input_ids.copy_(input_ids)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._forward_one_token()
            cache.record(input_ids)
            cache.seen_tokens += 1
            # a copy: the buffer is overwritten by the next step, the output may be kept (output_logits, a user)
            return CausalLMOutputWithPast(logits=self.logits.clone(), **{CACHE_NAME: cache})

    def release(self) -> None:
        """Give the bound cache (if any) tensors of its own again: copies of the buffers, which it no longer follows.
        `generate` calls this when it ends (also on errors)."""
        with self._lock:
            self._release()

    def _release(self):
        cache, self._cache = self._cache, None
        if cache is None:
            return
        for mine, theirs in ((self.attn_shift, cache.attn_shift), (self.ffn_shift, cache.ffn_shift),
                             (self.wkv, cache.wkv)):
            for i, tensor in enumerate(theirs):
                if i < len(mine) and tensor is mine[i]:
                    theirs[i] = tensor.clone()

    def _is_bound(self, cache: Rwkv6Cache) -> bool:
        return cache is self._cache and all(
            len(theirs) == len(mine) and all(a is b for a, b in zip(theirs, mine, strict=True))
            for mine, theirs in ((self.attn_shift, cache.attn_shift), (self.ffn_shift, cache.ffn_shift),
                                 (self.wkv, cache.wkv)))

    def _prepare(self, input_ids, cache):
        """Build the buffers (and graph) for this call when needed; point `cache` at them."""
        if cache is self._cache and input_ids.shape[0] == self.batch_size and self._is_bound(cache):
            return  # the common case, every token after the first: nothing to check, nothing to copy
        model = self.model
        language_model = model.get_decoder()
        cache.check_compatible(language_model.config, input_ids.shape[0])
        device = input_ids.device
        backend = "torch" if self.compile_options is not None else language_model.wkv_backend(device)
        key = (input_ids.shape[0], cache.attn_shift[0].dtype, device, backend,
               self._weights_signature() if self.capture else None)
        if key != self._key:
            self._release()
            self._free_buffers()
            self._build(key)
        self._bind(cache)

    def _weights_signature(self):
        """Where and how the weights the graph reads are stored: a graph replays the addresses it captured."""
        model = self.model
        modules = (model.get_decoder(), model.get_output_embeddings())
        return tuple((p.data_ptr(), p.dtype, p.shape) for module in modules for p in module.parameters())

    def _build(self, key):
        batch, shift_dtype, device, _, _ = key
        config = self.model.get_decoder().config
        layers, width = config.num_hidden_layers, config.hidden_size
        wkv_shape = (batch, config.num_heads, config.head_size, config.head_size)
        self.input_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.attn_shift = [torch.zeros(batch, width, dtype=shift_dtype, device=device) for _ in range(layers)]
        self.ffn_shift = [torch.zeros(batch, width, dtype=shift_dtype, device=device) for _ in range(layers)]
        self.wkv = [torch.zeros(wkv_shape, dtype=torch.float32, device=device) for _ in range(layers)]
        self.logits = None  # allocated by the first run, in the dtype the head gives
        self._key = key
        if self.capture and not self.capture_failed:
            with torch.cuda.device(device):
                self._capture(device)

    def _capture(self, device):
        """Warm up on a side stream, then record one step (PyTorch's recipe). The buffers' contents are scratch
        here: the cache is copied in afterwards."""
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._forward_one_token()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: a thread decoding video meanwhile (CUDA calls of its own) does not break the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._forward_one_token()
        except Exception as error:  # noqa: BLE001 - any op that cannot be captured: run eagerly, say so
            warnings.warn(f"The RWKV-6 decode step could not be captured as a CUDA graph ({type(error).__name__}: "
                          f"{error}); it runs eagerly (same results, no speed-up). Pass "
                          "decode_implementation='eager' to generate to silence this.", RuntimeWarning, stacklevel=2)
            self.capture_failed = True
            return
        self.graph = graph

    def _bind(self, cache: Rwkv6Cache):
        if cache is not self._cache:
            self._release()
        for mine, theirs in ((self.attn_shift, cache.attn_shift), (self.ffn_shift, cache.ffn_shift),
                             (self.wkv, cache.wkv)):
            for buffer, tensor in zip(mine, theirs, strict=True):
                if buffer is not tensor:
                    buffer.copy_(tensor)
            theirs[:] = mine
        self._cache = cache

    def _forward_one_token(self):
        """`decode_one_token` (compiled, if asked) on the buffers; the logits copied into theirs."""
        model = self.model
        language_model = model.get_decoder()
        logits = self._decode(language_model, model.get_output_embeddings(), self.input_ids, self.attn_shift,
                              self.ffn_shift, self.wkv, self._key[3], language_model.config.wkv_chunk_size)
        if self.logits is None:
            self.logits = torch.empty_like(logits)
        self.logits.copy_(logits)


__all__ = [
    "WARMUP_STEPS", "Rwkv6DecodeStep", "compile_options", "decode_one_token", "has_only_own_layers",
    "resolve_decode_implementation",
]
