"""`generate()` for models whose recurrent state is an `Rwkv6Cache`: the RWKV-6 language model and AuroraLong.

`Rwkv6GenerationMixin` reads a prompt into the state through the model's `feed` (memory does not grow with the
prompt's length), continues a copy of a user's state from the tokens it has not seen, and leaves the decoding loop to
transformers. Every path through it appends `NaNLogitsCheck`, so non-finite scores stop generation with an error
instead of an empty answer. The tokens it decodes go through a `Rwkv6DecodeStep` (a CUDA graph by default on CUDA;
decode_step_rwkv6.py) or the plain forward, as `decode_implementation` says. Of its model the mixin asks, beyond a
`PreTrainedModel` whose `get_decoder()` is its `Rwkv6Model`, only `feed(state, ids, attention_mask=...)` and a
`forward` that hands its inputs to a `decode_step` it is given.
"""

import torch
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList
from transformers.utils import logging

from .cache_rwkv6 import CACHE_NAME, Rwkv6Cache, resolve_cache_argument
from .decode_step_rwkv6 import Rwkv6DecodeStep, resolve_decode_implementation

logger = logging.get_logger(__name__)

# Devices on which transformers' `generate` compiles when asked (GenerationMixin._valid_auto_compile_criteria)
COMPILING_DEVICES = ("cuda", "xpu", "neuron", "tpu")


class NaNLogitsCheck(LogitsProcessor):
    """Stops `generate` with a ValueError when the next-token scores [B, V] hold NaN or +inf (non-finite weights
    or inputs, or an overflow): greedy decoding would otherwise pick token 0 at every step, an empty answer with
    no error. -inf is left alone: other processors set it on purpose (e.g. to forbid the end before min_length).

    On a GPU the check does not wait for the device: each step's verdict is copied to the host asynchronously and
    read at the next step (transformers' own stopping check has synchronised by then) and by `finish()`, which
    `generate` calls at the end. Scores that go bad therefore stop generation one step later there (a streamer may
    have been given one more token), never silently. On other devices each step is checked at once.
    """

    def __init__(self, defer: bool | None = None):
        self.defer = defer  # None: on CUDA only (elsewhere reading the verdict costs no wait)
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, int] | None = None  # verdict, its copy, positions

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = (torch.isnan(scores) | torch.isposinf(scores)).any()
        if not (self.defer if self.defer is not None else scores.device.type == "cuda"):
            self._raise_if(bool(bad), input_ids.shape[1])
            return scores
        self.finish()
        copied = None
        if bad.device.type == "cuda":
            verdict = torch.empty((), dtype=torch.bool, pin_memory=True)
            verdict.copy_(bad, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            bad = verdict
        self._pending = (bad, copied, input_ids.shape[1])
        return scores

    def finish(self) -> None:
        """Raise for a verdict still in flight (deferred): the last step's, once generation ends."""
        pending, self._pending = self._pending, None
        if pending is not None:
            verdict, copied, positions = pending
            if copied is not None:
                copied.synchronize()
            self._raise_if(bool(verdict), positions)

    @staticmethod
    def _raise_if(bad: bool, positions: int) -> None:
        if bad:
            raise ValueError(
                f"The next-token scores hold NaN or infinite values after {positions} positions: the model's weights "
                "or its inputs are not finite, or its dtype overflowed."
            )


def with_nan_logits_check(processors: LogitsProcessorList | None) -> tuple[LogitsProcessorList, NaNLogitsCheck]:
    """A user's `logits_processor` list (or none) with a `NaNLogitsCheck` appended (transformers runs custom
    processors after its own and before the sampling warpers), and that check (call its `finish()` at the end)."""
    check = NaNLogitsCheck()
    return LogitsProcessorList([*(processors or ()), check]), check


class Rwkv6GenerationMixin(GenerationMixin):
    """`generate()` for models whose state is an `Rwkv6Cache`, the same on transformers 5.23 and 5.24.

    A user's state is passed as `cache=state` (or `past_key_values=state`, its name before transformers 5.24; both
    work on every supported version) and continues with the tokens it has not seen (`new_tokens_start`):
    `input_ids` are either the whole sequence, whose first `state.seen_tokens` ids the state has seen (only the
    rest is fed), or new tokens only. The user's state is not changed: generation advances a copy, which a
    `return_dict_in_generate` output carries.

    `decode_implementation` ("auto", "eager", "static", "cuda_graph"; default the text config's, "auto") chooses how
    the decoded tokens run: "auto" replays a CUDA graph of the one-token step on CUDA and uses the plain forward
    elsewhere; "eager" is the plain forward everywhere (see `resolve_decode_implementation`). transformers'
    `compile_config` (a `CompileConfig`) compiles that step with `torch.compile` first (not the "eager" path).
    """

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the language model makes its own recurrent state (Rwkv6Cache) on the first forward

    def new_state(self, batch_size: int = 1) -> Rwkv6Cache:
        """An empty state for `batch_size` sequences, on the model's device (shift vectors in the model's dtype)."""
        return Rwkv6Cache(self.config.get_text_config(), batch_size, device=self.device, dtype=self.dtype)

    @staticmethod
    def new_tokens_start(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, state: Rwkv6Cache) -> int:
        """Where the tokens `state` has not seen begin in `input_ids` [B, L]: 0 when they are all new, else
        `state.seen_tokens` (the whole sequence). New: an attention mask of `seen_tokens + L` columns (transformers'
        convention), or ids that do not begin with exactly what the state has seen (its `fingerprint`); a state
        whose fingerprint is unknown (fed embeddings only) takes ids longer than `seen_tokens` as the whole sequence.
        """
        seen, length = state.seen_tokens, input_ids.shape[1]
        if attention_mask is not None and attention_mask.shape[1] == seen + length:
            return 0
        known = state.has_seen(input_ids)
        if (length > seen and known is not False) or (length == seen and known):
            return seen  # the whole sequence (exactly what was seen: nothing is left to feed, an error later)
        return 0

    def generate(self, inputs: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                 cache: Rwkv6Cache | None = None, past_key_values: Rwkv6Cache | None = None, **kwargs):
        """transformers' `generate`, the prompt read into the state by the model's `feed` (`FEED_CHUNK_TOKENS` at a
        time: memory does not grow with its length), continuing a copy of a user's state from the tokens it has not
        seen, its tokens decoded as `decode_implementation` says (see the class docstring)."""
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        state = resolve_cache_argument(cache, past_key_values)
        if input_ids is None or not self._uses_cache(state, kwargs):  # transformers' own path
            if state is not None:
                kwargs[CACHE_NAME] = state.copy()
            return self._decode(input_ids, attention_mask, kwargs)
        return self._generate_streamed(input_ids, attention_mask, state, **kwargs)

    def _decode(self, input_ids: torch.LongTensor | None, attention_mask: torch.Tensor | None, kwargs: dict):
        """transformers' own `generate` (a subclass's would classify the ids again), with `NaNLogitsCheck` and the
        decode step `decode_implementation` (popped from `kwargs`) asks for. The step lets go of the generation's
        state when it ends, whatever the way."""
        implementation = resolve_decode_implementation(self, kwargs.pop("decode_implementation", None))
        compile_config = self._requested_compile_config(kwargs, implementation)
        # the step compiles, if asked: transformers' compiling needs a cache of fixed shapes and would only warn
        kwargs["disable_compile"] = True
        step = None
        if implementation != "eager" and self._uses_cache(None, kwargs):
            step = Rwkv6DecodeStep.for_model(self, capture=implementation == "cuda_graph",
                                             compile_config=compile_config)
            kwargs["decode_step"] = step  # a model input: prepare_inputs_for_generation hands it to decoded tokens
        kwargs["logits_processor"], nan_check = with_nan_logits_check(kwargs.get("logits_processor"))
        try:
            output = GenerationMixin.generate(self, input_ids, attention_mask=attention_mask, **kwargs)
            nan_check.finish()
            return output
        finally:
            if step is not None:
                step.release()

    def _requested_compile_config(self, kwargs: dict, implementation: str):
        """transformers' `CompileConfig` for the decode step, as transformers reads it (the generate argument, else
        the generation config's; popped from `kwargs`), or None: none given, `disable_compile`, the "eager" path
        (no step to compile), or a device transformers does not compile on (its `_compile_all_devices` flag lifts
        that, e.g. for CPU tests). A config given but not used is warned about, once."""
        generation_config = kwargs.get("generation_config") or self.generation_config
        config = kwargs.pop("compile_config", None) or generation_config.compile_config
        if config is None or kwargs.get("disable_compile", generation_config.disable_compile):
            return None
        if implementation == "eager":
            logger.warning_once(
                "compile_config is ignored: it compiles the decode step, and decode_implementation is 'eager' (what "
                f"'auto' means on {self.device.type}). Pass decode_implementation='cuda_graph' on CUDA, or 'static' "
                "(with CompileConfig._compile_all_devices = True off CUDA).")
            return None
        if self.device.type in COMPILING_DEVICES or config._compile_all_devices:
            return config
        logger.warning_once(f"compile_config is ignored on {self.device.type}: transformers compiles generation only "
                            f"on {', '.join(COMPILING_DEVICES)} (CompileConfig._compile_all_devices overrides that).")
        return None

    def _uses_cache(self, state: Rwkv6Cache | None, kwargs: dict) -> bool:
        """Whether `generate` decodes from a state (`use_cache`, the default); without, transformers runs the
        whole sequence at every step."""
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = (kwargs.get("generation_config") or self.generation_config).use_cache
        if state is not None and use_cache is False:
            raise ValueError("A state (cache=) was given with use_cache=False: a state is decoded from, so it needs "
                             "use_cache=True (the default).")
        return use_cache is not False

    def _generate_streamed(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                           state: Rwkv6Cache | None, prefill_kwargs: dict | None = None, **kwargs):
        """The prompt's unseen ids but the last go through `_prefill_prompt` into a copy of `state` (a new one
        without); transformers' decoding loop starts from there. Returns what transformers' `generate` returns."""
        state = self.new_state(input_ids.shape[0]) if state is None else state.copy()
        seen = state.seen_tokens
        batch, length = input_ids.shape
        new_from = self.new_tokens_start(input_ids, attention_mask, state)
        new_ids = input_ids[:, new_from:]
        if new_ids.shape[1] == 0:
            raise ValueError(f"The state has seen {seen} tokens and input_ids hold {length}: nothing is left to feed.")
        # masks cover the ids passed, never all the state has seen (a long video's state has seen ~10^5 tokens)
        new_mask = torch.ones(new_ids.shape, dtype=torch.long, device=input_ids.device)
        if attention_mask is not None:
            given = attention_mask[:, -new_ids.shape[1]:]
            new_mask[:, -given.shape[1]:] = given
        self._prefill_prompt(new_ids, new_mask, state, **(prefill_kwargs or {}))
        # transformers feeds `input_ids[:, seen_tokens:]` when the mask is as long as input_ids (and every id
        # otherwise), so the state counts as seen exactly what precedes the prompt's last id in the ids passed on
        ids, mask = new_ids, new_mask
        if new_from:
            seen_mask = torch.ones(batch, new_from, dtype=torch.long, device=input_ids.device)
            ids, mask = input_ids, torch.cat([seen_mask, new_mask], dim=1)
        offset = state.seen_tokens - (ids.shape[1] - 1)
        state.seen_tokens -= offset
        output = self._decode(ids, mask, {CACHE_NAME: state, **kwargs})
        state.seen_tokens += offset  # the output's state (return_dict_in_generate) counts everything it has seen
        return output

    def _prefill_prompt(self, new_ids: torch.LongTensor, new_mask: torch.Tensor, state: Rwkv6Cache) -> None:
        """Read the new prompt ids [B, N] but the last into `state` (their mask [B, N], 0 at padding), through the
        model's `feed`."""
        if new_ids.shape[1] > 1:
            self.feed(state, new_ids[:, :-1], attention_mask=new_mask[:, :-1])

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        # transformers repeats only tensors for beams and returned sequences: a user's state needs a row for each too
        state = model_kwargs.get(CACHE_NAME)
        rows = None if input_ids is None else input_ids.shape[0]
        if expand_size > 1 and isinstance(state, Rwkv6Cache) and state.batch_size == rows:
            state.batch_repeat_interleave(expand_size)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, is_first_iteration=False,
                                      decode_step: Rwkv6DecodeStep | None = None, **kwargs):
        """transformers' inputs, plus `decode_step` for a decoded token (never for the prompt): one new id per row
        continuing a state, no hidden states asked for. Such a token is always real (transformers extends the
        attention mask with ones at every step), so the step needs no mask."""
        state = kwargs.get("cache", kwargs.get("past_key_values"))
        nothing_new = next_sequence_length is not None and next_sequence_length <= 0
        if is_first_iteration and isinstance(state, Rwkv6Cache) and nothing_new:
            raise ValueError(
                f"The state has seen {state.seen_tokens} tokens and input_ids hold {input_ids.shape[1]}: nothing is "
                "left to feed. Pass the whole sequence, or only the new tokens with an attention mask of seen + new "
                "columns."
            )
        inputs = super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, is_first_iteration=is_first_iteration, **kwargs
        )
        decoded_token = (not is_first_iteration and next_sequence_length == 1 and isinstance(state, Rwkv6Cache)
                         and inputs.get("inputs_embeds") is None and not kwargs.get("output_hidden_states"))
        if decode_step is not None and decoded_token:
            inputs["decode_step"] = decode_step
        return inputs


__all__ = ["NaNLogitsCheck", "Rwkv6GenerationMixin", "with_nan_logits_check"]
