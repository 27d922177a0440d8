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
