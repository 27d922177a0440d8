"""fla's Triton kernels, as `wkv6_fla` calls them, checked on CPU: Triton's interpreter (TRITON_INTERPRET=1) runs
them with numpy, so CI proves without a GPU that they compute this package's recurrence (`wkv6_reference`, fp64).

The interpreter's dot products are exact fp32 (no TF32: on a GPU they are TF32, see tests/test_gpu.py), so these
tolerances are far tighter than the GPU's. Inputs: B=1, H=2, K=V=64, 10% fast-forgetting channels (log-decay per
token down to -20, as trained checkpoints have), a carried state. "Relative" is max |fla - exact| / max |exact|.
- `chunk_rwkv6` (T=65: a full chunk of 64 and a 1-token one): output measured 1.8e-5 -> asserted <= 1e-4, final
  state 7.6e-7 -> <= 5e-6. The output's error comes from the fast channels: fla's kernels take each within-chunk
  decay as the difference of two cumulative sums (of up to ~1,800 in log2 units there), which fp32 resolves to
  ~1e-4; without fast channels the output agrees to 4e-7.
- `fused_recurrent_rwkv6` (T=20): output and state measured 2.4e-7 and 2.6e-7 -> asserted <= 2e-6.
- bf16 r/k/v/u into `fused_recurrent_rwkv6`: its final state against the exact recurrence of the same bf16 inputs
  measured 2.5e-7 (the log-decay goes in as fp32; cast to bf16, as before, 7.2e-4) -> asserted <= 2e-6.
- a missing state (the first piece of a stream) gives the same result as a zero state, bit for bit.

The interpreter cannot benchmark configs (no driver), so each autotuned kernel runs its first config; and fla's
kernels call `.to()` on loop indices, which compiled Triton gives but the interpreter's Python ints lack.
One run takes about 30 s on two CPU cores (most of it importing torch, Triton and fla).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

TIMEOUT_S = 300
CHUNK_OUTPUT_TOLERANCE = 1e-4  # measured 1.8e-5
CHUNK_STATE_TOLERANCE = 5e-6  # measured 7.6e-7
FUSED_RECURRENT_TOLERANCE = 2e-6  # measured 2.4e-7 (output), 2.6e-7 (state)
BF16_STATE_TOLERANCE = 2e-6  # measured 2.5e-7 (7.2e-4 with a bf16 log-decay)


def run_kernels() -> dict:
    """In the interpreter (the subprocess): each case's relative errors against `wkv6_reference` in fp64."""
    import numpy as np
    import torch
    import triton.language as tl
    from triton.runtime import autotuner, interpreter

    autotuner.Autotuner.prune_configs = lambda self, kwargs: [self.configs[0]]

    class LoopIndex(int):
        def to(self, dtype):
            np_dtype = np.int64 if dtype == tl.int64 else np.int32
            return tl.tensor(interpreter.TensorHandle(np.array([int(self)], dtype=np_dtype), dtype), dtype)

    import fla.ops.rwkv6  # noqa: F401

    for name, module in list(sys.modules.items()):
        if name.startswith("fla.ops"):
            module.range = lambda *args: map(LoopIndex, range(*args))

    from auroralong_hf.modeling.wkv6 import wkv6_fla, wkv6_reference

    def inputs(seq_len, heads=2, dim=64):
        g = torch.Generator().manual_seed(0)
        r, k, v = (torch.randn(1, seq_len, heads, dim, generator=g) for _ in range(3))
        x = torch.empty(1, seq_len, heads, dim).uniform_(-6, -1, generator=g)  # Finch-like: log w = -exp(x)
        fast = torch.rand(heads, dim, generator=g) < 0.1
        x = torch.where(fast, torch.empty(1, seq_len, heads, dim).uniform_(2, 3, generator=g), x)
        u = torch.randn(heads, dim, generator=g) * 0.5
        state = torch.randn(1, heads, dim, dim, generator=g) * 0.5
        return r, k, v, -x.exp(), u, state

    def relative(ours, exact):
        return float((ours.double() - exact).abs().max() / exact.abs().max())

    results = {}
    for case, seq_len in (("chunk", 65), ("fused_recurrent", 20)):
        r, k, v, log_w, u, state = inputs(seq_len)
        o_ref, s_ref = wkv6_reference(*(t.double() for t in (r, k, v, log_w, u, state)))
        o, s = wkv6_fla(r, k, v, log_w, u, state)
        results[case] = {"output": relative(o, o_ref), "state": relative(s, s_ref)}
        o_none, s_none = wkv6_fla(r, k, v, log_w, u)
        o_zero, s_zero = wkv6_fla(r, k, v, log_w, u, torch.zeros_like(state))
        results[case]["none_is_zero_state"] = bool(torch.equal(o_none, o_zero) and torch.equal(s_none, s_zero))

    r, k, v, log_w, u, state = inputs(20)
    r, k, v, u = (t.bfloat16() for t in (r, k, v, u))
    _, s_ref = wkv6_reference(*(t.double() for t in (r, k, v, log_w, u, state)))
    _, s = wkv6_fla(r, k, v, log_w, u, state)
    results["bf16_fused_recurrent_state"] = relative(s, s_ref)
    return results


@pytest.fixture(scope="module")
def interpreted():
    for package in ("triton", "fla"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package} (flash-linear-attention) for its Triton kernels")
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_chunk_rwkv6_matches_the_recurrence(interpreted):
    errors = interpreted["chunk"]
    assert errors["output"] <= CHUNK_OUTPUT_TOLERANCE, errors
    assert errors["state"] <= CHUNK_STATE_TOLERANCE, errors


def test_fused_recurrent_rwkv6_matches_the_recurrence(interpreted):
    errors = interpreted["fused_recurrent"]
    assert errors["output"] <= FUSED_RECURRENT_TOLERANCE, errors
    assert errors["state"] <= FUSED_RECURRENT_TOLERANCE, errors


def test_bf16_inputs_keep_an_exact_state(interpreted):
    assert interpreted["bf16_fused_recurrent_state"] <= BF16_STATE_TOLERANCE, interpreted


def test_missing_state_is_a_zero_state(interpreted):
    assert interpreted["chunk"]["none_is_zero_state"] and interpreted["fused_recurrent"]["none_is_zero_state"]


if __name__ == "__main__":
    print(json.dumps(run_kernels()))
