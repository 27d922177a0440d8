"""`auroralong bench train`: samples/s and peak memory of a language-stage training step (everything trainable, kept
ratio 0.1, AdamW) on a collator-made synthetic batch, gradient checkpointing off and on, each in a fresh process
(`python -m auroralong_hf.bench.train SPEC.json`, `worker`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ..create_random import random_model, size_configs
from ..measure import PeakMemory
from ..training.data import ConversationCollator
from ..training.train import STAGES, apply_stage_freezing
from .runner import (
    DESCRIBE_QUESTION,
    add_run_arguments,
    add_size_argument,
    device_details,
    environment,
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

TRAIN_ANSWER = "A person walks into the room, picks up a red cup from the table, drinks from it and leaves."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench train`. Defaults: the small random model, batches of 4 samples x 8 frames, 4 timed
    steps after 1 warm-up, checkpointing off then on: about 1.5 minutes and 5.5 GB peak on 2 idle CPU cores."""
    add_size_argument(parser)
    parser.add_argument("--steps", type=int, default=4,
                        help="timed training steps per configuration, after one warm-up step (default 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per step (default 4)")
    parser.add_argument("--frames", type=int, default=8, help="video frames per sample (default 8)")
    return add_run_arguments(parser)


class RandomVideoCollator(ConversationCollator):
    """`ConversationCollator` whose records' one video each is `frames` random frames [frames, 3, S, S] in [-1, 1]
    (drawn from `generator`, record by record) instead of a decoded file: no media is read or checked."""

    def __init__(self, processor, frames: int, image_size: int, generator: torch.Generator):
        super().__init__(processor)
        self.frames, self.image_size, self.generator = frames, image_size, generator

    def load_media(self, record, messages) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        shape = (self.frames, 3, self.image_size, self.image_size)
        return [torch.rand(shape, generator=self.generator).mul_(2).sub_(1)], []


def synthetic_train_batch(processor, batch_size: int, frames: int, image_size: int, seed: int) -> dict:
    """A batch as `ConversationCollator` makes it for `batch_size` one-video conversations (the question, then
    TRAIN_ANSWER): the collator's own encoding and padding, with random frames in [-1, 1] in place of decoded
    videos. input_ids / attention_mask / labels [B, L] (labels on the answer only), pixel_values_videos
    [B, F, 3, S, S], video_frame_counts [B]."""
    collator = RandomVideoCollator(processor, frames, image_size, torch.Generator().manual_seed(seed))
    records = [{"id": f"synthetic-{k}", "video": "synthetic.mp4", "conversations": [
        {"from": "human", "value": f"<video>\n{DESCRIBE_QUESTION}"}, {"from": "gpt", "value": TRAIN_ANSWER}]}
        for k in range(batch_size)]
    return collator(records)


def training_row(size: str, *, device, dtype: str = "float32", seed: int = 0, batch_size: int = 4, frames: int = 8,
                 steps: int = 4, checkpointing: bool = False) -> dict:
    """Language-stage training steps of the random model of `size`, built on `device` in `dtype` directly
    (everything trainable, the stage's kept ratio, AdamW): the memory baseline, one warm-up step, then `steps` timed
    steps of a `synthetic_train_batch` of `batch_size` x `frames` frames; the row of the report. On CUDA the
    language model's WKV runs on fla's kernels (forward and backward) when fla is installed."""
    device = torch.device(device)
    stage = STAGES["language"]
    model, processor = random_model(size, seed=seed, dtype=dtype, token_kept_ratio=stage.token_kept_ratio,
                                    device=device)
    trainable = apply_stage_freezing(model, stage)
    tokens_per_frame = model.tokens_per_frame
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = sum(bool(getattr(module, "gradient_checkpointing", False)) for module in model.modules())
    batch = synthetic_train_batch(processor, batch_size, frames, model.config.vision_config.image_size, seed + 1)
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

    probe = PeakMemory(device)  # after the model, batch and optimizer are made; the peak covers every step
    losses = [step()]  # warm-up: allocates AdamW's state, warms thread pools and kernels
    synchronize(device)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(step())
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    memory = probe.report()
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    total = sum(seconds)
    return {
        **memory, "checkpointing": checkpointing, "checkpointed_modules": checkpointed,
        "batch_size": batch_size, "frames": frames, "steps": steps,
        "sequence_length": batch["input_ids"].shape[1], "tokens_per_frame": tokens_per_frame,
        "visual_tokens": frames * tokens_per_frame,
        "label_tokens": int((batch["labels"][0] != -100).sum()),
        "step_s": summary(seconds), "seconds_per_step": total / len(seconds),
        "samples_per_s": batch_size * len(seconds) / total, "losses": losses,
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_parameters": trainable,
        "trainable_total": sum(p.numel() for p in parameters), "optimizer_state_bytes": state_bytes,
        "wkv_backend": model.model.language_model.wkv_backend(device), "threads": torch.get_num_threads(),
    }


def worker(spec: dict) -> dict:
    """One configuration in this fresh process (`training_row`)."""
    device, _ = set_up_worker(spec)
    return training_row(spec["size"], device=device, dtype=spec["dtype"], seed=spec["seed"],
                        batch_size=spec["batch_size"], frames=spec["frames"], steps=spec["steps"],
                        checkpointing=spec["checkpointing"])


def table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    vision, text = geo["vision_config"], geo["text_config"]
    first = report["rows"][0]
    lines = [
        *header_lines("train", env, device_details(report, noisy=True)),
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
    lines += format_table(header, rows)
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


def measure(args: argparse.Namespace) -> dict:
    """Throughput and peak memory of a language-stage training step, gradient checkpointing off and on, each in a
    fresh process; the report (plain values)."""
    started = time.perf_counter()
    if args.steps < 1 or args.batch_size < 1 or args.frames < 1:
        raise ValueError("--steps, --batch-size and --frames must be at least 1.")
    stage = STAGES["language"]
    base_spec = {"size": args.size, "steps": args.steps, "batch_size": args.batch_size, "frames": args.frames,
                 **run_spec(args)}
    env = environment(args.threads, load_average_before=load_average())
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-train-") as tmp_dir:
        rows = run_workers(
            __name__, [(dict(base_spec, checkpointing=on),
                       f"language-stage training, gradient checkpointing {'on' if on else 'off'}: {args.steps} "
                       f"step(s) of {args.batch_size} x {args.frames} frames") for on in (False, True)],
            Path(tmp_dir), args.parallel,
        )
    env["load_average_after"] = load_average()
    off, on = rows
    size = size_configs(args.size)
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
    return jsonable(report)


if __name__ == "__main__":
    run_worker_process(worker)
