import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import auroralong_hf  # noqa: E402,F401  (registers the Auto classes)


@pytest.fixture
def tiny_rwkv6():
    """A 2-layer random Finch model whose logits are spread enough for greedy decoding to be decisive."""
    from auroralong_hf import Rwkv6Config, Rwkv6ForCausalLM

    torch.manual_seed(0)
    config = Rwkv6Config(hidden_size=128, num_hidden_layers=2, head_size=32, vocab_size=300, wkv_chunk_size=16)
    model = Rwkv6ForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embeddings.weight.normal_(0, 1.0)
        model.lm_head.weight.normal_(0, 0.25)
    return model


@pytest.fixture(autouse=True)
def pil_refuses_truncated_images(monkeypatch):
    """Pillow's default for every test: importing lmms_eval.api.task (the lmms-eval tests do, at collection) sets
    the process-wide PIL.ImageFile.LOAD_TRUNCATED_IMAGES to True, which would let truncated images load."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


@pytest.fixture(scope="session")
def tiny_auroralong_folder(tmp_path_factory):
    """A tiny AuroraLong folder (create-random's tiny size: model + processor) whose logits are spread enough for
    greedy decoding to be decisive."""
    from auroralong_hf.create_random import random_model

    folder = tmp_path_factory.mktemp("tiny-auroralong")
    model, processor = random_model("tiny", seed=0)
    with torch.no_grad():
        model.model.language_model.embeddings.weight.normal_(0, 1.0)
        model.lm_head.weight.normal_(0, 0.3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
