"""The RWKV-6 "Finch" tensor layouts, and the maps between them, each written once in both directions.

Three namings of the same tensors:

* BlinkDL's (RWKV-LM ``.pth``): ``emb.weight``, ``blocks.{i}.att.time_maa_x``, ``blocks.{i}.ffn.key.weight``, ...;
  per-channel vectors stored as ``[1, 1, C]``, the LoRA factors as ``[C, r]`` / ``[r, C]``.
* ``RWKV/v6-Finch-*-HF``: BlinkDL's tensors, values and shapes untouched, under ``rwkv.``-prefixed names and an
  unprefixed ``head.weight`` (`hf_to_blinkdl_keys` / `blinkdl_to_hf_keys`: renaming only).
* fla's, which is also this package's `Rwkv6ForCausalLM`: ``model.layers.{i}.attn.*``; tensors re-ordered,
  transposed and stacked (`blinkdl_to_fla_state_dict` / `fla_to_blinkdl_state_dict`, exact inverses).

Also here: every tensor name and shape of each layout for a given geometry, and the geometry read back from a state
dict's shapes. Reading files and checking their values is `checkpoint_io`'s job; the conversions are `rwkv6`'s.
"""

from __future__ import annotations

import re

import torch

# BlinkDL's time_maa_w1 / time_maa_w2 hold the five token-shift LoRA groups in the order w, k, v, r, g; fla (and this
# package) keep them in the order r, w, k, v, g (the order of `x_bias`). FLA_GROUP_FROM_BLINKDL[n] is the BlinkDL group
# index of fla group n; BLINKDL_GROUP_FROM_FLA[n] the fla group index of BlinkDL group n.
BLINKDL_MIX_GROUPS = ("w", "k", "v", "r", "g")
FLA_MIX_GROUPS = ("r", "w", "k", "v", "g")
FLA_GROUP_FROM_BLINKDL = tuple(BLINKDL_MIX_GROUPS.index(name) for name in FLA_MIX_GROUPS)  # (3, 0, 1, 2, 4)
BLINKDL_GROUP_FROM_FLA = tuple(FLA_MIX_GROUPS.index(name) for name in BLINKDL_MIX_GROUPS)  # (1, 2, 3, 0, 4)


# ----------------------------------------------------------------------------------------------------------------
# Which naming a set of tensor names uses


def naming_style(keys) -> str | None:
    """Which naming a set of tensor names uses: "blinkdl", "hf", "fla" or None."""
    keys = list(keys)
    if any(k.startswith("rwkv.") for k in keys):
        return "hf"
    if any(k.startswith(("model.layers.", "model.embeddings.")) for k in keys):
        return "fla"
    if "emb.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "blinkdl"
    return None


def describe_tensor_names(keys, limit: int = 6) -> str:
    """"N tensors (the first `limit` names, ...)", for error messages about what a checkpoint holds."""
    keys = sorted(keys)
    if not keys:
        return "no tensors"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} tensors ({shown}{', ...' if len(keys) > limit else ''})"


# ----------------------------------------------------------------------------------------------------------------
# Key names and geometry

_BLINKDL_ATT = (
    "time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g",
    "time_maa_w1", "time_maa_w2", "time_decay", "time_decay_w1", "time_decay_w2", "time_faaaa",
    "receptance.weight", "key.weight", "value.weight", "gate.weight", "output.weight",
    "ln_x.weight", "ln_x.bias",
)
_BLINKDL_FFN = ("time_maa_k", "time_maa_r", "key.weight", "value.weight", "receptance.weight")
_FLA_LAYER = (
    "attn_norm.weight", "attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias",
    "attn.x_proj.0.mu", "attn.x_proj.0.linear.weight", "attn.x_proj.2.weight", "attn.x_bias",
    "attn.r_proj.linear.weight", "attn.w_proj.linear.lora.0.weight", "attn.w_proj.linear.lora.2.weight",
    "attn.w_proj.linear.lora.2.bias", "attn.k_proj.linear.weight", "attn.v_proj.linear.weight",
    "attn.g_proj.linear.weight", "attn.bonus", "attn.g_norm.weight", "attn.g_norm.bias", "attn.o_proj.weight",
    "ffn.key.mu", "ffn.key.linear.weight", "ffn.value.weight", "ffn.receptance.mu", "ffn.receptance.linear.weight",
)

_LAYER_INDEX = re.compile(r"^(?:blocks|model\.layers)\.(\d+)\.")


def count_layers(keys, path) -> int:
    """1 + the highest layer index among BlinkDL (`blocks.N.*`) or fla (`model.layers.N.*`) tensor names; a
    ValueError naming `path` if there is none."""
    indices = {int(m.group(1)) for k in keys if (m := _LAYER_INDEX.match(k))}
    if not indices:
        raise ValueError(
            f"{path}: found no layers ('blocks.N.*' / 'model.layers.N.*') among {describe_tensor_names(keys)}."
        )
    return max(indices) + 1


def blinkdl_state_dict_keys(num_layers: int, *, with_head: bool = True) -> list[str]:
    """Every tensor name of a BlinkDL RWKV-6 checkpoint with `num_layers` blocks."""
    keys = ["emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"]
    for i in range(num_layers):
        keys += [f"blocks.{i}.{ln}.{p}" for ln in ("ln1", "ln2") for p in ("weight", "bias")]
        keys += [f"blocks.{i}.att.{name}" for name in _BLINKDL_ATT]
        keys += [f"blocks.{i}.ffn.{name}" for name in _BLINKDL_FFN]
    keys += ["ln_out.weight", "ln_out.bias"]
    if with_head:
        keys.append("head.weight")
    return keys


def fla_state_dict_keys(num_layers: int, *, with_head: bool = True) -> list[str]:
    """Every tensor name of an fla / auroralong `Rwkv6ForCausalLM` with `num_layers` layers."""
    keys = ["model.embeddings.weight", "model.layers.0.pre_norm.weight", "model.layers.0.pre_norm.bias"]
    for i in range(num_layers):
        keys += [f"model.layers.{i}.{name}" for name in _FLA_LAYER]
    keys += ["model.norm.weight", "model.norm.bias"]
    if with_head:
        keys.append("lm_head.weight")
    return keys



def _shape(sd: dict[str, torch.Tensor], name: str, ndim: int, path) -> tuple[int, ...]:
    tensor = sd[name]
    if tensor.dim() != ndim:
        raise ValueError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {ndim} dimensions.")
    return tuple(tensor.shape)


# Where each layout keeps the tensors the geometry is read from. The LoRA factors are [C, r] in BlinkDL's layout and
# transposed ([r, C], nn.Linear weights) in fla's: `lora_axis` is the axis that holds the rank.
_GEOMETRY_TENSORS = {
    "blinkdl": {
        "embedding": "emb.weight", "bonus": "blocks.0.att.time_faaaa", "ffn_key": "blocks.0.ffn.key.weight",
        "mix_lora": "blocks.0.att.time_maa_w1", "decay_lora": "blocks.0.att.time_decay_w1",
        "receptance": "blocks.0.att.receptance.weight", "lora_axis": 1,
    },
    "fla": {
        "embedding": "model.embeddings.weight", "bonus": "model.layers.0.attn.bonus",
        "ffn_key": "model.layers.0.ffn.key.linear.weight", "mix_lora": "model.layers.0.attn.x_proj.0.linear.weight",
        "decay_lora": "model.layers.0.attn.w_proj.linear.lora.0.weight",
        "receptance": "model.layers.0.attn.r_proj.linear.weight", "lora_axis": 0,
    },
}


def read_geometry(sd: dict[str, torch.Tensor], num_layers: int, path, layout: str) -> dict[str, int]:
    """The Finch geometry of a state dict in `layout` ("blinkdl" or "fla"), read from its tensor shapes."""
    names = _GEOMETRY_TENSORS[layout]
    shape = lambda key: _shape(sd, names[key], 2, path)  # noqa: E731
    vocab, hidden = shape("embedding")
    heads, head_size = shape("bonus")
    ffn, att = shape("ffn_key")[0], shape("receptance")[0]
    mix5, decay = shape("mix_lora")[names["lora_axis"]], shape("decay_lora")[names["lora_axis"]]
    if att != hidden:
        raise ValueError(
            f"{path}: {names['receptance']} is {att} wide but the hidden size is {hidden}; Finch models have "
            "dim_att == n_embd (fla: expand_k = expand_v = 1) and this converter supports only that."
        )
    if heads * head_size != hidden:
        raise ValueError(f"{path}: {names['bonus']} is [{heads}, {head_size}] but the hidden size is {hidden}.")
    if mix5 % 5:
        raise ValueError(f"{path}: {names['mix_lora']} has rank {mix5}, not a multiple of 5 (five LoRA groups).")
    return {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": num_layers, "head_size": head_size,
        "intermediate_size": ffn, "time_mix_lora_rank": mix5 // 5, "time_decay_lora_rank": decay,
    }


def expected_fla_shapes(geometry: dict[str, int], *, with_head: bool = True) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of `Rwkv6ForCausalLM` (fla naming) for the given geometry."""
    V, C, L = geometry["vocab_size"], geometry["hidden_size"], geometry["num_hidden_layers"]
    K = geometry["head_size"]
    H = C // K
    F, R, D = geometry["intermediate_size"], geometry["time_mix_lora_rank"], geometry["time_decay_lora_rank"]
    per_layer = {
        "attn_norm.weight": (C,), "attn_norm.bias": (C,), "ffn_norm.weight": (C,), "ffn_norm.bias": (C,),
        "attn.x_proj.0.mu": (C,), "attn.x_proj.0.linear.weight": (5 * R, C), "attn.x_proj.2.weight": (C, 5 * R),
        "attn.x_bias": (5, C),
        "attn.r_proj.linear.weight": (C, C), "attn.k_proj.linear.weight": (C, C),
        "attn.v_proj.linear.weight": (C, C), "attn.g_proj.linear.weight": (C, C),
        "attn.w_proj.linear.lora.0.weight": (D, C), "attn.w_proj.linear.lora.2.weight": (C, D),
        "attn.w_proj.linear.lora.2.bias": (C,),
        "attn.bonus": (H, K), "attn.g_norm.weight": (C,), "attn.g_norm.bias": (C,), "attn.o_proj.weight": (C, C),
        "ffn.key.mu": (C,), "ffn.key.linear.weight": (F, C), "ffn.value.weight": (C, F),
        "ffn.receptance.mu": (C,), "ffn.receptance.linear.weight": (C, C),
    }
    shapes = {"model.embeddings.weight": (V, C), "model.layers.0.pre_norm.weight": (C,),
              "model.layers.0.pre_norm.bias": (C,)}
    for i in range(L):
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in per_layer.items()})
    shapes.update({"model.norm.weight": (C,), "model.norm.bias": (C,)})
    if with_head:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def expected_blinkdl_shapes(geometry: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a BlinkDL RWKV-6 checkpoint for the given geometry."""
    V, C, L = geometry["vocab_size"], geometry["hidden_size"], geometry["num_hidden_layers"]
    K = geometry["head_size"]
    F, R, D = geometry["intermediate_size"], geometry["time_mix_lora_rank"], geometry["time_decay_lora_rank"]
    vec = (1, 1, C)
    att = {f"time_maa_{g}": vec for g in ("x", "w", "k", "v", "r", "g")}
    att.update({
        "time_maa_w1": (C, 5 * R), "time_maa_w2": (5, R, C), "time_decay": vec, "time_decay_w1": (C, D),
        "time_decay_w2": (D, C), "time_faaaa": (C // K, K), "receptance.weight": (C, C), "key.weight": (C, C),
        "value.weight": (C, C), "gate.weight": (C, C), "output.weight": (C, C), "ln_x.weight": (C,),
        "ln_x.bias": (C,),
    })
    ffn = {"time_maa_k": vec, "time_maa_r": vec, "key.weight": (F, C), "value.weight": (C, F),
           "receptance.weight": (C, C)}
    shapes = {"emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)}
    for i in range(L):
        shapes.update({f"blocks.{i}.{ln}.{p}": (C,) for ln in ("ln1", "ln2") for p in ("weight", "bias")})
        shapes.update({f"blocks.{i}.att.{name}": shape for name, shape in att.items()})
        shapes.update({f"blocks.{i}.ffn.{name}": shape for name, shape in ffn.items()})
    shapes.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return shapes


# ----------------------------------------------------------------------------------------------------------------
# BlinkDL <-> RWKV/v6-Finch-HF (names only) and BlinkDL <-> fla (names, order, shapes)


_HF_BLOCK = re.compile(r"^rwkv\.blocks\.(\d+)\.(pre_ln|ln1|ln2|attention|feed_forward)\.(.+)$")


def hf_to_blinkdl_keys(sd: dict[str, torch.Tensor], path="<state dict>") -> dict[str, torch.Tensor]:
    """Rename RWKV/v6-Finch-HF tensors to BlinkDL names (values untouched).

    The HF format stores the same, *unscaled* tensors as the .pth: its `rescale_every` only divides
    `attention.output` / `feed_forward.value` in memory for fp16 inference, never on disk.
    """
    renamed, unknown = {}, []
    for key, tensor in sd.items():
        if key == "head.weight":
            new = key
        elif key.startswith("rwkv.embeddings."):
            new = "emb." + key[len("rwkv.embeddings."):]
        elif key.startswith("rwkv.ln_out."):
            new = "ln_out." + key[len("rwkv.ln_out."):]
        elif m := _HF_BLOCK.match(key):
            layer, part, rest = m.groups()
            part = {"pre_ln": "ln0", "attention": "att", "feed_forward": "ffn"}.get(part, part)
            new = f"blocks.{layer}.{part}.{rest}"
        else:
            unknown.append(key)
            continue
        renamed[new] = tensor
    if unknown:
        raise ValueError(f"{path}: unexpected tensors for the RWKV/v6-Finch-HF format: {', '.join(sorted(unknown))}")
    return renamed


def blinkdl_name_to_hf(key: str) -> str:
    """The RWKV/v6-Finch-HF name of one BlinkDL tensor name (an unknown name is returned as it is)."""
    if key.startswith("emb."):
        return "rwkv.embeddings." + key[len("emb."):]
    if key.startswith("ln_out."):
        return "rwkv." + key
    if key.startswith("blocks.") and key.count(".") >= 3:
        _, layer, part, rest = key.split(".", 3)
        part = {"ln0": "pre_ln", "att": "attention", "ffn": "feed_forward"}.get(part, part)
        return f"rwkv.blocks.{layer}.{part}.{rest}"
    return key  # head.weight (unprefixed in the HF format) and anything unknown


def blinkdl_to_hf_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename BlinkDL tensors to RWKV/v6-Finch-HF names (values untouched); the inverse of `hf_to_blinkdl_keys`."""
    return {blinkdl_name_to_hf(key): tensor for key, tensor in sd.items()}


def blinkdl_to_fla_state_dict(sd: dict[str, torch.Tensor], num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """BlinkDL RWKV-6 tensors -> fla / auroralong `Rwkv6ForCausalLM` tensors (renamed, re-ordered, transposed).

    The token-shift LoRA: BlinkDL computes z = tanh(xxx @ time_maa_w1) ([.., 5R], groups w,k,v,r,g) and
    m_n = z_n @ time_maa_w2[n]; fla computes z = x_proj.0.linear(xxx) ([.., 5R], groups r,w,k,v,g) and contracts
    group n with x_proj.2.weight.view(C, 5, R)[:, n, :]. So linear.weight = time_maa_w1 with its column groups
    re-ordered, transposed; x_proj.2.weight[:, n, :] = time_maa_w2[group n]^T; x_bias stacks the static
    time_maa_{r,w,k,v,g}. The decay LoRA becomes w_proj.linear.lora (weights transposed, time_decay as the bias).
    """
    if num_layers is None:
        num_layers = count_layers(sd, "<state dict>")
    flat = lambda t: t.reshape(-1)  # noqa: E731 - [1, 1, C] -> [C]
    out = {
        "model.embeddings.weight": sd["emb.weight"],
        "model.layers.0.pre_norm.weight": sd["blocks.0.ln0.weight"],
        "model.layers.0.pre_norm.bias": sd["blocks.0.ln0.bias"],
        "model.norm.weight": sd["ln_out.weight"],
        "model.norm.bias": sd["ln_out.bias"],
    }
    if "head.weight" in sd:
        out["lm_head.weight"] = sd["head.weight"]
    order = list(FLA_GROUP_FROM_BLINKDL)
    for i in range(num_layers):
        b, att, ffn, p = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"model.layers.{i}."
        w1 = sd[att + "time_maa_w1"]  # [C, 5R], groups w,k,v,r,g
        w2 = sd[att + "time_maa_w2"]  # [5, R, C], groups w,k,v,r,g
        hidden, mix5 = w1.shape
        rank = mix5 // 5
        out.update({
            p + "attn_norm.weight": sd[b + "ln1.weight"], p + "attn_norm.bias": sd[b + "ln1.bias"],
            p + "ffn_norm.weight": sd[b + "ln2.weight"], p + "ffn_norm.bias": sd[b + "ln2.bias"],
            p + "attn.x_proj.0.mu": flat(sd[att + "time_maa_x"]),
            p + "attn.x_proj.0.linear.weight": w1.reshape(hidden, 5, rank)[:, order].reshape(hidden, mix5).t(),
            p + "attn.x_proj.2.weight": w2[order].permute(2, 0, 1).reshape(hidden, mix5),
            p + "attn.x_bias": torch.stack([flat(sd[att + f"time_maa_{g}"]) for g in FLA_MIX_GROUPS]),
            p + "attn.r_proj.linear.weight": sd[att + "receptance.weight"],
            p + "attn.k_proj.linear.weight": sd[att + "key.weight"],
            p + "attn.v_proj.linear.weight": sd[att + "value.weight"],
            p + "attn.g_proj.linear.weight": sd[att + "gate.weight"],
            p + "attn.w_proj.linear.lora.0.weight": sd[att + "time_decay_w1"].t(),
            p + "attn.w_proj.linear.lora.2.weight": sd[att + "time_decay_w2"].t(),
            p + "attn.w_proj.linear.lora.2.bias": flat(sd[att + "time_decay"]),
            p + "attn.bonus": sd[att + "time_faaaa"],
            p + "attn.g_norm.weight": sd[att + "ln_x.weight"], p + "attn.g_norm.bias": sd[att + "ln_x.bias"],
            p + "attn.o_proj.weight": sd[att + "output.weight"],
            p + "ffn.key.mu": flat(sd[ffn + "time_maa_k"]),
            p + "ffn.key.linear.weight": sd[ffn + "key.weight"],
            p + "ffn.value.weight": sd[ffn + "value.weight"],
            p + "ffn.receptance.mu": flat(sd[ffn + "time_maa_r"]),
            p + "ffn.receptance.linear.weight": sd[ffn + "receptance.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}



def fla_to_blinkdl_state_dict(sd: dict[str, torch.Tensor], num_layers: int | None = None) -> dict[str, torch.Tensor]:
    """fla / auroralong `Rwkv6ForCausalLM` tensors -> BlinkDL RWKV-6 tensors; the exact inverse of
    `blinkdl_to_fla_state_dict` (names, shapes and values; dtypes kept), e.g. for the `rwkv` package.

    `lm_head.weight` becomes `head.weight` when present; per-channel vectors become BlinkDL's [1, 1, C]. A tensor of
    the layout missing from `sd` is a KeyError naming it; tensors outside the layout are not carried over.
    """
    if num_layers is None:
        num_layers = count_layers(sd, "<state dict>")
    channel = lambda t: t.reshape(1, 1, -1)  # noqa: E731 - [C] -> [1, 1, C]
    out = {
        "emb.weight": sd["model.embeddings.weight"],
        "blocks.0.ln0.weight": sd["model.layers.0.pre_norm.weight"],
        "blocks.0.ln0.bias": sd["model.layers.0.pre_norm.bias"],
        "ln_out.weight": sd["model.norm.weight"],
        "ln_out.bias": sd["model.norm.bias"],
    }
    if "lm_head.weight" in sd:
        out["head.weight"] = sd["lm_head.weight"]
    order = list(BLINKDL_GROUP_FROM_FLA)
    for i in range(num_layers):
        b, att, ffn, p = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"model.layers.{i}."
        w1 = sd[p + "attn.x_proj.0.linear.weight"]  # [5R, C], groups r,w,k,v,g
        w2 = sd[p + "attn.x_proj.2.weight"]  # [C, 5R], groups r,w,k,v,g
        mix5, hidden = w1.shape
        rank = mix5 // 5
        x_bias = sd[p + "attn.x_bias"]  # [5, C], groups r,w,k,v,g
        out.update({
            b + "ln1.weight": sd[p + "attn_norm.weight"], b + "ln1.bias": sd[p + "attn_norm.bias"],
            b + "ln2.weight": sd[p + "ffn_norm.weight"], b + "ln2.bias": sd[p + "ffn_norm.bias"],
            att + "time_maa_x": channel(sd[p + "attn.x_proj.0.mu"]),
            **{att + f"time_maa_{g}": channel(x_bias[n]) for n, g in enumerate(FLA_MIX_GROUPS)},
            att + "time_maa_w1": w1.reshape(5, rank, hidden)[order].reshape(mix5, hidden).t(),  # [C, 5R], w,k,v,r,g
            att + "time_maa_w2": w2.reshape(hidden, 5, rank)[:, order].permute(1, 2, 0),  # [5, R, C], w,k,v,r,g
            att + "time_decay": channel(sd[p + "attn.w_proj.linear.lora.2.bias"]),
            att + "time_decay_w1": sd[p + "attn.w_proj.linear.lora.0.weight"].t(),  # [C, D]
            att + "time_decay_w2": sd[p + "attn.w_proj.linear.lora.2.weight"].t(),  # [D, C]
            att + "time_faaaa": sd[p + "attn.bonus"],  # [H, K]
            att + "receptance.weight": sd[p + "attn.r_proj.linear.weight"],
            att + "key.weight": sd[p + "attn.k_proj.linear.weight"],
            att + "value.weight": sd[p + "attn.v_proj.linear.weight"],
            att + "gate.weight": sd[p + "attn.g_proj.linear.weight"],
            att + "ln_x.weight": sd[p + "attn.g_norm.weight"], att + "ln_x.bias": sd[p + "attn.g_norm.bias"],
            att + "output.weight": sd[p + "attn.o_proj.weight"],
            ffn + "time_maa_k": channel(sd[p + "ffn.key.mu"]),
            ffn + "time_maa_r": channel(sd[p + "ffn.receptance.mu"]),
            ffn + "key.weight": sd[p + "ffn.key.linear.weight"],
            ffn + "value.weight": sd[p + "ffn.value.weight"],
            ffn + "receptance.weight": sd[p + "ffn.receptance.linear.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


__all__ = [
    "BLINKDL_GROUP_FROM_FLA",
    "BLINKDL_MIX_GROUPS",
    "FLA_GROUP_FROM_BLINKDL",
    "FLA_MIX_GROUPS",
    "blinkdl_name_to_hf",
    "blinkdl_state_dict_keys",
    "blinkdl_to_fla_state_dict",
    "blinkdl_to_hf_keys",
    "count_layers",
    "describe_tensor_names",
    "expected_blinkdl_shapes",
    "expected_fla_shapes",
    "fla_state_dict_keys",
    "fla_to_blinkdl_state_dict",
    "hf_to_blinkdl_keys",
    "naming_style",
    "read_geometry",
]
