"""Model folders (auroralong_hf/loading.py): `load_pretrained` with each override (kept ratio, token order, dtype) and
its errors, the folder checks, and changing the kept ratio of a loaded model in one call
(`AuroraLongForConditionalGeneration.set_token_kept_ratio`)."""

import copy
import json
import shutil

import pytest
import torch

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, processor_for_vision_config
from auroralong_hf.loading import check_config_folder, check_model_folder, load_pretrained
from auroralong_hf.modeling.configuration_siglip_tome import tokens_per_frame

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536}


def small_model() -> AuroraLongForConditionalGeneration:
    torch.manual_seed(0)
    return AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=VISION, text_config=TEXT)).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small AuroraLong folder (64x64 frames: 16 patches, kept ratio 0.5 -> 8 tokens per frame)."""
    root = tmp_path_factory.mktemp("loading") / "model"
    model = small_model()
    model.save_pretrained(root)
    processor_for_vision_config(model.config.vision_config).save_pretrained(root)
    return root


def copy_of(folder, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        node[last] = value
    path.write_text(json.dumps(data))


def features_per_frame(model) -> int:
    """Visual tokens the model's tower + projector actually give one frame."""
    size = model.config.vision_config.image_size
    with torch.no_grad():
        return model.model.get_image_features(torch.zeros(1, 3, size, size)).shape[1]


# ------------------------------------------------------------------------------------------------ load_pretrained


def test_the_folder_as_saved(folder):
    model, processor = load_pretrained(folder)
    assert isinstance(model, AuroraLongForConditionalGeneration) and not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"  # float32 on a CPU, whatever the folder's
    assert processor.tokens_per_frame == model.tokens_per_frame == features_per_frame(model) == 8


@pytest.mark.parametrize("ratio", [0.25, 1.0])
def test_a_kept_ratio_reaches_tower_model_and_processor(folder, tmp_path, ratio):
    """The override clears the folder's fixed per-layer count (tome_r), and the processor's placeholder count
    follows the tower, which really gives that many tokens."""
    folder = copy_of(folder, tmp_path)
    edit_json(folder / "config.json", **{"vision_config.tome_r": 1})
    edit_json(folder / "processor_config.json", tokens_per_frame=14)  # 16 patches, 1 merge in each of 2 layers
    model, processor = load_pretrained(folder, token_kept_ratio=ratio)
    vision, tower = model.config.vision_config, model.model.vision_tower.config
    assert (vision.token_kept_ratio, vision.tome_r) == (tower.token_kept_ratio, tower.tome_r) == (ratio, None)
    expected = tokens_per_frame(vision)
    assert processor.tokens_per_frame == model.tokens_per_frame == features_per_frame(model) == expected
    assert expected == (16 if ratio == 1.0 else 6)


def test_a_sort_reaches_the_tower(folder):
    model, processor = load_pretrained(folder, tome_sort="descending")
    assert model.config.vision_config.tome_sort == model.model.vision_tower.config.tome_sort == "descending"
    assert processor.tokens_per_frame == model.tokens_per_frame == 8  # the order changes, not the count


@pytest.mark.parametrize("dtype, expected", [("bfloat16", torch.bfloat16), (torch.float16, torch.float16),
                                             ("float32", torch.float32), ("auto", torch.float32)])
def test_a_dtype(folder, dtype, expected):
    model, _ = load_pretrained(folder, dtype=dtype)
    assert model.dtype == expected


# --------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1, float("nan")])
def test_a_bad_ratio_is_refused_before_the_weights_are_read(folder, monkeypatch, ratio):
    from transformers import AutoModelForImageTextToText

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the weights were read"))
    with pytest.raises(ValueError, match=r"token_kept_ratio must be in \(0, 1\]"):
        load_pretrained(folder, token_kept_ratio=ratio)


def test_bad_sort_and_dtype_are_refused(folder):
    with pytest.raises(ValueError, match="tome_sort must be one of"):
        load_pretrained(folder, tome_sort="sideways")
    with pytest.raises(ValueError, match="dtype must be auto, float32, bfloat16, float16, got 'int8'"):
        load_pretrained(folder, dtype="int8")


@pytest.mark.parametrize("make, error, reason", [
    (lambda d: None, FileNotFoundError, "no such model folder"),
    (lambda d: d.write_text("a file"), ValueError, "not a folder"),
    (lambda d: d.mkdir(), ValueError, "incomplete model folder, missing config.json, the weights"),
])
def test_a_path_that_is_not_a_model_folder(tmp_path, make, error, reason):
    path = tmp_path / "not-a-model"
    make(path)
    with pytest.raises(error, match=reason) as caught:
        load_pretrained(path)
    assert str(path) in str(caught.value)


def test_a_folder_of_another_model_or_config(folder, tmp_path):
    folder = copy_of(folder, tmp_path)
    edit_json(folder / "config.json", model_type="rwkv6")
    with pytest.raises(ValueError, match="not an AuroraLong model folder .*'rwkv6'"):
        load_pretrained(folder)
    assert check_config_folder(folder) == folder  # any model type is a model folder to `generate`
    (folder / "config.json").write_text("[1, 2]")
    for check in (load_pretrained, check_model_folder, check_config_folder):
        with pytest.raises(ValueError, match="holds a JSON array, not a model configuration"):
            check(folder)
    (folder / "config.json").write_bytes(b'{"model_type": "\xff"}')
    with pytest.raises(ValueError, match="config.json: not a readable JSON file"):
        load_pretrained(folder)


def test_damaged_weights_name_the_folder(folder, tmp_path):
    folder = copy_of(folder, tmp_path)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(ValueError, match="not a complete safetensors file|cannot load the model") as caught:
        load_pretrained(folder)
    assert str(folder) in str(caught.value)


def test_a_processor_of_another_model_is_refused_unless_the_ratio_is_set(folder, tmp_path):
    folder = copy_of(folder, tmp_path)
    edit_json(folder / "processor_config.json", tokens_per_frame=58)
    with pytest.raises(ValueError, match="the processor expects 58 tokens per frame but the vision tower gives 8"):
        load_pretrained(folder)
    model, processor = load_pretrained(folder, token_kept_ratio=0.5)  # an explicit ratio: the processor follows
    assert processor.tokens_per_frame == model.tokens_per_frame == 8


# ------------------------------------------------------------------------------------- the model's kept ratio


def test_set_token_kept_ratio_keeps_configs_and_output_in_step():
    model = small_model()
    model.config.vision_config.tome_r = 1  # a fixed count, which an explicit ratio replaces
    assert features_per_frame(model) == model.tokens_per_frame == 14
    assert model.set_token_kept_ratio(0.25) == model.tokens_per_frame == features_per_frame(model) == 6
    vision = model.config.vision_config
    assert vision is model.model.vision_tower.config and (vision.token_kept_ratio, vision.tome_r) == (0.25, None)
    assert model.set_token_kept_ratio(1) == features_per_frame(model) == 16 and vision.token_kept_ratio == 1.0


def test_set_token_kept_ratio_keeps_a_copied_tower_config_in_step():
    model = small_model()
    model.model.vision_tower.config = copy.deepcopy(model.config.vision_config)
    assert model.set_token_kept_ratio(0.25) == 6
    tower = model.model.vision_tower.config
    assert (tower.token_kept_ratio, tower.tome_r) == (0.25, None)
    assert features_per_frame(model) == model.tokens_per_frame == 6


@pytest.mark.parametrize("ratio", [0, 1.5])
def test_a_refused_ratio_changes_nothing(ratio):
    model = small_model()
    model.config.vision_config.tome_r = 1
    with pytest.raises(ValueError, match=r"token_kept_ratio must be in \(0, 1\]"):
        model.set_token_kept_ratio(ratio)
    vision = model.config.vision_config
    assert (vision.token_kept_ratio, vision.tome_r) == (0.5, 1) and features_per_frame(model) == 14
