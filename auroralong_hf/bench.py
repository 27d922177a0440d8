"""`auroralong bench lm`: CPU speed of the RWKV-6 language model, measured side by side in one run.

Four figures, each against a goal, on random weights of the Finch 1.6B geometry (hidden 2048, 32 heads of 64,
FFN 7168, vocabulary 65536, LoRA ranks 32/64) with fewer layers:

1. the WKV operator: `wkv6_chunked` against two per-token loops (`wkv6_reference` and fla's
   `naive_recurrent_rwkv6`) at T=4096, H=32, K=64, fp32, with Finch-like decays (goal: >= 5x faster);
2. prefill tokens/s of `Rwkv6ForCausalLM` (pure-PyTorch path) against the `rwkv` package (BlinkDL's ChatRWKV)
   running the same weights exported as a BlinkDL `.pth` (goal: >= 1.5x), with a logits cross-check;
3. prefill time against the time of the same dense matmuls alone (goal: <= 1.25x);
4. one decode step against the time to stream the weights it reads once (goal: <= 1.25x).

Every contender runs with the same thread count, in `torch.inference_mode()`, after one warm-up, and with
denormals flushed to zero (or not: `--no-flush-denormal`) for all of them alike. The `rwkv` package runs in a
child process (its JIT switch is read at import time), one per JIT setting tried.

`auroralong bench vision` (`bench_vision`): frames/s of the S-ToMe vision tower (SigLIP-L/16-384 geometry less its
last layer, random fp32 weights, sdpa) at kept ratios 1.0, 0.5, 0.2 and 0.1, each against its analytic FLOP bound
(goal: at 0.1 the measured speed-up reaches 90% of the bound), and the share of matching + merging + sorting.

`auroralong bench memory` (`bench_memory`): peak memory of the streaming describe pipeline (prompt -> video chunks
through tower + projector into the RNN state -> answer) at 64, 256 and 1,024 frames, each length in a fresh process
(goal: peak at 1,024 frames <= 1.15x the peak at 64), plus one run through the real decoding path.
`auroralong bench latency` (`bench_latency`): the RWKV-6 language model, streaming, against a transformers Llama /
Qwen2 of the same shape (sdpa, KV cache) fed the same visual tokens, at 60 and 1,024 frames: memory and latency
ratios next to the paper's 34x and 8.13x.
`auroralong bench train` (`bench_train`): samples/s and peak memory of a language-stage training step (everything
trainable, kept ratio 0.1, AdamW) on a collator-made synthetic batch, gradient checkpointing off and on, each in a
fresh process.

This module imports only the standard library and torch at the top, so it can also run as a script: that is how
the child processes are started (`python bench.py --rwkv-worker SPEC`, `--memory-worker`, `--latency-worker`,
`--train-worker`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from auroralong_hf.modeling.streaming import DEFAULT_CHUNK_FRAMES

# goals of the four figures (and of the logits cross-check)
WKV_SPEEDUP_GOAL = 5.0
PREFILL_RATIO_GOAL = 1.5
GEMM_RATIO_GOAL = 1.25
DECODE_RATIO_GOAL = 1.25
LOGITS_TOLERANCE = 1e-3

# fla's (and this package's) order of the five token-shift LoRA groups, and BlinkDL's
_FLA_GROUPS = "rwkvg"
_BLINKDL_GROUPS = "wkvrg"


def add_bench_lm_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench lm`. Defaults: Finch 1.6B geometry, 2 layers; a few minutes on 2 CPU cores."""
    geometry = parser.add_argument_group("geometry (defaults: Finch 1.6B, fewer layers)")
    geometry.add_argument("--layers", type=int, default=2, help="number of blocks (default 2)")
    geometry.add_argument("--hidden-size", type=int, default=2048, help="model width C (default 2048)")
    geometry.add_argument("--head-size", type=int, default=64, help="WKV head size (default 64)")
    geometry.add_argument("--intermediate-size", type=int, default=None,
                          help="FFN width (default: Finch's int(C*3.5)//32*32)")
    geometry.add_argument("--vocab-size", type=int, default=65536, help="vocabulary (default 65536)")

    lengths = parser.add_argument_group("lengths and repeats")
    lengths.add_argument("--seq-len", type=int, default=4096, help="tokens of the WKV-operator figure (default 4096)")
    lengths.add_argument("--prefill-len", type=int, default=1024, help="tokens of the prefill figures (default 1024)")
    lengths.add_argument("--decode-prefix", type=int, default=16,
                         help="tokens prefilled before the decode steps are timed (default 16)")
    lengths.add_argument("--decode-steps", type=int, default=16, help="decode steps timed (default 16)")
    lengths.add_argument("--repeats", type=int, default=5,
                         help="timed runs of each contender after one warm-up; min and median are reported (default 5)")
    lengths.add_argument("--copy-mib", type=int, default=1024,
                         help="size of the tensor copied to measure memory bandwidth, MiB (default 1024)")

    run = parser.add_argument_group("run")
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    run.add_argument("--rwkv-jit", choices=("auto", "0", "1"), default="auto",
                     help="RWKV_JIT_ON for the `rwkv` package: auto tries both and reports the faster (default auto)")
    run.add_argument("--no-rwkv", action="store_true", help="skip the `rwkv` package contender")
    run.add_argument("--no-fla", action="store_true", help="skip fla's naive_recurrent_rwkv6 contender")
    run.add_argument("--no-flush-denormal", action="store_true",
                     help="leave denormal floats on (default: flushed to zero for every contender)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object on stdout (the table goes to stderr)")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# timing helpers


def _time_runs(fn, repeats: int, warmup: int = 1) -> dict:
    """Call fn `warmup` times untimed, then `repeats` times timed: {"min", "median", "runs"} in seconds."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return _summary(runs)


def _time_interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Like `_time_runs` for several contenders, taking turns run by run (A B C A B C ...), so that a slow phase of
    the machine hits all of them alike. Returns {name: {"min", "median", "runs"}}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: _summary(times) for name, times in runs.items()}


def _summary(runs: list[float]) -> dict:
    return {"min": min(runs), "median": statistics.median(runs), "runs": runs}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------------
# 1. the WKV operator


def finch_like_wkv_inputs(seq_len: int, heads: int, head_size: int, *, batch: int = 1, seed: int = 0):
    """r, k, v, log_w [B, T, H, K] and u [H, K] fp32 with Finch's decay range.

    The per-channel decay speed spans Finch's initialisation, -6 .. -1 across channels, plus N(0, 0.1) noise per
    token (the data-dependent part); log_w = -exp(w_raw), so per-step factors lie in about (0.69, 0.998).
    """
    g = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len, heads, head_size)
    r, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    speed = torch.linspace(-6.0, -1.0, heads * head_size).view(heads, head_size)
    log_w = -(speed + 0.1 * torch.randn(shape, generator=g)).exp()
    u = 0.5 * torch.randn(heads, head_size, generator=g)
    return r, k, v, log_w, u


def _bench_wkv(args, log) -> dict:
    from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config
    from auroralong_hf.modeling.wkv6 import wkv6_chunked, wkv6_reference

    chunk_size = Rwkv6Config.wkv_chunk_size  # the model's default
    heads = args.hidden_size // args.head_size
    r, k, v, log_w, u = finch_like_wkv_inputs(args.seq_len, heads, args.head_size, seed=args.seed)
    result = {"seq_len": args.seq_len, "heads": heads, "head_size": args.head_size, "batch": 1, "dtype": "float32",
              "chunk_size": chunk_size}
    outputs = {}

    def chunked():
        outputs["chunked"] = wkv6_chunked(r, k, v, log_w, u, chunk_size=chunk_size)

    def reference():
        outputs["reference"] = wkv6_reference(r, k, v, log_w, u)

    contenders = {"chunked": chunked, "reference": reference}
    result["fla_naive_s"] = None
    result["fla_note"] = None
    naive = None
    if args.no_fla:
        result["fla_note"] = "skipped (--no-fla)"
    else:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fla warns that Triton is unsupported on a CPU-only machine
                from fla.ops.rwkv6.recurrent_naive import naive_recurrent_rwkv6 as naive
        except ImportError as error:
            result["fla_note"] = f"fla not importable: {error}"
    if naive is not None:
        head_first = [t.transpose(1, 2).contiguous() for t in (r, k, v, log_w)]  # fla's naive form is [B, H, T, K]

        def fla_naive():
            outputs["fla"] = naive(*head_first, u, scale=1.0)

        contenders["fla_naive"] = fla_naive

    log(f"  WKV op, T={args.seq_len}: {', '.join(contenders)} (interleaved) ...")
    timings = _time_interleaved(contenders, args.repeats)
    for name, timing in timings.items():
        result[f"{name}_s"] = timing
    result["max_abs_diff_vs_reference"] = (outputs["chunked"][0] - outputs["reference"][0]).abs().max().item()
    if naive is not None:
        fla_o = outputs["fla"][0].transpose(1, 2)
        result["max_abs_diff_fla_vs_reference"] = (fla_o - outputs["reference"][0]).abs().max().item()

    for name, key in (("reference", "reference_s"), ("fla_naive", "fla_naive_s")):
        if result[key] is not None:
            result[f"speedup_vs_{name}"] = {
                stat: result[key][stat] / result["chunked_s"][stat] for stat in ("min", "median")
            }
    speedups = [result[f"speedup_vs_{name}"]["min"] for name in ("reference", "fla_naive")
                if f"speedup_vs_{name}" in result]
    result["goal"] = WKV_SPEEDUP_GOAL
    result["pass"] = min(speedups) >= WKV_SPEEDUP_GOAL
    return result


# ----------------------------------------------------------------------------------------------------------------
# the model and its BlinkDL export


def build_random_model(args):
    """Rwkv6ForCausalLM of the asked geometry with Finch's init, made a little less trivial (see below), fp32, eval.

    Finch's init leaves the token-shift LoRA nearly zero (W1 in +-1e-4), which would make the logits cross-check
    blind to a wrong group order in the export; its weights are therefore redrawn larger. Decays keep Finch's range.
    """
    from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config
    from auroralong_hf.modeling.modeling_rwkv6 import Rwkv6ForCausalLM

    torch.manual_seed(args.seed)
    config = Rwkv6Config(
        vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        head_size=args.head_size, intermediate_size=args.intermediate_size, wkv_backend="torch",
    )
    model = Rwkv6ForCausalLM(config).float().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.attn
            attn.x_proj[0].linear.weight.uniform_(-0.1, 0.1)
            attn.x_proj[2].weight.uniform_(-0.05, 0.05)
            attn.x_bias.add_(torch.empty_like(attn.x_bias).uniform_(-0.2, 0.2)).clamp_(0, 1)
            attn.w_proj.linear.lora[0].weight.uniform_(-0.05, 0.05)
    return model


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
    order = [_FLA_GROUPS.index(group) for group in _BLINKDL_GROUPS]
    for i in range(config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        a, att, ffn = src + "attn.", dst + "att.", dst + "ffn."
        for part in ("weight", "bias"):
            put(f"{dst}ln1.{part}", sd[f"{src}attn_norm.{part}"])
            put(f"{dst}ln2.{part}", sd[f"{src}ffn_norm.{part}"])
            put(f"{att}ln_x.{part}", sd[f"{a}g_norm.{part}"])

        put(att + "time_maa_x", channel_vector(sd[a + "x_proj.0.mu"]))
        for row, group in enumerate(_FLA_GROUPS):
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


# ----------------------------------------------------------------------------------------------------------------
# 2. prefill, ours and the `rwkv` package's


def _rwkv_worker(spec_path: str) -> None:
    """Child process: load the .pth in the `rwkv` package and time `forward(tokens, None)`; results to a file."""
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.set_flush_denormal(spec["flush_denormal"])
    os.environ["RWKV_JIT_ON"] = spec["jit"]
    os.environ["RWKV_CUDA_ON"] = "0"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its loading log
        from rwkv.model import RWKV

        model = RWKV(model=spec["model"], strategy="cpu fp32")
    tokens = torch.load(spec["tokens"]).tolist()
    logits = {}

    def prefill():
        with torch.inference_mode():
            logits["last"], _ = model.forward(tokens, None)  # seq mode: the whole list at once, last logits

    # two warm-ups: TorchScript (RWKV_JIT_ON=1) optimises a function on its second call
    timing = _time_runs(prefill, spec["repeats"], warmup=2)
    torch.save({"timing": timing, "logits": logits["last"].float().clone()}, spec["out"])


def _run_rwkv(pth: Path, tokens_path: Path, jit: str, args, tmp: Path, log) -> dict:
    spec = {"model": str(pth), "tokens": str(tokens_path), "jit": jit, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "flush_denormal": not args.no_flush_denormal,
            "out": str(tmp / f"rwkv_jit{jit}.pt")}
    spec_path = tmp / f"rwkv_jit{jit}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, RWKV_JIT_ON=jit, RWKV_CUDA_ON="0", PYTHONWARNINGS="ignore")
    log(f"  prefill: rwkv package, RWKV_JIT_ON={jit} (child process) ...")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rwkv-worker", str(spec_path)],
                          env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"jit": jit, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    data = torch.load(spec["out"])
    return {"jit": jit, "prefill_s": data["timing"], "logits": data["logits"], "process_wall_s": wall}


def _bench_prefill(model, args, log) -> tuple[dict, dict]:
    """2. and 3.: prefill of ours and of the `rwkv` package; ours against its dense matmuls alone."""
    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, args.vocab_size, (1, args.prefill_len), generator=g)
    out = {}

    def prefill():
        with torch.inference_mode():
            out["logits"] = model(input_ids=tokens, use_cache=True, logits_to_keep=1).logits

    gemms, flops = _dense_matmuls(model, args.prefill_len, args.seed + 2)
    log(f"  prefill T={args.prefill_len}: Rwkv6ForCausalLM and its dense matmuls alone (interleaved) ...")
    timings = _time_interleaved({"prefill": prefill, "gemm": gemms}, args.repeats)
    timing = timings["prefill"]
    ratio = {stat: timing[stat] / timings["gemm"][stat] for stat in ("min", "median")}
    gemm = {"gemm_s": timings["gemm"], "gemm_gflop": flops / 1e9,
            "gemm_gflops_per_s": flops / timings["gemm"]["min"] / 1e9,
            "prefill_over_gemm": ratio, "goal": GEMM_RATIO_GOAL, "pass": ratio["min"] <= GEMM_RATIO_GOAL}
    result = {
        "tokens": args.prefill_len, "logits_to_keep": 1, "wkv_backend": "torch",
        "ours_s": timing, "ours_tokens_per_s": args.prefill_len / timing["min"],
        "rwkv": None, "rwkv_note": None, "goal": PREFILL_RATIO_GOAL, "pass": None,
    }
    ours_logits = out["logits"][0, -1].float()

    if args.no_rwkv:
        result["rwkv_note"] = "skipped (--no-rwkv)"
        return result, gemm
    try:
        import importlib.metadata

        rwkv_version = importlib.metadata.version("rwkv")
    except importlib.metadata.PackageNotFoundError:
        result["rwkv_note"] = "skipped: the `rwkv` package is not installed (pip install rwkv==0.8.32)"
        return result, gemm

    with tempfile.TemporaryDirectory(prefix="auroralong-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        pth = tmp / "random-finch.pth"
        torch.save(export_blinkdl_state_dict(model), pth)
        tokens_path = tmp / "tokens.pt"
        torch.save(tokens[0].clone(), tokens_path)
        modes = ("0", "1") if args.rwkv_jit == "auto" else (args.rwkv_jit,)
        tried = [_run_rwkv(pth, tokens_path, jit, args, tmp, log) for jit in modes]

    good = [run for run in tried if "error" not in run]
    if not good:
        result["rwkv_note"] = "rwkv package failed: " + "; ".join(run["error"] for run in tried)
        return result, gemm
    best = min(good, key=lambda run: run["prefill_s"]["min"])
    diff = (best["logits"] - ours_logits).abs().max().item()
    result["rwkv"] = {
        "version": rwkv_version,
        "strategy": "cpu fp32",
        "jit": best["jit"],
        "jit_tried": {run["jit"]: (run["prefill_s"]["min"] if "error" not in run else run["error"]) for run in tried},
        "prefill_s": best["prefill_s"],
        "tokens_per_s": args.prefill_len / best["prefill_s"]["min"],
        "logits_max_abs_diff": diff,
        "logits_max_abs": ours_logits.abs().max().item(),
        "logits_ok": diff <= LOGITS_TOLERANCE,
    }
    result["ratio"] = {stat: best["prefill_s"][stat] / timing[stat] for stat in ("min", "median")}
    result["pass"] = result["ratio"]["min"] >= PREFILL_RATIO_GOAL
    return result, gemm


# ----------------------------------------------------------------------------------------------------------------
# 3. the GEMM bound of prefill


def _dense_matmuls(model, seq_len: int, seed: int):
    """The dense matmuls of one forward over `seq_len` tokens, alone: (callable, FLOPs).

    On the model's own (random) weight tensors and random activations. Per layer: r, k, v, g, o (C x C); the
    token-shift LoRA C -> 5R and its five R -> C halves (one bmm, as both implementations do it); the decay LoRA
    C -> D -> C; FFN key C -> F, value F -> C, receptance C -> C. Then the head C -> V for the last token only (the
    prefill asks for logits_to_keep=1). Weights are used as nn.Linear does, x @ W^T.
    """
    config = model.config
    width, rank = config.hidden_size, config.time_mix_lora_rank
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(seq_len, width, generator=g)
    x_ffn = torch.randn(seq_len, config.intermediate_size, generator=g)
    z_mix = torch.randn(5, seq_len, rank, generator=g)
    z_decay = torch.randn(seq_len, config.time_decay_lora_rank, generator=g)
    last = torch.randn(1, width, generator=g)

    layers = []
    for layer in model.model.layers:
        attn, ffn = layer.attn, layer.ffn
        layers.append({
            "square": [attn.r_proj.linear.weight, attn.k_proj.linear.weight, attn.v_proj.linear.weight,
                       attn.g_proj.linear.weight, attn.o_proj.weight, ffn.receptance.linear.weight],
            "mix_down": attn.x_proj[0].linear.weight,
            "mix_up": attn.x_proj[2].weight.detach().view(width, 5, rank).permute(1, 2, 0).contiguous(),
            "decay_down": attn.w_proj.linear.lora[0].weight,
            "decay_up": attn.w_proj.linear.lora[2].weight,
            "ffn_key": ffn.key.linear.weight,
            "ffn_value": ffn.value.weight,
        })
    head = model.lm_head.weight

    def run():
        with torch.inference_mode():
            for w in layers:
                for weight in w["square"]:
                    torch.matmul(x, weight.t())
                torch.matmul(x, w["mix_down"].t())
                torch.bmm(z_mix, w["mix_up"])
                torch.matmul(x, w["decay_down"].t())
                torch.matmul(z_decay, w["decay_up"].t())
                torch.matmul(x, w["ffn_key"].t())
                torch.matmul(x_ffn, w["ffn_value"].t())
            torch.matmul(last, head.t())

    per_layer = (6 * width * width + 2 * 5 * rank * width + 2 * config.time_decay_lora_rank * width
                 + 2 * config.intermediate_size * width)
    flops = 2 * (seq_len * per_layer * config.num_hidden_layers + width * config.vocab_size)
    return run, flops


# ----------------------------------------------------------------------------------------------------------------
# 4. decode against weight streaming


def _bench_decode(model, args, log) -> tuple[dict, dict]:
    """4. One decode step against streaming its weights once at the measured copy bandwidth.

    Copy bandwidth := bytes of the source / time of `dst.copy_(src)` (the copy itself moves twice that or more).
    Timed interleaved with the step: the copy, a read-only stream (`src.sum()`, for information) and the step's
    matrix-vector products alone (for information).
    """
    from auroralong_hf.modeling.modeling_rwkv6 import CACHE_NAME

    numel = max(args.copy_mib, 1) * (1 << 20) // 4
    src = torch.empty(numel, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    g = torch.Generator().manual_seed(args.seed + 3)
    prefix = torch.randint(0, args.vocab_size, (1, max(args.decode_prefix, 1)), generator=g)
    next_tokens = torch.randint(0, args.vocab_size, (args.decode_steps + 1,), generator=g)
    with torch.inference_mode():
        cache = getattr(model(input_ids=prefix, use_cache=True, logits_to_keep=1), CACHE_NAME)
    step_index = [0]

    def step():
        token = next_tokens[step_index[0] % len(next_tokens)].view(1, 1)
        step_index[0] += 1
        with torch.inference_mode():
            model(input_ids=token, cache=cache, use_cache=True)

    gemvs, _ = _dense_matmuls(model, 1, args.seed + 4)
    log(f"  decode: {args.decode_steps} steps, {args.copy_mib} MiB copies (interleaved) ...")
    timings = _time_interleaved(
        {"step": step, "gemv": gemvs, "copy": lambda: dst.copy_(src), "read": lambda: src.sum()},
        max(args.decode_steps, 1),
    )
    timing, gemv = timings["step"], timings["gemv"]
    nbytes = numel * 4
    bandwidth = {"bytes": nbytes, "copy_s": timings["copy"], "copy_gb_per_s": nbytes / timings["copy"]["min"] / 1e9,
                 "read_sum_s": timings["read"], "read_gb_per_s": nbytes / timings["read"]["min"] / 1e9,
                 "definition": "bytes of the source / min time of dst.copy_(src); read: of src.sum()"}
    all_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.model.embeddings.weight
    # a step reads one row of the embedding table and every other weight once
    read_bytes = all_bytes - (embedding.shape[0] - 1) * embedding.shape[1] * embedding.element_size()
    stream_s = read_bytes / (bandwidth["copy_gb_per_s"] * 1e9)
    ratio = {stat: timing[stat] / stream_s for stat in ("min", "median")}
    return bandwidth, {
        "prefix_tokens": prefix.shape[1], "step_s": timing, "tokens_per_s": 1.0 / timing["min"],
        "gemv_s": gemv, "decode_over_gemv": timing["min"] / gemv["min"],
        "weight_bytes_all": all_bytes, "weight_bytes_read_per_step": read_bytes,
        "stream_s": stream_s, "stream_s_all_params": all_bytes / (bandwidth["copy_gb_per_s"] * 1e9),
        "stream_s_read_bandwidth": read_bytes / (bandwidth["read_gb_per_s"] * 1e9),
        "decode_over_stream": ratio,
        "decode_over_stream_read_bandwidth": timing["min"] / (read_bytes / (bandwidth["read_gb_per_s"] * 1e9)),
        "goal": DECODE_RATIO_GOAL, "pass": ratio["min"] <= DECODE_RATIO_GOAL,
    }


# ----------------------------------------------------------------------------------------------------------------
# the report


def _seconds(timing: dict | None) -> str:
    if timing is None:
        return "-"
    return f"{_fmt_s(timing['min'])} min, {_fmt_s(timing['median'])} median"


def _fmt_s(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.3f} s"


def _table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    lines = [
        f"auroralong bench lm  {env['date']}",
        f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}",
        f"denormals flushed to zero: {'yes' if env['flush_denormal'] else 'no'} (the same for every contender, "
        "the rwkv child process included)",
        f"geometry: {geo['layers']} layers, hidden {geo['hidden_size']}, {geo['heads']} heads x {geo['head_size']}, "
        f"FFN {geo['intermediate_size']}, vocab {geo['vocab_size']}, LoRA ranks {geo['time_mix_lora_rank']}/"
        f"{geo['time_decay_lora_rank']}, fp32, random weights ({geo['parameters'] / 1e6:.1f}M parameters)",
        f"repeats: {report['repeats']} timed runs after 1 warm-up (2 for the rwkv package: TorchScript), contenders "
        "taking turns run by run; min and median reported, ratios and verdicts use the min",
        "",
    ]
    rows = []  # (figure, measured, goal, verdict)

    wkv = report["wkv"]
    rows.append((f"1. WKV op T={wkv['seq_len']} H={wkv['heads']} K={wkv['head_size']} B=1 fp32", "", "", ""))
    rows.append((f"   wkv6_chunked (chunk {wkv['chunk_size']})", _seconds(wkv["chunked_s"]), "", ""))
    rows.append(("   wkv6_reference (per-token loop)", _seconds(wkv["reference_s"]), "", ""))
    rows.append(("   fla naive_recurrent_rwkv6 (per-token)",
                 _seconds(wkv["fla_naive_s"]) if wkv["fla_naive_s"] else wkv["fla_note"], "", ""))
    for name, label in (("reference", "wkv6_reference"), ("fla_naive", "fla naive")):
        if f"speedup_vs_{name}" in wkv:
            s = wkv[f"speedup_vs_{name}"]
            rows.append((f"   speedup chunked vs {label}", f"{s['min']:.2f}x (median {s['median']:.2f}x)",
                         f">= {WKV_SPEEDUP_GOAL:g}x", _verdict(s["min"] >= WKV_SPEEDUP_GOAL)))
    rows.append(("   max |chunked - reference|", f"{wkv['max_abs_diff_vs_reference']:.2e}", "", ""))

    pre = report["prefill"]
    rows.append((f"2. prefill T={pre['tokens']} (logits of the last token)", "", "", ""))
    rows.append(("   Rwkv6ForCausalLM (torch path)",
                 f"{pre['ours_tokens_per_s']:.0f} tok/s ({_seconds(pre['ours_s'])})", "", ""))
    rw = pre["rwkv"]
    if rw is None:
        rows.append(("   rwkv package", pre["rwkv_note"], "", ""))
    else:
        tried = ", ".join(
            f"JIT={jit}: {_fmt_s(v) if isinstance(v, float) else v}" for jit, v in rw["jit_tried"].items()
        )
        rows.append((f"   rwkv {rw['version']} cpu fp32, RWKV_JIT_ON={rw['jit']}",
                     f"{rw['tokens_per_s']:.0f} tok/s ({_seconds(rw['prefill_s'])})", "", ""))
        rows.append(("   rwkv JIT settings tried (min)", tried, "", ""))
        rows.append(("   ratio ours / rwkv (tokens/s)",
                     f"{pre['ratio']['min']:.2f}x (median {pre['ratio']['median']:.2f}x)",
                     f">= {PREFILL_RATIO_GOAL:g}x", _verdict(pre["pass"])))
        rows.append(("   last-token logits max |ours - rwkv|",
                     f"{rw['logits_max_abs_diff']:.2e} (max |logit| {rw['logits_max_abs']:.2f})",
                     f"<= {LOGITS_TOLERANCE:g}", _verdict(rw["logits_ok"])))

    gemm = report["gemm"]
    rows.append(("3. GEMM bound of that prefill", "", "", ""))
    rows.append(("   dense matmuls alone", f"{_seconds(gemm['gemm_s'])}, {gemm['gemm_gflop']:.3g} GFLOP at "
                 f"{gemm['gemm_gflops_per_s']:.0f} GFLOP/s", "", ""))
    r = gemm["prefill_over_gemm"]
    rows.append(("   prefill time / GEMM time", f"{r['min']:.2f}x (median {r['median']:.2f}x)",
                 f"<= {GEMM_RATIO_GOAL:g}x", _verdict(gemm["pass"])))

    dec, bw = report["decode"], report["bandwidth"]
    rows.append((f"4. decode (1 token after a {dec['prefix_tokens']}-token prefill)", "", "", ""))
    rows.append(("   one decode step", f"{_seconds(dec['step_s'])} = {dec['tokens_per_s']:.1f} tok/s", "", ""))
    rows.append(("   (info) its matrix-vector products alone",
                 f"{_seconds(dec['gemv_s'])}; step / these = {dec['decode_over_gemv']:.2f}x", "", ""))
    rows.append((f"   copy bandwidth ({bw['bytes'] >> 20} MiB copy_)",
                 f"{bw['copy_gb_per_s']:.1f} GB/s (source bytes / copy time)", "", ""))
    rows.append(("   weights read per step",
                 f"{dec['weight_bytes_read_per_step'] / 1e9:.3f} GB (all params {dec['weight_bytes_all'] / 1e9:.3f} GB"
                 " less the embedding table but 1 row)", "", ""))
    rows.append(("   stream time (weights read / copy bw)", _fmt_s(dec["stream_s"]), "", ""))
    d = dec["decode_over_stream"]
    rows.append(("   decode time / stream time", f"{d['min']:.2f}x (median {d['median']:.2f}x)",
                 f"<= {DECODE_RATIO_GOAL:g}x", _verdict(dec["pass"])))
    rows.append(("   (info) same with read-only bandwidth",
                 f"{dec['decode_over_stream_read_bandwidth']:.2f}x at {bw['read_gb_per_s']:.1f} GB/s (src.sum())",
                 "", ""))

    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("figure", "measured", "goal", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*row).rstrip() for row in rows]
    lines.append("")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress lines: always on stderr, so stdout carries only the table or the JSON object."""
    print(message, file=sys.stderr, flush=True)


def _emit(report: dict, table: str, args, stream) -> None:
    """The table for people (on `stream`: stderr with --json), and with --json the one JSON object on stdout."""
    print(table, file=stream, flush=True)
    if args.json:
        print(json.dumps(report), flush=True)


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def bench_lm(args: argparse.Namespace) -> dict:
    """Run the four figures; print the table (stdout, or stderr with --json) and, with --json, one JSON object."""
    started = time.perf_counter()
    stream = sys.stderr if args.json else sys.stdout

    if args.threads:
        torch.set_num_threads(args.threads)
    flush = not args.no_flush_denormal
    flush_supported = torch.set_flush_denormal(flush)
    try:
        model = build_random_model(args)
        config = model.config
        report = {
            "env": {
                "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
                "cpu": _cpu_model(), "flush_denormal": flush and flush_supported,
            },
            "geometry": {
                "layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "heads": config.num_heads,
                "head_size": config.head_size, "intermediate_size": config.intermediate_size,
                "vocab_size": config.vocab_size, "time_mix_lora_rank": config.time_mix_lora_rank,
                "time_decay_lora_rank": config.time_decay_lora_rank, "dtype": "float32",
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "repeats": args.repeats,
        }
        report["wkv"] = _bench_wkv(args, log)
        report["prefill"], report["gemm"] = _bench_prefill(model, args, log)
        report["bandwidth"], report["decode"] = _bench_decode(model, args, log)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    report["elapsed_s"] = time.perf_counter() - started
    report = _jsonable(report)
    _emit(report, _table(report), args, stream)
    return report


# ================================================================================================================
# `auroralong bench vision`: the S-ToMe vision tower's frames/s at several kept ratios, against the FLOP bound

VISION_BOUND_FRACTION_GOAL = 0.9  # at the smallest ratio, the measured speed-up must reach 90% of the FLOP bound
VISION_GOAL_RATIO = 0.1


def _ratio_list(text: str) -> list[float]:
    try:
        ratios = [float(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from error
    if not ratios or any(not 0 < ratio <= 1 for ratio in ratios):
        raise argparse.ArgumentTypeError(f"every kept ratio must be in (0, 1], got {text!r}")
    return ratios


def add_bench_vision_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench vision`. Defaults: SigLIP-L/16-384 less its last layer (23 layers, as the
    paper's tower), random fp32 weights, sdpa, 2 frames, 4 repeats: about 2 minutes on 2 idle CPU cores."""
    geometry = parser.add_argument_group("geometry (defaults: SigLIP-L/16-384 without its last layer)")
    geometry.add_argument("--layers", type=int, default=23,
                          help="encoder layers (default 23: SigLIP-L's 24 less the last, which AuroraLong drops)")
    geometry.add_argument("--hidden-size", type=int, default=1024, help="width D (default 1024)")
    geometry.add_argument("--heads", type=int, default=None, help="attention heads (default: D / 64, at least 1)")
    geometry.add_argument("--intermediate-size", type=int, default=None, help="MLP width I (default 4 D)")
    geometry.add_argument("--image-size", type=int, default=384, help="square input side (default 384)")
    geometry.add_argument("--patch-size", type=int, default=16, help="patch side (default 16)")
    geometry.add_argument("--head", action="store_true",
                          help="also run SigLIP's attention-pooling head (AuroraLong does not use it; default off)")

    run = parser.add_argument_group("run")
    run.add_argument("--frames", type=int, default=2, help="frames per forward, the batch (default 2)")
    run.add_argument("--repeats", type=int, default=4,
                     help="timed forwards per contender after one warm-up, contenders taking turns (default 4)")
    run.add_argument("--ratios", type=_ratio_list, default=[1.0, 0.5, 0.2, 0.1],
                     help="token_kept_ratio values, comma-separated; 1.0 (no merging) is always run as the "
                          "baseline (default 1.0,0.5,0.2,0.1)")
    run.add_argument("--schedule", choices=("even", "aurora"), default="even", help="tome_schedule (default even)")
    run.add_argument("--sort", choices=("ascending", "descending", "none", "random"), default="ascending",
                     help="tome_sort (default ascending)")
    run.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa",
                     help="attention implementation (default sdpa)")
    run.add_argument("--no-overhead", action="store_true",
                     help="skip the merge-free runs that measure the matching + merging + sorting share")
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    return parser


def vision_flops(config, schedule: list[int]) -> dict:
    """Analytic FLOPs of one frame through the S-ToMe tower (multiply-add = 2 FLOPs), from the token counts.

    Layer l enters with T_l tokens and merges r_l of them after its attention sub-block, so
      attention sub-block on T_l tokens:  q, k, v, out projections 2 T_l 4 D^2, scores and weighted sum 2 * 2 T_l^2 D;
      MLP sub-block on T_l - r_l tokens:  2 (T_l - r_l) 2 D I.
    Constants: the patch embedding 2 N (C P^2) D; the pooling head when the config has one (its k, v projections of
    the T_out tokens, one query). Not counted: layer norms, GELU, softmax, and the matching itself (one
    [T/2, T/2] cosine-similarity matrix per merging layer) -- that is the overhead the bound leaves out.
    """
    width, inner = config.hidden_size, config.intermediate_size
    patches = config.num_patches
    tokens, layers, entering = patches, [], []
    for r in schedule:
        entering.append(tokens)
        attention_linear = 2 * tokens * 4 * width * width
        attention_scores = 2 * 2 * tokens * tokens * width
        mlp = 2 * (tokens - r) * 2 * width * inner
        layers.append(attention_linear + attention_scores + mlp)
        tokens -= r
    patch_embedding = 2 * patches * config.num_channels * config.patch_size ** 2 * width
    head = 0
    if config.vision_use_head:
        head = 2 * width * width * 2 + 2 * tokens * 2 * width * width + 2 * 2 * tokens * width + 2 * 2 * width * inner
    return {"total": patch_embedding + sum(layers) + head, "layers": sum(layers), "patch_embedding": patch_embedding,
            "head": head, "tokens_entering": entering, "tokens_out": tokens}


def _merge_free_forward(model, pixel_values, schedule: list[int]):
    """The tower with the same token counts as S-ToMe but no matching, merging or sorting: after the attention
    sub-block of a layer with r > 0 the last r tokens are simply dropped. The same attention function and the same
    additive (all-zero) key bias once a layer has merged, as the S-ToMe forward passes it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.siglip.modeling_siglip import eager_attention_forward

    config = model.config
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)
    x = model.embeddings(pixel_values)
    merged_any = False
    for layer, r in zip(model.encoder.layers, schedule, strict=True):
        attention = layer.self_attn
        batch, length, width = x.shape
        y = layer.layer_norm1(x)
        heads = (batch, length, attention.num_heads, attention.head_dim)
        queries = attention.q_proj(y).view(heads).transpose(1, 2)
        keys = attention.k_proj(y).view(heads).transpose(1, 2)
        values = attention.v_proj(y).view(heads).transpose(1, 2)
        bias = None
        if config.proportional_attention and merged_any:
            bias = torch.zeros(batch, 1, 1, length, dtype=queries.dtype, device=queries.device)
        out, _ = attend(attention, queries, keys, values, bias, is_causal=False, scaling=attention.scale, dropout=0.0)
        x = x + attention.out_proj(out.reshape(batch, length, width))
        if r > 0:
            x = x[:, : length - r].contiguous()
            merged_any = True
        x = x + layer.mlp(layer.layer_norm2(x))
    x = model.post_layernorm(x)
    return model.head(x) if model.use_head else x


def build_random_vision_model(args):
    """A random fp32 S-ToMe tower of the asked geometry, in eval mode (ratio 1.0: the callers set theirs)."""
    from huggingface_hub.errors import StrictDataclassError

    from auroralong_hf.modeling.configuration_siglip_tome import SiglipToMeVisionConfig
    from auroralong_hf.modeling.modeling_siglip_tome import SiglipToMeVisionModel

    heads = args.heads or max(args.hidden_size // 64, 1)
    if args.hidden_size % heads:
        raise ValueError(f"--hidden-size {args.hidden_size} is not divisible by --heads {heads}.")
    if args.image_size % args.patch_size:
        raise ValueError(f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}.")
    if args.frames < 1 or args.layers < 1:
        raise ValueError("--frames and --layers must be at least 1.")
    try:
        config = SiglipToMeVisionConfig(
            hidden_size=args.hidden_size, intermediate_size=args.intermediate_size or 4 * args.hidden_size,
            num_attention_heads=heads, num_hidden_layers=args.layers, image_size=args.image_size,
            patch_size=args.patch_size, vision_use_head=args.head, token_kept_ratio=1.0,
            tome_schedule=args.schedule, tome_sort=args.sort,
        )
    except StrictDataclassError as error:
        raise ValueError(str(error)) from error
    config._attn_implementation = args.attn
    torch.manual_seed(args.seed)
    return SiglipToMeVisionModel(config).eval()


def _load_average() -> float | None:
    """The 1-minute load average (other processes sharing the CPU make the timings noisy), where the OS says."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _vision_table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    load = env["load_average_before"]
    lines = [
        f"auroralong bench vision  {env['date']}",
        f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}",
        f"1-minute load average before the run {load}, after {env['load_average_after']} (other processes using the "
        "CPU raise it and make the timings noisy: compare min and median)",
        f"geometry: {geo['layers']} layers, hidden {geo['hidden_size']}, {geo['heads']} heads, MLP "
        f"{geo['intermediate_size']}, image {geo['image_size']}, patch {geo['patch_size']} ({geo['num_patches']} "
        f"patches), head {'on' if geo['head'] else 'off'}, fp32, {geo['attn_implementation']}, random weights "
        f"({geo['parameters'] / 1e6:.1f}M parameters)",
        f"{report['note']}",
        f"S-ToMe: schedule \"{report['schedule']}\", sort \"{report['sort']}\"; {report['frames']} frames per forward, "
        f"{report['repeats']} timed runs after 1 warm-up, contenders taking turns; ratios use the min",
        "",
    ]
    header = ("ratio", "tokens/frame", "GFLOP/frame", "bound", "time (min / median)", "frames/s", "speed-up",
              "of bound", "goal", "result", "merge share")
    rows = []
    for row in report["ratios"]:
        share = row.get("overhead_share")
        rows.append((
            f"{row['token_kept_ratio']}", str(row["tokens_per_frame"]), f"{row['gflop_per_frame']:.4g}",
            f"{row['bound_speedup']:.2f}x", f"{_fmt_s(row['time_s']['min'])} / {_fmt_s(row['time_s']['median'])}",
            f"{row['frames_per_s']:.4g}", f"{row['speedup']['min']:.2f}x", f"{row['fraction_of_bound']:.0%}",
            "" if row["pass"] is None else f">= {VISION_BOUND_FRACTION_GOAL:.0%}",
            "" if row["pass"] is None else _verdict(row["pass"]),
            "-" if share is None else f"{share:.1%}",
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines += [
        "",
        "bound = FLOPs(1.0) / FLOPs(ratio) from the token counts entering each layer (attention on T_l, MLP on the "
        "merged T_l - r_l; patch embedding included); speed-up = time(1.0) / time(ratio); of bound = speed-up / bound.",
        "merge share = (time - time of the same layers at the same token counts without matching, merging or "
        "sorting) / time.",
    ]
    goal = report["goal"]
    if goal["pass"] is None:
        lines.append(f"goal: at ratio {goal['ratio']:g}, speed-up >= {goal['fraction']:.0%} of the bound: not run")
    else:
        lines.append(f"goal: at ratio {goal['ratio']:g}, speed-up {goal['speedup']:.2f}x >= {goal['fraction']:.0%} "
                     f"of the bound {goal['bound']:.2f}x = {goal['fraction'] * goal['bound']:.2f}x: "
                     f"{_verdict(goal['pass'])}")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def bench_vision(args: argparse.Namespace) -> dict:
    """Frames/s of the S-ToMe tower at each kept ratio against its FLOP bound; table, and with --json one JSON object.

    One random model; its config's token_kept_ratio is set before each forward (the schedule is computed per
    forward). Contenders (each ratio, and each ratio's merge-free twin) take turns run by run.
    """
    from auroralong_hf.modeling.configuration_siglip_tome import tokens_per_frame

    started = time.perf_counter()
    stream = sys.stderr if args.json else sys.stdout

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = _load_average()
    ratios = list(dict.fromkeys([1.0, *args.ratios]))  # the baseline first, no duplicates
    log(f"  building a random {args.layers}-layer tower (hidden {args.hidden_size}) ...")
    model = build_random_vision_model(args)
    config = model.config
    g = torch.Generator().manual_seed(args.seed + 1)
    pixel_values = torch.rand(args.frames, config.num_channels, args.image_size, args.image_size, generator=g) * 2 - 1

    schedules, contenders = {}, {}
    for ratio in ratios:
        config.token_kept_ratio = ratio
        schedules[ratio] = config.merge_schedule()

        def forward(ratio=ratio):
            config.token_kept_ratio = ratio
            with torch.inference_mode():
                model(pixel_values=pixel_values)

        contenders[("tome", ratio)] = forward
        if ratio < 1 and not args.no_overhead:
            def merge_free(schedule=schedules[ratio]):
                with torch.inference_mode():
                    _merge_free_forward(model, pixel_values, schedule)

            contenders[("plain", ratio)] = merge_free

    # a check that the merged forward really produces the counted tokens
    with torch.inference_mode():
        for ratio in ratios:
            config.token_kept_ratio = ratio
            tokens = model(pixel_values=pixel_values[:1]).last_hidden_state.shape[1]
            if tokens != tokens_per_frame(config):
                raise RuntimeError(f"ratio {ratio}: {tokens} tokens per frame, expected {tokens_per_frame(config)}")

    log(f"  timing {len(contenders)} contenders x {args.repeats} runs (+1 warm-up), {args.frames} frames each ...")
    names = list(contenders)
    timed = _time_interleaved({str(i): contenders[name] for i, name in enumerate(names)}, args.repeats)
    timings = {name: timed[str(i)] for i, name in enumerate(names)}

    flops = {ratio: vision_flops(config, schedules[ratio]) for ratio in ratios}
    base_time, base_flops = timings[("tome", 1.0)], flops[1.0]["total"]
    goal_ratio = VISION_GOAL_RATIO if VISION_GOAL_RATIO in ratios else min(ratios)
    rows = []
    for ratio in ratios:
        timing = timings[("tome", ratio)]
        bound = base_flops / flops[ratio]["total"]
        speedup = {stat: base_time[stat] / timing[stat] for stat in ("min", "median")}
        row = {
            "token_kept_ratio": ratio, "merge_schedule": schedules[ratio],
            "tokens_per_frame": flops[ratio]["tokens_out"], "tokens_entering": flops[ratio]["tokens_entering"],
            "gflop_per_frame": flops[ratio]["total"] / 1e9, "flops": {k: v for k, v in flops[ratio].items()
                                                                      if k != "tokens_entering"},
            "bound_speedup": bound, "time_s": timing, "frames_per_s": args.frames / timing["min"],
            "speedup": speedup, "fraction_of_bound": speedup["min"] / bound,
            "pass": None if ratio == 1.0 else speedup["min"] >= VISION_BOUND_FRACTION_GOAL * bound,
            "merge_free_s": None, "overhead_s": None, "overhead_share": None,
        }
        plain = timings.get(("plain", ratio))
        if plain is not None:
            row["merge_free_s"] = plain
            row["overhead_s"] = timing["min"] - plain["min"]
            row["overhead_share"] = row["overhead_s"] / timing["min"]
        rows.append(row)
    config.token_kept_ratio = 1.0

    goal_row = next(row for row in rows if row["token_kept_ratio"] == goal_ratio)
    report = {
        "env": {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu": _cpu_model(), "load_average_before": load_before, "load_average_after": _load_average(),
        },
        "geometry": {
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "image_size": config.image_size, "patch_size": config.patch_size, "num_patches": config.num_patches,
            "head": config.vision_use_head, "dtype": "float32", "attn_implementation": config._attn_implementation,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "note": (f"{config.num_hidden_layers} layers: SigLIP-L/16-384 has 24; the paper's tower drops the last one "
                 "(its features are the 23rd layer's output), so 23 run here (--layers to change)"),
        "frames": args.frames, "repeats": args.repeats, "schedule": args.schedule, "sort": args.sort,
        "ratios": rows,
        "goal": {
            "ratio": goal_ratio, "fraction": VISION_BOUND_FRACTION_GOAL, "bound": goal_row["bound_speedup"],
            "speedup": goal_row["speedup"]["min"], "pass": goal_row["pass"],
        },
    }
    report["elapsed_s"] = time.perf_counter() - started
    report = _jsonable(report)
    _emit(report, _vision_table(report), args, stream)
    return report


# ================================================================================================================
# `auroralong bench memory`: peak memory of streaming `describe` at several video lengths, one fresh process each;
# `auroralong bench latency`: the language-model part against a transformer of the same shape, same visual tokens

MEMORY_RATIO_GOAL = 1.15  # peak memory of describe at the most frames / at the fewest (1,024 vs 64 by default)
PAPER_MEMORY_RATIO = 34.0  # the paper: 34x less memory than InternVL-1.5 2B at 1,024 frames
PAPER_LATENCY_RATIO = 8.13  # the paper: 8.13x lower latency than InternVL-1.5 2B at 60 frames
PAPER_SETTING = ("the paper's figures compare whole models on a GPU (AuroraLong, RWKV-6 1.6B, against InternVL-1.5 "
                 "2B); these are CPU figures of the language-model part alone, with random weights")
DESCRIBE_QUESTION = "What happens in this video?"  # `auroralong describe`'s default

# The random models' geometry, the same as `auroralong create-random`'s sizes (auroralong_hf/create_random.py, whose
# SIZES table is used when present): `tiny` and `small` keep the real 384 / 16 patch grid and the 23 layers of the
# paper's tower (so 58 tokens per frame at kept ratio 0.1) at small widths; `2b` is the paper's model
# (SigLIP-L/16-384 less its last layer + Finch 1.6B), meant for a GPU.
_GRID_23 = {"num_hidden_layers": 23, "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1,
            "vision_use_head": False}
BENCH_SIZES = {
    "tiny": {
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, **_GRID_23},
        "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536},
    },
    "small": {
        "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4, **_GRID_23},
        "text_config": {"hidden_size": 256, "num_hidden_layers": 4, "head_size": 64, "vocab_size": 65536},
    },
    "2b": {
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, **_GRID_23},
        "text_config": {"hidden_size": 2048, "num_hidden_layers": 24, "head_size": 64, "vocab_size": 65536},
    },
}


def bench_sizes() -> tuple[dict, str]:
    """({size: {"vision_config": dict, "text_config": dict}}, where the table comes from).

    auroralong_hf.create_random's `SIZES` is used when that module exists and its entries carry vision_config and
    text_config dicts; otherwise this module's BENCH_SIZES.
    """
    try:
        from auroralong_hf import create_random
    except ImportError:
        return BENCH_SIZES, "auroralong_hf.bench.BENCH_SIZES (auroralong_hf.create_random not found)"
    table = getattr(create_random, "SIZES", None)
    if not isinstance(table, dict):
        return BENCH_SIZES, "auroralong_hf.bench.BENCH_SIZES (auroralong_hf.create_random has no SIZES table)"
    sizes = dict(BENCH_SIZES)
    for name, entry in table.items():
        if entry is None and name in BENCH_SIZES:  # None: AuroraLongConfig's defaults, the paper's model
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("vision_config"), dict)
                and isinstance(entry.get("text_config"), dict)):
            return BENCH_SIZES, (f"auroralong_hf.bench.BENCH_SIZES (auroralong_hf.create_random.SIZES[{name!r}] is "
                                 "not a pair of vision_config / text_config dicts)")
        sizes[name] = {"vision_config": dict(entry["vision_config"]), "text_config": dict(entry["text_config"])}
    return sizes, "auroralong_hf.create_random.SIZES"


def _frame_list(text: str) -> list[int]:
    try:
        frames = [int(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of frame counts: {text!r}") from error
    if not frames or any(count < 1 for count in frames):
        raise argparse.ArgumentTypeError(f"every frame count must be >= 1, got {text!r}")
    return sorted(set(frames))


def _add_common_arguments(parser, frames: str, new_tokens: int, repeats: int | None):
    parser.add_argument("--size", choices=tuple(BENCH_SIZES), default="small",
                        help="random model geometry (auroralong create-random's sizes): small (default), tiny, 2b "
                             "(the paper's geometry, for a GPU)")
    parser.add_argument("--frames", type=_frame_list, default=_frame_list(frames),
                        help=f"video lengths in frames, comma-separated (default {frames})")
    parser.add_argument("--chunk-frames", type=int, default=DEFAULT_CHUNK_FRAMES,
                        help=f"frames streamed into the RNN state per step (default {DEFAULT_CHUNK_FRAMES}, as "
                             "generate and `auroralong describe`)")
    parser.add_argument("--new-tokens", type=int, default=new_tokens,
                        help=f"answer tokens decoded greedily (default {new_tokens})")
    if repeats:
        parser.add_argument("--repeats", type=int, default=repeats,
                            help=f"timed runs per contender and length, after one short warm-up (default {repeats})")
    return _add_run_arguments(parser)


def _add_run_arguments(parser):
    """The options every fresh-process benchmark shares (bench memory, latency and train)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default; peak = the process's resident set) or cuda (peak = torch's "
                             "max_memory_allocated)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="weights and activations (default float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--no-flush-denormal", action="store_true",
                        help="leave denormal floats on (default: flushed to zero in every run alike)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="worker processes run at once (default 1; more is for quick checks only: memory stays "
                             "per process, but the timings then share the CPU)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (the table goes to stderr)")
    return parser


def add_bench_memory_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench memory`. Defaults: the small random model, 64 / 256 / 1,024 frames and a 64-frame
    video file: about 1.5 minutes on 2 idle CPU cores."""
    _add_common_arguments(parser, "64,256,1024", new_tokens=16, repeats=None)
    parser.add_argument("--decode-frames", type=int, default=64,
                        help="also run describe on a synthetic video file of this many frames through the real "
                             "decoding path (PyAV + the processor), to compare with the random-pixel run of the same "
                             "length; 0 skips it (default 64)")
    return parser


def add_bench_latency_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench latency`. Defaults: the small random model's language model, 60 and 1,024 frames
    of 58 tokens, 32 answer tokens, 2 timed runs: about 2 minutes on 2 idle CPU cores."""
    _add_common_arguments(parser, "60,1024", new_tokens=32, repeats=2)
    parser.add_argument("--tokens-per-frame", type=int, default=None,
                        help="visual tokens per frame (default: the size's vision tower, 58 at kept ratio 0.1)")
    parser.add_argument("--transformer-tokens-per-frame", type=int, default=None,
                        help="visual tokens per frame fed to the transformer (default: the same as ours; e.g. 256, "
                             "InternVL-1.5's per 448px tile, to model a tower without token merging)")
    parser.add_argument("--transformer", choices=("llama", "qwen2"), default="llama",
                        help="the transformer contender: transformers' LlamaForCausalLM (default) or Qwen2ForCausalLM")
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa",
                        help="the transformer's attention implementation (default sdpa)")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# memory probes and the fresh worker processes


def _proc_status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS: resident now, VmHWM: the peak of this process image)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _ru_maxrss_mib() -> float:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 1024  # bytes on macOS, KiB elsewhere


class _MemoryProbe:
    """Peak memory of what runs after the probe is made, in MiB.

    CPU: the process's resident set. At the baseline the peak is reset to the current resident set (writing 5 to
    /proc/self/clear_refs, Linux), so VmHWM at the end is the highest resident set during the run alone, the loaded
    model included, model building left out. getrusage's ru_maxrss is not used for the peak: it is never reset,
    and a child started by subprocess inherits its parent's peak (exec keeps it); it is reported for information,
    and used only where /proc is missing. CUDA: torch's max_memory_allocated after reset_peak_memory_stats.
    """

    def __init__(self, device: torch.device):
        import gc

        gc.collect()
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.cuda_baseline = torch.cuda.memory_allocated(device)
        self.hwm_before_reset = _kib_to_mib(_proc_status_kib("VmHWM"))
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            self.peak_reset = True
        except OSError:
            self.peak_reset = False
        rss = _proc_status_kib("VmRSS")
        self.rss_baseline = rss / 1024 if rss is not None else _ru_maxrss_mib()

    def result(self) -> dict:
        hwm = _proc_status_kib("VmHWM")
        rss_peak = hwm / 1024 if hwm is not None else _ru_maxrss_mib()
        source = ("VmHWM, reset at the baseline" if self.peak_reset else "VmHWM") if hwm is not None else "ru_maxrss"
        out = {
            "rss_peak_source": source, "rss_baseline_mib": self.rss_baseline, "rss_peak_mib": rss_peak,
            "rss_growth_mib": rss_peak - self.rss_baseline, "build_peak_mib": self.hwm_before_reset,
            "ru_maxrss_mib": _ru_maxrss_mib(),
        }
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            out.update(measure="CUDA max_memory_allocated", baseline_mib=self.cuda_baseline / 2**20,
                       peak_mib=peak / 2**20, growth_mib=(peak - self.cuda_baseline) / 2**20)
        else:
            out.update(measure=f"process resident set ({source})", baseline_mib=self.rss_baseline,
                       peak_mib=rss_peak, growth_mib=rss_peak - self.rss_baseline)
        return out


def _kib_to_mib(value: int | None) -> float | None:
    return None if value is None else value / 1024


def _worker_setup(spec: dict) -> tuple[torch.device, torch.dtype]:
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("flush_denormal"):
        torch.set_flush_denormal(True)
    device = torch.device(spec["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    return device, getattr(torch, spec["dtype"])


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for s in (state.attn_shift, state.ffn_shift, state.wkv) for t in s)


def _run_workers(kind: str, jobs: list[tuple[dict, str]], tmp: Path, log, parallel: int = 1) -> list[dict]:
    """Each (spec, label) in its own fresh process, `parallel` at a time (1: one after another); results in order.

    Memory figures are per process either way; timings are only meaningful with parallel=1.
    """
    names = [f"{kind}{i}" for i in range(len(jobs))]
    if parallel <= 1:
        return [_run_worker(kind, spec, tmp / name, label, log)
                for name, (spec, label) in zip(names, jobs, strict=True)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(_run_worker, kind, spec, tmp / name, label, log)
                   for name, (spec, label) in zip(names, jobs, strict=True)]
        return [future.result() for future in futures]


def _run_worker(kind: str, spec: dict, stem: Path, label: str, log) -> dict:
    """Run `python bench.py --{kind}-worker SPEC` in a fresh process; its JSON result, with the process's wall time.
    The spec and the result are written to `stem`.json / `stem`.result."""
    spec = dict(spec, out=str(stem.with_suffix(".result")))
    spec_path = stem.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    log(f"  {label} (fresh process) ...")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--{kind}-worker", str(spec_path)],
                          env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True,
                          timeout=4 * 3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"{label}: the worker process exited with {proc.returncode}: {tail}")
    result = json.loads(Path(spec["out"]).read_text())
    result["process_wall_s"] = wall
    return result


def _env(threads: int | None = None) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": threads or torch.get_num_threads(), "cpu": _cpu_model(), "load_average_before": _load_average(),
    }


# ----------------------------------------------------------------------------------------------------------------
# bench memory


def _prompt_ids(processor, question: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sandwich prompt around one video: ids [1, P] before the visual tokens and [1, S] after them."""
    return tuple(torch.tensor([processor.tokenizer.encode(text)]) for text in processor.video_prompt_pieces(question))


class _RandomVideo:
    """A lazy video of preprocessed-looking random frames (uniform in [-1, 1]), made one chunk at a time."""

    def __init__(self, frames: int, image_size: int, seed: int):
        self.num_frames, self.image_size, self.seed = frames, image_size, seed

    def chunks(self, chunk_frames: int):
        g = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.num_frames, chunk_frames):
            count = min(chunk_frames, self.num_frames - start)
            yield torch.rand(count, 3, self.image_size, self.image_size, generator=g).mul_(2).sub_(1)


def _memory_worker(spec_path: str):
    """One `describe` run in this fresh process: build the model, note the baseline, then the transformers main
    path (processor -> generate, which streams the video) and the answer."""
    spec = json.loads(Path(spec_path).read_text())
    device, dtype = _worker_setup(spec)
    from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, processor_for_vision_config

    torch.manual_seed(spec["seed"])
    config = AuroraLongConfig(vision_config=spec["vision_config"], text_config=spec["text_config"])
    model = AuroraLongForConditionalGeneration(config).to(device=device, dtype=dtype).eval()
    processor = processor_for_vision_config(spec["vision_config"])
    image_size, chunk_frames = config.vision_config.image_size, spec["chunk_frames"]

    probe = _MemoryProbe(device)
    video = spec.get("video") or _RandomVideo(spec["frames"], image_size, spec["seed"] + 1)
    messages = [{"role": "user", "content": [{"type": "video", "video": video},
                                             {"type": "text", "text": spec["question"]}]}]
    new_tokens = spec["new_tokens"]
    start = time.perf_counter()
    with torch.inference_mode():
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               processor_kwargs={"num_frames": spec["frames"]}).to(device)
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                chunk_frames=chunk_frames, return_dict_in_generate=True)
    _sync(device)
    seconds = time.perf_counter() - start
    memory = probe.result()
    tokens_per_frame = processor.tokens_per_frame
    frames = int(inputs["video_frame_counts"][0])
    prompt_tokens = inputs["input_ids"].shape[1] - frames * tokens_per_frame
    Path(spec["out"]).write_text(json.dumps({
        **memory, "frames": frames, "source": "video file (PyAV + processor)" if spec.get("video") else "random pixels",
        "visual_tokens": frames * tokens_per_frame, "tokens_per_frame": tokens_per_frame,
        "prompt_tokens": prompt_tokens, "answer_tokens": output.sequences.shape[1] - inputs["input_ids"].shape[1],
        "state_bytes": _state_bytes(output.cache if hasattr(output, "cache") else output.past_key_values),
        "describe_s": seconds, "frames_per_s": frames / seconds,
        "parameters": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
    }))


def write_synthetic_video(path, num_frames: int, fps: float = 4.0, size: tuple[int, int] = (640, 360)) -> Path:
    """A short MPEG-4 video (moving colour gradients and a square), for the decoding path of `bench memory`."""
    import av
    import numpy as np

    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "3"}
        for i in range(num_frames):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[..., 0] = (xs + 7 * i) % 256
            image[..., 1] = (ys + 3 * i) % 256
            image[..., 2] = (xs + ys + 11 * i) % 256
            x0, y0 = (13 * i) % (width - 64), (5 * i) % (height - 64)
            image[y0:y0 + 64, x0:x0 + 64] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


def _check_common(args):
    if args.chunk_frames < 1 or args.new_tokens < 1:
        raise ValueError("--chunk-frames and --new-tokens must be at least 1.")
    if getattr(args, "repeats", 1) < 1:
        raise ValueError("--repeats must be at least 1.")


def _memory_table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    vision, text = geo["vision_config"], geo["text_config"]
    lines = [
        f"auroralong bench memory  {env['date']}",
        f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}, device "
        f"{report['device']}, {report['dtype']}; 1-minute load average before {env['load_average_before']}, after "
        f"{env['load_average_after']}",
        f"model: size {report['size']} ({report['sizes_source']}), random weights, {geo['parameters'] / 1e6:.1f}M "
        f"parameters: S-ToMe tower {vision['num_hidden_layers']} layers x {vision['hidden_size']} on "
        f"{vision['image_size']}/{vision['patch_size']}, kept ratio {vision['token_kept_ratio']} = "
        f"{geo['tokens_per_frame']} tokens/frame; RWKV-6 {text['num_hidden_layers']} layers x {text['hidden_size']}",
        f"describe, streaming: prompt, then {report['chunk_frames']} frames per chunk through tower + projector into "
        f"the RNN state, then the question and {report['new_tokens']} greedy answer tokens; each length in a fresh "
        "process",
        f"peak = {report['peak_measure']}, over the describe run (model resident, building it left out); baseline = "
        "resident set after the model is built; growth = peak - baseline",
        "",
    ]
    header = ("frames", "source", "visual tokens", "peak MiB", "baseline MiB", "growth MiB", "state KiB",
              "describe", "frames/s")
    rows = [(
        str(row["frames"]), row["source"], str(row["visual_tokens"]), f"{row['peak_mib']:.1f}",
        f"{row['baseline_mib']:.1f}", f"{row['growth_mib']:.1f}", f"{row['state_bytes'] / 1024:.1f}",
        _fmt_s(row["describe_s"]), f"{row['frames_per_s']:.1f}",
    ) for row in report["rows"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines += [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines.append("")
    v = report["verdict"]
    lines.append(f"goal: peak({v['frames_large']} frames) / peak({v['frames_small']} frames) <= {v['goal']:g} "
                 f"(peak = {report['peak_measure']}): {v['ratio']:.3f}: {_verdict(v['pass'])}")
    growth = "-" if v["growth_ratio"] is None else f"{v['growth_ratio']:.3f}"
    lines.append(f"(info) growth({v['frames_large']}) / growth({v['frames_small']}) = {growth}; "
                 f"the RNN state is {report['rows'][0]['state_bytes'] / 1024:.1f} KiB at every length")
    check = report.get("decode_check")
    if check:
        lines.append(f"decoding path: {check['frames']} frames from a {check['video']} file, peak "
                     f"{check['peak_mib']:.1f} MiB = {check['peak_ratio']:.3f}x the random-pixel run of the same "
                     f"length (growth {check['growth_mib']:.1f} vs {check['random_growth_mib']:.1f} MiB)")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def bench_memory(args: argparse.Namespace) -> dict:
    """Peak memory of streaming describe at each length, each in a fresh process; table, and with --json JSON."""
    started = time.perf_counter()
    stream = sys.stderr if args.json else sys.stdout

    _check_common(args)
    sizes, sizes_source = bench_sizes()
    size = sizes[args.size]
    base_spec = {
        "vision_config": size["vision_config"], "text_config": size["text_config"], "question": DESCRIBE_QUESTION,
        "chunk_frames": args.chunk_frames, "new_tokens": args.new_tokens, "device": args.device, "dtype": args.dtype,
        "threads": args.threads, "flush_denormal": not args.no_flush_denormal, "seed": args.seed,
    }
    env = _env(args.threads)
    lengths = sorted(set(args.frames) | ({args.decode_frames} if args.decode_frames > 0 else set()))
    check = None
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-memory-") as tmp_dir:
        tmp = Path(tmp_dir)
        jobs = [(dict(base_spec, frames=frames), f"describe, {frames} frames of random pixels") for frames in lengths]
        if args.decode_frames > 0:
            video = write_synthetic_video(tmp / "synthetic.mp4", args.decode_frames)
            jobs.append((dict(base_spec, frames=args.decode_frames, video=str(video)),
                         f"describe, {args.decode_frames} frames decoded from a synthetic video file"))
        rows = _run_workers("memory", jobs, tmp, log, args.parallel)
    env["load_average_after"] = _load_average()
    if args.decode_frames > 0:
        decoded = rows[-1]
        if decoded["frames"] != args.decode_frames:
            raise RuntimeError(f"the synthetic video gave {decoded['frames']} frames, not {args.decode_frames}")
        same = rows[lengths.index(args.decode_frames)]
        check = {"frames": args.decode_frames, "video": "640x360 MPEG-4 (mp4)", "peak_mib": decoded["peak_mib"],
                 "growth_mib": decoded["growth_mib"], "random_peak_mib": same["peak_mib"],
                 "random_growth_mib": same["growth_mib"], "peak_ratio": decoded["peak_mib"] / same["peak_mib"]}

    random_rows = [row for row in rows if row["source"] == "random pixels"]
    small, large = random_rows[0], random_rows[-1]
    first = rows[0]
    report = {
        "env": env, "size": args.size, "sizes_source": sizes_source, "device": args.device, "dtype": args.dtype,
        "geometry": {"vision_config": size["vision_config"], "text_config": size["text_config"],
                     "tokens_per_frame": first["tokens_per_frame"], "parameters": first["parameters"]},
        "chunk_frames": args.chunk_frames, "new_tokens": args.new_tokens, "question": DESCRIBE_QUESTION,
        "peak_measure": first["measure"], "rows": rows, "decode_check": check,
        "verdict": {
            "goal": MEMORY_RATIO_GOAL, "measure": first["measure"], "frames_small": small["frames"],
            "frames_large": large["frames"], "ratio": large["peak_mib"] / small["peak_mib"],
            "growth_ratio": large["growth_mib"] / small["growth_mib"] if small["growth_mib"] > 0 else None,
            "pass": large["peak_mib"] / small["peak_mib"] <= MEMORY_RATIO_GOAL,
        },
    }
    report["elapsed_s"] = time.perf_counter() - started
    _emit(report, _memory_table(report), args, stream)
    return report



# ----------------------------------------------------------------------------------------------------------------
# bench latency


def transformer_config(text_config: dict, kind: str = "llama", attn: str = "sdpa", max_positions: int = 2**17):
    """A transformers Llama / Qwen2 config of the RWKV-6 model's shape: the same width, depth, FFN width and
    vocabulary, heads of 64 (hidden / 64, no grouped KV), untied head."""
    from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config

    text = Rwkv6Config(**text_config)
    shape = dict(vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
                 num_hidden_layers=text.num_hidden_layers, num_attention_heads=max(text.hidden_size // 64, 1),
                 num_key_value_heads=max(text.hidden_size // 64, 1), max_position_embeddings=max_positions,
                 tie_word_embeddings=False, use_cache=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if kind == "qwen2":
        from transformers import Qwen2Config

        config = Qwen2Config(**shape)
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(**shape)
    config._attn_implementation = attn
    return config


def _visual_chunks(frames: int, chunk_frames: int, tokens_per_frame: int, width: int, seed: int, dtype):
    """The visual tokens both contenders read, [1, K * tokens_per_frame, C] per chunk, the same for both."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, frames, chunk_frames):
        count = min(chunk_frames, frames - start)
        yield torch.randn(1, count * tokens_per_frame, width, generator=g).to(dtype)


def _latency_worker(spec_path: str):
    """One contender's language model in this fresh process: warm-up, baseline, then the timed runs."""
    spec = json.loads(Path(spec_path).read_text())
    device, dtype = _worker_setup(spec)
    from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config
    from auroralong_hf.modeling.modeling_rwkv6 import CACHE_NAME, Rwkv6Cache, Rwkv6ForCausalLM
    from auroralong_hf.processor_setup import processor_for_vision_config

    torch.manual_seed(spec["seed"])
    text = Rwkv6Config(**spec["text_config"])
    ours = spec["contender"] == "ours"
    if ours:
        model = Rwkv6ForCausalLM(text)
    else:
        from transformers import DynamicCache, LlamaForCausalLM, Qwen2ForCausalLM

        config = transformer_config(spec["text_config"], spec["transformer"], spec["attn"])
        model = (Qwen2ForCausalLM if spec["transformer"] == "qwen2" else LlamaForCausalLM)(config)
    model = model.to(device=device, dtype=dtype).eval()
    processor = processor_for_vision_config()
    prefix_ids, suffix_ids = (ids.to(device) for ids in _prompt_ids(processor, spec["question"]))
    tpf, width, chunk_frames = spec["tokens_per_frame"], text.hidden_size, spec["chunk_frames"]

    def timed(fn):
        _sync(device)
        start = time.perf_counter()
        value = fn()
        _sync(device)
        return value, time.perf_counter() - start

    def run(frames: int, new_tokens: int) -> dict:
        chunks = _visual_chunks(frames, chunk_frames, tpf, width, spec["seed"] + 1, dtype)
        prefill = 0.0
        with torch.inference_mode():
            if ours:  # streaming: the prompt's head, then the visual tokens chunk by chunk into the state
                state = Rwkv6Cache(text, 1, device=device, dtype=dtype)
                _, seconds = timed(lambda: model.model(input_ids=prefix_ids, cache=state, use_cache=True))
                prefill += seconds
                for chunk in chunks:
                    chunk = chunk.to(device)
                    _, seconds = timed(lambda chunk=chunk: model.model(inputs_embeds=chunk, cache=state,
                                                                       use_cache=True))
                    prefill += seconds
                cache = state
                first_input = {"input_ids": suffix_ids}
            else:  # the whole prompt at once, visual tokens as inputs_embeds, into a KV cache
                visual = torch.cat(list(chunks), dim=1).to(device)
                embed = model.get_input_embeddings()
                cache = DynamicCache(config=model.config)
                embeds, seconds = timed(lambda: torch.cat([embed(prefix_ids), visual, embed(suffix_ids)], dim=1))
                prefill += seconds
                del visual
                first_input = {"inputs_embeds": embeds}
                del embeds
            out, seconds = timed(lambda: model(**first_input, use_cache=True, logits_to_keep=1,
                                               **{CACHE_NAME: cache}))
            prefill += seconds
            first_input = None
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            decode = 0.0
            for _ in range(new_tokens - 1):
                out, seconds = timed(lambda token=token: model(input_ids=token, use_cache=True,
                                                               **{CACHE_NAME: cache}))
                decode += seconds
                token = out.logits[:, -1].argmax(-1, keepdim=True)
        if ours:
            cache_bytes, seen = _state_bytes(cache), cache.seen_tokens
        else:
            cache_bytes = sum(t.numel() * t.element_size() for layer in cache.layers
                              for t in (layer.keys, layer.values) if t is not None)
            seen = cache.get_seq_length()
        return {"prefill_s": prefill, "decode_s": decode, "latency_s": prefill + decode, "cache_bytes": cache_bytes,
                "cache_tokens": seen}

    run(1, 2)  # warm-up: one frame, two tokens (thread pools, kernels), before the baseline
    probe = _MemoryProbe(device)
    runs = [run(spec["frames"], spec["new_tokens"]) for _ in range(spec["repeats"])]
    memory = probe.result()
    Path(spec["out"]).write_text(json.dumps({
        **memory, "contender": spec["contender"], "frames": spec["frames"], "visual_tokens": spec["frames"] * tpf,
        "prompt_tokens": prefix_ids.shape[1] + suffix_ids.shape[1], "new_tokens": spec["new_tokens"],
        "prefill_s": _summary([r["prefill_s"] for r in runs]), "decode_s": _summary([r["decode_s"] for r in runs]),
        "latency_s": _summary([r["latency_s"] for r in runs]), "cache_bytes": runs[-1]["cache_bytes"],
        "cache_tokens": runs[-1]["cache_tokens"], "parameters": sum(p.numel() for p in model.parameters()),
        "model_class": type(model).__name__,
        "attn_implementation": None if ours else model.config._attn_implementation,
        "threads": torch.get_num_threads(),
    }))


def _latency_table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    lines = [
        f"auroralong bench latency  {env['date']}",
        f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}, device "
        f"{report['device']}, {report['dtype']}; 1-minute load average before {env['load_average_before']}, after "
        f"{env['load_average_after']} (other processes on the CPU make timings noisy)",
        f"language models, size {report['size']} ({report['sizes_source']}), random weights: hidden "
        f"{geo['hidden_size']}, {geo['layers']} layers, FFN {geo['intermediate_size']}, vocab {geo['vocab_size']}",
        f"  ours: Rwkv6ForCausalLM ({geo['ours_parameters'] / 1e6:.1f}M parameters), streaming: visual tokens "
        f"{report['chunk_frames']} frames per chunk into the RNN state",
        f"  transformer: {geo['transformer_class']} ({geo['transformer_parameters'] / 1e6:.1f}M parameters), "
        f"{geo['heads']} heads of 64, {geo['attn_implementation']}, DynamicCache, the whole prompt at once as "
        "inputs_embeds",
        (f"both: sandwich prompt ({report['prompt_tokens']} text tokens) around frames x {report['tokens_per_frame']} "
         "visual tokens (the same random embeddings)" if report["transformer_tokens_per_frame"] == report[
             "tokens_per_frame"] else
         f"both: sandwich prompt ({report['prompt_tokens']} text tokens) around frames x visual tokens (random "
         f"embeddings): {report['tokens_per_frame']} per frame for ours, {report['transformer_tokens_per_frame']} for "
         "the transformer (--transformer-tokens-per-frame)")
        + f", then {report['new_tokens']} greedy answer tokens; "
        f"latency = prefill + decode; {report['repeats']} timed run(s) after a 1-frame warm-up, min reported",
        "memory: each contender and length in a fresh process; growth = peak resident set over the timed runs "
        "(VmHWM, reset at the baseline) - resident set after the model is built and warmed up"
        if report["device"] == "cpu" else
        "memory: each contender and length in a fresh process; growth = max_memory_allocated - allocated after "
        "warm-up",
        "",
    ]
    header = ("frames", "tokens", "contender", "prefill", "decode", "latency", "peak MiB", "growth MiB",
              "cache MiB")
    rows = []
    for row in report["rows"]:
        for name in ("ours", "transformer"):
            r = row[name]
            rows.append((str(row["frames"]), str(r["cache_tokens"]), name, _fmt_s(r["prefill_s"]["min"]),
                         _fmt_s(r["decode_s"]["min"]), _fmt_s(r["latency_s"]["min"]), f"{r['peak_mib']:.1f}",
                         f"{r['growth_mib']:.1f}", f"{r['cache_bytes'] / 2**20:.2f}"))
        rows.append(("", "", "transformer / ours", "", "", f"{row['latency_ratio']:.2f}x",
                     f"{row['peak_ratio']:.2f}x",
                     "-" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}x",
                     f"{row['cache_ratio']:.1f}x"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines += [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines.append("")
    lines.append("claims (" + report["paper"]["setting"] + "):")
    for claim in report["claims"]:
        if not claim["run"]:
            lines.append(f"  {claim['claim']}: paper {claim['paper']:g}x; not run here ({claim['frames']} frames not "
                         "in --frames)")
        elif claim["measured"] is None:
            lines.append(f"  {claim['claim']}: paper {claim['paper']:g}x; no ratio (ours grew by nothing measurable)")
        else:
            lines.append(f"  {claim['claim']}: paper {claim['paper']:g}x, here {claim['measured']:.2f}x "
                         f"({claim['measure']}): {'beats the paper' if claim['beats'] else 'below the paper'}")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def bench_latency(args: argparse.Namespace) -> dict:
    """The RWKV-6 language model (streaming) against a transformer of its shape, same visual tokens, each length
    and contender in a fresh process; table, and with --json one JSON object."""
    started = time.perf_counter()
    stream = sys.stderr if args.json else sys.stdout

    _check_common(args)
    sizes, sizes_source = bench_sizes()
    size = sizes[args.size]
    tpf = args.tokens_per_frame
    if tpf is None:
        from auroralong_hf.modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame

        tpf = tokens_per_frame(SiglipToMeVisionConfig(**size["vision_config"]))
    other_tpf = args.transformer_tokens_per_frame or tpf
    if tpf < 1 or other_tpf < 1:
        raise ValueError("--tokens-per-frame and --transformer-tokens-per-frame must be at least 1.")
    per_frame = {"ours": tpf, "transformer": other_tpf}
    base_spec = {
        "text_config": size["text_config"], "tokens_per_frame": tpf, "question": DESCRIBE_QUESTION,
        "chunk_frames": args.chunk_frames, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "transformer": args.transformer, "attn": args.attn, "device": args.device, "dtype": args.dtype,
        "threads": args.threads, "flush_denormal": not args.no_flush_denormal, "seed": args.seed,
    }
    env = _env(args.threads)
    labels = {"ours": "RWKV-6, streaming", "transformer": f"{args.transformer}, {args.attn}, KV cache"}
    runs = [(frames, name) for frames in args.frames for name in ("ours", "transformer")]
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-latency-") as tmp_dir:
        results = _run_workers(
            "latency", [(dict(base_spec, contender=name, frames=frames, tokens_per_frame=per_frame[name]),
                         f"{labels[name]}: {frames} frames = {frames * per_frame[name]} visual tokens")
                        for frames, name in runs],
            Path(tmp_dir), log, args.parallel,
        )
    rows = []
    for frames in args.frames:
        row = {"frames": frames, "visual_tokens": frames * tpf}
        row.update({name: result for (f, name), result in zip(runs, results, strict=True) if f == frames})
        ours, other = row["ours"], row["transformer"]
        row["latency_ratio"] = other["latency_s"]["min"] / ours["latency_s"]["min"]
        row["peak_ratio"] = other["peak_mib"] / ours["peak_mib"]
        row["memory_ratio"] = other["growth_mib"] / ours["growth_mib"] if ours["growth_mib"] > 0 else None
        row["cache_ratio"] = other["cache_bytes"] / ours["cache_bytes"]
        rows.append(row)
    env["load_average_after"] = _load_average()

    from auroralong_hf.modeling.configuration_rwkv6 import Rwkv6Config

    text = Rwkv6Config(**size["text_config"])
    first = rows[0]
    by_frames = {row["frames"]: row for row in rows}
    claims = []
    for claim, frames, paper, key, measure in (
        ("memory at 1,024 frames", 1024, PAPER_MEMORY_RATIO, "memory_ratio",
         "growth above the loaded model, transformer / ours"),
        ("latency at 60 frames", 60, PAPER_LATENCY_RATIO, "latency_ratio", "prefill + decode, transformer / ours"),
    ):
        measured = by_frames[frames][key] if frames in by_frames else None
        if other_tpf != tpf:
            measure += f" (the transformer fed {other_tpf} tokens per frame, ours {tpf})"
        claims.append({"claim": claim, "frames": frames, "run": frames in by_frames, "paper": paper,
                       "measured": measured, "measure": measure,
                       "beats": None if measured is None else measured > paper})
    report = {
        "env": env, "size": args.size, "sizes_source": sizes_source, "device": args.device, "dtype": args.dtype,
        "geometry": {
            "hidden_size": text.hidden_size, "layers": text.num_hidden_layers,
            "intermediate_size": text.intermediate_size, "vocab_size": text.vocab_size,
            "heads": max(text.hidden_size // 64, 1), "text_config": size["text_config"],
            "ours_parameters": first["ours"]["parameters"], "transformer_class": first["transformer"]["model_class"],
            "transformer_parameters": first["transformer"]["parameters"],
            "attn_implementation": first["transformer"]["attn_implementation"],
        },
        "tokens_per_frame": tpf, "transformer_tokens_per_frame": other_tpf,
        "prompt_tokens": first["ours"]["prompt_tokens"], "new_tokens": args.new_tokens,
        "chunk_frames": args.chunk_frames, "repeats": args.repeats, "question": DESCRIBE_QUESTION,
        "rows": rows, "claims": claims,
        "paper": {"memory_ratio_1024_frames": PAPER_MEMORY_RATIO, "latency_ratio_60_frames": PAPER_LATENCY_RATIO,
                  "setting": PAPER_SETTING},
    }
    report["elapsed_s"] = time.perf_counter() - started
    _emit(report, _latency_table(report), args, stream)
    return report



# ----------------------------------------------------------------------------------------------------------------
# bench train: samples/s and peak memory of a language-stage training step, gradient checkpointing off and on

TRAIN_ANSWER = "A person walks into the room, picks up a red cup from the table, drinks from it and leaves."


def add_bench_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench train`. Defaults: the small random model, batches of 4 samples x 8 frames, 4 timed
    steps after 1 warm-up, checkpointing off then on: about 1.5 minutes and 5.5 GB peak on 2 idle CPU cores."""
    parser.add_argument("--size", choices=tuple(BENCH_SIZES), default="small",
                        help="random model geometry (auroralong create-random's sizes): small (default), tiny, 2b "
                             "(the paper's geometry, for a GPU)")
    parser.add_argument("--steps", type=int, default=4,
                        help="timed training steps per configuration, after one warm-up step (default 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per step (default 4)")
    parser.add_argument("--frames", type=int, default=8, help="video frames per sample (default 8)")
    return _add_run_arguments(parser)


def _synthetic_train_batch(processor, batch_size: int, frames: int, image_size: int, seed: int) -> dict:
    """A batch as `ConversationCollator` makes it for `batch_size` one-video conversations (the question, then
    TRAIN_ANSWER): the collator's own encoding and padding, with random frames in [-1, 1] in place of decoded
    videos. input_ids / attention_mask / labels [B, L] (labels on the answer only), pixel_values_videos
    [B, F, 3, S, S], video_frame_counts [B]."""
    from auroralong_hf.training.data import ConversationCollator

    g = torch.Generator().manual_seed(seed)
    collator = ConversationCollator(processor)
    # the collator's _media decodes the record's files; here each record's one video is random pixels instead
    collator._media = lambda record, messages: (
        [torch.rand(frames, 3, image_size, image_size, generator=g).mul_(2).sub_(1)], [])
    records = [{"id": f"synthetic-{k}", "video": "synthetic.mp4", "conversations": [
        {"from": "human", "value": f"<video>\n{DESCRIBE_QUESTION}"}, {"from": "gpt", "value": TRAIN_ANSWER}]}
        for k in range(batch_size)]
    return collator(records)


def _train_worker(spec_path: str):
    """One configuration in this fresh process: the random model in the language stage (everything trainable,
    the stage's kept ratio), AdamW, baseline, one warm-up step, then the timed steps."""
    spec = json.loads(Path(spec_path).read_text())
    device, _ = _worker_setup(spec)
    from auroralong_hf.create_random import random_model
    from auroralong_hf.training.train import STAGES, apply_stage_freezing, set_token_kept_ratio

    stage = STAGES["language"]
    model, processor = random_model(spec["size"], seed=spec["seed"], dtype=spec["dtype"])
    trainable = apply_stage_freezing(model, stage)
    tokens_per_frame = set_token_kept_ratio(model, processor, stage.token_kept_ratio)
    model.to(device).train()
    if spec["checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = sum(bool(getattr(module, "gradient_checkpointing", False)) for module in model.modules())
    batch = _synthetic_train_batch(processor, spec["batch_size"], spec["frames"], model.config.vision_config.image_size,
                                   spec["seed"] + 1)
    batch = {key: value.to(device) for key, value in batch.items()}
    batch["pixel_values_videos"] = batch["pixel_values_videos"].to(model.dtype)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=stage.learning_rate)

    def step() -> float:
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    probe = _MemoryProbe(device)  # after the model, batch and optimizer are made; the peak covers every step
    losses = [step()]  # warm-up: allocates AdamW's state, warms thread pools and kernels
    _sync(device)
    seconds = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        losses.append(step())
        _sync(device)
        seconds.append(time.perf_counter() - start)
    memory = probe.result()
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    total = sum(seconds)
    Path(spec["out"]).write_text(json.dumps({
        **memory, "checkpointing": spec["checkpointing"], "checkpointed_modules": checkpointed,
        "batch_size": spec["batch_size"], "frames": spec["frames"], "steps": spec["steps"],
        "sequence_length": batch["input_ids"].shape[1], "tokens_per_frame": tokens_per_frame,
        "visual_tokens": spec["frames"] * tokens_per_frame,
        "label_tokens": int((batch["labels"][0] != -100).sum()),
        "step_s": _summary(seconds), "seconds_per_step": total / len(seconds),
        "samples_per_s": spec["batch_size"] * len(seconds) / total, "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_parameters": trainable,
        "trainable_total": sum(p.numel() for p in parameters), "optimizer_state_bytes": state_bytes,
        "threads": torch.get_num_threads(),
    }))


def _train_table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    vision, text = geo["vision_config"], geo["text_config"]
    first = report["rows"][0]
    lines = [
        f"auroralong bench train  {env['date']}",
        f"torch {env['torch']}, {env['threads']} threads, CPU: {env['cpu']}, python {env['python']}, device "
        f"{report['device']}, {report['dtype']}; 1-minute load average before {env['load_average_before']}, after "
        f"{env['load_average_after']} (other processes on the CPU make timings noisy)",
        f"model: size {report['size']}, random weights, {geo['parameters'] / 1e6:.1f}M parameters, "
        f"{geo['trainable_parameters'] / 1e6:.1f}M trainable (language stage: tower + projector + language model): "
        f"S-ToMe tower {vision['num_hidden_layers']} layers x {vision['hidden_size']}, kept ratio "
        f"{report['token_kept_ratio']} = {first['tokens_per_frame']} tokens/frame; RWKV-6 "
        f"{text['num_hidden_layers']} layers x {text['hidden_size']}",
        f"batch: {report['batch_size']} samples of {report['frames']} random frames ({first['visual_tokens']} visual "
        f"tokens) + question + answer = {first['sequence_length']} tokens, loss on the {first['label_tokens']} answer "
        "tokens (as the collator makes it); "
        f"AdamW lr {report['learning_rate']:g}",
        f"step = forward + backward + optimizer.step + zero_grad; {report['steps']} timed step(s) after 1 warm-up; "
        "each configuration in a fresh process",
        f"peak = {report['peak_measure']}, over the warm-up and timed steps (AdamW's state included); baseline = "
        "resident set after the model, batch and optimizer are made; growth = peak - baseline"
        if report["device"] == "cpu" else
        "peak = CUDA max_memory_allocated over the warm-up and timed steps; growth = peak - allocated before them",
        "",
    ]
    header = ("checkpointing", "samples/s", "s/step", "min step", "peak MiB", "baseline MiB", "growth MiB")
    rows = [(
        "on" if row["checkpointing"] else "off", f"{row['samples_per_s']:.3f}", f"{row['seconds_per_step']:.3f}",
        f"{row['step_s']['min']:.3f}", f"{row['peak_mib']:.1f}", f"{row['baseline_mib']:.1f}",
        f"{row['growth_mib']:.1f}",
    ) for row in report["rows"]]
    ratios = report["ratios"]
    rows.append(("on / off", f"{ratios['throughput_ratio']:.2f}x", f"{ratios['slowdown']:.2f}x", "",
                 f"{ratios['peak_ratio']:.2f}x", "",
                 "-" if ratios["growth_ratio"] is None else f"{ratios['growth_ratio']:.2f}x"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines += [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r).rstrip() for r in rows]
    lines.append("")
    saved = ratios["growth_saved"]
    lines.append(f"gradient checkpointing on: {ratios['slowdown']:.2f}x the time per step "
                 f"({ratios['throughput_ratio']:.2f}x the samples/s); memory saved: "
                 f"{ratios['peak_saved_mib']:.1f} MiB = {100 * ratios['peak_saved']:.1f}% of the peak"
                 + ("" if saved is None else f", {100 * saved:.1f}% of the growth")
                 + (" (negative: more memory)" if ratios["peak_saved_mib"] < 0 else ""))
    off, on = report["rows"]
    lines.append(f"(info) checkpointed modules: off {off['checkpointed_modules']}, on {on['checkpointed_modules']}; "
                 f"AdamW state {off['optimizer_state_bytes'] / 2**20:.1f} MiB; loss after the steps: off "
                 f"{off['losses'][-1]:.3f}, on {on['losses'][-1]:.3f}")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def bench_train(args: argparse.Namespace) -> dict:
    """Throughput and peak memory of a language-stage training step, gradient checkpointing off and on, each in a
    fresh process; table, and with --json one JSON object."""
    started = time.perf_counter()
    stream = sys.stderr if args.json else sys.stdout

    if args.steps < 1 or args.batch_size < 1 or args.frames < 1:
        raise ValueError("--steps, --batch-size and --frames must be at least 1.")
    from auroralong_hf.training.train import STAGES

    stage = STAGES["language"]
    base_spec = {"size": args.size, "steps": args.steps, "batch_size": args.batch_size, "frames": args.frames,
                 "device": args.device, "dtype": args.dtype, "threads": args.threads,
                 "flush_denormal": not args.no_flush_denormal, "seed": args.seed}
    env = _env(args.threads)
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-train-") as tmp_dir:
        rows = _run_workers(
            "train", [(dict(base_spec, checkpointing=on),
                       f"language-stage training, gradient checkpointing {'on' if on else 'off'}: {args.steps} "
                       f"step(s) of {args.batch_size} x {args.frames} frames") for on in (False, True)],
            Path(tmp_dir), log, args.parallel,
        )
    env["load_average_after"] = _load_average()
    off, on = rows
    size = bench_sizes()[0][args.size]
    report = {
        "env": env, "size": args.size, "device": args.device, "dtype": args.dtype, "stage": stage.name,
        "token_kept_ratio": stage.token_kept_ratio, "learning_rate": stage.learning_rate, "optimizer": "AdamW",
        "steps": args.steps, "batch_size": args.batch_size, "frames": args.frames,
        "geometry": {"vision_config": size["vision_config"], "text_config": size["text_config"],
                     "parameters": off["parameters"], "trainable_parameters": off["trainable_total"]},
        "peak_measure": off["measure"], "rows": rows,
        "ratios": {
            "slowdown": on["seconds_per_step"] / off["seconds_per_step"],
            "throughput_ratio": on["samples_per_s"] / off["samples_per_s"],
            "peak_ratio": on["peak_mib"] / off["peak_mib"],
            "peak_saved_mib": off["peak_mib"] - on["peak_mib"],
            "peak_saved": 1 - on["peak_mib"] / off["peak_mib"],
            "growth_ratio": on["growth_mib"] / off["growth_mib"] if off["growth_mib"] > 0 else None,
            "growth_saved": 1 - on["growth_mib"] / off["growth_mib"] if off["growth_mib"] > 0 else None,
        },
    }
    report["elapsed_s"] = time.perf_counter() - started
    print(_train_table(report), file=stream, flush=True)
    if args.json:
        print(json.dumps(_jsonable(report)), flush=True)
    return report



def main(argv=None) -> dict:
    parser = add_bench_lm_arguments(argparse.ArgumentParser(prog="auroralong bench lm", description=__doc__))
    return bench_lm(parser.parse_args(argv))


if __name__ == "__main__":
    workers = {"--rwkv-worker": _rwkv_worker, "--memory-worker": _memory_worker, "--latency-worker": _latency_worker,
               "--train-worker": _train_worker}
    if len(sys.argv) == 3 and sys.argv[1] in workers:
        workers[sys.argv[1]](sys.argv[2])
    else:
        main()
