"""The RWKV-6 WKV operator: a plain per-token reference, the pure-PyTorch chunked form, and fla's kernels.

All three compute, per head, with a [K, V] state S (fp32) and per-channel log-decay w_t <= 0:

    o_t     = r_t^T (S_t + diag(u) k_t v_t^T)
    S_{t+1} = diag(exp(w_t)) S_t + k_t v_t^T

Layout: r, k, log_w [B, T, H, K]; v [B, T, H, V]; u [H, K]; state [B, H, K, V] fp32.
Outputs: o [B, T, H, V] fp32 and the final state [B, H, K, V] fp32.
A padding position is a token with k = 0 and log_w = 0: it leaves the state exactly unchanged.
"""

import torch


def _compute_dtype(tensor):
    """fp32 at least (bf16/fp16 inputs are upcast); fp64 stays fp64 so the tests can check exactness."""
    return torch.promote_types(tensor.dtype, torch.float32)


def wkv6_step(r, k, v, log_w, u, state):
    """One token: r, k, log_w [B, H, K], v [B, H, V], state [B, H, K, V] -> (o [B, H, V], new state)."""
    dtype = torch.promote_types(_compute_dtype(r), state.dtype)
    r, k, v, log_w, u, state = (t.to(dtype) for t in (r, k, v, log_w, u, state))
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # [B, H, K, V]
    o = (r.unsqueeze(-2) @ (state + u.unsqueeze(-1) * kv)).squeeze(-2)
    new_state = log_w.exp().unsqueeze(-1) * state + kv
    return o, new_state


def wkv6_reference(r, k, v, log_w, u, state=None):
    """The recurrence as written, one token at a time: slow, obviously right; the tests' yardstick."""
    batch, seq_len, heads, key_dim = r.shape
    if state is None:
        state = r.new_zeros(batch, heads, key_dim, v.shape[-1], dtype=_compute_dtype(r))
    outputs = []
    for t in range(seq_len):
        o, state = wkv6_step(r[:, t], k[:, t], v[:, t], log_w[:, t], u, state)
        outputs.append(o)
    return torch.stack(outputs, dim=1), state


# Largest |exponent| the chunked form lets a factor reach: exp(60) ~ 1e26 and exp(-60) ~ 1e-26 stay normal fp32.
_SAFE_EXPONENT = {torch.float32: 60.0, torch.float64: 600.0}


def _pairwise_chunk_scores(r, k, decay_before, decay_through):
    """scores[t, s] = sum_c r_t k_s exp(decay_before_t - decay_through_s), s < t, formed channel by channel.

    Exact for any decay, but [.., L, L, K] in memory: used only for chunks whose decay is too strong to factor.
    """
    length = r.shape[-2]
    causal = torch.ones(length, length, dtype=torch.bool, device=r.device).tril(-1)
    pairwise = decay_before.unsqueeze(-2) - decay_through.unsqueeze(-3)  # [.., L(t), L(s), K]
    pairwise = pairwise.masked_fill(~causal[:, :, None], float("-inf")).exp()
    return torch.einsum("...tsk,...sk->...ts", r.unsqueeze(-2) * pairwise, k)


def wkv6_chunked(r, k, v, log_w, u, state=None, chunk_size=32, chunks_per_segment=64):
    """Exact chunked-parallel WKV: matrix products inside chunks, the state carried across chunks.

    Inside a chunk, the decay of k_s v_s^T seen at t > s is exp(P_t - Q_s) (P, Q: the chunk's cumulative
    log-decay before / through a position), factored as exp(P_t) * exp(-Q_s) so the scores are one matmul.
    That factoring overflows when a channel's decay over the whole chunk exceeds _SAFE_EXPONENT; such chunks
    (strongly forgetting heads of trained checkpoints) take the exact pairwise form instead, so the result is
    exact for any decay. Chunks are processed `chunks_per_segment` at a time to bound memory.
    """
    batch, seq_len, heads, key_dim = r.shape
    value_dim = v.shape[-1]
    dtype = _compute_dtype(r)
    safe_exponent = _SAFE_EXPONENT[dtype]
    if state is None:
        state = r.new_zeros(batch, heads, key_dim, value_dim, dtype=dtype)
    state = state.to(dtype)
    u = u.to(dtype)

    # Round T up to whole chunks with padding tokens (k = 0, log_w = 0: the state passes through unchanged).
    padded_len = -(-seq_len // chunk_size) * chunk_size
    pad = padded_len - seq_len

    def chunked(t):  # [B, T, H, D] -> [B, H, N, L, D]
        t = torch.nn.functional.pad(t.to(dtype), (0, 0, 0, 0, 0, pad))
        return t.view(batch, padded_len // chunk_size, chunk_size, heads, -1).permute(0, 3, 1, 2, 4)

    r, k, v, log_w = chunked(r), chunked(k), chunked(v), chunked(log_w)
    strictly_causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=r.device).tril(-1)

    outputs = []
    for seg in range(0, r.shape[2], chunks_per_segment):
        r_s, k_s, v_s, w_s = (t[:, :, seg:seg + chunks_per_segment] for t in (r, k, v, log_w))
        decay_through = w_s.cumsum(dim=3)  # Q_t = sum_{j <= t} w_j within the chunk, <= 0
        # P_t = sum_{j < t} w_j, taken from Q (not Q - w) so that P_t - Q_{t-1} is exactly 0
        decay_before = torch.nn.functional.pad(decay_through[:, :, :, :-1], (0, 0, 1, 0))
        chunk_decay = decay_through[:, :, :, -1]  # [B, H, n, K]

        r_decayed = r_s * decay_before.exp()  # r_t exp(P_t): also reads the incoming state below
        k_grown = k_s * (-decay_through).clamp(max=safe_exponent).exp()  # k_s exp(-Q_s)
        scores = (r_decayed @ k_grown.transpose(-1, -2)) * strictly_causal
        # what each chunk adds to the state by its end: sum_s exp(Q_end - Q_s) k_s v_s^T
        k_to_end = k_grown * chunk_decay.exp().unsqueeze(3)
        unsafe = chunk_decay.amin(dim=-1) < -safe_exponent  # [B, H, n]
        if unsafe.any():
            # fp64 cumulative sums: their differences are the exponents, and strong decays make them large
            through = w_s[unsafe].double().cumsum(dim=-2)
            before = torch.nn.functional.pad(through[..., :-1, :], (0, 0, 1, 0))
            pairwise = _pairwise_chunk_scores(r_s[unsafe].double(), k_s[unsafe].double(), before, through)
            scores[unsafe] = pairwise.to(dtype)
            k_to_end[unsafe] = k_s[unsafe] * (through[..., -1:, :] - through).exp().to(dtype)
        bonus = (r_s * u[:, None, None] * k_s).sum(-1, keepdim=True)  # the current token's own k v^T, weighted by u
        o_s = scores @ v_s + bonus * v_s

        # the state entering each chunk
        chunk_kv = k_to_end.transpose(-1, -2) @ v_s  # [B, H, n, K, V]
        chunk_decay = chunk_decay.exp().unsqueeze(-1)  # [B, H, n, K, 1]
        states_in = []
        for n in range(r_s.shape[2]):
            states_in.append(state)
            state = chunk_decay[:, :, n] * state + chunk_kv[:, :, n]
        outputs.append(o_s + r_decayed @ torch.stack(states_in, dim=2))

    o = torch.cat(outputs, dim=2).permute(0, 2, 3, 1, 4).reshape(batch, padded_len, heads, value_dim)
    return o[:, :seq_len], state


def fla_is_available() -> bool:
    try:
        import fla.ops.rwkv6  # noqa: F401
    except ImportError:
        return False
    return True


def wkv6_fla(r, k, v, log_w, u, state=None):
    """fla's Triton kernels (CUDA only): fused recurrent for short inputs (decoding), chunked otherwise."""
    from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

    kernel = fused_recurrent_rwkv6 if r.shape[1] <= 64 else chunk_rwkv6
    o, final_state = kernel(
        r=r, k=k, v=v, w=log_w.to(r.dtype), u=u.to(r.dtype), scale=1.0,
        initial_state=state, output_final_state=True,
    )
    return o.float(), final_state.float()
