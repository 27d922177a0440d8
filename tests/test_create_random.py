"""`auroralong create-random`: complete model + processor folders with seeded random weights (tiny and small written;
2b only built on the meta device)."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration
from auroralong_hf.cli import main
from auroralong_hf.create_random import SIZES, random_config, random_model


def _create(capsys, *args):
    assert main(["create-random", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_tiny_folder_loads_back_and_is_seeded(tmp_path, capsys):
    out = tmp_path / "tiny"
    report = _create(capsys, out, "--size", "tiny")
    assert report["output_dir"] == str(out) and report["size"] == "tiny" and report["tokens_per_frame"] == 58
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        assert name in report["files"], name
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temporary folder left behind

    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(model, AuroraLongForConditionalGeneration)
    assert processor.tokens_per_frame == 58
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.image_size, vision.patch_size, vision.num_hidden_layers, vision.hidden_size) == (384, 16, 23, 32)
    assert (text.hidden_size, text.num_hidden_layers, text.head_size, text.vocab_size) == (64, 2, 32, 65536)
    assert report["num_parameters"] == sum(p.numel() for p in model.parameters())

    # the same size and seed give the same weights; another seed does not
    same, _ = random_model("tiny", seed=0)
    other, _ = random_model("tiny", seed=1)
    reference = model.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in same.state_dict().items())
    assert not torch.equal(reference["lm_head.weight"], other.state_dict()["lm_head.weight"])


def test_non_empty_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["create-random", str(out)]) == 2
    assert str(out) in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    report = _create(capsys, out, "--overwrite", "--seed", "3", "--dtype", "bfloat16")
    assert "keep.txt" not in report["files"] and report["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("lm_head.weight").dtype == torch.bfloat16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_small_folder(tmp_path, capsys):
    report = _create(capsys, tmp_path / "small", "--size", "small")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "small")
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.hidden_size, vision.num_attention_heads, vision.num_hidden_layers) == (128, 4, 23)
    assert (text.hidden_size, text.num_hidden_layers, text.head_size) == (256, 4, 64)
    assert report["tokens_per_frame"] == 58 and 30e6 < report["num_parameters"] < 60e6


def test_2b_is_the_papers_geometry():
    config = random_config("2b")
    default = AuroraLongConfig()
    assert config.vision_config.to_dict() == default.vision_config.to_dict()
    assert config.text_config.to_dict() == default.text_config.to_dict()
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (1024, 23)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (2048, 24)
    with torch.device("meta"):
        model = AuroraLongForConditionalGeneration(config)
    assert 1.8e9 < sum(p.numel() for p in model.parameters()) < 2.0e9  # SigLIP-L (23 layers) + Finch 1.6B


def test_bad_size_and_ratio():
    assert set(SIZES) == {"tiny", "small", "2b"}
    with pytest.raises(ValueError, match="Unknown size"):
        random_config("huge")
    with pytest.raises(ValueError, match="token_kept_ratio"):
        random_config("tiny", token_kept_ratio=1.5)
