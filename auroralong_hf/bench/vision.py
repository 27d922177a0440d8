"""`auroralong bench vision`: frames/s of the S-ToMe vision tower (SigLIP-L/16-384 geometry less its last layer,
random fp32 weights, sdpa) at kept ratios 1.0, 0.5, 0.2 and 0.1, each against its analytic FLOP bound (goal: at 0.1
the measured speed-up reaches 90% of the bound), and the share of matching + merging + sorting.
"""

from __future__ import annotations

import argparse
import time

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.siglip.modeling_siglip import eager_attention_forward

from ..create_random import building_on
from ..modeling.configuration_siglip_tome import SiglipToMeVisionConfig, tokens_per_frame
from ..modeling.modeling_siglip_tome import SiglipToMeVisionModel
from .runner import (
    environment,
    format_seconds,
    format_table,
    header_lines,
    jsonable,
    load_average,
    log,
    time_interleaved,
    verdict,
)

VISION_BOUND_FRACTION_GOAL = 0.9  # at the smallest ratio, the measured speed-up must reach 90% of the FLOP bound
VISION_GOAL_RATIO = 0.1


def ratio_list(text: str) -> list[float]:
    try:
        ratios = [float(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from error
    if not ratios or any(not 0 < ratio <= 1 for ratio in ratios):
        raise argparse.ArgumentTypeError(f"every kept ratio must be in (0, 1], got {text!r}")
    return ratios


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    run.add_argument("--ratios", type=ratio_list, default=[1.0, 0.5, 0.2, 0.1],
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


def merge_free_forward(model, pixel_values, schedule: list[int]):
    """The tower with the same token counts as S-ToMe but no matching, merging or sorting: after the attention
    sub-block of a layer with r > 0 the last r tokens are simply dropped. The same attention function and the same
    additive (all-zero) key bias once a layer has merged, as the S-ToMe forward passes it."""
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


def tower_config(args) -> SiglipToMeVisionConfig:
    """The S-ToMe tower's config of `auroralong bench vision`'s geometry options (kept ratio 1.0: the callers set
    theirs); ValueError naming the option that does not fit."""
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
    return config


def random_vision_tower(config: SiglipToMeVisionConfig, *, seed: int = 0, device="cpu", dtype="float32"):
    """A random S-ToMe tower of `config` in eval mode, its weights drawn after `torch.manual_seed(seed)` and built
    on `device` in `dtype` directly (`create_random.building_on`)."""
    torch.manual_seed(seed)
    with building_on(device, dtype):
        return SiglipToMeVisionModel(config).eval()


def random_pixels(frames: int, image_size: int, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[frames, 3, S, S] uniform in [-1, 1] (preprocessed-looking frames), drawn on the CPU from `seed`, then moved."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(frames, 3, image_size, image_size, generator=g) * 2 - 1).to(device=device, dtype=dtype)


def time_ratios(model, pixel_values: torch.Tensor, ratios: list[float], repeats: int, *, merge_free: bool = True,
                device: torch.device | None = None) -> list[dict]:
    """Frames/s of `model` on `pixel_values` [F, 3, S, S] at each kept ratio (1.0 first: the baseline), against
    each ratio's FLOP bound; one row per ratio (see `measure`'s report).

    The config's token_kept_ratio is set before each forward (the schedule is computed per forward). Contenders
    (each ratio and, with `merge_free`, each ratio's merge-free twin) take turns run by run, one warm-up each; on a
    CUDA `device` each run is timed to the end of its work. The ratio is left at 1.0. RuntimeError when a merged
    forward does not give the counted tokens.
    """
    config = model.config
    ratios = list(dict.fromkeys([1.0, *ratios]))  # the baseline first, no duplicates
    frames = pixel_values.shape[0]
    schedules, contenders = {}, {}
    for ratio in ratios:
        config.token_kept_ratio = ratio
        schedules[ratio] = config.merge_schedule()

        def forward(ratio=ratio):
            config.token_kept_ratio = ratio
            with torch.inference_mode():
                model(pixel_values=pixel_values)

        contenders[("tome", ratio)] = forward
        if ratio < 1 and merge_free:
            def merge_free_run(schedule=schedules[ratio]):
                with torch.inference_mode():
                    merge_free_forward(model, pixel_values, schedule)

            contenders[("plain", ratio)] = merge_free_run

    # a check that the merged forward really produces the counted tokens
    with torch.inference_mode():
        for ratio in ratios:
            config.token_kept_ratio = ratio
            tokens = model(pixel_values=pixel_values[:1]).last_hidden_state.shape[1]
            if tokens != tokens_per_frame(config):
                raise RuntimeError(f"ratio {ratio}: {tokens} tokens per frame, expected {tokens_per_frame(config)}")

    log(f"  timing {len(contenders)} contenders x {repeats} runs (+1 warm-up), {frames} frames each ...")
    names = list(contenders)
    timed = time_interleaved({str(i): contenders[name] for i, name in enumerate(names)}, repeats, device=device)
    timings = {name: timed[str(i)] for i, name in enumerate(names)}

    flops = {ratio: vision_flops(config, schedules[ratio]) for ratio in ratios}
    base_time, base_flops = timings[("tome", 1.0)], flops[1.0]["total"]
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
            "bound_speedup": bound, "time_s": timing, "frames_per_s": frames / timing["min"],
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
    return rows


def table(report: dict) -> str:
    env, geo = report["env"], report["geometry"]
    load = env["load_average_before"]
    lines = [
        *header_lines("vision", env),
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
            f"{row['bound_speedup']:.2f}x",
            f"{format_seconds(row['time_s']['min'])} / {format_seconds(row['time_s']['median'])}",
            f"{row['frames_per_s']:.4g}", f"{row['speedup']['min']:.2f}x", f"{row['fraction_of_bound']:.0%}",
            "" if row["pass"] is None else f">= {VISION_BOUND_FRACTION_GOAL:.0%}",
            "" if row["pass"] is None else verdict(row["pass"]),
            "-" if share is None else f"{share:.1%}",
        ))
    lines += format_table(header, rows)
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
                     f"{verdict(goal['pass'])}")
    lines.append(f"total wall time {report['elapsed_s']:.1f} s")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict:
    """Frames/s of the S-ToMe tower at each kept ratio against its FLOP bound (`time_ratios`); the report (plain
    values)."""
    started = time.perf_counter()

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    log(f"  building a random {args.layers}-layer tower (hidden {args.hidden_size}) ...")
    model = random_vision_tower(tower_config(args), seed=args.seed)
    config = model.config
    pixel_values = random_pixels(args.frames, args.image_size, args.seed + 1)
    rows = time_ratios(model, pixel_values, args.ratios, args.repeats, merge_free=not args.no_overhead)
    ratios = [row["token_kept_ratio"] for row in rows]
    goal_ratio = VISION_GOAL_RATIO if VISION_GOAL_RATIO in ratios else min(ratios)

    goal_row = next(row for row in rows if row["token_kept_ratio"] == goal_ratio)
    report = {
        "env": environment(load_average_before=load_before, load_average_after=load_average()),
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
    return jsonable(report)
