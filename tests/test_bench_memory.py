"""`auroralong bench memory` and `auroralong bench latency` on the tiny size at 2 and 4 frames: the JSON has every
figure, with positive numbers (no memory or speed asserted; each run starts fresh worker processes)."""

import argparse
import json

import pytest

from auroralong_hf.bench.latency import add_arguments, transformer_config
from auroralong_hf.cli import main
from auroralong_hf.create_random import size_configs

# worker processes 4 at a time (memory is per process either way; timings are not asserted)
FAST = ["--size", "tiny", "--frames", "2,4", "--new-tokens", "2", "--chunk-frames", "2", "--threads", "1",
        "--parallel", "4", "--json"]


def _positive_timing(timing):
    assert timing["min"] > 0 and timing["median"] >= timing["min"] and all(run > 0 for run in timing["runs"])


def _memory_fields(row):
    assert row["peak_mib"] > 0 and row["baseline_mib"] > 0 and row["peak_mib"] >= row["baseline_mib"]
    assert row["growth_mib"] == pytest.approx(row["peak_mib"] - row["baseline_mib"])
    assert row["measure"].startswith("process resident set") and row["ru_maxrss_mib"] > 0


def test_bench_memory_tiny_json(capsys):
    assert main(["bench", "memory", *FAST, "--decode-frames", "2"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)  # stdout is exactly one JSON object; the table went to stderr
    assert "goal: peak(4 frames) / peak(2 frames) <= 1.15" in out.err and "decoding path: 2 frames" in out.err

    assert set(report) >= {"env", "size", "sizes_source", "geometry", "chunk_frames", "new_tokens", "peak_measure",
                           "rows", "verdict", "decode_check", "elapsed_s"}
    assert report["size"] == "tiny" and report["geometry"]["tokens_per_frame"] == 58
    assert report["geometry"]["parameters"] > 0
    random_rows = [row for row in report["rows"] if row["source"] == "random pixels"]
    decoded = [row for row in report["rows"] if row["source"] != "random pixels"]
    assert [row["frames"] for row in random_rows] == [2, 4] and [row["frames"] for row in decoded] == [2]
    for row in report["rows"]:
        _memory_fields(row)
        assert row["visual_tokens"] == row["frames"] * 58 and row["answer_tokens"] == 2
        assert row["describe_s"] > 0 and row["frames_per_s"] > 0 and row["process_wall_s"] > 0
    assert len({row["state_bytes"] for row in report["rows"]}) == 1  # the RNN state does not grow
    verdict = report["verdict"]
    assert (verdict["frames_small"], verdict["frames_large"], verdict["goal"]) == (2, 4, 1.15)
    assert verdict["ratio"] > 0 and isinstance(verdict["pass"], bool)
    check = report["decode_check"]
    assert check["frames"] == 2 and check["peak_ratio"] > 0 and check["peak_mib"] > 0


def test_bench_latency_tiny_json(capsys):
    assert main(["bench", "latency", *FAST]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "transformer / ours" in out.err and "not run here" in out.err

    assert set(report) >= {"env", "size", "geometry", "tokens_per_frame", "prompt_tokens", "new_tokens", "rows",
                           "claims", "paper", "elapsed_s"}
    geometry = report["geometry"]
    assert geometry["transformer_class"] == "LlamaForCausalLM" and geometry["attn_implementation"] == "sdpa"
    assert geometry["ours_parameters"] > 0 and geometry["transformer_parameters"] > 0
    assert [row["frames"] for row in report["rows"]] == [2, 4]
    for row in report["rows"]:
        for name in ("ours", "transformer"):
            run = row[name]
            _memory_fields(run)
            for key in ("prefill_s", "decode_s", "latency_s"):
                _positive_timing(run[key])
            # the cache holds every token for the transformer, a fixed-size state for ours
            assert run["cache_tokens"] == report["prompt_tokens"] + row["visual_tokens"] + 1
            assert run["cache_bytes"] > 0
        assert row["latency_ratio"] > 0 and row["peak_ratio"] > 0 and row["cache_ratio"] > 0
    assert [claim["run"] for claim in report["claims"]] == [False, False]
    assert report["paper"] == {"memory_ratio_1024_frames": 34.0, "latency_ratio_60_frames": 8.13,
                               "setting": report["paper"]["setting"]}


def test_transformer_has_the_rwkv_shape():
    text = size_configs("small")["text_config"]
    config = transformer_config(text)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (256, 4, 65536)
    assert config.num_attention_heads == 4 and config.intermediate_size == int(256 * 3.5) // 32 * 32
    assert config._attn_implementation == "sdpa"


def test_frame_list_is_validated():
    parser = add_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--frames", "1024,60,60"]).frames == [60, 1024]
    with pytest.raises(SystemExit):
        parser.parse_args(["--frames", "0,4"])


def test_bench_train_tiny_json(capsys):
    """`auroralong bench train` on the tiny size, one sample of one frame, one timed step: keys and positive
    numbers only (both configurations at once, so no speed or memory ratio is asserted)."""
    assert main(["bench", "train", "--size", "tiny", "--steps", "1", "--batch-size", "1", "--frames", "1",
                 "--threads", "1", "--parallel", "2", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "gradient checkpointing on:" in out.err and "samples/s" in out.err

    assert set(report) >= {"env", "size", "device", "dtype", "stage", "token_kept_ratio", "optimizer", "steps",
                           "batch_size", "frames", "geometry", "peak_measure", "rows", "ratios", "elapsed_s"}
    assert (report["size"], report["stage"], report["token_kept_ratio"]) == ("tiny", "language", 0.1)
    assert report["geometry"]["trainable_parameters"] > 0
    assert [row["checkpointing"] for row in report["rows"]] == [False, True]
    for row in report["rows"]:
        _memory_fields(row)
        _positive_timing(row["step_s"])
        assert row["samples_per_s"] > 0 and row["seconds_per_step"] > 0 and row["process_wall_s"] > 0
        assert row["visual_tokens"] == 58 and row["sequence_length"] > 58 and row["label_tokens"] > 0
        assert row["trainable_total"] == report["geometry"]["trainable_parameters"]
        assert row["optimizer_state_bytes"] > 0 and len(row["losses"]) == 2
    assert report["rows"][0]["checkpointed_modules"] == 0 and report["rows"][1]["checkpointed_modules"] > 0
    for key in ("slowdown", "throughput_ratio", "peak_ratio"):
        assert report["ratios"][key] > 0
