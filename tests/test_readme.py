"""The README's Python examples run as written, in order, in one namespace (as a reader pastes them), on stand-ins
with the names they use: a tiny AuroraLong folder for "auroralong-2b", a tiny RWKV-6 folder for
"converted-finch-1b6", a tiny SigLIP tower on the real 384/16 grid for "siglip-large-patch16-384", and a clip."""

import os
import re
from pathlib import Path

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel
from videos import write_video

from auroralong_hf import Rwkv6Config, Rwkv6ForCausalLM, RwkvWorldTokenizer
from auroralong_hf.create_random import random_model

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def make_stand_ins(folder: Path) -> None:
    model, processor = random_model("tiny", seed=0)
    model.save_pretrained(folder / "auroralong-2b")
    processor.save_pretrained(folder / "auroralong-2b")
    torch.manual_seed(0)
    finch = Rwkv6ForCausalLM(Rwkv6Config(hidden_size=64, num_hidden_layers=2, head_size=32))
    finch.save_pretrained(folder / "converted-finch-1b6")
    RwkvWorldTokenizer().save_pretrained(folder / "converted-finch-1b6")
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                                 num_hidden_layers=23, image_size=384, patch_size=16))
    tower.save_pretrained(folder / "siglip-large-patch16-384")
    write_video(folder / "clip.mp4", 30, fps=10, size=(64, 48))


def test_the_readme_examples_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 5  # the check can fail: it finds the examples
    make_stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    assert os.path.isfile(tmp_path / "clip.state")  # the state example saved its file
    assert isinstance(namespace["answer"], torch.Tensor)
