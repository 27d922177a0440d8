"""The `auroralong` command line: generate, convert rwkv6 (end to end through argparse), and its error path."""

import json

import torch
from rwkv6_checkpoints import make_blinkdl_state_dict, write_blinkdl_checkpoint

from auroralong_hf.cli import main


def test_generate_with_a_random_model(capsys):
    assert main(["generate", "Hello", "--max-new-tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["new_tokens"] == 4 and report["prompt_tokens"] > 0
    assert report["wkv_backend"] == "torch"
    # 4 layers x (2 x 256 x 4 B shift vectors + 4 heads x 64 x 64 x 4 B WKV)
    assert report["state_bytes"] == 4 * (2 * 256 * 4 + 4 * 64 * 64 * 4)


def test_convert_then_generate_from_the_folder(tmp_path, capsys):
    weights = make_blinkdl_state_dict(hidden_size=128, num_layers=1, vocab=65536)  # the World tokenizer's ids
    source = write_blinkdl_checkpoint(weights, tmp_path / "m.pth")
    out = tmp_path / "converted"
    assert main(["convert", "rwkv6", str(source), str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "blinkdl" and report["hidden_size"] == 128
    assert main(["generate", "Hi", "--model", str(out), "--max-new-tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["new_tokens"] == 3
    # the same output folder again: refused with a clear message, exit code 2, nothing changed
    assert main(["convert", "rwkv6", str(source), str(out)]) == 2
    assert str(out) in capsys.readouterr().err
    assert torch.load(source, weights_only=True)["emb.weight"].shape[1] == 128


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert main(["convert", "rwkv6", str(tmp_path / "nope.pth"), str(tmp_path / "out")]) == 2
    assert "nope.pth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
