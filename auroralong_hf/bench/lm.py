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
child process (its JIT switch is read at import time), one per JIT setting tried: `python -m auroralong_hf.bench.lm
SPEC.json` (`worker`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..convert.rwkv6_layout import fla_to_blinkdl_state_dict
from ..modeling.cache_rwkv6 import CACHE_NAME
from ..modeling.configuration_rwkv6 import Rwkv6Config
from ..modeling.modeling_rwkv6 import Rwkv6ForCausalLM
from ..modeling.wkv6 import wkv6_chunked, wkv6_reference
from .runner import (
    environment,
    format_seconds,
    format_table,
    format_timing,
    header_lines,
    jsonable,
    log,
    output_tail,
    run_worker_process,
    start_worker,
    time_interleaved,
    time_runs,
    verdict,
)

# goals of the four figures (and of the logits cross-check)
WKV_SPEEDUP_GOAL = 5.0
PREFILL_RATIO_GOAL = 1.5
GEMM_RATIO_GOAL = 1.25
DECODE_RATIO_GOAL = 1.25
LOGITS_TOLERANCE = 1e-3


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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


def measure_wkv(args) -> dict:
    """1.: `wkv6_chunked` against the per-token loops (`wkv6_reference`, fla's naive recurrence), interleaved."""
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
    timings = time_interleaved(contenders, args.repeats)
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
# the model (its BlinkDL export: convert.rwkv6_layout.fla_to_blinkdl_state_dict)


def build_random_model(args):
    """Rwkv6ForCausalLM of the asked geometry with Finch's init, made a little less trivial (see below), fp32, eval.

    Finch's init leaves the token-shift LoRA nearly zero (W1 in +-1e-4), which would make the logits cross-check
    blind to a wrong group order in the export; its weights are therefore redrawn larger. Decays keep Finch's range.
    """
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


# ----------------------------------------------------------------------------------------------------------------
# 2. prefill, ours and the `rwkv` package's


def worker(spec: dict) -> dict:
    """Child process (`python -m auroralong_hf.bench.lm SPEC.json`): load the .pth in the `rwkv` package and time
    `forward(tokens, None)`; {"timing", "logits" (of the last token)}."""
    torch.set_num_threads(spec["threads"])
    torch.set_flush_denormal(spec["flush_denormal"])
    os.environ["RWKV_JIT_ON"] = spec["jit"]
    os.environ["RWKV_CUDA_ON"] = "0"
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its loading log
        from rwkv.model import RWKV

        model = RWKV(model=spec["model"], strategy="cpu fp32")
    tokens = spec["tokens"]
    logits = {}

    def prefill():
        with torch.inference_mode():
            logits["last"], _ = model.forward(tokens, None)  # seq mode: the whole list at once, last logits

    # two warm-ups: TorchScript (RWKV_JIT_ON=1) optimises a function on its second call
    timing = time_runs(prefill, spec["repeats"], warmup=2)
    return {"timing": timing, "logits": logits["last"].float().tolist()}


def run_rwkv_package(pth: Path, tokens: list[int], jit: str, args, tmp: Path) -> dict:
    """The `rwkv` package's prefill of `tokens` with RWKV_JIT_ON=`jit`, in a child process (`worker`)."""
    spec = {"model": str(pth), "tokens": tokens, "jit": jit, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "flush_denormal": not args.no_flush_denormal}
    log(f"  prefill: rwkv package, RWKV_JIT_ON={jit} (child process) ...")
    proc, wall, out = start_worker(__name__, spec, tmp / f"rwkv_jit{jit}",
                                   env={"RWKV_JIT_ON": jit, "RWKV_CUDA_ON": "0"}, timeout=1800)
    if proc.returncode != 0:
        return {"jit": jit, "error": f"exit {proc.returncode}: " + output_tail(proc, 5)}
    data = json.loads(out.read_text())
    return {"jit": jit, "prefill_s": data["timing"], "logits": torch.tensor(data["logits"]), "process_wall_s": wall}


def measure_prefill(model, args) -> tuple[dict, dict]:
    """2. and 3.: prefill of ours and of the `rwkv` package; ours against its dense matmuls alone."""
    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, args.vocab_size, (1, args.prefill_len), generator=g)
    out = {}

    def prefill():
        with torch.inference_mode():
            out["logits"] = model(input_ids=tokens, use_cache=True, logits_to_keep=1).logits

    gemms, flops = dense_matmuls(model, args.prefill_len, args.seed + 2)
    log(f"  prefill T={args.prefill_len}: Rwkv6ForCausalLM and its dense matmuls alone (interleaved) ...")
    timings = time_interleaved({"prefill": prefill, "gemm": gemms}, args.repeats)
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
        rwkv_version = importlib.metadata.version("rwkv")
    except importlib.metadata.PackageNotFoundError:
        result["rwkv_note"] = "skipped: the `rwkv` package is not installed (pip install rwkv==0.8.32)"
        return result, gemm

    with tempfile.TemporaryDirectory(prefix="auroralong-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        pth = tmp / "random-finch.pth"
        # fp32, as the `rwkv` package runs it below (strategy "cpu fp32")
        torch.save(fla_to_blinkdl_state_dict({name: t.detach().float() for name, t in model.state_dict().items()}), pth)
        modes = ("0", "1") if args.rwkv_jit == "auto" else (args.rwkv_jit,)
        tried = [run_rwkv_package(pth, tokens[0].tolist(), jit, args, tmp) for jit in modes]

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


def dense_matmuls(model, seq_len: int, seed: int):
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


def decode_read_bytes(model) -> int:
    """Bytes of the weights one decode step of an `Rwkv6ForCausalLM` reads: every parameter once, but only one row
    of the embedding table (the token's)."""
    all_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.model.embeddings.weight
    return all_bytes - (embedding.shape[0] - 1) * embedding.shape[1] * embedding.element_size()


def measure_decode(model, args) -> tuple[dict, dict]:
    """4. One decode step against streaming its weights once at the measured copy bandwidth.

    Copy bandwidth := bytes of the source / time of `dst.copy_(src)` (the copy itself moves twice that or more).
    Timed interleaved with the step: the copy, a read-only stream (`src.sum()`, for information) and the step's
    matrix-vector products alone (for information).
    """
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

    gemvs, _ = dense_matmuls(model, 1, args.seed + 4)
    log(f"  decode: {args.decode_steps} steps, {args.copy_mib} MiB copies (interleaved) ...")
    timings = time_interleaved(
        {"step": step, "gemv": gemvs, "copy": lambda: dst.copy_(src), "read": lambda: src.sum()},
        max(args.decode_steps, 1),
    )
    timing, gemv = timings["step"], timings["gemv"]
    nbytes = numel * 4
    bandwidth = {"bytes": nbytes, "copy_s": timings["copy"], "copy_gb_per_s": nbytes / timings["copy"]["min"] / 1e9,
                 "read_sum_s": timings["read"], "read_gb_per_s": nbytes / timings["read"]["min"] / 1e9,
                 "definition": "bytes of the source / min time of dst.copy_(src); read: of src.sum()"}
    all_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    read_bytes = decode_read_bytes(model)
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


def table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    lines = [
        *header_lines("lm", env),
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
    rows.append((f"   wkv6_chunked (chunk {wkv['chunk_size']})", format_timing(wkv["chunked_s"]), "", ""))
    rows.append(("   wkv6_reference (per-token loop)", format_timing(wkv["reference_s"]), "", ""))
    rows.append(("   fla naive_recurrent_rwkv6 (per-token)",
                 format_timing(wkv["fla_naive_s"]) if wkv["fla_naive_s"] else wkv["fla_note"], "", ""))
    for name, label in (("reference", "wkv6_reference"), ("fla_naive", "fla naive")):
        if f"speedup_vs_{name}" in wkv:
            s = wkv[f"speedup_vs_{name}"]
            rows.append((f"   speedup chunked vs {label}", f"{s['min']:.2f}x (median {s['median']:.2f}x)",
                         f">= {WKV_SPEEDUP_GOAL:g}x", verdict(s["min"] >= WKV_SPEEDUP_GOAL)))
    rows.append(("   max |chunked - reference|", f"{wkv['max_abs_diff_vs_reference']:.2e}", "", ""))

    pre = report["prefill"]
    rows.append((f"2. prefill T={pre['tokens']} (logits of the last token)", "", "", ""))
    rows.append(("   Rwkv6ForCausalLM (torch path)",
                 f"{pre['ours_tokens_per_s']:.0f} tok/s ({format_timing(pre['ours_s'])})", "", ""))
    rw = pre["rwkv"]
    if rw is None:
        rows.append(("   rwkv package", pre["rwkv_note"], "", ""))
    else:
        tried = ", ".join(
            f"JIT={jit}: {format_seconds(v) if isinstance(v, float) else v}" for jit, v in rw["jit_tried"].items()
        )
        rows.append((f"   rwkv {rw['version']} cpu fp32, RWKV_JIT_ON={rw['jit']}",
                     f"{rw['tokens_per_s']:.0f} tok/s ({format_timing(rw['prefill_s'])})", "", ""))
        rows.append(("   rwkv JIT settings tried (min)", tried, "", ""))
        rows.append(("   ratio ours / rwkv (tokens/s)",
                     f"{pre['ratio']['min']:.2f}x (median {pre['ratio']['median']:.2f}x)",
                     f">= {PREFILL_RATIO_GOAL:g}x", verdict(pre["pass"])))
        rows.append(("   last-token logits max |ours - rwkv|",
                     f"{rw['logits_max_abs_diff']:.2e} (max |logit| {rw['logits_max_abs']:.2f})",
                     f"<= {LOGITS_TOLERANCE:g}", verdict(rw["logits_ok"])))

    gemm = report["gemm"]
    rows.append(("3. GEMM bound of that prefill", "", "", ""))
    rows.append(("   dense matmuls alone", f"{format_timing(gemm['gemm_s'])}, {gemm['gemm_gflop']:.3g} GFLOP at "
                 f"{gemm['gemm_gflops_per_s']:.0f} GFLOP/s", "", ""))
    r = gemm["prefill_over_gemm"]
    rows.append(("   prefill time / GEMM time", f"{r['min']:.2f}x (median {r['median']:.2f}x)",
                 f"<= {GEMM_RATIO_GOAL:g}x", verdict(gemm["pass"])))

    dec, bw = report["decode"], report["bandwidth"]
    rows.append((f"4. decode (1 token after a {dec['prefix_tokens']}-token prefill)", "", "", ""))
    rows.append(("   one decode step", f"{format_timing(dec['step_s'])} = {dec['tokens_per_s']:.1f} tok/s", "", ""))
    rows.append(("   (info) its matrix-vector products alone",
                 f"{format_timing(dec['gemv_s'])}; step / these = {dec['decode_over_gemv']:.2f}x", "", ""))
    rows.append((f"   copy bandwidth ({bw['bytes'] >> 20} MiB copy_)",
                 f"{bw['copy_gb_per_s']:.1f} GB/s (source bytes / copy time)", "", ""))
    rows.append(("   weights read per step",
                 f"{dec['weight_bytes_read_per_step'] / 1e9:.3f} GB (all params {dec['weight_bytes_all'] / 1e9:.3f} GB"
                 " less the embedding table but 1 row)", "", ""))
    rows.append(("   stream time (weights read / copy bw)", format_seconds(dec["stream_s"]), "", ""))
    d = dec["decode_over_stream"]
    rows.append(("   decode time / stream time", f"{d['min']:.2f}x (median {d['median']:.2f}x)",
                 f"<= {DECODE_RATIO_GOAL:g}x", verdict(dec["pass"])))
    rows.append(("   (info) same with read-only bandwidth",
                 f"{dec['decode_over_stream_read_bandwidth']:.2f}x at {bw['read_gb_per_s']:.1f} GB/s (src.sum())",
                 "", ""))

    lines += format_table(("figure", "measured", "goal", "result"), rows)
    lines.append("")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict:
    """Measure the four figures; the report (plain values)."""
    started = time.perf_counter()

    if args.threads:
        torch.set_num_threads(args.threads)
    flush = not args.no_flush_denormal
    flush_supported = torch.set_flush_denormal(flush)
    try:
        model = build_random_model(args)
        config = model.config
        report = {
            "env": environment(flush_denormal=flush and flush_supported),
            "geometry": {
                "layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "heads": config.num_heads,
                "head_size": config.head_size, "intermediate_size": config.intermediate_size,
                "vocab_size": config.vocab_size, "time_mix_lora_rank": config.time_mix_lora_rank,
                "time_decay_lora_rank": config.time_decay_lora_rank, "dtype": "float32",
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "repeats": args.repeats,
        }
        report["wkv"] = measure_wkv(args)
        report["prefill"], report["gemm"] = measure_prefill(model, args)
        report["bandwidth"], report["decode"] = measure_decode(model, args)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    report["elapsed_s"] = time.perf_counter() - started
    return jsonable(report)


if __name__ == "__main__":
    run_worker_process(worker)
