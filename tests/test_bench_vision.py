"""`auroralong bench vision` on a tiny geometry: the JSON has every figure, with positive numbers (no speed asserted);
and the analytic FLOP bound of the default geometry is the one the reference notes give (~1.9x at ratio 0.1)."""

import argparse
import json

import pytest

from auroralong_hf.bench.vision import add_arguments, vision_flops
from auroralong_hf.cli import main

TINY = ["--hidden-size", "32", "--heads", "2", "--layers", "2", "--image-size", "64", "--patch-size", "16",
        "--ratios", "1.0,0.5", "--repeats", "1", "--frames", "2", "--json"]


def _positive_timing(timing):
    assert timing["min"] > 0 and timing["median"] >= timing["min"]
    assert all(run > 0 for run in timing["runs"])


def test_bench_vision_tiny_json(capsys):
    assert main(["bench", "vision", *TINY]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)  # with --json, stdout is exactly one JSON object; the table went to stderr
    assert "speed-up" in out.err and "goal: at ratio 0.5" in out.err

    assert set(report) >= {"env", "geometry", "note", "frames", "repeats", "schedule", "sort", "ratios", "goal",
                           "elapsed_s"}
    assert report["env"]["threads"] > 0 and report["env"]["torch"] and report["env"]["cpu"]
    geometry = report["geometry"]
    assert (geometry["hidden_size"], geometry["heads"], geometry["layers"]) == (32, 2, 2)
    assert geometry["num_patches"] == 16 and geometry["attn_implementation"] == "sdpa" and geometry["parameters"] > 0

    base, half = report["ratios"]
    assert (base["token_kept_ratio"], half["token_kept_ratio"]) == (1.0, 0.5)
    assert base["tokens_per_frame"] == 16 and half["tokens_per_frame"] == 8 and sum(half["merge_schedule"]) == 8
    for row in (base, half):
        _positive_timing(row["time_s"])
        assert row["frames_per_s"] > 0 and row["gflop_per_frame"] > 0 and row["speedup"]["min"] > 0
        assert row["fraction_of_bound"] > 0
    assert base["bound_speedup"] == 1.0 and base["pass"] is None and base["overhead_s"] is None
    assert half["bound_speedup"] > 1 and isinstance(half["pass"], bool)
    _positive_timing(half["merge_free_s"])
    assert half["overhead_share"] is not None
    assert report["goal"]["ratio"] == 0.5 and report["goal"]["pass"] == half["pass"]


def test_ratio_list_is_validated():
    parser = add_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--ratios", "0.5,0.25"]).ratios == [0.5, 0.25]
    with pytest.raises(SystemExit):
        parser.parse_args(["--ratios", "0.5,1.5"])


def test_flop_bound_of_siglip_large():
    from auroralong_hf.modeling.configuration_siglip_tome import SiglipToMeVisionConfig

    config = SiglipToMeVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                    num_hidden_layers=23, image_size=384, patch_size=16, vision_use_head=False)
    base = vision_flops(config, [0] * 23)
    config.token_kept_ratio = 0.1
    merged = vision_flops(config, config.merge_schedule())
    assert merged["tokens_out"] == 58 and merged["tokens_entering"][:2] == [576, 553]
    # 23 layers of 576 tokens: linear 2*576*(4 D^2 + 2 D I) + attention 4*576^2*D, plus the patch embedding
    per_layer = 2 * 576 * (4 * 1024**2 + 2 * 1024 * 4096) + 4 * 576**2 * 1024
    assert base["total"] == 23 * per_layer + 2 * 576 * 768 * 1024
    assert 1.85 < base["total"] / merged["total"] < 1.95
