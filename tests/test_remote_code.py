"""A saved AuroraLong folder carries its modeling code: it loads with trust_remote_code=True where this package
cannot be imported (checked in a subprocess that blocks `auroralong_hf`)."""

import json
import os
import subprocess
import sys

import torch

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32}

LOAD_WITHOUT_PACKAGE = """
import sys
sys.modules["auroralong_hf"] = None  # any import of the package now fails
import torch
from transformers import AutoConfig, AutoModelForImageTextToText
folder, inputs_file, out_file = sys.argv[1:]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
inputs = torch.load(inputs_file, weights_only=True)
with torch.no_grad():
    logits = model(**inputs).logits
torch.save({"logits": logits, "classes": [type(config).__name__, type(model).__name__]}, out_file)
"""


def test_saved_folder_loads_with_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=VISION, text_config=TEXT)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageTextToText"] == "modeling_auroralong.AuroraLongForConditionalGeneration"
    for module in ("modeling_auroralong", "modeling_rwkv6", "modeling_siglip_tome", "wkv6", "configuration_auroralong"):
        assert (folder / f"{module}.py").exists(), module

    tokens = 2 * 8  # 2 frames x tokens_per_frame (16 patches, ratio 0.5)
    input_ids = torch.tensor([[24281, 59, 11] + [65535] * tokens + [11, 5585, 41693, 59]])
    inputs = {"input_ids": input_ids, "pixel_values_videos": torch.randn(1, 2, 3, 64, 64)}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    arguments = [str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, *arguments],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["classes"] == ["AuroraLongConfig", "AuroraLongForConditionalGeneration"]
    assert torch.allclose(out["logits"], expected, atol=1e-6)
