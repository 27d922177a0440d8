"""The static one-token decode step (modeling/decode_step_rwkv6.py) on CPU: its eager twin is exactly the model's plain
forward with a cache, step after step; `generate` through it gives exactly the same tokens, logits and final state;
the choice of implementation (config field, generate argument) works; batch-size changes rebuild the buffers; the
state never stays aliased to the step's buffers after `generate`. The CUDA graph itself is checked in test_gpu.py."""

import pytest
import torch
from outputs import state_of
from tiny_models import decisive_auroralong
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import CompileConfig

from auroralong_hf import Rwkv6Cache
from auroralong_hf.modeling.decode_step_rwkv6 import (
    Rwkv6DecodeStep,
    compile_options,
    has_only_own_layers,
    resolve_decode_implementation,
)

GREEDY = {"max_new_tokens": 6, "do_sample": False}


def tensors_of(state: Rwkv6Cache) -> list[torch.Tensor]:
    return state.attn_shift + state.ffn_shift + state.wkv


def same_state(a: Rwkv6Cache, b: Rwkv6Cache) -> bool:
    return (all(torch.equal(x, y) for x, y in zip(tensors_of(a), tensors_of(b), strict=True))
            and a.seen_tokens == b.seen_tokens and torch.equal(a.fingerprint, b.fingerprint))


@pytest.fixture
def model(tiny_rwkv6):
    tiny_rwkv6.generation_config.eos_token_id = None  # always the asked number of tokens
    return tiny_rwkv6


def calls_of_step(monkeypatch) -> list[int]:
    """A list that receives the batch size of every call of any `Rwkv6DecodeStep`."""
    calls, call = [], Rwkv6DecodeStep.__call__

    def spy(self, input_ids, cache):
        calls.append(input_ids.shape[0])
        return call(self, input_ids, cache)

    monkeypatch.setattr(Rwkv6DecodeStep, "__call__", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_twin_equals_the_plain_forward_bit_for_bit(model, dtype):
    model = model.to(dtype)
    plain = state_of(model(torch.randint(0, 300, (3, 9)), use_cache=True))  # a carried state from a prompt
    stepped = plain.copy()
    step = Rwkv6DecodeStep(model, capture=False)
    for _ in range(5):
        token = torch.randint(0, 300, (3, 1))
        with torch.no_grad():
            expected = model(token, cache=plain, logits_to_keep=1).logits
        output = step(token, stepped)
        assert output.logits.dtype == dtype and torch.equal(output.logits, expected)
        assert state_of(output) is stepped and same_state(stepped, plain)
    step.release()
    assert not any(t is b for t in tensors_of(stepped) for b in step.attn_shift + step.ffn_shift + step.wkv)
    assert same_state(stepped, plain)


def test_generate_through_the_step_gives_the_same_tokens_logits_and_state(model, monkeypatch):
    prompt = torch.randint(1, 300, (3, 8))
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # left padding: only the prompt has pads, every decoded token is real
    kwargs = {"attention_mask": mask, "return_dict_in_generate": True, "output_logits": True, **GREEDY}
    plain = model.generate(prompt, decode_implementation="eager", **kwargs)
    calls = calls_of_step(monkeypatch)
    stepped = model.generate(prompt, decode_implementation="static", **kwargs)
    assert calls == [3] * (GREEDY["max_new_tokens"] - 1)  # every decoded token but the first (the prompt's forward)
    assert torch.equal(stepped.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(stepped.logits, plain.logits, strict=True))
    assert same_state(state_of(stepped), state_of(plain))
    step = Rwkv6DecodeStep.for_model(model, capture=False)
    buffers = step.attn_shift + step.ffn_shift + step.wkv
    assert not any(t is b for t in tensors_of(state_of(stepped)) for b in buffers)  # released when generate ended
    # the next generation reuses the buffers; the state returned before is not touched by it
    before = state_of(stepped).copy()
    model.generate(prompt, decode_implementation="static", **kwargs)
    assert same_state(state_of(stepped), before)


def test_decoded_tokens_reach_the_model_as_real_tokens(model, monkeypatch):
    """Left padding only affects the prompt: at every decoded token the attention mask's new column is all ones,
    which is what lets the step take no mask."""
    prompt = torch.randint(1, 300, (2, 7))
    mask = torch.ones_like(prompt)
    mask[0, :4] = 0
    seen, prepare = [], type(model).prepare_inputs_for_generation

    def spy(self, input_ids, *args, **kwargs):
        inputs = prepare(self, input_ids, *args, **kwargs)
        if "decode_step" in inputs:
            seen.append((inputs["input_ids"].shape, bool(inputs["attention_mask"][:, -1].all())))
        return inputs

    monkeypatch.setattr(type(model), "prepare_inputs_for_generation", spy)
    model.generate(prompt, attention_mask=mask, decode_implementation="static", **GREEDY)
    assert seen == [(torch.Size([2, 1]), True)] * (GREEDY["max_new_tokens"] - 1)


def test_beams_sampling_and_a_user_state_through_the_step(model):
    prefix, question = torch.randint(1, 300, (2, 10)), torch.randint(1, 300, (2, 5))
    whole = torch.cat([prefix, question], dim=1)
    for mode in ({"num_beams": 3}, {"do_sample": True, "top_k": 20}, {"num_return_sequences": 2, "do_sample": True}):
        state = model.new_state(2)
        model(prefix, cache=state)
        answers = []
        for implementation in ("eager", "static"):
            torch.manual_seed(3)
            answers.append(model.generate(whole, cache=state, max_new_tokens=5, decode_implementation=implementation,
                                          **mode))
        assert torch.equal(*answers), mode
        assert state.seen_tokens == 10 and state.wkv[0].shape[0] == 2  # the user's state is left as it was


def test_a_batch_size_change_rebuilds_the_buffers(model):
    step = Rwkv6DecodeStep.for_model(model, capture=False)
    for batch in (2, 3, 1):
        prompt = torch.randint(1, 300, (batch, 6))
        assert torch.equal(model.generate(prompt, decode_implementation="static", **GREEDY),
                           model.generate(prompt, decode_implementation="eager", **GREEDY))
        assert step.batch_size == batch and step.wkv[0].shape[0] == batch
    assert Rwkv6DecodeStep.for_model(model, capture=False) is step  # kept across calls
    state = state_of(model(torch.randint(0, 300, (4, 3)), use_cache=True))
    plain = state.copy()
    token = torch.randint(0, 300, (4, 1))
    with torch.no_grad():
        assert torch.equal(step(token, state).logits, model(token, cache=plain, logits_to_keep=1).logits)
    assert same_state(state, plain)
    step.release()


def test_the_choice_of_implementation(model, monkeypatch):
    assert model.config.decode_implementation == "auto"
    assert resolve_decode_implementation(model) == "eager"  # auto: the plain forward off CUDA
    assert resolve_decode_implementation(model, "static") == "static"
    with pytest.raises(ValueError, match="one CUDA device"):
        resolve_decode_implementation(model, "cuda_graph")
    with pytest.raises(ValueError, match="decode_implementation must be one of"):
        model.generate(torch.randint(1, 300, (1, 4)), decode_implementation="fast", **GREEDY)
    with pytest.raises(Exception, match="decode_implementation"):  # the config's strict validation error
        type(model.config)(hidden_size=64, num_hidden_layers=1, head_size=32, decode_implementation="graph")
    calls = calls_of_step(monkeypatch)
    prompt = torch.randint(1, 300, (1, 4))
    model.generate(prompt, **GREEDY)
    assert calls == []  # CPU: nothing changes by default
    model.config.decode_implementation = "static"  # the model's default ...
    expected = model.generate(prompt, decode_implementation="eager", **GREEDY)  # ... overridden for one call
    assert calls == []
    assert torch.equal(model.generate(prompt, **GREEDY), expected)
    assert len(calls) == GREEDY["max_new_tokens"] - 1
    model.config.decode_implementation = "auto"


def test_buffers_made_under_inference_mode_serve_later_calls_outside_it(model):
    prompt = torch.randint(1, 300, (2, 5))
    with torch.inference_mode():
        inside = model.generate(prompt, decode_implementation="static", **GREEDY)
    assert torch.equal(model.generate(prompt, decode_implementation="static", **GREEDY), inside)
    assert torch.equal(model.generate(prompt, decode_implementation="eager", **GREEDY), inside)


def test_auto_leaves_models_with_foreign_layers_eager(model):
    """An adapter's Python-level switches (disabled, merged) would be frozen into a captured graph."""
    peft = pytest.importorskip("peft")
    assert has_only_own_layers(model)
    peft.get_peft_model(model, peft.LoraConfig(target_modules=["key.linear"], r=4))
    assert not has_only_own_layers(model)


def test_auroralong_streams_and_decodes_through_the_step(monkeypatch):
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
              "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
    model = decisive_auroralong(vision, {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32})
    model.generation_config.eos_token_id = None
    frames = 2 * 8  # 2 frames x tokens_per_frame (16 patches, ratio 0.5)
    input_ids = torch.tensor([[24281, 59, 11] + [model.config.video_token_id] * frames + [11, 5585, 41693, 59]] * 2)
    inputs = {"input_ids": input_ids, "pixel_values_videos": torch.randn(2, 2, 3, 64, 64),
              "return_dict_in_generate": True, "output_logits": True, **GREEDY}
    plain = model.generate(**inputs, decode_implementation="eager")
    calls = calls_of_step(monkeypatch)
    stepped = model.generate(**inputs, decode_implementation="static")
    assert calls == [2] * (GREEDY["max_new_tokens"] - 1)
    assert torch.equal(stepped.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(stepped.logits, plain.logits, strict=True))
    assert same_state(state_of(stepped), state_of(plain))


class KernelCount(TorchDispatchMode):
    """Counts the aten ops that launch a kernel (not views, not dtype promotion) dispatched inside the block."""

    NO_KERNEL = {"view", "_unsafe_view", "unsqueeze", "squeeze", "t", "transpose", "expand", "permute", "select",
                 "slice", "unbind", "alias", "detach", "as_strided", "split", "reshape", "promote_types"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ not in self.NO_KERNEL
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("dtype", "budget"), [(torch.float32, 41), (torch.bfloat16, 50)])
def test_a_decoded_token_stays_within_its_kernel_budget(model, dtype, budget):
    """On a GPU a decoded token's time is its kernels (one replay of a graph still runs each): the ops per layer of
    the step are counted, so that an added op is a deliberate choice. Before issue 12's batching of the token-shift
    mixes (fp32 / bf16): 58 / 67 a layer; now 41 / 50 (bf16 adds fp32 casts around the WKV and the GroupNorm)."""
    model = model.to(dtype)
    state = state_of(model(torch.randint(0, 300, (2, 5)), use_cache=True))
    step = Rwkv6DecodeStep(model, capture=False)
    step(torch.randint(0, 300, (2, 1)), state)  # buffers built, cache bound
    per_run = []
    for layers in (model.config.num_hidden_layers, model.config.num_hidden_layers - 1):
        kept = model.model.layers
        model.model.layers = kept[:layers]
        try:
            with KernelCount() as counter, torch.no_grad():
                step._forward_one_token()
        finally:
            model.model.layers = kept
        per_run.append(counter.count)
    assert per_run[0] - per_run[1] <= budget, per_run


def compiling_anywhere(**fields) -> CompileConfig:
    """transformers' CompileConfig, with its flag for compiling on a CPU (transformers' own testing switch)."""
    config = CompileConfig(**fields)
    config._compile_all_devices = True
    return config


def test_compile_options_follow_transformers_compile_config():
    assert compile_options(None, capture=True) is None
    base = {"backend": "inductor", "fullgraph": False, "dynamic": None}
    assert compile_options(CompileConfig(), capture=False) == {**base, "mode": "reduce-overhead"}
    # the step's own graph replaces the compiler's CUDA graphs (a capture cannot nest)
    assert compile_options(CompileConfig(), capture=True) == {**base, "mode": "default"}
    assert compile_options(CompileConfig(mode="max-autotune"), capture=True)["mode"] == "max-autotune-no-cudagraphs"
    assert compile_options(CompileConfig(options={"epilogue_fusion": True}), capture=True) == {
        **base, "options": {"epilogue_fusion": True}}


def test_compile_config_is_honoured_as_transformers_would(model, monkeypatch):
    """Asked by `compile_config` (argument or generation config), not under `disable_compile`, not on a CPU without
    transformers' `_compile_all_devices`; never for "eager"."""
    made = []
    monkeypatch.setattr(Rwkv6DecodeStep, "for_model", classmethod(
        lambda cls, model, capture, compile_config=None: made.append(compile_config) or cls(model, capture)))
    prompt = torch.randint(0, 300, (1, 4))
    anywhere = compiling_anywhere()
    for kwargs, expected in ((dict(compile_config=anywhere), anywhere), (dict(compile_config=CompileConfig()), None),
                             (dict(compile_config=anywhere, disable_compile=True), None), ({}, None)):
        made.clear()
        model.generate(prompt, decode_implementation="static", max_new_tokens=2, **kwargs)
        assert made == [expected], kwargs
    model.generation_config.compile_config = anywhere
    made.clear()
    model.generate(prompt, decode_implementation="static", max_new_tokens=2)
    assert made == [anywhere]
    made.clear()
    model.generate(prompt, decode_implementation="eager", max_new_tokens=2)
    assert made == []


def test_compiled_step_traces_whole_and_equals_eager(tiny_rwkv6):
    """torch.compile (inductor, here its CPU code) of the whole step without a graph break (fullgraph=True), the WKV
    on the PyTorch path: the same greedy tokens as the plain forward, logits within 1e-5 relative (measured 2.5e-7:
    the fused kernels round in another order). Compiling takes most of this test's time (tens of seconds)."""
    model = tiny_rwkv6
    model.generation_config.eos_token_id = None
    prompt = torch.randint(1, 300, (3, 7))
    kwargs = {"max_new_tokens": 6, "do_sample": False, "return_dict_in_generate": True, "output_logits": True}
    plain = model.generate(prompt, decode_implementation="eager", **kwargs)
    compiled = model.generate(prompt, decode_implementation="static", compile_config=compiling_anywhere(fullgraph=True),
                              **kwargs)
    step = Rwkv6DecodeStep.for_model(model, capture=False, compile_config=compiling_anywhere(fullgraph=True))
    assert step.compile_options["fullgraph"] and step._key is not None and step._key[3] == "torch"
    assert torch.equal(compiled.sequences, plain.sequences)
    for ours, reference in zip(compiled.logits, plain.logits, strict=True):
        assert float((ours - reference).abs().max() / reference.abs().max()) <= 1e-5
    for ours, reference in zip(tensors_of(state_of(compiled)), tensors_of(state_of(plain)), strict=True):
        assert float((ours - reference).abs().max() / reference.abs().max().clamp(min=1e-30)) <= 1e-5
