"""The lm benchmark's export of an `Rwkv6ForCausalLM` to BlinkDL's RWKV-6 `.pth` layout (fla -> BlinkDL), so that
the `rwkv` package can run the same weights. The converter holds the other direction
(auroralong_hf/convert_rwkv6.py); the two are to become one layout module, written once in both directions.
"""

from __future__ import annotations

import torch

# fla's (and this package's) order of the five token-shift LoRA groups, and BlinkDL's
FLA_GROUPS = "rwkvg"
BLINKDL_GROUPS = "wkvrg"


def export_blinkdl_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under BlinkDL's RWKV-6 `.pth` names and shapes (the inverse of BlinkDL -> fla), fp32."""
    config = model.config
    width, rank = config.hidden_size, config.time_mix_lora_rank
    sd = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    out = {}

    def put(name, tensor):
        out[name] = tensor.contiguous().clone()

    def channel_vector(tensor):  # BlinkDL keeps per-channel mixes as [1, 1, C]
        return tensor.reshape(1, 1, width)

    put("emb.weight", sd["model.embeddings.weight"])
    for part in ("weight", "bias"):
        put(f"blocks.0.ln0.{part}", sd[f"model.layers.0.pre_norm.{part}"])
        put(f"ln_out.{part}", sd[f"model.norm.{part}"])
    put("head.weight", sd["lm_head.weight"])

    # position in fla's group order of each BlinkDL group: w, k, v, r, g -> 1, 2, 3, 0, 4
    order = [FLA_GROUPS.index(group) for group in BLINKDL_GROUPS]
    for i in range(config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        a, att, ffn = src + "attn.", dst + "att.", dst + "ffn."
        for part in ("weight", "bias"):
            put(f"{dst}ln1.{part}", sd[f"{src}attn_norm.{part}"])
            put(f"{dst}ln2.{part}", sd[f"{src}ffn_norm.{part}"])
            put(f"{att}ln_x.{part}", sd[f"{a}g_norm.{part}"])

        put(att + "time_maa_x", channel_vector(sd[a + "x_proj.0.mu"]))
        for row, group in enumerate(FLA_GROUPS):
            put(f"{att}time_maa_{group}", channel_vector(sd[a + "x_bias"][row]))
        w1 = sd[a + "x_proj.0.linear.weight"].view(5, rank, width)  # [5R, C], groups r, w, k, v, g
        put(att + "time_maa_w1", w1[order].reshape(5 * rank, width).t())  # [C, 5R], groups w, k, v, r, g
        w2 = sd[a + "x_proj.2.weight"].view(width, 5, rank)  # [C, 5R], groups r, w, k, v, g
        put(att + "time_maa_w2", w2[:, order].permute(1, 2, 0))  # [5, R, C], groups w, k, v, r, g

        put(att + "time_decay", channel_vector(sd[a + "w_proj.linear.lora.2.bias"]))
        put(att + "time_decay_w1", sd[a + "w_proj.linear.lora.0.weight"].t())  # [C, D]
        put(att + "time_decay_w2", sd[a + "w_proj.linear.lora.2.weight"].t())  # [D, C]
        put(att + "time_faaaa", sd[a + "bonus"])  # [H, K]
        for blink, ours in (("receptance", "r_proj"), ("key", "k_proj"), ("value", "v_proj"), ("gate", "g_proj")):
            put(f"{att}{blink}.weight", sd[f"{a}{ours}.linear.weight"])
        put(att + "output.weight", sd[a + "o_proj.weight"])

        put(ffn + "time_maa_k", channel_vector(sd[src + "ffn.key.mu"]))
        put(ffn + "time_maa_r", channel_vector(sd[src + "ffn.receptance.mu"]))
        put(ffn + "key.weight", sd[src + "ffn.key.linear.weight"])
        put(ffn + "receptance.weight", sd[src + "ffn.receptance.linear.weight"])
        put(ffn + "value.weight", sd[src + "ffn.value.weight"])
    return out


__all__ = ["BLINKDL_GROUPS", "FLA_GROUPS", "export_blinkdl_state_dict"]
