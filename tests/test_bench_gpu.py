"""`auroralong bench gpu` without a GPU: without CUDA it stops with one line (exit 2); `--device cpu --size tiny`
runs every figure at toy lengths as a smoke test of the command itself, every figure finite and no goal claimed."""

import argparse
import json
import math

import pytest
import torch

from auroralong_hf.bench import latency, vision
from auroralong_hf.bench.gpu import FIGURE_KEYS, FULL, GROUPS, add_arguments, figures, gpu_spec
from auroralong_hf.cli import main
from auroralong_hf.create_random import random_model, size_configs
from auroralong_hf.modeling import SiglipToMeVisionConfig


def test_without_cuda_it_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "gpu", "--json"]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and out.out == ""
    assert lines[0].startswith("auroralong bench gpu: error: no CUDA device")
    assert "`auroralong bench gpu --device cpu --size tiny` runs it as a smoke test of the command" in lines[0]


def test_smoke_run_on_the_cpu(capsys):
    assert main(["bench", "gpu", "--device", "cpu", "--size", "tiny", "--threads", "1", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)  # stdout is exactly one JSON object; the table went to stderr
    assert "goals NOT judged" in out.err and "a smoke test of the command" in out.err

    assert report["errors"] == {} and report["judged"] is False and report["plan"] == "smoke"
    assert (report["device"], report["size"], report["dtype"]) == ("cpu", "tiny", "float32")
    assert report["groups"] == list(GROUPS) and all(name in report for name in GROUPS)
    assert tuple(report["figures"]) == FIGURE_KEYS
    for key, row in report["figures"].items():
        assert isinstance(row["value"], float) and math.isfinite(row["value"]), (key, row)
        assert row["limit"] is None or (math.isfinite(row["limit"]) and row["limit"] > 0), (key, row)
        assert row["verdict"] == ("info" if row["goal"] is None else "n/a"), (key, row)  # no GPU goal claimed
    for row in report["figures"].values():
        assert row["label"] in out.err
    assert "PASS" not in out.err and "MISS" not in out.err

    # the figures come from the other benchmarks' measuring functions, on the models they build
    assert [row["batch"] for row in report["decode"]["batches"]] == [1, 16]
    assert all(row["decode_step_s"]["min"] > 0 and row["decode_step_captured"] is False  # CPU: the eager twin
               for row in report["decode"]["batches"])
    assert "the decode step alone (not captured), batch 1" in out.err
    assert [row["batch"] for row in report["prefill"]["batches"]] == [1, 8]
    assert report["tower"]["layers"] == 23 and report["tower"]["bound_speedup"] > 1
    runs = report["streaming"]["runs"]
    assert [runs[name]["frames"] for name in ("first", "small", "large")] == [2, 1, 2]
    assert len({run["state_bytes"] for run in runs.values()}) == 1
    assert [row["frames"] for row in report["transformer"]["rows"]] == [1, 2]
    assert report["transformer"]["transformer_class"] == "LlamaForCausalLM"
    assert report["train"]["row"]["samples_per_s"] > 0 and report["train"]["wkv_backend"] == "torch"
    assert report["hardware"]["source"] == "measured here"  # no datasheet for a CPU


def test_the_suites_models_are_built_on_the_device():
    """At the paper's geometry on the "meta" device (no memory): every parameter and buffer is created there, in the
    asked dtype, with nothing built on the CPU first -- what `bench latency --device cuda --size 2b` lacked."""
    sizes = size_configs("2b")
    models = [
        random_model("2b", dtype="bfloat16", device="meta")[0],
        latency.build_language_model(sizes["text_config"], "ours", device="meta", dtype="bfloat16"),
        latency.build_language_model(sizes["text_config"], "transformer", device="meta", dtype="bfloat16"),
        vision.random_vision_tower(SiglipToMeVisionConfig(**sizes["vision_config"]), device="meta", dtype="bfloat16"),
    ]
    for model in models:
        assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
        assert {b.device.type for b in model.buffers()} <= {"meta"}
    assert sum(p.numel() for p in models[0].parameters()) > 1.8e9
    assert torch.get_default_dtype() == torch.float32  # building_on restores it


def test_goals_are_judged_only_in_the_issues_setting():
    hardware = {"bandwidth": 4.8e12, "peak_flops": 989e12, "source": "datasheet"}
    for judged, elapsed, verdict in ((True, 100.0, "PASS"), (True, 300.0, "MISS"), (False, 100.0, "n/a")):
        rows = figures({"elapsed_s": elapsed, "hardware": hardware, "judged": judged}, FULL)
        assert rows["suite_s"]["verdict"] == verdict
        assert all(rows[key]["verdict"] == "not run" for key in FIGURE_KEYS if key != "suite_s")
    assert rows["prefill_batch8_tokens_per_s"]["label"] == "prefill, T=4096, batch 8"
    assert rows["streaming_peak_memory_ratio"]["label"] == "peak memory, 1024 vs 64 frames"


def test_datasheet_table_by_device_name():
    assert gpu_spec("NVIDIA H200") == (4.8e12, 989e12)
    assert gpu_spec("NVIDIA H100 80GB HBM3") == (3.35e12, 989e12)  # the SXM part
    assert gpu_spec("NVIDIA H100 PCIe")[0] == 2.0e12
    assert gpu_spec("NVIDIA A100-SXM4-80GB")[0] == 2.0e12
    assert gpu_spec("NVIDIA GeForce RTX 4090") is None  # then measured


def test_figure_groups_are_validated():
    parser = add_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--figures", "train,decode"]).figures == ["decode", "train"]  # run in GROUPS' order
    assert parser.parse_args([]).figures == list(GROUPS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--figures", "decode,warp"])
