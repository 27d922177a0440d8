"""The RWKV-6 tensor layouts (`auroralong_hf.convert.rwkv6_layout`): each map and its inverse give back every tensor
exactly (names, shapes, values), in both directions, on random tiny weights where every value is distinct, so a
wrong group order or transpose cannot hide."""

import pytest
import torch
from rwkv6_checkpoints import make_blinkdl_state_dict

from auroralong_hf.convert.rwkv6_layout import (
    BLINKDL_GROUP_FROM_FLA,
    BLINKDL_MIX_GROUPS,
    FLA_GROUP_FROM_BLINKDL,
    FLA_MIX_GROUPS,
    blinkdl_state_dict_keys,
    blinkdl_to_fla_state_dict,
    blinkdl_to_hf_keys,
    expected_blinkdl_shapes,
    expected_fla_shapes,
    fla_state_dict_keys,
    fla_to_blinkdl_state_dict,
    hf_to_blinkdl_keys,
    read_geometry,
)
from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config
from auroralong_hf.modeling.modeling_rwkv6 import Rwkv6ForCausalLM

# Every size different (vocabulary, width, FFN, both LoRA ranks), so a swapped axis changes a shape.
GEOMETRY = dict(vocab_size=300, hidden_size=128, num_hidden_layers=2, head_size=64, intermediate_size=320,
                time_mix_lora_rank=8, time_decay_lora_rank=16)


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


def _random_fla_state_dict(with_head: bool = True) -> dict[str, torch.Tensor]:
    """The model's own tensor names and shapes, filled with random values."""
    model = Rwkv6ForCausalLM(Rwkv6Config(**GEOMETRY))
    generator = torch.Generator().manual_seed(0)
    sd = {name: torch.randn(t.shape, generator=generator) for name, t in model.state_dict().items()}
    if not with_head:
        del sd["lm_head.weight"]
    return sd


def test_the_model_has_the_fla_layout():
    sd = _random_fla_state_dict()
    assert sorted(sd) == sorted(fla_state_dict_keys(GEOMETRY["num_hidden_layers"]))
    assert {name: tuple(t.shape) for name, t in sd.items()} == expected_fla_shapes(GEOMETRY)
    assert read_geometry(sd, GEOMETRY["num_hidden_layers"], "<model>", "fla") == GEOMETRY


@pytest.mark.parametrize("with_head", [True, False])
def test_fla_to_blinkdl_and_back_is_exact(with_head):
    fla = _random_fla_state_dict(with_head)
    blinkdl = fla_to_blinkdl_state_dict(fla)
    assert sorted(blinkdl) == sorted(blinkdl_state_dict_keys(GEOMETRY["num_hidden_layers"], with_head=with_head))
    shapes = expected_blinkdl_shapes(GEOMETRY)
    assert all(tuple(t.shape) == shapes[name] for name, t in blinkdl.items())
    assert all(t.is_contiguous() for t in blinkdl.values())
    _assert_same(blinkdl_to_fla_state_dict(blinkdl), fla)


def test_blinkdl_to_fla_and_back_is_exact():
    blinkdl = make_blinkdl_state_dict(hidden_size=128, num_layers=2, head_size=64, vocab=300, ffn=320, mix_rank=8,
                                      decay_rank=16, seed=3)
    fla = blinkdl_to_fla_state_dict(blinkdl)
    assert {name: tuple(t.shape) for name, t in fla.items()} == expected_fla_shapes(GEOMETRY)
    _assert_same(fla_to_blinkdl_state_dict(fla), blinkdl)


def test_blinkdl_to_fla_keeps_the_dtype():
    blinkdl = make_blinkdl_state_dict(hidden_size=128, num_layers=1, head_size=64, vocab=300, ffn=320, mix_rank=8,
                                      decay_rank=16, dtype=torch.bfloat16)
    fla = blinkdl_to_fla_state_dict(blinkdl)
    assert {t.dtype for t in fla.values()} == {torch.bfloat16}
    _assert_same(fla_to_blinkdl_state_dict(fla), blinkdl)


def test_token_shift_group_orders_are_inverse():
    assert [BLINKDL_MIX_GROUPS[i] for i in FLA_GROUP_FROM_BLINKDL] == list(FLA_MIX_GROUPS)
    assert [FLA_MIX_GROUPS[i] for i in BLINKDL_GROUP_FROM_FLA] == list(BLINKDL_MIX_GROUPS)


def test_token_shift_lora_groups_land_in_the_other_order():
    """fla group n (r, w, k, v, g) is BlinkDL group FLA_GROUP_FROM_BLINKDL[n] (w, k, v, r, g), in both factors."""
    blinkdl = make_blinkdl_state_dict(hidden_size=128, num_layers=1, head_size=64, vocab=300, ffn=320, mix_rank=8,
                                      decay_rank=16)
    fla = blinkdl_to_fla_state_dict(blinkdl)
    rank, width = 8, 128
    w1 = blinkdl["blocks.0.att.time_maa_w1"].view(width, 5, rank)  # [C, 5, R], BlinkDL's groups
    w2 = blinkdl["blocks.0.att.time_maa_w2"]  # [5, R, C]
    ours_1 = fla["model.layers.0.attn.x_proj.0.linear.weight"].view(5, rank, width)
    ours_2 = fla["model.layers.0.attn.x_proj.2.weight"].view(width, 5, rank)
    for n, group in enumerate(FLA_MIX_GROUPS):
        theirs = BLINKDL_MIX_GROUPS.index(group)
        assert torch.equal(ours_1[n], w1[:, theirs].t()), group
        assert torch.equal(ours_2[:, n], w2[theirs].t()), group
        assert torch.equal(fla["model.layers.0.attn.x_bias"][n], blinkdl[f"blocks.0.att.time_maa_{group}"].flatten())


def test_hf_names_and_back_are_exact():
    blinkdl = make_blinkdl_state_dict(hidden_size=128, num_layers=2, head_size=64, vocab=300, ffn=320, mix_rank=8,
                                      decay_rank=16)
    hf = blinkdl_to_hf_keys(blinkdl)
    assert "head.weight" in hf and "rwkv.embeddings.weight" in hf and "rwkv.blocks.0.pre_ln.weight" in hf
    assert all(name == "head.weight" or name.startswith("rwkv.") for name in hf)
    _assert_same(hf_to_blinkdl_keys(hf), blinkdl)


def test_an_unknown_hf_tensor_is_refused_by_name():
    hf = blinkdl_to_hf_keys(make_blinkdl_state_dict(hidden_size=128, num_layers=1, head_size=64, vocab=300, ffn=320,
                                                    mix_rank=8, decay_rank=16))
    hf["rwkv.mystery.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"some/folder: unexpected tensors for the RWKV/v6-Finch-HF format: "
                                         r"rwkv\.mystery\.weight"):
        hf_to_blinkdl_keys(hf, "some/folder")
