"""S-ToMe inside SigLIP: the model against a plain loop-based reference, against transformers' SiglipVisionModel when
nothing merges, the merge schedule, config validation, checkpoint loading, dtypes and gradients."""

import functools
import importlib.util
import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import save_file
from siglip_tome_reference import reference_forward, reference_merge, reference_order
from transformers import AutoModel, SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from auroralong_hf.modeling.configuration_siglip_tome import (
    SiglipToMeVisionConfig,
    merge_schedule,
    tokens_per_frame,
)
from auroralong_hf.modeling.modeling_siglip_tome import SiglipToMeVisionModel

# A tiny tower: 64x64 images in 8x8 patches -> N = 64 patches, 4 heads of 16.
TINY = dict(
    image_size=64, patch_size=8, hidden_size=64, num_attention_heads=4, num_hidden_layers=4, intermediate_size=128
)
N = 64
FRAMES = 3
IMPLS = ("eager", "sdpa")
SORTS = ("ascending", "descending", "none", "random")
# Irregular on purpose: an odd token count enters layer 2, and layer 1 merges nothing (so must not re-order).
R_LIST = [13, 0, 11, 17]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: threads only add synchronisation, which stalls badly on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model, seed=0):
    """Random biases and layer-norm affines too (a unit LN weight would make d(sum(LN(x)))/dx vanish)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:
                param.add_(0.02 * noise)
    return model


@functools.lru_cache(maxsize=1)
def _siglip_state():
    torch.manual_seed(0)
    model = _randomize(SiglipVisionModel(SiglipVisionConfig(**TINY, attn_implementation="eager")))
    return {k: v.clone() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=1)
def _pixels():
    return torch.randn(FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def make_config(**overrides):
    return SiglipToMeVisionConfig(**{**TINY, **overrides})


def make_siglip(impl="eager"):
    model = SiglipVisionModel(SiglipVisionConfig(**TINY, attn_implementation=impl)).eval()
    model.load_state_dict(_siglip_state())
    return model


def make_tome(impl="eager", state=None, **overrides):
    model = SiglipToMeVisionModel(make_config(attn_implementation=impl, **overrides)).eval()
    state = _siglip_state() if state is None else state
    if not model.config.vision_use_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=True)
    return model


@functools.lru_cache(maxsize=64)
def _reference(overrides):
    """Reference outputs for a config given as a sorted tuple of overrides (cached: it does not depend on impl)."""
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides}
    return reference_forward(make_siglip(), make_config(**overrides), _pixels())


def reference(**overrides):
    return _reference(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items())))


def run_tome(model, pixels=None):
    with torch.no_grad():
        return model(_pixels() if pixels is None else pixels, output_hidden_states=True, output_merge_sources=True)


def assert_matches_reference(out, ref, atol=1e-5, check_margin=True):
    for b, frame in enumerate(ref):
        if check_margin:
            # The comparison is well posed only if no matching decision is within float32 noise of a tie.
            assert frame["margin"] > 1e-5, f"frame {b}: a near tie in the reference ({frame['margin']:.2e})"
        assert out.token_sizes[b].tolist() == frame["token_sizes"], f"frame {b}: token_sizes"
        assert out.token_positions[b].tolist() == frame["token_positions"], f"frame {b}: token_positions"
        assert torch.equal(out.merge_sources[b].cpu(), frame["merge_sources"]), f"frame {b}: merge_sources"
        assert len(out.hidden_states) == len(frame["hidden_states"])
        for layer, (got, want) in enumerate(zip(out.hidden_states, frame["hidden_states"], strict=True)):
            assert got[b].shape == want.shape, f"frame {b}: hidden_states[{layer}] shape"
            err = (got[b].double() - want).abs().max().item()
            assert err <= atol, f"frame {b}: hidden_states[{layer}] differs by {err:.2e}"
        err = (out.last_hidden_state[b].double() - frame["last_hidden_state"]).abs().max().item()
        assert err <= atol, f"frame {b}: last_hidden_state differs by {err:.2e}"
        if frame["pooler_output"] is not None:
            err = (out.pooler_output[b].double() - frame["pooler_output"]).abs().max().item()
            assert err <= atol, f"frame {b}: pooler_output differs by {err:.2e}"


def assert_invariants(out, config):
    """Sizes, positions and sources describe a partition of the patches; the order follows tome_sort."""
    sizes, positions, sources = out.token_sizes, out.token_positions, out.merge_sources
    assert sizes.dtype == torch.long and positions.dtype == torch.long and sources.dtype == torch.bool
    num_tokens = tokens_per_frame(config)
    assert out.last_hidden_state.shape == (FRAMES, num_tokens, config.hidden_size)
    assert sizes.shape == positions.shape == (FRAMES, num_tokens)
    assert sources.shape == (FRAMES, num_tokens, N)
    for b in range(FRAMES):
        if not config.drop_first_token:
            assert sizes[b].sum().item() == N
            assert torch.equal(sources[b].sum(0), torch.ones(N, dtype=torch.long)), "patches not partitioned"
        else:
            assert sources[b].sum(0).max().item() == 1
        assert torch.equal(sources[b].sum(1), sizes[b]), "size != number of sources"
        first_source = torch.stack([row.nonzero()[0, 0] for row in sources[b]])
        assert torch.equal(first_source, positions[b]), "position != smallest source patch"
        start = 1 if config.protect_first_token and not config.drop_first_token else 0
        if config.protect_first_token and not config.drop_first_token:
            assert positions[b, 0].item() == 0 and sizes[b, 0].item() == 1, "protected token moved or merged"
        keys = list(zip(sizes[b, start:].tolist(), positions[b, start:].tolist(), strict=True))
        if config.tome_sort == "ascending":
            assert keys == sorted(keys), "ascending: not sorted by (size, position)"
        elif config.tome_sort == "descending":
            assert keys == sorted(keys, key=lambda k: (-k[0], k[1])), "descending: not sorted by (-size, position)"
        elif config.tome_sort == "none":
            assert [k[1] for k in keys] == sorted(k[1] for k in keys), "none: not in raster order"


# --- the reference itself -------------------------------------------------------------------------------------


def test_reference_equals_siglip_without_merging():
    """The float64 reference reproduces transformers' SiglipVisionModel when nothing merges."""
    siglip = make_siglip()
    with torch.no_grad():
        out = siglip(_pixels(), output_hidden_states=True)
    ref = reference(token_kept_ratio=1.0)
    for b, frame in enumerate(ref):
        assert frame["token_sizes"] == [1] * N and frame["token_positions"] == list(range(N))
        for got, want in zip(out.hidden_states, frame["hidden_states"], strict=True):
            assert (got[b].double() - want).abs().max().item() < 1e-5
        assert (out.last_hidden_state[b].double() - frame["last_hidden_state"]).abs().max().item() < 1e-5
        assert (out.pooler_output[b].double() - frame["pooler_output"]).abs().max().item() < 1e-5


def test_reference_merge_by_hand():
    """Six tokens, r = 2, first token protected: A = 0, 2, 4 and B = 1, 3, 5 (positions in the current order)."""
    metric = torch.tensor(
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0]], dtype=torch.float64
    )
    xs = [torch.tensor([float(t)], dtype=torch.float64) for t in range(6)]
    sizes, positions, sources = [1, 2, 3, 1, 1, 1], [0, 7, 3, 5, 1, 9], [{0}, {7, 8}, {3, 4, 6}, {5}, {1}, {9}]
    xs, sizes, positions, sources, _ = reference_merge(metric, xs, sizes, positions, sources, 2, protect=True)
    # Token 2 -> 1 and token 4 -> 3 (both at cos = 1 / sqrt(1.01)); sizes weight the means, positions take the min.
    assert sizes == [1, 5, 2, 1]
    assert positions == [0, 3, 1, 9]
    assert sources == [{0}, {3, 4, 6, 7, 8}, {1, 5}, {9}]
    expected_x = torch.tensor([0.0, (2 * 1 + 3 * 2) / 5, (3 + 4) / 2, 5.0], dtype=torch.float64)
    assert torch.allclose(torch.stack(xs).squeeze(1), expected_x)
    # r = 1: the exact tie between A_1 and A_2 goes to the lower A index (token 2).
    metric = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    _, sizes, positions, _, margin = reference_merge(
        metric.double(), [torch.zeros(1)] * 6, [1] * 6, list(range(6)), [{t} for t in range(6)], 1, protect=True
    )
    assert sizes == [1, 2, 1, 1, 1] and positions == [0, 1, 3, 4, 5] and margin == 0
    # Unprotected, token 0 may merge away; ties in the partner choice go to the lowest B index.
    metric = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    _, sizes, positions, _, _ = reference_merge(
        metric, [torch.zeros(1)] * 4, [1] * 4, list(range(4)), [{t} for t in range(4)], 1, protect=False
    )
    assert sizes == [2, 1, 1] and positions == [0, 2, 3]
    assert reference_order([1, 3, 1, 2, 3], [0, 5, 9, 1, 2], True, "ascending", 0, 0) == [0, 2, 3, 4, 1]
    assert reference_order([1, 3, 1, 2, 3], [0, 5, 9, 1, 2], True, "descending", 0, 0) == [0, 4, 1, 3, 2]
    assert reference_order([1, 3, 1, 2, 3], [0, 5, 9, 1, 2], False, "none", 0, 0) == [0, 3, 4, 1, 2]


# --- the model against the reference --------------------------------------------------------------------------


@pytest.mark.parametrize("protect", [True, False], ids=["protect", "noprotect"])
@pytest.mark.parametrize("proportional", [True, False], ids=["prop", "noprop"])
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_reference(impl, sort, proportional, protect):
    overrides = dict(tome_r=R_LIST, tome_sort=sort, proportional_attention=proportional, protect_first_token=protect)
    model = make_tome(impl, **overrides)
    assert model.config.merge_schedule() == R_LIST
    out = run_tome(model)
    assert_invariants(out, model.config)
    assert_matches_reference(out, reference(**overrides))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "overrides",
    [dict(token_kept_ratio=0.25), dict(token_kept_ratio=0.12), dict(tome_schedule="aurora", token_kept_ratio=0.3),
     dict(tome_r=R_LIST, tome_sort="random", tome_random_seed=5)],
    ids=["even-0.25", "even-0.12-capped", "aurora-0.3", "random-seed5"],
)
def test_ratio_schedules_match_reference(impl, overrides):
    model = make_tome(impl, **overrides)
    if overrides.get("token_kept_ratio") == 0.12:  # K = 8 wants [14] * 4; 22 tokens enter the last layer: cap 10
        assert model.config.merge_schedule() == [14, 14, 14, 10]
    out = run_tome(model)
    assert_invariants(out, model.config)
    assert_matches_reference(out, reference(**overrides))


@pytest.mark.parametrize("impl", IMPLS)
def test_tie_rules(impl):
    """Every cosine is exactly 1 (layer 0's keys are a constant [c, 0, ...] per head): each A picks B_0 (token 1),
    and the r A tokens with the lowest A indices merge into it."""
    state = dict(_siglip_state())
    head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
    k_bias = torch.zeros(TINY["hidden_size"])
    k_bias[::head_dim] = 0.5
    prefix = "encoder.layers.0.self_attn.k_proj"
    state[f"{prefix}.weight"] = torch.zeros_like(state[f"{prefix}.weight"])
    state[f"{prefix}.bias"] = k_bias
    overrides = dict(tome_r=[12, 0, 0, 0])
    model = make_tome(impl, state=state, **overrides)
    out = run_tome(model)
    siglip = make_siglip()
    siglip.load_state_dict(state)
    ref = reference_forward(siglip, model.config, _pixels())
    assert ref[0]["token_sizes"][-1] == 13 and ref[0]["token_positions"][-1] == 1
    assert_invariants(out, model.config)
    assert_matches_reference(out, ref, check_margin=False)


@pytest.mark.parametrize("protect", [True, False], ids=["protect", "noprotect"])
def test_drop_first_token(protect):
    overrides = dict(tome_r=R_LIST, drop_first_token=True, protect_first_token=protect)
    model = make_tome("sdpa", **overrides)
    out = run_tome(model)
    assert out.last_hidden_state.shape[1] == N - sum(R_LIST) - 1 == tokens_per_frame(model.config)
    assert_invariants(out, model.config)
    ref = reference(**overrides)
    assert_matches_reference(out, ref)
    kept = make_tome("sdpa", **{**overrides, "drop_first_token": False})
    full = run_tome(kept)
    assert torch.equal(out.last_hidden_state, full.last_hidden_state[:, 1:])
    assert torch.equal(out.token_sizes, full.token_sizes[:, 1:])
    assert torch.equal(out.token_positions, full.token_positions[:, 1:])
    for b in range(FRAMES):
        assert out.token_sizes[b].sum().item() == N - full.token_sizes[b, 0].item()
    # hidden_states are not affected by the drop.
    for got, want in zip(out.hidden_states, full.hidden_states, strict=True):
        assert torch.equal(got, want)


def test_frames_are_independent():
    model = make_tome("sdpa", tome_r=R_LIST)
    batch = run_tome(model)
    single = run_tome(model, _pixels()[1:2])
    assert torch.equal(single.token_sizes[0], batch.token_sizes[1])
    assert (single.last_hidden_state[0] - batch.last_hidden_state[1]).abs().max().item() < 1e-5


def test_optional_outputs():
    model = make_tome("sdpa", tome_r=R_LIST, vision_use_head=False)
    with torch.no_grad():
        out = model(_pixels())
    assert out.merge_sources is None and out.pooler_output is None and not out.hidden_states
    assert out.token_sizes.shape == out.token_positions.shape == (FRAMES, N - sum(R_LIST))


# --- no merging is SigLIP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("overrides", [dict(token_kept_ratio=1.0), dict(tome_r=0)], ids=["ratio1", "r0"])
def test_no_merging_equals_siglip(impl, overrides):
    model = make_tome(impl, **overrides)
    assert model.config.merge_schedule() == [0] * TINY["num_hidden_layers"]
    siglip = make_siglip(impl)
    with torch.no_grad():
        want = siglip(_pixels(), output_hidden_states=True)
    got = run_tome(model)
    assert len(got.hidden_states) == len(want.hidden_states) == TINY["num_hidden_layers"] + 1
    for layer, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states, strict=True)):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-6, f"hidden_states[{layer}]"
    assert (got.last_hidden_state - want.last_hidden_state).abs().max().item() <= 1e-6
    assert (got.pooler_output - want.pooler_output).abs().max().item() <= 1e-6
    assert torch.equal(got.token_sizes, torch.ones(FRAMES, N, dtype=torch.long))
    assert torch.equal(got.token_positions, torch.arange(N).expand(FRAMES, N))


# --- loading --------------------------------------------------------------------------------------------------


def test_from_pretrained_siglip_checkpoint(tmp_path):
    siglip = make_siglip("sdpa")
    siglip.save_pretrained(tmp_path)
    model, info = SiglipToMeVisionModel.from_pretrained(tmp_path, token_kept_ratio=0.5, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert isinstance(model.config, SiglipToMeVisionConfig) and model.config.token_kept_ratio == 0.5
    assert model.config.merge_schedule() != [0] * TINY["num_hidden_layers"]
    model = SiglipToMeVisionModel.from_pretrained(tmp_path, token_kept_ratio=1.0).eval()
    with torch.no_grad():
        got, want = model(_pixels()), siglip(_pixels())
    assert (got.last_hidden_state - want.last_hidden_state).abs().max().item() <= 1e-6
    assert (got.pooler_output - want.pooler_output).abs().max().item() <= 1e-6


def test_from_pretrained_vision_model_prefixed_keys(tmp_path):
    """Checkpoints such as google/siglip-large-patch16-384 name the weights vision_model.*."""
    siglip = make_siglip("sdpa")
    siglip.config.to_json_file(tmp_path / "config.json")
    state = {f"vision_model.{k}": v.contiguous() for k, v in siglip.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = SiglipToMeVisionModel.from_pretrained(tmp_path, token_kept_ratio=1.0, output_loading_info=True)
    assert not info["missing_keys"], info
    for name, tensor in siglip.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_from_pretrained_full_siglip_checkpoint(tmp_path):
    """A whole SigLIP (text + vision, config model_type "siglip"): the vision tower loads, the text one is ignored."""
    text = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(TINY)))
    full.vision_model.load_state_dict(_siglip_state())
    full.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "siglip"
    model, info = SiglipToMeVisionModel.from_pretrained(tmp_path, token_kept_ratio=0.5, output_loading_info=True)
    assert not info["missing_keys"], info
    assert model.config.hidden_size == TINY["hidden_size"] and model.config.token_kept_ratio == 0.5
    for name, tensor in _siglip_state().items():
        assert torch.equal(model.state_dict()[name], tensor), name


# --- the schedule ---------------------------------------------------------------------------------------------


def test_schedule_even_siglip_large():
    config = SiglipToMeVisionConfig(image_size=384, patch_size=16, num_hidden_layers=23, token_kept_ratio=0.1)
    assert config.num_patches == 576
    assert config.merge_schedule() == [23] * 12 + [22] * 11
    assert tokens_per_frame(config) == 58
    assert merge_schedule(576, 23, token_kept_ratio=0.1) == [23] * 12 + [22] * 11


def test_schedule_aurora():
    config = SiglipToMeVisionConfig(
        image_size=384, patch_size=16, num_hidden_layers=24, token_kept_ratio=0.1, tome_schedule="aurora"
    )
    assert config.merge_schedule() == [21] * 24
    assert tokens_per_frame(config) == 72


def test_schedule_explicit():
    assert merge_schedule(64, 4, tome_r=[5, 3]) == [5, 3, 0, 0]
    assert merge_schedule(64, 4, tome_r=7) == [7, 7, 7, 7]
    assert merge_schedule(64, 4, tome_r=0) == [0, 0, 0, 0]
    assert make_config(tome_r=[5, 3]).merge_schedule() == [5, 3, 0, 0]
    # An explicit r wins over the ratio.
    assert make_config(tome_r=[5, 3], token_kept_ratio=0.1).merge_schedule() == [5, 3, 0, 0]


def test_schedule_caps_move_merges_later():
    # 16 tokens, r = 10 asked in each of 3 layers: (T - 1) // 2 = 7, then 4 (with 3 carried), then 2.
    assert merge_schedule(16, 3, tome_r=10) == [7, 4, 2]
    assert merge_schedule(16, 3, tome_r=10, protect_first_token=False) == [8, 4, 2]
    # A cap's leftover is merged by the next layers that have room.
    assert merge_schedule(64, 4, tome_r=[40]) == [31, 9, 0, 0]
    assert merge_schedule(64, 4, tome_r=[40], protect_first_token=False) == [32, 8, 0, 0]
    # Kept ratio on a tiny frame: K = max(2, round(0.0625 * 16)) = 2 wants [7, 7]; the second layer is capped at 4.
    assert merge_schedule(16, 2, token_kept_ratio=0.0625) == [7, 4]
    for num_patches, layers, r in [(16, 3, 10), (64, 4, 40), (9, 5, 100), (2, 3, 5)]:
        for protect in (True, False):
            schedule = merge_schedule(num_patches, layers, tome_r=r, protect_first_token=protect)
            tokens = num_patches
            for merged in schedule:
                assert 0 <= merged <= (tokens - int(protect)) // 2
                tokens -= merged


def test_schedule_kept_ratio_floor():
    # K = max(1 + protected, round(rho * N)).
    assert merge_schedule(64, 40, token_kept_ratio=0.001) == [2] * 22 + [1] * 18  # K = 2, 62 merges
    assert merge_schedule(64, 40, token_kept_ratio=0.001, protect_first_token=False) == [2] * 23 + [1] * 17  # K = 1
    assert merge_schedule(64, 4, token_kept_ratio=0.001) == merge_schedule(64, 4, token_kept_ratio=2 / 64)
    assert merge_schedule(64, 4, token_kept_ratio=1.0) == [0, 0, 0, 0]


def test_tokens_per_frame_drop_first_token():
    large = dict(image_size=384, patch_size=16, num_hidden_layers=23, token_kept_ratio=0.1)
    assert tokens_per_frame(SiglipToMeVisionConfig(**large, drop_first_token=True)) == 57
    assert tokens_per_frame(SiglipToMeVisionConfig(**large, drop_first_token=False)) == 58
    assert tokens_per_frame(make_config(token_kept_ratio=1.0, drop_first_token=True)) == N - 1


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(token_kept_ratio=0.5),
        dict(tome_r=20),
        dict(tome_r=[30, 30]),
        dict(tome_schedule="aurora", token_kept_ratio=0.2),
        dict(token_kept_ratio=0.1, protect_first_token=False, drop_first_token=True),
    ],
    ids=["default", "ratio0.5", "r20-capped", "list-capped", "aurora", "noprotect-drop"],
)
def test_output_length_is_tokens_per_frame(overrides):
    model = make_tome("sdpa", **overrides)
    schedule = model.config.merge_schedule()
    out = run_tome(model)
    assert out.last_hidden_state.shape == (FRAMES, tokens_per_frame(model.config), TINY["hidden_size"])
    lengths = [h.shape[1] for h in out.hidden_states]
    assert lengths == [N - sum(schedule[:layer]) for layer in range(len(schedule) + 1)]
    assert_invariants(out, model.config)


# --- config validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(token_kept_ratio=0.0), "token_kept_ratio"),
        (dict(token_kept_ratio=0), "token_kept_ratio"),
        (dict(token_kept_ratio=1.5), "token_kept_ratio"),
        (dict(token_kept_ratio=-0.2), "token_kept_ratio"),
        (dict(tome_r=-1), "tome_r"),
        (dict(tome_r=[3, -1]), "tome_r"),
        (dict(tome_r=[1] * 5), "tome_r"),
        (dict(tome_sort="sideways"), "tome_sort"),
        (dict(tome_schedule="linear"), "tome_schedule"),
    ],
)
def test_bad_config(overrides, field):
    with pytest.raises((ValueError, TypeError, StrictDataclassError), match=field):
        make_config(**overrides)


# --- dtypes and gradients -------------------------------------------------------------------------------------


def _unmerge(out):
    """[B, N, D]: every patch gets the feature of the token that covers it."""
    return torch.einsum("btn,btd->bnd", out.merge_sources.float(), out.last_hidden_state.float())


@pytest.mark.parametrize(("dtype", "atol"), [(torch.bfloat16, 0.15), (torch.float16, 0.02)], ids=["bf16", "fp16"])
def test_low_precision_forward(dtype, atol):
    # Merges in the first and the last layer (proportional attention in between). In fp64 every matching decision
    # here wins by >= 4e-3 in cosine, so low precision should take the same decisions as fp32.
    model = make_tome("sdpa", tome_r=[8, 0, 0, 8])
    want = run_tome(model)
    got = run_tome(model.to(dtype), _pixels().to(dtype))
    assert got.last_hidden_state.dtype == dtype
    assert torch.isfinite(got.last_hidden_state).all() and torch.isfinite(got.pooler_output).all()
    assert_invariants(got, model.config)
    assert torch.equal(got.token_sizes, want.token_sizes) and torch.equal(got.token_positions, want.token_positions)
    assert (got.last_hidden_state.float() - want.last_hidden_state).abs().max().item() < atol
    assert (got.pooler_output.float() - want.pooler_output).abs().max().item() < atol
    # Heavier merging: decisions may flip on near ties in low precision, so compare per patch (through the sources).
    model = make_tome("sdpa", token_kept_ratio=0.25)
    want = run_tome(model)
    got = run_tome(model.to(dtype), _pixels().to(dtype))
    assert torch.isfinite(got.last_hidden_state).all() and torch.isfinite(got.pooler_output).all()
    assert_invariants(got, model.config)
    similarity = torch.nn.functional.cosine_similarity(_unmerge(got), _unmerge(want), dim=-1)
    assert similarity.mean().item() > 0.9, similarity.mean().item()


def test_gradients_reach_the_tower():
    model = make_tome("sdpa", token_kept_ratio=0.25)
    out = model(_pixels())
    out.last_hidden_state.sum().backward()
    checked = 0
    for name, param in model.named_parameters():
        if not name.startswith(("encoder.layers.0.", "embeddings.")):
            continue
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if name != "encoder.layers.0.self_attn.k_proj.bias":  # softmax is invariant to it: its gradient is zero
            assert param.grad.abs().max().item() > 0, name
        checked += 1
    assert checked >= 14


def test_gradient_checkpointing_gives_the_same_gradients():
    def gradients(checkpointing):
        model = make_tome("sdpa", token_kept_ratio=0.25)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        calls = []
        model.encoder.layers[1].layer_norm1.register_forward_pre_hook(lambda *_: calls.append(1))
        model(_pixels()).last_hidden_state.sum().backward()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointing recomputes the layer in the backward
        return {name: param.grad for name, param in model.named_parameters() if param.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name


def test_save_and_auto_round_trip(tmp_path):
    model = make_tome("sdpa", tome_r=R_LIST, tome_sort="descending", drop_first_token=True)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SiglipToMeVisionModel)
    assert loaded.config.merge_schedule() == R_LIST and loaded.config.tome_sort == "descending"
    assert loaded.config.drop_first_token
    with torch.no_grad():
        assert torch.equal(loaded(_pixels()).last_hidden_state, model(_pixels()).last_hidden_state)


# --- attention implementations that cannot take the size bias -----------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_attention_not_installed():
    with pytest.raises(ImportError, match="FlashAttention2"):
        SiglipToMeVisionModel(make_config(attn_implementation="flash_attention_2", tome_r=R_LIST))


@pytest.mark.parametrize("impl", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_with_proportional_attention_is_clear(impl):
    """Flash kernels take no additive bias: the forward refuses, naming proportional attention."""
    model = make_tome("sdpa", tome_r=R_LIST)
    model.config._attn_implementation = impl  # flash-attn is not installed here: set it on the config directly
    with pytest.raises(ValueError, match="proportional"):
        model(_pixels())


def test_flex_attention_with_proportional_attention_is_clear_or_right():
    """flex_attention is inherited from SigLIP: with the size bias it must either refuse clearly or be right."""
    model = make_tome("flex_attention", tome_r=R_LIST)
    try:
        out = run_tome(model)
    except ValueError as error:
        assert "proportional" in str(error)
        return
    assert_matches_reference(out, reference(tome_r=R_LIST))
