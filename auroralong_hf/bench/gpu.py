"""`auroralong bench gpu`: every figure of issue 12's table, measured in one process on one GPU and printed beside
its goal, with the limit it is held against.

The figures, at the paper's geometry (`--size 2b`: SigLIP-L/16-384 less its last layer + Finch 1.6B, 24 x 2048),
random weights built directly on the GPU in bf16 (`create_random.building_on`), and what each costs of the suite's
4-minute budget on one H100/H200 (the figures as the issue measured them; less once the goals are met):

- streaming (first; ~40 s): `auroralong describe`'s path (processor -> generate, chunks of frames into the RNN
  state, `bench memory`'s `describe_row`): a first 1,024-frame video in a process that has run no kernel yet, then 64
  frames, then 1,024 again: frames/s over the first video and after it, the first video's extra time, peak memory
  1,024 vs 64 frames;
- decode (~10 s, and an estimated 30-60 s to compile the fused step): one token per step through `generate`, what
  users call (the per-step time is the difference of 33 and 1 new tokens), batch 1 and 16, against streaming the
  weights once at the memory bandwidth; for information, the decode step alone (the graph replayed) and, at batch 1
  on CUDA, `generate` with the step compiled (transformers' `compile_config`) and that first call's time;
- prefill (~20 s, Triton autotuning included): `model(input_ids [B, 4096], logits_to_keep=1)`, batch 1 and 8,
  against 2 x params x tokens at the dense bf16 peak;
- tower (~5 s): the S-ToMe tower (23 layers) on 64 frames at kept ratio 0.1 vs 1.0 against the FLOP bound (`bench
  vision`'s `time_ratios`);
- transformer (~40 s): `bench latency`'s contenders, the RWKV-6 language model streaming against a Llama of its shape
  (sdpa, KV cache) on the same visual tokens, at 60 and 1,024 frames, next to the paper's 8.13x and 34x;
- train (~40 s): one language-stage training step (`bench train`'s `training_row`: bf16, AdamW, fla's backward when
  installed), samples/s.

The streaming group runs first so that its first video pays what a user's first video pays (Triton autotuning and
compilation, cuBLAS set-up): nothing else in this process has run a kernel by then. Timings on the GPU run from an
idle device to the end of the work (`runner.synchronize`). Every group runs in this process (no workers: a fresh
process costs ~10 s of imports, and peak GPU memory is `max_memory_allocated`, reset per figure); each model is
freed before the next group. A group that fails is reported (its traceback on stderr) and the others still run;
the exit status is then 1.

The limits: memory bandwidth and dense bf16 peak from a datasheet table by `torch.cuda.get_device_name` (`GPU_SPECS`);
for a GPU not in it, measured here (a large copy: 2 x its bytes / time; a large bf16 GEMM), which the report says.
Goals are judged only for the issue's setting (CUDA, `--size 2b`, bf16); `--device cpu --size tiny` runs every
figure at toy lengths in seconds, as a smoke test of the command, and marks every goal n/a.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import time
import traceback
from dataclasses import asdict, dataclass

import torch
from transformers import CompileConfig

from ..create_random import SIZES, random_model, size_configs
from ..modeling.cache_rwkv6 import CACHE_NAME, Rwkv6Cache
from ..modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame
from ..modeling.decode_step_rwkv6 import Rwkv6DecodeStep, resolve_decode_implementation
from ..modeling.streaming import default_chunk_frames
from ..processor_setup import processor_for_vision_config
from . import latency, memory, train, vision
from .lm import decode_read_bytes
from .runner import (
    DESCRIBE_QUESTION,
    SIZES_SOURCE,
    environment,
    format_table,
    header_lines,
    jsonable,
    log,
    synchronize,
    time_interleaved,
    time_runs,
)

# (substrings of torch.cuda.get_device_name, memory bandwidth in bytes/s, dense bf16 peak in FLOP/s): datasheet
# figures, the first row whose substrings all occur wins ("NVIDIA H100 80GB HBM3" is the SXM part)
GPU_SPECS = (
    (("H200",), 4.8e12, 989e12),
    (("H100", "PCIe"), 2.0e12, 756e12),
    (("H100", "NVL"), 3.9e12, 835e12),
    (("H100",), 3.35e12, 989e12),
    (("A100", "80GB"), 2.0e12, 312e12),
)

GROUPS = ("streaming", "decode", "prefill", "tower", "transformer", "train")  # in the order they run
SUITE_GOAL_S = 240.0


@dataclass(frozen=True)
class Plan:
    """The lengths and repeats of one run: `FULL` (the issue's table, on a GPU) or `SMOKE` (toy lengths, CPU)."""

    decode_batches: tuple[int, int] = (1, 16)
    decode_prompt: int = 16  # prompt tokens before the timed steps
    decode_steps: int = 32  # per-step time = (generate 1 + steps tokens - generate 1 token) / steps
    prefill_tokens: int = 4096
    prefill_batches: tuple[int, int] = (1, 8)
    tower_frames: int = 64
    tower_ratio: float = 0.1
    stream_frames: tuple[int, int] = (64, 1024)  # (small, large)
    stream_new_tokens: int = 16
    latency_frames: tuple[int, int] = (60, 1024)  # (the paper's latency length, its memory length)
    latency_new_tokens: int = 32
    train_batch: int = 4
    train_frames: int = 8
    train_steps: int = 3
    repeats: int = 3
    copy_mib: int = 1024
    gemm_size: int = 8192


FULL = Plan()
# decode_steps: the per-step time is a difference of two generate calls; over 1 step a busy CPU's noise made it
# negative
SMOKE = Plan(decode_steps=8, prefill_tokens=32, tower_frames=1, stream_frames=(1, 2), stream_new_tokens=2,
             latency_frames=(1, 2), latency_new_tokens=2, train_batch=1, train_frames=1, train_steps=1, repeats=1,
             copy_mib=8, gemm_size=128)


@dataclass(frozen=True)
class Figure:
    """One row of the table: its key in the report's "figures", its group, what it is, its unit and its goal
    (comparison and threshold; None: information only). `paper`: the goal is the paper's figure, not the issue's."""

    key: str
    group: str
    label: str
    unit: str
    goal: tuple[str, float] | None
    paper: bool = False


FIGURES = (
    Figure("decode_batch1_ms", "decode", "decode, one token, batch 1", "ms", ("<=", 1.5)),
    Figure("decode_batch16_ms", "decode", "decode, one token, batch 16", "ms", ("<=", 3.0)),
    Figure("prefill_batch1_tokens_per_s", "prefill", "prefill, batch 1", "tokens/s", (">=", 110e3)),
    Figure("prefill_batch8_tokens_per_s", "prefill", "prefill, batch 8", "tokens/s", (">=", 150e3)),
    Figure("tower_speedup", "tower", "S-ToMe tower, speed-up of the kept ratio vs 1.0", "x", (">=", 1.75)),
    Figure("tower_frames_per_s", "tower", "S-ToMe tower at the kept ratio", "frames/s", (">=", 2000.0)),
    Figure("streaming_frames_per_s", "streaming", "streaming describe, the first video", "frames/s", None),
    Figure("streaming_frames_per_s_warm", "streaming", "streaming describe, after the first video", "frames/s",
           (">=", 500.0)),
    Figure("first_video_extra_s", "streaming", "first video's extra time", "s", ("<=", 3.0)),
    Figure("streaming_peak_memory_ratio", "streaming", "peak GPU memory, long vs short video", "x", ("<=", 1.15)),
    Figure("transformer_latency_ratio", "transformer", "latency, transformer / ours", "x",
           (">=", latency.PAPER_LATENCY_RATIO), paper=True),
    Figure("transformer_memory_ratio", "transformer", "memory, transformer / ours", "x",
           (">=", latency.PAPER_MEMORY_RATIO), paper=True),
    Figure("train_samples_per_s", "train", "language-stage training step", "samples/s", None),
    Figure("suite_s", "suite", "the whole suite", "s", ("<=", SUITE_GOAL_S)),
)
FIGURE_KEYS = tuple(figure.key for figure in FIGURES)


def group_list(text: str) -> list[str]:
    """argparse type: comma-separated figure groups (see GROUPS), kept in GROUPS' order."""
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(GROUPS)} (comma-separated), got {text!r}")
    return [name for name in GROUPS if name in names]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench gpu`. Defaults: the paper's geometry in bf16 on CUDA, every figure: <= 4 minutes
    on one H100/H200."""
    parser.add_argument("--size", choices=tuple(SIZES), default=None,
                        help="random model geometry (auroralong create-random's sizes; default 2b, the paper's, on "
                             "CUDA and tiny on the CPU; the goals are judged at 2b only)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default) or cpu: a smoke test of the command at toy lengths, whose numbers are "
                             "not measurements")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="weights and activations (default bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--figures", type=group_list, default=list(GROUPS),
                        help=f"figure groups to run, comma-separated (default all: {','.join(GROUPS)})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default; 1 for a smoke test on a busy CPU)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (the table goes to stderr)")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# the hardware's limits


def gpu_spec(name: str) -> tuple[float, float] | None:
    """(memory bandwidth in bytes/s, dense bf16 peak in FLOP/s) of a GPU named `name` from GPU_SPECS, or None."""
    for parts, bandwidth, peak in GPU_SPECS:
        if all(part in name for part in parts):
            return bandwidth, peak
    return None


def measure_hardware(device: torch.device, dtype: torch.dtype, plan: Plan) -> dict:
    """The device's name, a copy's and a GEMM's measured rates, and the limits the figures use: the datasheet's
    where GPU_SPECS knows the GPU, else the measured ones."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else environment()["cpu"]
    source = torch.ones(plan.copy_mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    copy = time_runs(lambda: target.copy_(source), 5, device=device)
    copy_bandwidth = 2 * source.nbytes / copy["min"]  # a copy reads and writes every byte
    n = plan.gemm_size
    left, right = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    gemm = time_runs(lambda: left @ right, 5, device=device)
    gemm_flops = 2 * n**3 / gemm["min"]
    spec = gpu_spec(name) if device.type == "cuda" else None
    hardware = {"name": name, "copy_mib": plan.copy_mib, "copy_s": copy, "copy_bytes_per_s": copy_bandwidth,
                "gemm_size": n, "gemm_s": gemm, "gemm_flops_per_s": gemm_flops}
    if spec is not None:
        hardware.update(bandwidth=spec[0], peak_flops=spec[1], source="datasheet")
    else:  # not in GPU_SPECS (or a CPU)
        hardware.update(bandwidth=copy_bandwidth, peak_flops=gemm_flops, source="measured here")
    return hardware


# ----------------------------------------------------------------------------------------------------------------
# the figure groups


def language_model(args, device, dtype):
    """The RWKV-6 language model of the size (Finch 1.6B's geometry at 2b), `bench latency`'s "ours" contender."""
    return latency.build_language_model(size_configs(args.size)["text_config"], "ours", seed=args.seed,
                                        device=device, dtype=dtype)


def measure_streaming(args, plan: Plan, device: torch.device, dtype: str) -> dict:
    """`bench memory`'s `describe_row` three times on one model: the long video first (the process's first kernels),
    then the short and the long one again."""
    model, processor = random_model(args.size, seed=args.seed, dtype=dtype, device=device)
    small, large = plan.stream_frames
    chunk_frames = default_chunk_frames(device)
    settings = {"question": DESCRIBE_QUESTION, "chunk_frames": chunk_frames,
                "new_tokens": plan.stream_new_tokens, "seed": args.seed + 1}
    runs = {}
    for name, frames in (("first", large), ("small", small), ("large", large)):
        log(f"  streaming describe, {frames} frames ({name}) ...")
        runs[name] = memory.describe_row(model, processor, frames=frames, **settings)
    first, warm = runs["first"], runs["large"]
    return {
        "frames": {"small": small, "large": large}, "chunk_frames": chunk_frames,
        "new_tokens": plan.stream_new_tokens, "wkv_backend": model.model.language_model.wkv_backend(device),
        "runs": runs, "frames_per_s": large / first["describe_s"], "frames_per_s_warm": large / warm["describe_s"],
        "first_video_extra_s": first["describe_s"] - warm["describe_s"],
        "peak_memory_ratio": warm["peak_mib"] / runs["small"]["peak_mib"], "peak_measure": warm["measure"],
    }


def measure_decode(args, plan: Plan, device: torch.device, dtype: str, hardware: dict) -> dict:
    """Per-step time of `generate` at each batch size (interleaved runs of 1 and 1 + steps new tokens, greedy, no
    early stop), against streaming the weights a step reads, and the state read and written, once at the memory
    bandwidth; and, for information, one plain forward step on a state."""
    model = language_model(args, device, dtype)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed + 2)
    result = {"steps": plan.decode_steps, "prompt_tokens": plan.decode_prompt,
              "wkv_backend": model.model.wkv_backend(device), "weight_bytes_read": decode_read_bytes(model),
              "bandwidth": hardware["bandwidth"], "batches": []}
    for batch in plan.decode_batches:
        prompt = torch.randint(0, vocab, (batch, plan.decode_prompt), generator=g).to(device)

        def generate(new_tokens: int, prompt=prompt, **options):
            with torch.inference_mode():
                model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, **options)

        log(f"  decode, batch {batch}: generate 1 and {1 + plan.decode_steps} tokens (interleaved) ...")
        timings = time_interleaved({"short": lambda: generate(1), "long": lambda: generate(1 + plan.decode_steps)},
                                   plan.repeats, device=device)
        step_s = (timings["long"]["min"] - timings["short"]["min"]) / plan.decode_steps
        # compiled at batch 1 only: each batch size is another compilation (tens of seconds of the 4 minutes)
        compiled = (compiled_decode(generate, plan, device)
                    if device.type == "cuda" and batch == plan.decode_batches[0] else None)
        with torch.inference_mode():
            state = getattr(model(input_ids=prompt, use_cache=True, logits_to_keep=1), CACHE_NAME)

            def forward_step(token=prompt[:, -1:], state=state):
                model(input_ids=token, cache=state, use_cache=True)

            forward = time_runs(forward_step, plan.decode_steps, device=device)
            # the step generate replays, without transformers' loop around it: what the loop adds is the difference
            step = Rwkv6DecodeStep.for_model(model, capture=resolve_decode_implementation(model) == "cuda_graph")
            try:
                replay = time_runs(lambda token=prompt[:, -1:], state=state, step=step: step(token, state),
                                   plan.decode_steps, device=device)
            finally:
                step.release()
        state_bytes = Rwkv6Cache(model.config, batch, device=device, dtype=model.dtype).nbytes
        limit_s = (result["weight_bytes_read"] + 2 * state_bytes) / hardware["bandwidth"]  # the state: read, written
        result["batches"].append({"batch": batch, "generate_s": timings, "step_s": step_s, "forward_step_s": forward,
                                  "decode_step_s": replay, "decode_step_captured": step.graph is not None,
                                  "compiled": compiled,
                                  "state_bytes": state_bytes, "limit_s": limit_s})
    return result


def compiled_decode(generate, plan: Plan, device: torch.device) -> dict:
    """generate's per-step time with the decode step compiled (transformers' `compile_config`; inductor fuses the
    element-wise chains) and the first call's time, compiling included. Its failure is reported, not raised: it is
    an option beside the figure, which stands without it."""
    config = CompileConfig(fullgraph=True)
    try:
        synchronize(device)
        start = time.perf_counter()
        generate(2, compile_config=config)
        synchronize(device)
        first_s = time.perf_counter() - start
        timings = time_interleaved({"short": lambda: generate(1, compile_config=config),
                                    "long": lambda: generate(1 + plan.decode_steps, compile_config=config)},
                                   plan.repeats, device=device)
    except Exception as error:  # noqa: BLE001 - reported beside the figures
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}
    return {"first_call_s": first_s, "step_s": (timings["long"]["min"] - timings["short"]["min"]) / plan.decode_steps}


def measure_prefill(args, plan: Plan, device: torch.device, dtype: str, hardware: dict) -> dict:
    """Tokens/s of one forward over [B, T] token ids (a state made, logits of the last token only) at each batch
    size, against 2 x params x tokens FLOPs at the dense peak."""
    model = language_model(args, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(args.seed + 3)
    result = {"tokens": plan.prefill_tokens, "wkv_backend": model.model.wkv_backend(device), "parameters": params,
              "peak_flops": hardware["peak_flops"], "bound_tokens_per_s": hardware["peak_flops"] / (2 * params),
              "batches": []}
    for batch in plan.prefill_batches:
        ids = torch.randint(0, model.config.vocab_size, (batch, plan.prefill_tokens), generator=g).to(device)

        def prefill(ids=ids):
            with torch.inference_mode():
                model(input_ids=ids, use_cache=True, logits_to_keep=1)

        log(f"  prefill, batch {batch} x {plan.prefill_tokens} tokens ...")
        timing = time_runs(prefill, plan.repeats, device=device)
        result["batches"].append({"batch": batch, "s": timing,
                                  "tokens_per_s": batch * plan.prefill_tokens / timing["min"]})
    return result


def measure_tower(args, plan: Plan, device: torch.device, dtype: str) -> dict:
    """`bench vision`'s `time_ratios` on the size's tower (sdpa): the kept ratio against 1.0."""
    config = SiglipToMeVisionConfig(**dict(size_configs(args.size)["vision_config"], token_kept_ratio=1.0))
    config._attn_implementation = "sdpa"
    model = vision.random_vision_tower(config, seed=args.seed, device=device, dtype=dtype)
    pixels = vision.random_pixels(plan.tower_frames, config.image_size, args.seed + 1, device, model.dtype)
    base, merged = vision.time_ratios(model, pixels, [plan.tower_ratio], plan.repeats, merge_free=False,
                                      device=device)
    return {"frames": plan.tower_frames, "layers": config.num_hidden_layers, "ratio": plan.tower_ratio,
            "rows": [base, merged], "speedup": merged["speedup"]["min"], "bound_speedup": merged["bound_speedup"],
            "frames_per_s": merged["frames_per_s"], "frames_per_s_base": base["frames_per_s"]}


def measure_transformer(args, plan: Plan, device: torch.device, dtype: str) -> dict:
    """`bench latency`'s contenders, each built once and run at both lengths (`contender_row`), compared per length
    (`compare`). The memory figure is the growth ratio; where ours grew by nothing measurable (only the CPU's
    resident set can say so) it falls back to the peak ratio, and says so."""
    text_config = size_configs(args.size)["text_config"]
    per_frame = tokens_per_frame(SiglipToMeVisionConfig(**size_configs(args.size)["vision_config"]))
    prompt = latency.prompt_ids(processor_for_vision_config(), DESCRIBE_QUESTION)
    results = {}
    for name in ("ours", "transformer"):
        model = latency.build_language_model(text_config, name, seed=args.seed, device=device, dtype=dtype)
        for frames in plan.latency_frames:
            log(f"  {name}: {frames} frames = {frames * per_frame} visual tokens ...")
            spec = {"contender": name, "frames": frames, "tokens_per_frame": per_frame,
                    "chunk_frames": default_chunk_frames(device), "new_tokens": plan.latency_new_tokens, "repeats": 1,
                    "seed": args.seed}
            results[frames, name] = latency.contender_row(model, spec, prompt)
        del model
        release(device)  # the first contender's weights are not in the second one's peak
    rows = [latency.compare(frames, per_frame, results[frames, "ours"], results[frames, "transformer"])
            for frames in plan.latency_frames]
    short, long = rows
    memory_measure = "growth above the loaded model"
    memory_ratio = long["memory_ratio"]
    if memory_ratio is None:
        memory_measure, memory_ratio = "peak, the model included (ours grew by nothing measurable)", long["peak_ratio"]
    return {"tokens_per_frame": per_frame, "rows": rows, "latency_frames": short["frames"],
            "latency_ratio": short["latency_ratio"], "memory_frames": long["frames"], "memory_ratio": memory_ratio,
            "memory_measure": memory_measure, "transformer_class": long["transformer"]["model_class"]}


def measure_train(args, plan: Plan, device: torch.device, dtype: str) -> dict:
    """`bench train`'s `training_row`, gradient checkpointing off."""
    log(f"  language-stage training: {plan.train_steps} step(s) of {plan.train_batch} x {plan.train_frames} "
        "frames ...")
    row = train.training_row(args.size, device=device, dtype=dtype, seed=args.seed, batch_size=plan.train_batch,
                             frames=plan.train_frames, steps=plan.train_steps)
    return {"row": row, "samples_per_s": row["samples_per_s"], "wkv_backend": row["wkv_backend"]}


def release(device: torch.device) -> None:
    """On a GPU, free what the last group left (its models are out of scope by now, reference cycles aside), so that
    the next group finds the memory and its peak is its own."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# the run


def package_version(*names: str) -> str | None:
    """The installed version of the first of `names` (distribution names) that is installed, or None."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def measure(args: argparse.Namespace) -> dict:
    """Every figure group asked for (`--figures`), streaming first; the report (plain values) with "figures"
    (FIGURE_KEYS: value, limit, goal, verdict) and "errors" (group -> the error of a group that failed).
    ValueError without CUDA for `--device cuda`."""
    started = time.perf_counter()
    device = torch.device(args.device)
    args.size = args.size or ("2b" if device.type == "cuda" else "tiny")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"no CUDA device (torch {torch.__version__} sees none); this command measures the GPU path: "
                         "`auroralong bench gpu --device cpu --size tiny` runs it as a smoke test of the command")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return measure_groups(args, device, started)
    finally:
        torch.set_num_threads(threads)


def measure_groups(args: argparse.Namespace, device: torch.device, started: float) -> dict:
    """`measure`'s body, once the device is checked and the threads set."""
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    plan = FULL if device.type == "cuda" else SMOKE
    setting = {"CUDA": device.type == "cuda", "size 2b": args.size == "2b", "bfloat16": dtype == "bfloat16"}
    report = {
        "env": environment(cuda=torch.version.cuda, triton=package_version("triton"),
                           fla=package_version("flash-linear-attention", "fla-core")),
        "device": args.device, "dtype": dtype, "size": args.size, "sizes_source": SIZES_SOURCE,
        "plan": "full" if plan is FULL else "smoke", "lengths": asdict(plan), "groups": args.figures,
        "judged": all(setting.values()), "not_the_setting": [name for name, ok in setting.items() if not ok],
        "errors": {},
    }

    def run_group(name: str, measure_group) -> None:
        if name not in args.figures:
            return
        log(f"{name}:")
        start = time.perf_counter()
        try:
            report[name] = measure_group()
            report[name]["seconds"] = time.perf_counter() - start
        # Any failure of one group (out of memory, a kernel that does not compile) is reported and the suite goes
        # on: a GPU is lent for minutes, and the other figures are worth having. Its traceback goes to stderr and
        # the exit status is 1 (runner.run), so nothing is hidden.
        except Exception as error:
            log(traceback.format_exc())
            report["errors"][name] = f"{type(error).__name__}: {error}"
        release(device)

    run_group("streaming", lambda: measure_streaming(args, plan, device, dtype))  # first: see the module docstring
    log("hardware: a copy and a GEMM ...")
    report["hardware"] = hardware = measure_hardware(device, getattr(torch, dtype), plan)
    run_group("decode", lambda: measure_decode(args, plan, device, dtype, hardware))
    run_group("prefill", lambda: measure_prefill(args, plan, device, dtype, hardware))
    run_group("tower", lambda: measure_tower(args, plan, device, dtype))
    run_group("transformer", lambda: measure_transformer(args, plan, device, dtype))
    run_group("train", lambda: measure_train(args, plan, device, dtype))
    report["elapsed_s"] = time.perf_counter() - started
    report["figures"] = figures(report, plan)
    return jsonable(report)


def figure_values(report: dict) -> dict[str, tuple[float, float | None, str]]:
    """key -> (value, limit or reference or None, what the limit is) of the groups that ran."""
    values = {"suite_s": (report["elapsed_s"], None, "")}
    hardware = report["hardware"]
    bandwidth = f"{hardware['bandwidth'] / 1e12:.3g} TB/s ({hardware['source']})"
    if "decode" in report:
        for key, row in zip(("decode_batch1_ms", "decode_batch16_ms"), report["decode"]["batches"], strict=True):
            values[key] = (row["step_s"] * 1e3, row["limit_s"] * 1e3,
                           f"the weights once + the state read and written, at {bandwidth}")
    if "prefill" in report:
        prefill = report["prefill"]
        note = (f"2 x {prefill['parameters'] / 1e9:.3g}B params x tokens at {hardware['peak_flops'] / 1e12:.3g} "
                f"TFLOP/s ({hardware['source']})")
        for key, row in zip(("prefill_batch1_tokens_per_s", "prefill_batch8_tokens_per_s"), prefill["batches"],
                            strict=True):
            values[key] = (row["tokens_per_s"], prefill["bound_tokens_per_s"], note)
    if "tower" in report:
        tower = report["tower"]
        values["tower_speedup"] = (tower["speedup"], tower["bound_speedup"], "FLOP bound")
        values["tower_frames_per_s"] = (tower["frames_per_s"], tower["frames_per_s_base"], "at kept ratio 1.0")
    if "streaming" in report:
        stream = report["streaming"]
        values["streaming_frames_per_s"] = (stream["frames_per_s"], None, "")
        values["streaming_frames_per_s_warm"] = (stream["frames_per_s_warm"], None, "")
        values["first_video_extra_s"] = (stream["first_video_extra_s"], None,
                                         "the first long video's time - the same video's again")
        runs = stream["runs"]
        values["streaming_peak_memory_ratio"] = (
            stream["peak_memory_ratio"], None,
            f"{runs['large']['peak_mib']:.0f} vs {runs['small']['peak_mib']:.0f} MiB ({stream['peak_measure']})")
    if "transformer" in report:
        other = report["transformer"]
        values["transformer_latency_ratio"] = (other["latency_ratio"], latency.PAPER_LATENCY_RATIO,
                                               f"the paper's; {other['transformer_class']}, sdpa, KV cache")
        values["transformer_memory_ratio"] = (other["memory_ratio"], latency.PAPER_MEMORY_RATIO,
                                              f"the paper's; {other['memory_measure']}")
    if "train" in report:
        row = report["train"]["row"]
        values["train_samples_per_s"] = (row["samples_per_s"], None,
                                         f"{row['step_s']['min']:.3f} s/step, peak {row['peak_mib']:.0f} MiB")
    return values


def figures(report: dict, plan: Plan) -> dict[str, dict]:
    """The table's rows by FIGURE_KEYS: label, unit, value, limit, goal and verdict: PASS / MISS against the goal
    (for the paper's figures: reaching it), "n/a" outside the issue's setting (CUDA, 2b, bf16), "info" without a
    goal, "not run" for a group that was skipped or failed."""
    values = figure_values(report)
    lengths = asdict(plan)
    rows = {}
    for figure in FIGURES:
        value, limit, note = values.get(figure.key, (None, None, ""))
        row = {"label": LABELS[figure.key].format(**lengths), "unit": figure.unit, "value": value, "limit": limit,
               "limit_note": note, "goal": None, "verdict": "not run"}
        if figure.goal is not None:
            row["goal"] = {"op": figure.goal[0], "value": figure.goal[1], "paper": figure.paper}
        if value is not None:
            if figure.goal is None:
                row["verdict"] = "info"
            elif not report["judged"]:
                row["verdict"] = "n/a"
            else:
                op, threshold = figure.goal
                row["verdict"] = "PASS" if (value <= threshold if op == "<=" else value >= threshold) else "MISS"
        rows[figure.key] = row
    return rows


LABELS = {
    "decode_batch1_ms": "decode, one token, batch {decode_batches[0]}",
    "decode_batch16_ms": "decode, one token, batch {decode_batches[1]}",
    "prefill_batch1_tokens_per_s": "prefill, T={prefill_tokens}, batch {prefill_batches[0]}",
    "prefill_batch8_tokens_per_s": "prefill, T={prefill_tokens}, batch {prefill_batches[1]}",
    "tower_speedup": "S-ToMe tower, {tower_frames} frames: kept ratio {tower_ratio} vs 1.0",
    "tower_frames_per_s": "S-ToMe tower, {tower_frames} frames, at kept ratio {tower_ratio}",
    "streaming_frames_per_s": "streaming describe, a first {stream_frames[1]}-frame video",
    "streaming_frames_per_s_warm": "streaming describe, {stream_frames[1]} frames after the first video",
    "first_video_extra_s": "the first video's extra time",
    "streaming_peak_memory_ratio": "peak memory, {stream_frames[1]} vs {stream_frames[0]} frames",
    "transformer_latency_ratio": "latency at {latency_frames[0]} frames, transformer / ours",
    "transformer_memory_ratio": "memory at {latency_frames[1]} frames, transformer / ours",
    "train_samples_per_s": "language-stage training step, {train_batch} x {train_frames} frames",
    "suite_s": "the whole suite",
}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("ms", "s"):
        return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def table(report: dict) -> str:
    env, hardware = report["env"], report["hardware"]
    size = size_configs(report["size"])
    vision, text = size["vision_config"], size["text_config"]
    judged = ("goals judged: their setting (CUDA, size 2b, bfloat16)" if report["judged"] else
              f"goals NOT judged (n/a): they hold for CUDA, size 2b, bfloat16 (not here: "
              f"{', '.join(report['not_the_setting'])}); {report['plan']} lengths" + (
                  ": a smoke test of the command, its numbers (limits included) are not measurements"
                  if report["plan"] == "smoke" else ""))
    backends = {name: report[name]["wkv_backend"] for name in ("streaming", "decode", "prefill", "train")
                if name in report}
    lines = [
        *header_lines("gpu", env, f", device {report['device']} ({hardware['name']}), {report['dtype']}; CUDA "
                                  f"{env['cuda']}, triton {env['triton']}, fla {env['fla']}"),
        f"models: size {report['size']} ({report['sizes_source']}), random weights built on the device: tower "
        f"{vision['num_hidden_layers']} layers x {vision['hidden_size']}, RWKV-6 {text['num_hidden_layers']} layers x "
        f"{text['hidden_size']}; WKV backend: " + (", ".join(f"{k} {v}" for k, v in backends.items()) or "-"),
        f"hardware: bandwidth {hardware['bandwidth'] / 1e12:.3g} TB/s and dense peak "
        f"{hardware['peak_flops'] / 1e12:.4g} TFLOP/s ({hardware['source']}); measured: {hardware['copy_mib']} MiB "
        f"copy {hardware['copy_bytes_per_s'] / 1e12:.3g} TB/s (2 x bytes / time), {hardware['gemm_size']}^3 GEMM "
        f"{hardware['gemm_flops_per_s'] / 1e12:.4g} TFLOP/s",
        judged,
        "",
    ]
    rows = []
    for row in report["figures"].values():
        goal = row["goal"]
        goal_text = "-" if goal is None else (
            f"{goal['op']} {format_value(goal['value'], row['unit'])}" + (" (paper)" if goal["paper"] else ""))
        limit = "" if row["limit"] is None else format_value(row["limit"], row["unit"]) + ": "
        rows.append((row["label"], format_value(row["value"], row["unit"]), (limit + row["limit_note"]) or "-",
                     goal_text, row["verdict"]))
    lines += format_table(("figure", "measured", "limit / reference", "goal", "result"), rows)
    lines.append("")
    if "decode" in report:
        batches = report["decode"]["batches"]
        lines.append("decode (info): one plain forward step on a state, " + ", ".join(
            f"batch {row['batch']} {row['forward_step_s']['min'] * 1e3:.3g} ms" for row in batches)
            + "; the figure is generate's per-step time, what users get")
        lines.append("decode (info): the decode step alone (" + (
            "CUDA graph replayed" if all(row["decode_step_captured"] for row in batches) else "not captured")
            + "), " + ", ".join(f"batch {row['batch']} {row['decode_step_s']['min'] * 1e3:.3g} ms" for row in batches)
            + "; generate's time less this is transformers' loop around it")
        compiled = [(row["batch"], row["compiled"]) for row in batches if row["compiled"] is not None]
        if compiled:
            lines.append("decode (info): generate with the step compiled (compile_config), " + ", ".join(
                f"batch {batch} " + (f"ERROR {result['error']}" if "error" in result else
                                     f"{result['step_s'] * 1e3:.3g} ms a token "
                                     f"(first call {result['first_call_s']:.1f} s)") for batch, result in compiled))
    for name, error in report["errors"].items():
        lines.append(f"ERROR in {name} (not run; traceback above): {error}")
    seconds = ", ".join(f"{name} {report[name]['seconds']:.1f} s" for name in GROUPS if name in report)
    lines.append(f"total wall time {report['elapsed_s']:.1f} s ({seconds})")
    return "\n".join(lines)
