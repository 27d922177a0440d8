"""`auroralong bench memory`: peak memory of the streaming describe pipeline (prompt -> video chunks through tower +
projector into the RNN state -> answer) at 64, 256 and 1,024 frames, each length in a fresh process (goal: peak at
1,024 frames <= 1.15x the peak at 64), plus one run through the real decoding path (a synthetic video file).

Each length runs in `python -m auroralong_hf.bench.memory SPEC.json` (`worker`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ..create_random import random_model, size_configs
from ..measure import PeakMemory
from ..modeling.cache_rwkv6 import CACHE_NAME
from ..synthetic_video import write_synthetic_video
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
    synchronize,
    verdict,
)

MEMORY_RATIO_GOAL = 1.15  # peak memory of describe at the most frames / at the fewest (1,024 vs 64 by default)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `auroralong bench memory`. Defaults: the small random model, 64 / 256 / 1,024 frames and a 64-frame
    video file: about 1.5 minutes on 2 idle CPU cores."""
    add_streaming_arguments(parser, "64,256,1024", new_tokens=16, repeats=None)
    parser.add_argument("--decode-frames", type=int, default=64,
                        help="also run describe on a synthetic video file of this many frames through the real "
                             "decoding path (PyAV + the processor), to compare with the random-pixel run of the same "
                             "length; 0 skips it (default 64)")
    return parser


class RandomVideo:
    """A lazy video of preprocessed-looking random frames (uniform in [-1, 1]), made one chunk at a time, on `device`
    (on a GPU the frames are drawn there: a CPU drawing 3.5 M numbers per 8-frame chunk would be the bottleneck)."""

    def __init__(self, frames: int, image_size: int, seed: int, device="cpu"):
        self.num_frames, self.image_size, self.seed = frames, image_size, seed
        self.device = torch.device(device)

    def chunks(self, chunk_frames: int):
        g = torch.Generator(self.device).manual_seed(self.seed)
        for start in range(0, self.num_frames, chunk_frames):
            count = min(chunk_frames, self.num_frames - start)
            yield torch.rand(count, 3, self.image_size, self.image_size, generator=g,
                             device=self.device).mul_(2).sub_(1)


def describe_row(model, processor, *, frames: int, question: str, chunk_frames: int, new_tokens: int, seed: int,
                 video: str | None = None) -> dict:
    """One streaming `describe` of `frames` random frames drawn from `seed` (or of the video file `video`) through
    the transformers main path (processor -> generate, which streams the video `chunk_frames` frames at a time) and
    `new_tokens` greedy answer tokens, on the model's device; peak memory from just before it (`PeakMemory`) and
    the time to the last token on the device. A row of the memory report."""
    device = model.device
    probe = PeakMemory(device)
    source = video or RandomVideo(frames, model.config.vision_config.image_size, seed, device)
    messages = [{"role": "user", "content": [{"type": "video", "video": source},
                                             {"type": "text", "text": question}]}]
    start = time.perf_counter()
    with torch.inference_mode():
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               processor_kwargs={"num_frames": frames}).to(device)
        output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                chunk_frames=chunk_frames, return_dict_in_generate=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    memory = probe.report()
    tokens_per_frame = processor.tokens_per_frame
    frames = int(inputs["video_frame_counts"][0])
    prompt_tokens = inputs["input_ids"].shape[1] - frames * tokens_per_frame
    return {
        **memory, "frames": frames, "source": "video file (PyAV + processor)" if video else "random pixels",
        "visual_tokens": frames * tokens_per_frame, "tokens_per_frame": tokens_per_frame,
        "prompt_tokens": prompt_tokens, "answer_tokens": output.sequences.shape[1] - inputs["input_ids"].shape[1],
        "state_bytes": getattr(output, CACHE_NAME).nbytes,
        "describe_s": seconds, "frames_per_s": frames / seconds,
        "parameters": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
    }


def worker(spec: dict) -> dict:
    """One `describe` run in this fresh process: the random model of the spec's size built on the device
    (`create_random.random_model`), then `describe_row`; the row of the report."""
    device, _ = set_up_worker(spec)
    model, processor = random_model(spec["size"], seed=spec["seed"], dtype=spec["dtype"], device=device)
    return describe_row(model, processor, frames=spec["frames"], question=spec["question"],
                        chunk_frames=spec["chunk_frames"], new_tokens=spec["new_tokens"], seed=spec["seed"] + 1,
                        video=spec.get("video"))


def table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    vision, text = geo["vision_config"], geo["text_config"]
    lines = [
        *header_lines("memory", env, device_details(report)),
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
        format_seconds(row["describe_s"]), f"{row['frames_per_s']:.1f}",
    ) for row in report["rows"]]
    lines += format_table(header, rows)
    lines.append("")
    v = report["verdict"]
    lines.append(f"goal: peak({v['frames_large']} frames) / peak({v['frames_small']} frames) <= {v['goal']:g} "
                 f"(peak = {report['peak_measure']}): {v['ratio']:.3f}: {verdict(v['pass'])}")
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


def measure(args: argparse.Namespace) -> dict:
    """Peak memory of streaming describe at each length, each in a fresh process; the report (plain values)."""
    started = time.perf_counter()
    check_streaming_arguments(args)
    size = size_configs(args.size)
    base_spec = {"size": args.size, "question": DESCRIBE_QUESTION, "chunk_frames": args.chunk_frames,
                 "new_tokens": args.new_tokens, **run_spec(args)}
    env = environment(args.threads, load_average_before=load_average())
    lengths = sorted(set(args.frames) | ({args.decode_frames} if args.decode_frames > 0 else set()))
    check = None
    with tempfile.TemporaryDirectory(prefix="auroralong-bench-memory-") as tmp_dir:
        tmp = Path(tmp_dir)
        jobs = [(dict(base_spec, frames=frames), f"describe, {frames} frames of random pixels") for frames in lengths]
        if args.decode_frames > 0:
            video = write_synthetic_video(tmp / "synthetic.mp4", args.decode_frames, fps=4, size=(640, 360),
                                          codec="mpeg4")
            jobs.append((dict(base_spec, frames=args.decode_frames, video=str(video)),
                         f"describe, {args.decode_frames} frames decoded from a synthetic video file"))
        rows = run_workers(__name__, jobs, tmp, args.parallel)
    env["load_average_after"] = load_average()
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
        "env": env, "size": args.size, "sizes_source": SIZES_SOURCE, "device": args.device, "dtype": args.dtype,
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
    return jsonable(report)


if __name__ == "__main__":
    run_worker_process(worker)
