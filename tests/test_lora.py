"""LoRA with PEFT on AuroraLong (training/lora.py): presets, the names users try, all-linear, exactness."""

import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, Rwkv6Config, Rwkv6ForCausalLM
from auroralong_hf.training import LORA_TARGET_PRESETS, lora_target_modules
from auroralong_hf.training.lora import lora_config
from auroralong_hf.training.train import STAGES, add_lora, apply_stage_freezing

PER_LAYER = {  # the RWKV-6 layers each preset adapts, as suffixes of layers.N
    "attention": {"attn.r_proj.linear", "attn.k_proj.linear", "attn.v_proj.linear", "attn.g_proj.linear",
                  "attn.o_proj"},
    "ffn": {"ffn.key.linear", "ffn.receptance.linear", "ffn.value"},
}
PER_LAYER["all"] = PER_LAYER["attention"] | PER_LAYER["ffn"]


def tiny_auroralong(seed=0):
    torch.manual_seed(seed)
    config = AuroraLongConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False},
        text_config={"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536},
    )
    return AuroraLongForConditionalGeneration(config)


def tiny_rwkv(seed=0):
    torch.manual_seed(seed)
    return Rwkv6ForCausalLM(Rwkv6Config(hidden_size=64, num_hidden_layers=2, head_size=32, vocab_size=512))


def adapted(peft_model) -> set[str]:
    """Names (in the base model) of the modules that got a LoRA adapter."""
    return {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules()
            if hasattr(module, "lora_A") and "default" in module.lora_A}


def lm_layers(names, prefix="model.language_model.layers."):
    return {re.sub(r"^\d+\.", "", name[len(prefix):]) for name in names if name.startswith(prefix)}


@pytest.mark.parametrize("preset", ["attention", "ffn", "all"])
def test_presets_adapt_the_named_rwkv_layers(preset):
    model = get_peft_model(tiny_auroralong(), LoraConfig(r=2, target_modules=lora_target_modules(preset)))
    names = adapted(model)
    assert lm_layers(names) == PER_LAYER[preset]
    assert len(names) == 2 * len(PER_LAYER[preset])  # both layers, nothing outside the language model
    # on a plain RWKV-6 language model too
    plain = get_peft_model(tiny_rwkv(), LoraConfig(r=2, target_modules=lora_target_modules(preset)))
    assert lm_layers(adapted(plain), "model.layers.") == PER_LAYER[preset]


def test_vision_targets_only_on_request():
    model = get_peft_model(tiny_auroralong(), LoraConfig(r=2, target_modules=lora_target_modules("all", vision=True)))
    vision = {name for name in adapted(model) if ".vision_tower." in name}
    assert len(vision) == 2 * 6  # q/k/v/out_proj, fc1, fc2 in each of the 2 ViT layers
    with pytest.raises(ValueError, match="attention, ffn, all, all-linear"):
        lora_target_modules("q_proj")


def test_lora_on_the_shifted_input_is_exact():
    """LoRA on the inner nn.Linear: the adapted model equals the base model with W + (alpha / r) B A merged in, and
    both differ from the base (B is random here, not PEFT's zero start)."""
    torch.manual_seed(1)
    ids = torch.randint(0, 512, (2, 12))
    base = tiny_rwkv().eval()
    with torch.no_grad():
        reference = base(ids).logits
    model = get_peft_model(tiny_rwkv(), LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules("all"),
                                                   init_lora_weights=False)).eval()
    by_hand = tiny_rwkv().eval()
    modules = dict(by_hand.named_modules())
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
                modules[name.removeprefix("base_model.model.")].weight += delta
        adapted_logits = model(ids).logits
        torch.testing.assert_close(adapted_logits, by_hand(ids).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(adapted_logits, reference, atol=1e-3)
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(ids).logits, adapted_logits, rtol=1e-4, atol=1e-4)
    assert set(merged.state_dict()) == set(base.state_dict())  # fla-hub names, unchanged


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["key", "value"], ["r_proj"]])
def test_llama_style_names_fail_naming_the_presets(targets):
    """The r/k/v/g and ffn key/receptance wrappers take the shifted input apart from x: an adapter on the wrapper
    would see the wrong input, so PEFT must refuse it, and its message must say where adapters go."""
    with pytest.raises(ValueError, match=r"is not supported") as error:
        get_peft_model(tiny_auroralong(), LoraConfig(r=2, target_modules=targets))
    message = str(error.value)
    assert "go on its .linear" in message and "lora_target_modules('attention' | 'ffn' | 'all')" in message


def test_all_linear_leaves_finch_mixers_alone():
    """PEFT's all-linear: every nn.Linear of the language model, as the "all" preset; never Finch's own low-rank
    token-shift (x_proj) and decay (w_proj.linear.lora) layers, nor lm_head."""
    model = get_peft_model(tiny_auroralong(), LoraConfig(r=2, target_modules="all-linear"))
    names = adapted(model)
    assert lm_layers(names) == PER_LAYER["all"]
    assert not any("x_proj" in name or "w_proj" in name or name == "lm_head" for name in names)
    # the rest PEFT's all-linear picks: the projector and the tower
    assert {name for name in names if "language_model" not in name and "vision_tower" not in name} == {
        "model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"}
    # train's all-linear excludes the projector (trained in full) and the tower (frozen without --lora-vision)
    ours = get_peft_model(tiny_auroralong(), lora_config("all-linear", r=2))
    assert lm_layers(adapted(ours)) == PER_LAYER["all"] and len(adapted(ours)) == 2 * len(PER_LAYER["all"])
    with_vision = get_peft_model(tiny_auroralong(), lora_config("all-linear", vision=True, r=2))
    assert len(adapted(with_vision)) == 2 * len(PER_LAYER["all"]) + 2 * 6
    # the README's exclusion for PEFT users
    readme = LoraConfig(r=2, target_modules="all-linear", exclude_modules=r".*(vision_tower|multi_modal_projector).*")
    assert adapted(get_peft_model(tiny_auroralong(), readme)) == adapted(ours)


def test_finch_mixers_are_not_nn_linear_and_keep_their_names():
    model = tiny_rwkv()
    attn = model.model.layers[0].attn
    for layer in (attn.x_proj[0].linear, attn.x_proj[2], attn.w_proj.linear.lora[0], attn.w_proj.linear.lora[2]):
        assert not isinstance(layer, nn.Linear)
    names = set(model.state_dict())
    for suffix in ("attn.x_proj.0.linear.weight", "attn.x_proj.2.weight", "attn.w_proj.linear.lora.0.weight",
                   "attn.w_proj.linear.lora.2.weight", "attn.w_proj.linear.lora.2.bias", "attn.r_proj.linear.weight"):
        assert f"model.layers.0.{suffix}" in names
    assert "model.layers.0.attn.w_proj.linear.lora.0.bias" not in names


@pytest.mark.parametrize("preset", list(LORA_TARGET_PRESETS))
@pytest.mark.parametrize("lora_vision", [False, True])
def test_train_lora_keeps_the_tower_frozen_without_lora_vision(preset, lora_vision):
    model = tiny_auroralong()
    apply_stage_freezing(model, STAGES["language"])  # the stage trains the tower; --lora must freeze it
    model = add_lora(model, STAGES["language"], lora_vision=lora_vision, targets=preset, r=2)
    trainable = [name.removeprefix("base_model.model.") for name, p in model.named_parameters() if p.requires_grad]
    vision = [name for name in trainable if name.startswith("model.vision_tower.")]
    if lora_vision:
        assert vision and all(".lora_A." in name or ".lora_B." in name for name in vision)
    else:
        assert vision == []
    projector = [name for name in trainable if name.startswith("model.multi_modal_projector.")]
    assert sorted(projector) == [f"model.multi_modal_projector.modules_to_save.default.linear_{i}.{kind}"
                                 for i in (1, 2) for kind in ("bias", "weight")]
    language = [name for name in trainable if name.startswith(("model.language_model.", "lm_head"))]
    assert language and all(".lora_A." in name or ".lora_B." in name for name in language)
    assert not any("x_proj" in name or "w_proj" in name for name in trainable)
