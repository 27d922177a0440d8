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

With CUDA the same cases also run compiled on the GPU with `TRITON_F32_DEFAULT=ieee` (fp32 dot products, as in the
interpreter) against the same tolerances: this tells whether `chunk_rwkv6`'s larger difference on a GPU (up to 1.2%
measured on an H200, ~100x what TF32 explains in the interpreter) comes from TF32 alone; and with Triton's default
(TF32) against tests/test_gpu.py's chunk tolerance.
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
TF32_CHUNK_TOLERANCE = 2e-2  # tests/test_gpu.py's CHUNK_TOLERANCE (the H200 measured up to 1.2e-2 on logits)


def run_kernels(device: str) -> dict:
    """In the subprocess (the interpreter on "cpu", compiled on "cuda"): each case's relative errors against
    `wkv6_reference` in fp64."""
    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        patch_the_interpreter()
    from auroralong_hf.modeling.wkv6 import wkv6_fla as fla_kernels
    from auroralong_hf.modeling.wkv6 import wkv6_reference

    def inputs(seq_len, heads=2, dim=64):
        g = torch.Generator().manual_seed(0)
        r, k, v = (torch.randn(1, seq_len, heads, dim, generator=g) for _ in range(3))
        x = torch.empty(1, seq_len, heads, dim).uniform_(-6, -1, generator=g)  # Finch-like: log w = -exp(x)
        fast = torch.rand(heads, dim, generator=g) < 0.1
        x = torch.where(fast, torch.empty(1, seq_len, heads, dim).uniform_(2, 3, generator=g), x)
        u = torch.randn(heads, dim, generator=g) * 0.5
        state = torch.randn(1, heads, dim, dim, generator=g) * 0.5
        return tuple(t.to(device) for t in (r, k, v, -x.exp(), u, state))

    def relative(ours, exact):
        return float((ours.double() - exact).abs().max() / exact.abs().max())

    def wkv6_fla(*args):  # fla's kernels, their outputs on the reference's device
        return tuple(t.cpu() for t in fla_kernels(*args))

    results = {}
    for case, seq_len in (("chunk", 65), ("fused_recurrent", 20)):
        r, k, v, log_w, u, state = inputs(seq_len)
        o_ref, s_ref = wkv6_reference(*(t.cpu().double() for t in (r, k, v, log_w, u, state)))
        o, s = wkv6_fla(r, k, v, log_w, u, state)
        results[case] = {"output": relative(o, o_ref), "state": relative(s, s_ref)}
        o_none, s_none = wkv6_fla(r, k, v, log_w, u)
        o_zero, s_zero = wkv6_fla(r, k, v, log_w, u, torch.zeros_like(state))
        results[case]["none_is_zero_state"] = bool(torch.equal(o_none, o_zero) and torch.equal(s_none, s_zero))

    r, k, v, log_w, u, state = inputs(20)
    r, k, v, u = (t.bfloat16() for t in (r, k, v, u))
    _, s_ref = wkv6_reference(*(t.cpu().double() for t in (r, k, v, log_w, u, state)))
    _, s = wkv6_fla(r, k, v, log_w, u, state)
    results["bf16_fused_recurrent_state"] = relative(s, s_ref)
    return results


def patch_the_interpreter():
    """What fla's kernels need to run in Triton's interpreter (see the module docstring)."""
    import numpy as np
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


def run_in_subprocess(device: str, **env) -> dict:
    """`run_kernels(device)` in a fresh process (Triton reads these settings before compiling anything)."""
    for package in ("triton", "fla"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package} (flash-linear-attention) for its Triton kernels")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run([sys.executable, __file__, device], env=environment, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interpreted():
    return run_in_subprocess("cpu", TRITON_INTERPRET="1")


@pytest.fixture(scope="module")
def compiled_ieee():
    if not torch_cuda_available():
        pytest.skip("needs a CUDA device (fla's kernels compiled)")
    return run_in_subprocess("cuda", TRITON_F32_DEFAULT="ieee")


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


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


def test_on_the_gpu_with_fp32_dots_the_kernels_match_as_in_the_interpreter(compiled_ieee):
    """If this fails while the interpreter's tests pass, the GPU's difference is not TF32's: a GPU-only cause."""
    assert compiled_ieee["chunk"]["output"] <= CHUNK_OUTPUT_TOLERANCE, compiled_ieee
    assert compiled_ieee["chunk"]["state"] <= CHUNK_STATE_TOLERANCE, compiled_ieee
    assert compiled_ieee["fused_recurrent"]["output"] <= FUSED_RECURRENT_TOLERANCE, compiled_ieee
    assert compiled_ieee["fused_recurrent"]["state"] <= FUSED_RECURRENT_TOLERANCE, compiled_ieee
    assert compiled_ieee["bf16_fused_recurrent_state"] <= BF16_STATE_TOLERANCE, compiled_ieee


def test_on_the_gpu_with_tf32_dots_the_chunk_kernel_stays_within_its_tolerance():
    if not torch_cuda_available():
        pytest.skip("needs a CUDA device (fla's kernels compiled)")
    errors = run_in_subprocess("cuda")["chunk"]
    assert max(errors["output"], errors["state"]) <= TF32_CHUNK_TOLERANCE, errors


if __name__ == "__main__":
    print(json.dumps(run_kernels(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
