"""A saved AuroraLong folder carries its code: model, processor and tokenizer load with trust_remote_code=True where
this package cannot be imported (checked in a subprocess that blocks `auroralong_hf`), and give the same outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import torch
from videos import write_video

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, processor_for_vision_config

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
    for module in ("modeling_auroralong", "modeling_rwkv6", "cache_rwkv6", "generation_rwkv6", "decode_step_rwkv6",
                   "modeling_siglip_tome", "wkv6", "configuration_auroralong"):
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


LOAD_ALL_WITHOUT_PACKAGE = """
import sys
sys.modules["auroralong_hf"] = None  # any import of the package now fails
import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
folder, video, image, text, out_file = sys.argv[1:]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
inputs = processor(text=text, videos=video, images=np.load(image), stream_videos=False)
with torch.no_grad():
    logits = model(**inputs).logits
    streamed = processor(text=text, videos=video, images=np.load(image))  # the main path: a LazyVideo, streamed
    answer = model.generate(**streamed, max_new_tokens=4, do_sample=False)
torch.save({
    "inputs": dict(inputs), "logits": logits, "answer": answer, "tokenizer_ids": tokenizer.encode(text),
    "classes": [type(tokenizer).__name__, type(processor).__name__, type(processor.image_processor).__name__],
    "modules": [type(tokenizer).__module__, type(processor).__module__],
    "tokens_per_frame": processor.tokens_per_frame,
}, out_file)
"""


def test_model_processor_and_tokenizer_load_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=VISION, text_config=TEXT)).eval()
    processor = processor_for_vision_config(VISION, fps=2.0)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for name in ("processing_auroralong.py", "video_io.py", "image_io.py", "tokenization_rwkv_world.py",
                 "rwkv_vocab_v20230424.txt"):
        assert (folder / name).exists(), name
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_auroralong.AuroraLongProcessor"}
    assert json.loads((folder / "tokenizer_config.json").read_text())["auto_map"]["AutoTokenizer"][0] == (
        "tokenization_rwkv_world.RwkvWorldTokenizer")

    video = write_video(tmp_path / "clip.mp4", num_frames=6, fps=4, size=(48, 40)).path
    np.save(tmp_path / "image.npy", np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    text = "User: What is shown?\n<video>\n<image>\nWhat is shown?\n\nAssistant:"
    expected = processor(text=text, videos=str(video), images=np.load(tmp_path / "image.npy"), stream_videos=False)
    assert int((expected["input_ids"] == 65535).sum()) == 3 * 8  # 1.5 s at 2 fps: 3 frames of 8 tokens
    with torch.no_grad():
        logits = model(**expected).logits
        answer = model.generate(**processor(text=text, videos=str(video), images=np.load(tmp_path / "image.npy")),
                                max_new_tokens=4, do_sample=False)

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    arguments = [str(folder), str(video), str(tmp_path / "image.npy"), text, str(tmp_path / "out.pt")]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_ALL_WITHOUT_PACKAGE, *arguments],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["classes"] == ["RwkvWorldTokenizer", "AuroraLongProcessor", "SiglipImageProcessorPil"]
    assert all(module.startswith("transformers_modules.") for module in out["modules"]), out["modules"]
    assert out["tokens_per_frame"] == 8
    assert out["tokenizer_ids"] == processor.tokenizer.encode(text)
    assert out["inputs"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(out["inputs"][key], value), key
    assert torch.allclose(out["logits"], logits, atol=1e-6)
    assert torch.equal(out["answer"], answer)
