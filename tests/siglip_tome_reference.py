"""A deliberately plain reference of sorted token merging (S-ToMe) inside SigLIP's vision tower, for the tests.

Written from the rules (frame by frame, layer by layer, pair by pair, with Python loops and small tensor ops) and
independent of auroralong_hf.modeling.modeling_siglip_tome. It reads the weights of any module laid out like
transformers' SiglipVisionModel (embeddings, encoder.layers[i], post_layernorm, head) and computes in float64.
"""

import math

import torch

NEG_INF = float("-inf")


def _f64(tensor):
    return tensor.detach().to(torch.float64)


def _linear(x, linear):
    return x @ _f64(linear.weight).T + _f64(linear.bias)


def _layer_norm(x, norm):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * _f64(norm.weight) + _f64(norm.bias)


def _activation(x, name):
    if name == "gelu_pytorch_tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    raise NotImplementedError(f"reference has no activation {name!r}")


def _softmax(logits):
    """Softmax over the last axis (the keys), spelled out."""
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _mlp(x, mlp, act):
    return _linear(_activation(_linear(x, mlp.fc1), act), mlp.fc2)


def reference_embeddings(embeddings, pixels, patch_size):
    """[C, H, W] pixels -> [N, D] patch embeddings in raster order, one patch at a time."""
    weight = _f64(embeddings.patch_embedding.weight)  # [D, C, p, p]
    bias = _f64(embeddings.patch_embedding.bias)
    positions = _f64(embeddings.position_embedding.weight)
    pixels = pixels.to(torch.float64)
    grid_h, grid_w = pixels.shape[1] // patch_size, pixels.shape[2] // patch_size
    rows = []
    for i in range(grid_h):
        for j in range(grid_w):
            patch = pixels[:, i * patch_size : (i + 1) * patch_size, j * patch_size : (j + 1) * patch_size]
            rows.append((weight * patch).sum(dim=(1, 2, 3)) + bias + positions[i * grid_w + j])
    return torch.stack(rows)


def reference_attention(x, attn, num_heads, sizes, proportional):
    """x [T, D] (already layer-normed) -> (attention output [T, D], keys [T, D]); one head at a time."""
    q, k, v = _linear(x, attn.q_proj), _linear(x, attn.k_proj), _linear(x, attn.v_proj)
    head_dim = x.shape[1] // num_heads
    log_sizes = torch.log(torch.tensor(sizes, dtype=torch.float64))
    heads = []
    for h in range(num_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        logits = q[:, cols] @ k[:, cols].T * head_dim**-0.5
        if proportional:
            logits = logits + log_sizes[None, :]
        weights = _softmax(logits)
        heads.append(weights @ v[:, cols])
    return _linear(torch.cat(heads, dim=1), attn.out_proj), k


def _cosine(a, b):
    """Cosine similarity of two lists of Python floats (float64), term by term."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def reference_merge(metric, xs, sizes, positions, sources, r, protect):
    """One bipartite soft matching step on the current order.

    metric [T, d]; xs a list of T [D] tensors; sizes/positions lists of ints; sources a list of sets of patches.
    Returns the surviving tokens (current order, merged A tokens removed) and the smallest decision margin
    (gap between the chosen and the runner-up score, for the partner choice and for the r-th/(r+1)-th pick).
    """
    count = len(xs)
    metric = metric.tolist()
    a_tokens, b_tokens = list(range(0, count, 2)), list(range(1, count, 2))
    best_score, best_partner, partner_margin = [], [], []
    for a in a_tokens:
        if protect and a == 0:
            best_score.append(NEG_INF)
            best_partner.append(0)
            partner_margin.append(math.inf)
            continue
        top, runner_up, partner = NEG_INF, NEG_INF, None
        for j, b in enumerate(b_tokens):
            score = _cosine(metric[a], metric[b])
            if score > top:  # strict: on a tie the lower B index stays
                top, runner_up, partner = score, top, j
            elif score > runner_up:
                runner_up = score
        best_score.append(top)
        best_partner.append(partner)
        partner_margin.append(top - runner_up)

    ranking = sorted(range(len(a_tokens)), key=lambda i: (-best_score[i], i))
    chosen = ranking[:r]
    assert all(best_score[i] > NEG_INF for i in chosen), "the schedule asked to merge the protected token"
    margins = [partner_margin[i] for i in chosen]
    if r < len(ranking) and best_score[ranking[r]] > NEG_INF:
        margins.append(best_score[ranking[r - 1]] - best_score[ranking[r]])

    xs, sizes, positions, sources = list(xs), list(sizes), list(positions), [set(s) for s in sources]
    for j, b in enumerate(b_tokens):
        incoming = [a_tokens[i] for i in chosen if best_partner[i] == j]
        if not incoming:
            continue
        total = sizes[b] * xs[b]
        for a in incoming:
            total = total + sizes[a] * xs[a]
        new_size = sizes[b] + sum(sizes[a] for a in incoming)
        xs[b] = total / new_size
        sizes[b] = new_size
        positions[b] = min([positions[b]] + [positions[a] for a in incoming])
        for a in incoming:
            sources[b] |= sources[a]

    gone = {a_tokens[i] for i in chosen}
    keep = [t for t in range(count) if t not in gone]
    return (
        [xs[t] for t in keep],
        [sizes[t] for t in keep],
        [positions[t] for t in keep],
        [sources[t] for t in keep],
        min(margins, default=math.inf),
    )


def reference_order(sizes, positions, protect, sort, seed, layer):
    """Indices of the tokens in their new order."""
    first = [0] if protect else []
    others = list(range(1, len(sizes))) if protect else list(range(len(sizes)))
    if sort == "ascending":
        others.sort(key=lambda t: (sizes[t], positions[t]))
    elif sort == "descending":
        others.sort(key=lambda t: (-sizes[t], positions[t]))
    elif sort == "none":
        others.sort(key=lambda t: positions[t])
    elif sort == "random":
        others.sort(key=lambda t: positions[t])
        generator = torch.Generator().manual_seed(seed + layer)
        permutation = torch.randperm(len(others), generator=generator).tolist()
        others = [others[i] for i in permutation]
    else:
        raise ValueError(sort)
    return first + others


def reference_pooling_head(head, tokens, num_heads, act):
    """SigLIP's attention-pool head (nn.MultiheadAttention with one probe query), one head at a time."""
    dim = tokens.shape[1]
    w_q, w_k, w_v = _f64(head.attention.in_proj_weight).split(dim)
    b_q, b_k, b_v = _f64(head.attention.in_proj_bias).split(dim)
    probe = _f64(head.probe).reshape(dim)
    q, k, v = w_q @ probe + b_q, tokens @ w_k.T + b_k, tokens @ w_v.T + b_v
    head_dim = dim // num_heads
    heads = []
    for h in range(num_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        heads.append(_softmax(k[:, cols] @ q[cols] * head_dim**-0.5) @ v[:, cols])
    pooled = _linear(torch.cat(heads), head.attention.out_proj)
    return pooled + _mlp(_layer_norm(pooled, head.layernorm), head.mlp, act)


def reference_frame(model, config, pixels, schedule=None):
    """Everything the tower computes for one frame [C, H, W], as a dict of float64 tensors and Python lists."""
    schedule = config.merge_schedule() if schedule is None else schedule
    protect = config.protect_first_token
    x = reference_embeddings(model.embeddings, pixels, config.patch_size)
    num_patches = x.shape[0]
    xs = list(x)
    sizes, positions, sources = [1] * num_patches, list(range(num_patches)), [{n} for n in range(num_patches)]
    hidden_states = [x]
    margin = math.inf
    for layer_index, layer in enumerate(model.encoder.layers):
        x = torch.stack(xs)
        attention, keys = reference_attention(
            _layer_norm(x, layer.layer_norm1), layer.self_attn, config.num_attention_heads, sizes,
            config.proportional_attention,
        )
        x = x + attention
        xs = list(x)
        r = schedule[layer_index]
        if r > 0:
            metric = keys.reshape(len(xs), config.num_attention_heads, -1).mean(dim=1)
            xs, sizes, positions, sources, layer_margin = reference_merge(
                metric, xs, sizes, positions, sources, r, protect
            )
            margin = min(margin, layer_margin)
            order = reference_order(sizes, positions, protect, config.tome_sort, config.tome_random_seed, layer_index)
            xs, sizes = [xs[t] for t in order], [sizes[t] for t in order]
            positions, sources = [positions[t] for t in order], [sources[t] for t in order]
        x = torch.stack(xs)
        x = x + _mlp(_layer_norm(x, layer.layer_norm2), layer.mlp, config.hidden_act)
        xs = list(x)
        hidden_states.append(x)

    last = _layer_norm(torch.stack(xs), model.post_layernorm)
    if config.drop_first_token:
        last, sizes, positions, sources = last[1:], sizes[1:], positions[1:], sources[1:]
    source_map = torch.zeros(len(sources), num_patches, dtype=torch.bool)
    for t, patches in enumerate(sources):
        source_map[t, sorted(patches)] = True
    pooled = None
    if config.vision_use_head:
        pooled = reference_pooling_head(model.head, last, config.num_attention_heads, config.hidden_act)
    return {
        "hidden_states": hidden_states,
        "last_hidden_state": last,
        "pooler_output": pooled,
        "token_sizes": sizes,
        "token_positions": positions,
        "merge_sources": source_map,
        "margin": margin,
    }


def reference_forward(model, config, pixel_values, schedule=None):
    """Frames are the batch and never interact: one `reference_frame` per frame."""
    return [reference_frame(model, config, frame, schedule) for frame in pixel_values]
