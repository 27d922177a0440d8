"""Bad checkpoints and bad output folders (issue 16): NaN / inf / complex weights are refused by the converters and by
`from_pretrained`, naming the file and the tensors; an empty or truncated safetensors file or a config.json that is
not a JSON object is an error naming that file; a killed or stopped conversion leaves no temporary folder behind
(the next one removes what a SIGKILL left), and an output that cannot be written is one error naming it."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from auroralong_checkpoints import make_projector_state_dict, make_siglip_vision, write_projector, write_siglip_vision
from mounts import tmpfs
from rwkv6_checkpoints import (
    make_blinkdl_state_dict,
    write_blinkdl_checkpoint,
    write_fla_checkpoint,
    write_hf_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from auroralong_hf import AuroraLongForConditionalGeneration, Rwkv6Config, Rwkv6ForCausalLM
from auroralong_hf.cli import main
from auroralong_hf.convert.auroralong import compose_auroralong, convert_auroralong_checkpoint
from auroralong_hf.convert.rwkv6 import convert_rwkv6_checkpoint
from auroralong_hf.modeling.checkpoint_checks import non_finite_tensors
from auroralong_hf.outputs import OWNER_MARKER, remove_stale_temporaries, write_folder_atomically

SMALL = {"hidden_size": 64, "num_layers": 1, "head_size": 32, "vocab": 50, "ffn": 96, "mix_rank": 4, "decay_rank": 8}
# One tensor under the three layouts' names (BlinkDL, RWKV/v6-Finch-HF, fla).
BONUS = {"blinkdl": "blocks.0.att.time_faaaa", "hf": "rwkv.blocks.0.attention.time_faaaa",
         "fla": "model.layers.0.attn.bonus"}


@pytest.fixture(scope="module")
def blinkdl():
    return make_blinkdl_state_dict(**SMALL, seed=3)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def _write_layout(layout: str, sd, root: Path) -> tuple[Path, Path]:
    """(what to convert, the file holding the tensors)."""
    if layout == "blinkdl":
        path = write_blinkdl_checkpoint(sd, root / "x.pth")
        return path, path
    if layout == "hf":
        return write_hf_checkpoint(sd, root / "hf"), root / "hf" / "pytorch_model.bin"
    return write_fla_checkpoint(sd, root / "fla"), root / "fla" / "model.safetensors"


# ----------------------------------------------------------------------------------------------------------------
# NaN / inf / complex weights in converted sources


@pytest.mark.parametrize("layout", ["blinkdl", "hf", "fla"])
@pytest.mark.parametrize("damage, reason", [
    (lambda t: t.index_fill(1, torch.tensor([3]), float("nan")), "NaN or infinite values"),
    (lambda t: t.index_fill(1, torch.tensor([0]), float("-inf")), "NaN or infinite values"),
    (lambda t: t.to(torch.complex64), "complex-valued tensors"),
    (lambda t: t.round().to(torch.int64), r"not floating point .*\(int64\)"),
])
def test_convert_rwkv6_refuses_weights_that_are_not_finite_real_numbers(blinkdl, tmp_path, layout, damage, reason):
    source, weights = _write_layout(layout, {**blinkdl, BONUS["blinkdl"]: damage(blinkdl[BONUS["blinkdl"]])},
                                    tmp_path)
    with pytest.raises(ValueError, match=reason) as info:
        convert_rwkv6_checkpoint(source, tmp_path / "out")
    # the file's own tensor names; values are checked as each file is read, dtypes once the layout is known
    named = source if "floating" in reason else weights
    assert str(named) in str(info.value) and BONUS[layout] in str(info.value)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_the_command_line_names_the_file_and_tensor(blinkdl, tmp_path, capsys):
    source = write_blinkdl_checkpoint({**blinkdl, "head.weight": blinkdl["head.weight"] * float("inf")},
                                      tmp_path / "x.pth")
    assert main(["convert", "rwkv6", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("auroralong convert: error:") and len(err.splitlines()) == 1
    assert "x.pth holds tensors with NaN or infinite values (1): head.weight" in err


@pytest.mark.parametrize("part", ["vision", "projector"])
def test_convert_auroralong_and_compose_refuse_nan_or_complex_weights(blinkdl, tmp_path, part):
    vision = make_siglip_vision()
    projector = make_projector_state_dict(vision.config.hidden_size, SMALL["hidden_size"])
    if part == "vision":
        with torch.no_grad():
            vision.get_parameter("encoder.layers.1.mlp.fc1.weight")[0, 0] = float("nan")
        bad, file = "vision_model.encoder.layers.1.mlp.fc1.weight", "visual_encoder/model.safetensors"
    else:
        projector["model.2.bias"] = projector["model.2.bias"].to(torch.complex64)
        bad, file = "model.2.bias", "projector/model.safetensors"
    root = write_hf_checkpoint(blinkdl, tmp_path / "xtuner")
    write_siglip_vision(vision, root / "visual_encoder")
    write_projector(projector, root / "projector")
    with pytest.raises(ValueError, match="NaN or infinite values" if part == "vision" else "complex") as info:
        convert_auroralong_checkpoint(root, tmp_path / "out")
    assert file in str(info.value) and bad in str(info.value)
    if part == "vision":
        with pytest.raises(ValueError, match=rf"{file}.*NaN.*{bad}"):
            compose_auroralong(root / "visual_encoder", root, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_huge_finite_weights_convert_unless_they_overflow_the_output_dtype(blinkdl, tmp_path):
    """A bound on finite weights would refuse some legitimate checkpoint; a cast that makes them inf is refused."""
    source = write_blinkdl_checkpoint({**blinkdl, "head.weight": blinkdl["head.weight"] * 1e6}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"x\.pth: 1 weight\(s\) overflow float16 .*: lm_head\.weight\. Convert with "
                                         r"dtype bfloat16 or float32"):
        convert_rwkv6_checkpoint(source, tmp_path / "out", dtype="float16", save_tokenizer=False)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    convert_rwkv6_checkpoint(source, tmp_path / "out", save_tokenizer=False)
    assert Rwkv6ForCausalLM.from_pretrained(tmp_path / "out").lm_head.weight.abs().max() > 1e4


# ----------------------------------------------------------------------------------------------------------------
# from_pretrained: NaN / inf weights, damaged weight files, a config.json that is not a JSON object


@pytest.fixture(scope="module")
def rwkv6_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rwkv6")
    torch.manual_seed(0)
    Rwkv6ForCausalLM(Rwkv6Config(hidden_size=64, num_hidden_layers=1, head_size=32, vocab_size=50)).save_pretrained(
        folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "model"))


def _edit_weights(folder: Path, edit) -> None:
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("load", [Rwkv6ForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained,
                                  lambda path: Rwkv6ForCausalLM.from_pretrained(path, device_map="cpu")])
def test_from_pretrained_refuses_nan_and_inf_weights(rwkv6_folder, tmp_path, load):
    folder = _copy(rwkv6_folder, tmp_path)

    def poison(weights):
        weights["model.layers.0.ffn.key.mu"][5] = float("nan")
        weights["lm_head.weight"][2, 3] = float("inf")

    _edit_weights(folder, poison)
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))}: 2 weight\(s\) hold NaN or infinite values as "
                                         r"loaded \(float32\): model\.layers\.0\.ffn\.key\.mu, lm_head\.weight; every "
                                         r"output would be NaN"):
        load(folder)


def test_huge_finite_weights_load_unless_the_dtype_overflows(rwkv6_folder, tmp_path):
    folder = _copy(rwkv6_folder, tmp_path)
    _edit_weights(folder, lambda weights: weights["lm_head.weight"].mul_(1e6))
    assert Rwkv6ForCausalLM.from_pretrained(folder).lm_head.weight.abs().max() > 1e4
    with pytest.raises(ValueError, match=r"lm_head\.weight.*float16 holds at most 65504"):
        Rwkv6ForCausalLM.from_pretrained(folder, dtype=torch.float16)


def test_the_finite_check_skips_what_is_not_loaded_or_not_a_float():
    with torch.device("meta"):
        meta = Rwkv6ForCausalLM(Rwkv6Config(hidden_size=64, num_hidden_layers=1, head_size=32, vocab_size=50))
    assert non_finite_tensors(meta.named_parameters()) == []
    tensors = {"ints": torch.zeros(3, dtype=torch.int64), "empty": torch.empty(0), "fine": torch.full((4,), 3e38),
               "nan": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)}
    assert non_finite_tensors(tensors.items()) == ["nan"]  # a float32 sum that overflows is not taken for an inf


def _empty(path):
    path.write_bytes(b"")


def _halved(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_byte_short(path):
    path.write_bytes(path.read_bytes()[:-1])


@pytest.mark.parametrize("damage, reason", [(_empty, r"empty \(0 bytes\)"), (_halved, "truncated or damaged"),
                                            (_one_byte_short, "truncated or damaged")])
def test_a_damaged_safetensors_file_is_named(rwkv6_folder, tmp_path, capsys, damage, reason):
    folder = _copy(rwkv6_folder, tmp_path)
    damage(folder / "model.safetensors")
    message = rf"{re.escape(str(folder / 'model.safetensors'))}: not a complete safetensors file: {reason}"
    for load in (Rwkv6ForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained):
        with pytest.raises(ValueError, match=message):
            load(folder)
    assert main(["generate", "Hi", "--model", str(folder)]) == 2
    assert "model.safetensors: not a complete safetensors file" in capsys.readouterr().err


def test_describe_names_a_truncated_model_file(tiny_auroralong_folder, tmp_path, capsys):
    folder = _copy(tiny_auroralong_folder, tmp_path)
    _halved(folder / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors: not a complete safetensors file"):
        AutoModelForImageTextToText.from_pretrained(folder)
    assert main(["describe", "--model", str(folder), "--max-new-tokens", "1"]) == 2
    assert f"{folder / 'model.safetensors'}: not a complete safetensors file" in capsys.readouterr().err


@pytest.mark.parametrize("text, reason", [("[1, 2]", "holds a JSON array, not a model configuration"),
                                          ('"rwkv6"', "holds a JSON string"),
                                          ("{not json", "not a readable JSON file")])
def test_a_config_that_is_not_a_json_object_is_named(rwkv6_folder, tmp_path, text, reason):
    folder = _copy(rwkv6_folder, tmp_path)
    (folder / "config.json").write_text(text)
    for cls in (Rwkv6ForCausalLM, AuroraLongForConditionalGeneration):
        with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'config.json'))}:? {reason}"):
            cls.from_pretrained(folder)


def test_a_config_that_is_a_json_list_through_the_auto_classes(rwkv6_folder, tmp_path):
    """AutoConfig reads config.json before any class of ours is involved: transformers' own ValueError names the
    folder and config.json."""
    folder = _copy(rwkv6_folder, tmp_path)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))}.*config\.json"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_converter_sources_with_a_damaged_config_or_weights_are_named(blinkdl, tmp_path):
    vision_dir = write_siglip_vision(make_siglip_vision(), tmp_path / "siglip")
    language = write_blinkdl_checkpoint(blinkdl, tmp_path / "x.pth")
    (vision_dir / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=rf"{re.escape(str(vision_dir / 'config.json'))} does not hold a JSON object"):
        compose_auroralong(vision_dir, language, tmp_path / "out")
    write_siglip_vision(make_siglip_vision(), vision_dir)
    _halved(vision_dir / "model.safetensors")
    with pytest.raises(ValueError, match=rf"Could not read {re.escape(str(vision_dir))}/model\.safetensors as safet"):
        compose_auroralong(vision_dir, language, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------
# Temporary output folders: owned, removed on SIGTERM, removed by the next run after a SIGKILL

# A writer that pauses (prints "ready") once its temporary folder holds a file; registration is deferred so that
# the process starts without importing torch.
_PAUSED_WRITER = textwrap.dedent("""
    import sys, time
    import auroralong_cli  # noqa: F401  (defers the Auto registration: no torch import)
    from pathlib import Path
    from auroralong_hf.outputs import write_folder_atomically

    def write(folder):
        (folder / "model.safetensors").write_bytes(b"x" * 4096)
        print(folder, flush=True)
        time.sleep(60)

    write_folder_atomically(Path(sys.argv[1]), write)
""")


@contextmanager
def _paused_writer(output: Path):
    process = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITER, str(output)], stdout=subprocess.PIPE,
                               text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        temporary = Path(process.stdout.readline().strip())
        assert temporary.parent == output.parent and (temporary / "model.safetensors").is_file()
        yield process, temporary
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()


def test_a_sigterm_removes_the_temporary_folder(tmp_path):
    with _paused_writer(tmp_path / "out") as (process, temporary):
        assert (temporary / OWNER_MARKER).is_file() and f".out.tmp-{process.pid}-" in temporary.name
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM  # the signal still ends the process, after the cleanup
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_conversion_removes_what_a_sigkill_left_and_nothing_else(blinkdl, tmp_path):
    with _paused_writer(tmp_path / "killed") as (process, stale):
        process.kill()
        process.wait(timeout=30)
    assert stale.is_dir()  # a SIGKILL leaves it: nothing runs in the killed process

    def temporary(name, marker):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "weights").write_text("keep")
        if marker is not None:
            (folder / OWNER_MARKER).write_text(json.dumps(marker))
        return folder

    dead, host = _dead_pid(), socket.gethostname()
    kept = [
        temporary(f".busy.tmp-{os.getpid()}-0123abcd", {"pid": os.getpid(), "host": host, "output": "busy"}),  # alive
        temporary(f".x.tmp-{dead}-0123abcd", None),  # not marked as ours
        temporary(f".x.tmp-{dead}-4567abcd", {"pid": dead, "host": host + "-elsewhere", "output": "x"}),  # other host
        temporary(f".x.tmp-{dead}-89abcdef", {"pid": dead + 1, "host": host, "output": "x"}),  # name and marker differ
        temporary(f"x.tmp-{dead}-0123abcd", {"pid": dead, "host": host, "output": "x"}),  # not hidden: not our name
    ]
    convert_rwkv6_checkpoint(write_blinkdl_checkpoint(blinkdl, tmp_path / "x.pth"), tmp_path / "out",
                             save_tokenizer=False)
    assert not stale.exists() and all((folder / "weights").read_text() == "keep" for folder in kept)
    assert not (tmp_path / "killed").exists() and (tmp_path / "out" / "model.safetensors").is_file()


def test_a_replaced_folder_left_aside_by_a_killed_overwrite_is_put_back(tmp_path):
    dead = _dead_pid()
    aside = tmp_path / f".model.tmp-{dead}-0123abcd"
    (aside / "replaced").mkdir(parents=True)
    (aside / "replaced" / "model.safetensors").write_text("the user's model")
    (aside / OWNER_MARKER).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "output": "model"}))
    assert remove_stale_temporaries(tmp_path) == [aside]
    assert (tmp_path / "model" / "model.safetensors").read_text() == "the user's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_interrupted_write_leaves_nothing(tmp_path):
    def interrupted(folder):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    for output in (tmp_path / "new", tmp_path / "out"):
        with pytest.raises(KeyboardInterrupt):
            write_folder_atomically(output, interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


# ----------------------------------------------------------------------------------------------------------------
# Output folders that cannot be written


def test_an_output_that_exists_is_refused_naming_it(blinkdl, tmp_path, capsys):
    source = write_blinkdl_checkpoint(blinkdl, tmp_path / "x.pth")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    for output, reason in ((tmp_path / "file", "exists and is not a folder"),
                           (tmp_path / "full", "is not empty; pass --overwrite")):
        assert main(["convert", "rwkv6", str(source), str(output)]) == 2
        assert f"auroralong convert: error: {output} {reason}" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'file'} exists and is not a folder"):
        compose_auroralong(tmp_path, source, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "not a folder"
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious" and _leftovers(tmp_path) == []


def test_a_read_only_output_parent_is_one_error_naming_the_output(blinkdl, tmp_path):
    source = write_blinkdl_checkpoint(blinkdl, tmp_path / "x.pth")
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as read_only:
        output = read_only / "out"
        with pytest.raises(OSError, match=rf"Cannot write the output folder {re.escape(str(output))}: Read-only file "
                                          r"system\. Nothing was written\.$"):
            convert_rwkv6_checkpoint(source, output)
        nested = read_only / "sub" / "out"  # its parent cannot be made
        with pytest.raises(OSError, match=rf"{re.escape(str(nested))}: Read-only file system: {read_only / 'sub'}"):
            write_folder_atomically(nested, lambda folder: None)
        assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("size", ["64k", "600k"])  # full while the weights are written (safetensors), or later
def test_a_full_disk_is_one_error_and_leaves_nothing(blinkdl, tmp_path, size):
    source = write_blinkdl_checkpoint(blinkdl, tmp_path / "x.pth")
    with tmpfs(tmp_path / "small", size=size) as small:
        with pytest.raises(OSError, match=rf"Cannot write the output folder {re.escape(str(small / 'out'))}: No "
                                          r"space left on device.*Nothing was written") as info:
            convert_rwkv6_checkpoint(source, small / "out")
        assert info.value.errno == 28
        assert list(small.iterdir()) == []
