"""`auroralong bench lm` on a tiny geometry: every figure is in the JSON, with positive numbers (no speed asserted)."""

import argparse
import importlib.util
import json

from auroralong_hf.bench import lm, runner
from auroralong_hf.bench.lm import add_arguments, build_random_model
from auroralong_hf.convert.rwkv6_layout import fla_to_blinkdl_state_dict

HAS_RWKV = importlib.util.find_spec("rwkv") is not None

TINY = ["--layers", "1", "--hidden-size", "128", "--vocab-size", "512", "--seq-len", "64", "--prefill-len", "64",
        "--repeats", "1", "--decode-prefix", "4", "--decode-steps", "2", "--copy-mib", "8", "--json"]


def _positive_timing(timing):
    assert timing["min"] > 0 and timing["median"] >= timing["min"]
    assert all(run > 0 for run in timing["runs"])


def test_bench_lm_tiny_json(capsys):
    parser = add_arguments(argparse.ArgumentParser())
    # one JIT setting only, to keep the test fast (auto would start the rwkv child process twice)
    args = parser.parse_args([*TINY, "--rwkv-jit", "0"])  # without `rwkv` installed, the bench notes it and goes on
    assert runner.run(lm, args) == 0

    out = capsys.readouterr()
    report = json.loads(out.out)  # with --json, stdout is exactly one JSON object; the table went to stderr
    assert "prefill time / GEMM time" in out.err

    assert set(report) >= {"env", "geometry", "repeats", "wkv", "prefill", "gemm", "bandwidth", "decode", "elapsed_s"}
    assert report["env"]["threads"] > 0 and report["env"]["torch"] and report["env"]["cpu"] and report["env"]["date"]
    assert report["geometry"]["hidden_size"] == 128 and report["geometry"]["heads"] == 2
    assert report["geometry"]["layers"] == 1 and report["geometry"]["parameters"] > 0

    wkv = report["wkv"]
    _positive_timing(wkv["chunked_s"])
    _positive_timing(wkv["reference_s"])
    assert wkv["speedup_vs_reference"]["min"] > 0
    assert wkv["max_abs_diff_vs_reference"] < 1e-3
    if wkv["fla_naive_s"] is not None:
        _positive_timing(wkv["fla_naive_s"])
        assert wkv["speedup_vs_fla_naive"]["min"] > 0
    assert isinstance(wkv["pass"], bool)

    prefill = report["prefill"]
    _positive_timing(prefill["ours_s"])
    assert prefill["ours_tokens_per_s"] > 0
    if HAS_RWKV:
        rwkv = prefill["rwkv"]
        assert rwkv is not None, prefill["rwkv_note"]
        assert rwkv["jit"] == "0"
        _positive_timing(rwkv["prefill_s"])
        assert rwkv["tokens_per_s"] > 0 and prefill["ratio"]["min"] > 0
        assert rwkv["logits_max_abs_diff"] <= 1e-3  # the BlinkDL export is the same model
        assert isinstance(prefill["pass"], bool)
    else:
        assert prefill["rwkv"] is None and "not installed" in prefill["rwkv_note"]

    gemm = report["gemm"]
    _positive_timing(gemm["gemm_s"])
    assert gemm["gemm_gflop"] > 0 and gemm["prefill_over_gemm"]["min"] > 0

    bandwidth = report["bandwidth"]
    assert bandwidth["bytes"] == 8 << 20 and bandwidth["copy_gb_per_s"] > 0

    decode = report["decode"]
    _positive_timing(decode["step_s"])
    assert decode["tokens_per_s"] > 0 and decode["stream_s"] > 0 and decode["decode_over_stream"]["min"] > 0
    assert 0 < decode["weight_bytes_read_per_step"] < decode["weight_bytes_all"]


def test_blinkdl_export_names_and_shapes():
    """The export has BlinkDL's names and shapes (the logits check in the test above covers the values)."""
    args = add_arguments(argparse.ArgumentParser()).parse_args(TINY)
    model = build_random_model(args)
    sd = fla_to_blinkdl_state_dict(model.state_dict())
    c, r, d, f = 128, 32, 64, model.config.intermediate_size
    expected = {
        "emb.weight": (512, c), "head.weight": (512, c), "blocks.0.ln0.weight": (c,), "ln_out.bias": (c,),
        "blocks.0.att.time_maa_x": (1, 1, c), "blocks.0.att.time_maa_g": (1, 1, c),
        "blocks.0.att.time_maa_w1": (c, 5 * r), "blocks.0.att.time_maa_w2": (5, r, c),
        "blocks.0.att.time_decay": (1, 1, c), "blocks.0.att.time_decay_w1": (c, d),
        "blocks.0.att.time_decay_w2": (d, c), "blocks.0.att.time_faaaa": (2, 64), "blocks.0.att.ln_x.weight": (c,),
        "blocks.0.att.gate.weight": (c, c), "blocks.0.att.output.weight": (c, c),
        "blocks.0.ffn.time_maa_k": (1, 1, c), "blocks.0.ffn.key.weight": (f, c), "blocks.0.ffn.value.weight": (c, f),
        "blocks.0.ffn.receptance.weight": (c, c),
    }
    for name, shape in expected.items():
        assert tuple(sd[name].shape) == shape, name
    assert len(sd) == 6 + 28  # emb, ln0 x2, ln_out x2, head; 28 tensors per block
    assert all(t.is_contiguous() for t in sd.values())
    # the token-shift LoRA halves are regrouped from r, w, k, v, g (ours) to w, k, v, r, g (BlinkDL)
    ours = model.model.layers[0].attn.x_proj[0].linear.weight.detach().view(5, r, c)
    assert sd["blocks.0.att.time_maa_w1"][:, :r].equal(ours[1].t())  # BlinkDL's first group is w, our second
    assert sd["blocks.0.att.time_maa_w1"][:, 3 * r:4 * r].equal(ours[0].t())  # r
