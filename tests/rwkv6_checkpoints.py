"""Test-only builders of tiny random RWKV-6 checkpoints in the three on-disk formats (not part of the library).

`make_blinkdl_state_dict` gives random tensors under BlinkDL's names and shapes with Finch-like value ranges, so
a tiny model's logits stay O(1-10); `write_blinkdl_checkpoint`, `write_hf_checkpoint` and `write_fla_checkpoint`
store them as an RWKV-LM .pth, a RWKV/v6-Finch-HF folder and an fla-hub folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from auroralong_hf.convert.rwkv6_layout import blinkdl_to_fla_state_dict, blinkdl_to_hf_keys


def make_blinkdl_state_dict(
    hidden_size: int = 128,
    num_layers: int = 2,
    head_size: int = 64,
    vocab: int = 256,
    ffn: int | None = None,
    mix_rank: int = 32,
    decay_rank: int = 64,
    seed: int = 0,
    *,
    decay_range: tuple[float, float] = (-6.0, -1.0),
    key_scale: float = 1.0,
    value_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Random RWKV-6 tensors under BlinkDL's names/shapes.

    Value ranges follow RWKV-6 (time_maa_* in (0, 1); time_decay rising from decay_range[0] to decay_range[1] over
    the channels as in RWKV-LM's init, plus noise; time_faaaa small, around RWKV-LM's init pattern; LayerNorm
    weights ~1, biases ~0.1) and matrices ~N(0, 1/sqrt(fan_in)). `key_scale`/`value_scale` shrink the attention
    key/value matrices (trained Finch keys are small), which makes the per-head WKV outputs small so that the
    GroupNorm epsilon visibly matters.
    """
    C, L, K, V = hidden_size, num_layers, head_size, vocab
    if C % K:
        raise ValueError("hidden_size must be a multiple of head_size")
    H = C // K
    F = ffn if ffn is not None else int(C * 3.5) // 32 * 32
    R, D = mix_rank, decay_rank
    g = torch.Generator().manual_seed(seed)

    def normal(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    def uniform(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def linear(out_features, in_features, scale=1.0):
        return normal(out_features, in_features, std=scale * in_features**-0.5)

    def norm_pair(prefix):
        sd[prefix + ".weight"] = 1.0 + normal(C, std=0.1)
        sd[prefix + ".bias"] = normal(C, std=0.1)

    sd: dict[str, torch.Tensor] = {"emb.weight": normal(V, C)}
    norm_pair("blocks.0.ln0")
    channel = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
    for i in range(L):
        ratio = i / max(L - 1, 1)
        b, att, ffn_ = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        norm_pair(b + "ln1")
        norm_pair(b + "ln2")
        for name in ("x", "w", "k", "v", "r", "g"):
            sd[att + f"time_maa_{name}"] = uniform(1, 1, C)
        sd[att + "time_maa_w1"] = normal(C, 5 * R, std=C**-0.5)
        sd[att + "time_maa_w2"] = normal(5, R, C, std=0.5 * R**-0.5)
        lo, hi = decay_range
        decay = lo + (hi - lo) * channel ** (0.7 + 1.3 * ratio)
        sd[att + "time_decay"] = (decay + normal(C, std=0.1)).view(1, 1, C)
        sd[att + "time_decay_w1"] = normal(C, D, std=C**-0.5)
        sd[att + "time_decay_w2"] = normal(D, C, std=0.5 * D**-0.5)
        n = torch.arange(C)
        faaaa = ratio * (1 - channel) + ((n + 1) % 3 - 1) * 0.1
        sd[att + "time_faaaa"] = (faaaa + normal(C, std=0.05)).view(H, K)
        sd[att + "receptance.weight"] = linear(C, C)
        sd[att + "key.weight"] = linear(C, C, key_scale)
        sd[att + "value.weight"] = linear(C, C, value_scale)
        sd[att + "gate.weight"] = linear(C, C)
        sd[att + "output.weight"] = linear(C, C)
        norm_pair(att + "ln_x")
        sd[ffn_ + "time_maa_k"] = uniform(1, 1, C)
        sd[ffn_ + "time_maa_r"] = uniform(1, 1, C)
        sd[ffn_ + "key.weight"] = linear(F, C)
        sd[ffn_ + "value.weight"] = linear(C, F)
        sd[ffn_ + "receptance.weight"] = linear(C, C)
    norm_pair("ln_out")
    sd["head.weight"] = linear(V, C)
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def blinkdl_to_fla_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BlinkDL tensors -> fla names and layout (the library's own converter)."""
    return blinkdl_to_fla_state_dict(sd)


def _geometry(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """Sizes for the config.json files, read from any layer that has the tensor (tests drop some on purpose)."""

    def dim(suffix: str, axis: int) -> int:
        return next((t.shape[axis] for k, t in sorted(sd.items()) if k.endswith(suffix)), 0)

    hidden = dim("emb.weight", 1)
    head_size = dim("att.time_faaaa", 1)
    return {
        "vocab": dim("emb.weight", 0), "hidden": hidden, "heads": dim("att.time_faaaa", 0), "head_size": head_size,
        "layers": 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
        "ffn": dim("ffn.key.weight", 0),
        "mix_rank": dim("att.time_maa_w1", 1) // 5,
        "decay_rank": dim("att.time_decay_w1", 1),
    }


def write_blinkdl_checkpoint(sd: dict[str, torch.Tensor], path: str | Path) -> Path:
    """An RWKV-LM style .pth (a pickled dict of tensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


def write_hf_checkpoint(
    sd: dict[str, torch.Tensor], folder: str | Path, *, safetensors: bool = False, shards: int = 1
) -> Path:
    """A RWKV/v6-Finch-HF folder: `rwkv.`-named tensors + the remote-code Rwkv6Config's config.json.

    Default pytorch_model.bin (as the released repos); `safetensors=True` and/or `shards > 1` (with an index json)
    for the other layouts transformers writes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    geo = _geometry(sd)
    _save_shards(blinkdl_to_hf_keys(sd), folder, safetensors=safetensors, shards=shards)
    config = {
        "architectures": ["Rwkv6ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_rwkv6.Rwkv6Config",
            "AutoModelForCausalLM": "modeling_rwkv6.Rwkv6ForCausalLM",
        },
        "attention_hidden_size": geo["hidden"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "head_size": geo["head_size"],
        "head_size_divisor": 8,
        "hidden_size": geo["hidden"],
        "intermediate_size": geo["ffn"],
        "layer_norm_epsilon": 1e-05,
        "model_type": "rwkv6",
        "num_hidden_layers": geo["layers"],
        "rescale_every": 6,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": geo["vocab"],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_fla_checkpoint(sd: dict[str, torch.Tensor], folder: str | Path, *, shards: int = 1) -> Path:
    """An fla-hub folder: fla-named tensors in model.safetensors + fla's RWKV6Config config.json (norm_eps 1e-5)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    geo = _geometry(sd)
    _save_shards(blinkdl_to_fla_keys(sd), folder, safetensors=True, shards=shards)
    config = {
        "architectures": ["RWKV6ForCausalLM"],
        "model_type": "rwkv6",
        "attn_mode": "chunk",
        "hidden_size": geo["hidden"],
        "expand_k": 1,
        "expand_v": 1,
        "hidden_ratio": 3.5,
        "intermediate_size": geo["ffn"],
        "num_hidden_layers": geo["layers"],
        "num_heads": geo["heads"],
        "proj_low_rank_dim": geo["mix_rank"],
        "gate_low_rank_dim": geo["decay_rank"],
        "hidden_act": "sqrelu",
        "norm_first": True,
        "norm_bias": True,
        "norm_eps": 1e-05,
        "fuse_norm": True,
        "fuse_cross_entropy": True,
        "use_cache": True,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "vocab_size": geo["vocab"],
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _save_shards(sd: dict[str, torch.Tensor], folder: Path, *, safetensors: bool, shards: int) -> None:
    from safetensors.torch import save_file

    names = sorted(sd)
    ext = "safetensors" if safetensors else "bin"
    base = "model" if safetensors else "pytorch_model"
    if shards <= 1:
        part = {k: sd[k].contiguous() for k in names}
        if safetensors:
            save_file(part, str(folder / f"{base}.{ext}"), metadata={"format": "pt"})
        else:
            torch.save(part, folder / f"{base}.{ext}")
        return
    weight_map = {}
    per_shard = -(-len(names) // shards)
    for s in range(shards):
        file_name = f"{base}-{s + 1:05d}-of-{shards:05d}.{ext}"
        part = {k: sd[k].contiguous() for k in names[s * per_shard:(s + 1) * per_shard]}
        if safetensors:
            save_file(part, str(folder / file_name), metadata={"format": "pt"})
        else:
            torch.save(part, folder / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
             "weight_map": weight_map}
    (folder / f"{base}.{ext}.index.json").write_text(json.dumps(index, indent=2))
