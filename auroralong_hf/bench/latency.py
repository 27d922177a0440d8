"""`auroralong bench latency`: the RWKV-6 language model, streaming, against a transformers Llama / Qwen2 of the same
shape (sdpa, KV cache) fed the same visual tokens, at 60 and 1,024 frames: memory and latency ratios next to the
paper's 34x and 8.13x.

Each contender and length runs in `python -m auroralong_hf.bench.latency SPEC.json` (`worker`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ..create_random import building_on, size_configs
from ..measure import PeakMemory
from ..modeling.cache_rwkv6 import CACHE_NAME, Rwkv6Cache
from ..modeling.configuration_rwkv6 import Rwkv6Config
from ..modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame
from ..modeling.modeling_rwkv6 import Rwkv6ForCausalLM
from ..processor_setup import processor_for_vision_config
from .runner import (
    DESCRIBE_QUESTION,
    SIZES_SOURCE,
    add_streaming_arguments,
    check_streaming_arguments,
    device_details,
    environment,
    format_seconds,
    format_table,
    header_lines,
    jsonable,
    load_average,
    run_spec,
    run_worker_process,
    run_workers,
    set_up_worker,
    summary,
    synchronize,
)

PAPER_MEMORY_RATIO = 34.0  # the paper: 34x less memory than InternVL-1.5 2B at 1,024 frames
PAPER_LATENCY_RATIO = 8.13  # the paper: 8.13x lower latency than InternVL-1.5 2B at 60 frames
PAPER_SETTING = ("the paper's figures compare whole models on a GPU (AuroraLong, RWKV-6 1.6B, against InternVL-1.5 "
                 "2B); these are CPU figures of the language-model part alone, with random weights")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench latency`. Defaults: the small random model's language model, 60 and 1,024 frames
    of 58 tokens, 32 answer tokens, 2 timed runs: about 2 minutes on 2 idle CPU cores."""
    add_streaming_arguments(parser, "60,1024", new_tokens=32, repeats=2)
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


def prompt_ids(processor, question: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sandwich prompt around one video: ids [1, P] before the visual tokens and [1, S] after them."""
    return tuple(torch.tensor([processor.tokenizer.encode(text)]) for text in processor.video_prompt_pieces(question))



def transformer_config(text_config: dict, kind: str = "llama", attn: str = "sdpa", max_positions: int = 2**17):
    """A transformers Llama / Qwen2 config of the RWKV-6 model's shape: the same width, depth, FFN width and
    vocabulary, heads of 64 (hidden / 64, no grouped KV), untied head."""
    text = Rwkv6Config(**text_config)
    shape = dict(vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
                 num_hidden_layers=text.num_hidden_layers, num_attention_heads=max(text.hidden_size // 64, 1),
                 num_key_value_heads=max(text.hidden_size // 64, 1), max_position_embeddings=max_positions,
                 tie_word_embeddings=False, use_cache=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    config = Qwen2Config(**shape) if kind == "qwen2" else LlamaConfig(**shape)
    config._attn_implementation = attn
    return config


def visual_chunks(frames: int, chunk_frames: int, tokens_per_frame: int, width: int, seed: int, dtype):
    """The visual tokens both contenders read, [1, K * tokens_per_frame, C] per chunk, the same for both."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, frames, chunk_frames):
        count = min(chunk_frames, frames - start)
        yield torch.randn(1, count * tokens_per_frame, width, generator=g).to(dtype)


def build_language_model(text_config: dict, contender: str, *, transformer: str = "llama", attn: str = "sdpa",
                         seed: int = 0, device="cpu", dtype="float32"):
    """A contender's random language model in eval mode, built on `device` in `dtype` directly
    (`create_random.building_on`) after `torch.manual_seed(seed)`: "ours", the `Rwkv6ForCausalLM` of `text_config`
    (its default WKV backend: fla's kernels on CUDA when installed), or "transformer", the Llama / Qwen2 of its shape
    (`transformer_config`)."""
    torch.manual_seed(seed)
    with building_on(device, dtype):
        if contender == "ours":
            return Rwkv6ForCausalLM(Rwkv6Config(**text_config)).eval()
        config = transformer_config(text_config, transformer, attn)
        return (Qwen2ForCausalLM if transformer == "qwen2" else LlamaForCausalLM)(config).eval()


def contender_row(model, spec: dict, prompt: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """One contender's row on the model's device: a 1-frame warm-up, the memory baseline, then `spec["repeats"]`
    timed runs of the sandwich prompt (`prompt_ids`) around `spec["frames"]` frames of visual tokens and
    `spec["new_tokens"]` greedy tokens (spec: contender, frames, tokens_per_frame, chunk_frames, new_tokens,
    repeats, seed)."""
    device, dtype = model.device, model.dtype
    ours = spec["contender"] == "ours"
    prefix_ids, suffix_ids = (ids.to(device) for ids in prompt)
    tpf, width, chunk_frames = spec["tokens_per_frame"], model.config.hidden_size, spec["chunk_frames"]

    def timed(fn):
        synchronize(device)
        start = time.perf_counter()
        value = fn()
        synchronize(device)
        return value, time.perf_counter() - start

    def run(frames: int, new_tokens: int) -> dict:
        chunks = visual_chunks(frames, chunk_frames, tpf, width, spec["seed"] + 1, dtype)
        prefill = 0.0
        with torch.inference_mode():
            if ours:  # streaming: the prompt's head, then the visual tokens chunk by chunk into the state
                state = Rwkv6Cache(model.config, 1, device=device, dtype=dtype)
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
            cache_bytes, seen = cache.nbytes, cache.seen_tokens
        else:
            cache_bytes = sum(t.numel() * t.element_size() for layer in cache.layers
                              for t in (layer.keys, layer.values) if t is not None)
            seen = cache.get_seq_length()
        return {"prefill_s": prefill, "decode_s": decode, "latency_s": prefill + decode, "cache_bytes": cache_bytes,
                "cache_tokens": seen}

    run(1, 2)  # warm-up: one frame, two tokens (thread pools, kernels), before the baseline
    probe = PeakMemory(device)
    runs = [run(spec["frames"], spec["new_tokens"]) for _ in range(spec["repeats"])]
    memory = probe.report()
    return {
        **memory, "contender": spec["contender"], "frames": spec["frames"], "visual_tokens": spec["frames"] * tpf,
        "prompt_tokens": prefix_ids.shape[1] + suffix_ids.shape[1], "new_tokens": spec["new_tokens"],
        "prefill_s": summary([r["prefill_s"] for r in runs]), "decode_s": summary([r["decode_s"] for r in runs]),
        "latency_s": summary([r["latency_s"] for r in runs]), "cache_bytes": runs[-1]["cache_bytes"],
        "cache_tokens": runs[-1]["cache_tokens"], "parameters": sum(p.numel() for p in model.parameters()),
        "model_class": type(model).__name__,
        "attn_implementation": None if ours else model.config._attn_implementation,
        "threads": torch.get_num_threads(),
    }


def worker(spec: dict) -> dict:
    """One contender's language model in this fresh process, built on the device (`build_language_model`), then
    `contender_row`."""
    device, dtype = set_up_worker(spec)
    model = build_language_model(spec["text_config"], spec["contender"], transformer=spec["transformer"],
                                 attn=spec["attn"], seed=spec["seed"], device=device, dtype=dtype)
    return contender_row(model, spec, prompt_ids(processor_for_vision_config(), spec["question"]))


def compare(frames: int, tokens_per_frame: int, ours: dict, transformer: dict) -> dict:
    """One video length's row: both contenders' rows and the transformer / ours ratios of latency, peak memory,
    memory growth (None when ours grew by nothing measurable) and cache bytes."""
    return {
        "frames": frames, "visual_tokens": frames * tokens_per_frame, "ours": ours, "transformer": transformer,
        "latency_ratio": transformer["latency_s"]["min"] / ours["latency_s"]["min"],
        "peak_ratio": transformer["peak_mib"] / ours["peak_mib"],
        "memory_ratio": transformer["growth_mib"] / ours["growth_mib"] if ours["growth_mib"] > 0 else None,
        "cache_ratio": transformer["cache_bytes"] / ours["cache_bytes"],
    }


def table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    lines = [
        *header_lines("latency", env, device_details(report, noisy=True)),
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
            rows.append((str(row["frames"]), str(r["cache_tokens"]), name, format_seconds(r["prefill_s"]["min"]),
                         format_seconds(r["decode_s"]["min"]), format_seconds(r["latency_s"]["min"]),
                         f"{r['peak_mib']:.1f}", f"{r['growth_mib']:.1f}", f"{r['cache_bytes'] / 2**20:.2f}"))
        rows.append(("", "", "transformer / ours", "", "", f"{row['latency_ratio']:.2f}x",
                     f"{row['peak_ratio']:.2f}x",
                     "-" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}x",
                     f"{row['cache_ratio']:.1f}x"))
    lines += format_table(header, rows)
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


def measure(args: argparse.Namespace) -> dict:
    """The RWKV-6 language model (streaming) against a transformer of its shape, same visual tokens, each length
    and contender in a fresh process; the report (plain values)."""
    started = time.perf_counter()
    check_streaming_arguments(args)
    size = size_configs(args.size)
    tpf = args.tokens_per_frame
    if tpf is None:
        tpf = tokens_per_frame(SiglipToMeVisionConfig(**size["vision_config"]))
    other_tpf = args.transformer_tokens_per_frame or tpf
    if tpf < 1 or other_tpf < 1:
        raise ValueError("--tokens-per-frame and --transformer-tokens-per-frame must be at least 1.")
    per_frame = {"ours": tpf, "transformer": other_tpf}
    base_spec = {
        "text_config": size["text_config"], "tokens_per_frame": tpf, "question": DESCRIBE_QUESTION,
        "chunk_frames": args.chunk_frames, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "transformer": args.transformer, "attn": args.attn, **run_spec(args),
    }
    env = environment(args.threads, load_average_before=load_average())
    labels = {"ours": "RWKV-6, streaming", "transformer": f"{args.transformer}, {args.attn}, KV cache"}
    runs = [(frames, name) for frames in args.frames for name in ("ours", "transformer")]
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-latency-") as tmp_dir:
        results = run_workers(
            __name__, [(dict(base_spec, contender=name, frames=frames, tokens_per_frame=per_frame[name]),
                         f"{labels[name]}: {frames} frames = {frames * per_frame[name]} visual tokens")
                        for frames, name in runs],
            Path(tmp_dir), args.parallel,
        )
    by_run = dict(zip(runs, results, strict=True))
    rows = [compare(frames, tpf, by_run[frames, "ours"], by_run[frames, "transformer"]) for frames in args.frames]
    env["load_average_after"] = load_average()

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
        "env": env, "size": args.size, "sizes_source": SIZES_SOURCE, "device": args.device, "dtype": args.dtype,
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
    return jsonable(report)


if __name__ == "__main__":
    run_worker_process(worker)
