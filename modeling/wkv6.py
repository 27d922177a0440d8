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
    # addcmul: a + b * c in one kernel (this is every decoded token's WKV on the PyTorch path)
    o = (r.unsqueeze(-2) @ torch.addcmul(state, u.unsqueeze(-1), kv)).squeeze(-2)  # r^T (S + diag(u) k v^T)
    new_state = torch.addcmul(kv, log_w.exp().unsqueeze(-1), state)  # diag(exp(w)) S + k v^T
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
# Decay factors below exp(-60) are raised to it: far below fp32 resolution relative to the terms they scale, and it
# keeps denormal numbers (which CPUs process ~100x slower) out of the state.
_SAFE_EXPONENT = {torch.float32: 60.0, torch.float64: 600.0}


def _fast_channel_terms(r, k, log_w, fast, safe_exponent):
    """The chunk terms of `fast` channels (decay over the chunk beyond exp(-safe_exponent)), formed one by one.

    r, k, log_w [B, H, n, L, K]; fast [B, H, n, K]. Those channels forget too fast for the factored form, so their
    token-to-token decays are formed pairwise, exponents in fp64 (differences of large cumulative sums).
    Returns the M fast (b, h, n, channel) indices, score terms [M, L, L] (r_t k_s exp(sum_{s<j<t} w_j), s < t)
    and the keys decayed to the chunk's end [M, L] (k_s exp(sum_{j>s} w_j)).
    """
    b, h, n, c = fast.nonzero(as_tuple=True)
    length = r.shape[3]
    through = log_w[b, h, n, :, c].double().cumsum(dim=-1)  # [M, L]
    before = torch.nn.functional.pad(through[:, :-1], (1, 0))
    strictly_causal = torch.ones(length, length, dtype=torch.bool, device=r.device).tril(-1)
    exponent = (before.unsqueeze(2) - through.unsqueeze(1)).clamp(min=-safe_exponent)
    decay = exponent.masked_fill(~strictly_causal, float("-inf")).exp().to(r.dtype)  # [M, L(t), L(s)]
    keys = k[b, h, n, :, c]
    terms = r[b, h, n, :, c].unsqueeze(2) * keys.unsqueeze(1) * decay
    keys_to_end = keys * (through[:, -1:] - through).clamp(min=-safe_exponent).exp().to(r.dtype)
    return (b, h, n, c), terms, keys_to_end


def wkv6_chunked(r, k, v, log_w, u, state=None, chunk_size=16, chunks_per_segment=64):
    """Exact chunked-parallel WKV: matrix products inside chunks, the state carried across chunks.

    Inside a chunk, the decay of k_s v_s^T seen at t > s is exp(P_t - Q_s) (P, Q: the chunk's cumulative
    log-decay before / through a position), factored as exp(P_t) * exp(-Q_s) so the scores are one matmul.
    The factoring would overflow for a channel whose decay over the chunk exceeds exp(-_SAFE_EXPONENT); those
    channels (fast-forgetting ones of trained checkpoints) are left out of the matmul and their terms formed one by
    one, so the result is exact for any decay. Chunks are processed `chunks_per_segment` at a time to bound memory.
    """
    batch, seq_len, heads, key_dim = r.shape
    value_dim = v.shape[-1]
    dtype = _compute_dtype(r)
    safe_exponent = _SAFE_EXPONENT[dtype]
    if state is None:
        state = r.new_zeros(batch, heads, key_dim, value_dim, dtype=dtype)
    state = state.to(dtype)
    u = u.to(dtype)
    log_w = log_w.clamp(min=-safe_exponent)  # a per-step factor below exp(-60) is as good as exp(-60)

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
        fast = chunk_decay < -safe_exponent  # [B, H, n, K]

        r_decayed = r_s * decay_before.clamp(min=-safe_exponent).exp()  # r_t exp(P_t): also reads the state
        k_grown = k_s * (-decay_through).clamp(max=safe_exponent).exp()  # k_s exp(-Q_s), finite for every channel
        k_grown = k_grown.masked_fill(fast.unsqueeze(3), 0.0)
        scores = (r_decayed @ k_grown.transpose(-1, -2)) * strictly_causal  # [B, H, n, L, L]
        # what each chunk adds to the state by its end is sum_s exp(Q_end - Q_s) k_s v_s^T
        k_to_end = k_s * (chunk_decay.unsqueeze(3) - decay_through).exp()
        if fast.any():
            (b, h, n, c), terms, keys_to_end = _fast_channel_terms(r_s, k_s, w_s, fast, safe_exponent)
            scores = scores.index_put((b, h, n), terms, accumulate=True)
            k_to_end[b, h, n, :, c] = keys_to_end
        bonus = (r_s * u[:, None, None] * k_s).sum(-1, keepdim=True)  # the current token's own k v^T, weighted by u
        o_s = scores @ v_s + bonus * v_s

        # the state entering each chunk
        chunk_kv = k_to_end.transpose(-1, -2) @ v_s  # [B, H, n, K, V]
        chunk_decay = chunk_decay.clamp(min=-safe_exponent).exp().unsqueeze(-1)  # [B, H, n, K, 1]
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
    """fla's Triton kernels (CUDA): fused recurrent for short inputs (decoding), chunked otherwise.

    The log-decay and the bonus go in as fp32 whatever r's dtype (the kernels read both in fp32; casting the
    log-decay to bf16 would round it to 8 mantissa bits before the kernels sum it: fused_recurrent_rwkv6's state
    then drifts by ~5e-4 relative per 64 tokens instead of being exact). A missing state goes in as zeros: the same
    result, and the first piece of a stream then shares later pieces' autotuned kernels (a None state is another
    autotune key and another compiled variant). Checked on CPU by tests/test_fla_interpreted.py (Triton's
    interpreter); on a GPU its dot products run in TF32 (see tests/test_gpu.py for the tolerances there).
    """
    from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

    if state is None:
        batch, _, heads, key_dim = r.shape
        state = r.new_zeros(batch, heads, key_dim, v.shape[-1], dtype=torch.float32)
    kernel = fused_recurrent_rwkv6 if r.shape[1] <= 64 else chunk_rwkv6
    o, final_state = kernel(
        r=r, k=k, v=v, w=log_w.float(), u=u.float(), scale=1.0,
        initial_state=state, output_final_state=True,
    )
    return o.float(), final_state.float()
