"""The `auroralong` command line: generate (RWKV-6 and AuroraLong folders), convert rwkv6 (end to end through
argparse), its error path, and a parser that loads neither torch nor transformers."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_generate_with_an_auroralong_folder(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["create-random", str(out)]) == 0
    capsys.readouterr()
    assert main(["generate", "Hi", "--model", str(out), "--max-new-tokens", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_class"] == "AuroraLongForConditionalGeneration" and report["wkv_backend"] == "torch"
    assert 1 <= report["new_tokens"] <= 3 and report["prompt_tokens"] == 1  # "Hi" is one World token
    # the tiny size's language model: 2 layers x (2 x 64 x 4 B shift vectors + 2 heads x 32 x 32 x 4 B WKV)
    assert report["state_bytes"] == 2 * (2 * 64 * 4 + 2 * 32 * 32 * 4)


HEAVY = ("torch", "transformers", "numpy", "PIL", "av")
IMPORTS_OF_THE_HELP = f"""
import sys
import auroralong_cli
from auroralong_hf.cli import main
for argv in (["--help"], ["bench", "--help"], ["create-random", "--help"], ["describe", "--help"],
             ["generate", "--help"], ["convert", "--help"], ["tome-viz", "--help"], ["train", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_help_imports_neither_torch_nor_transformers():
    """`auroralong --help` enters through auroralong_cli, which defers Auto registration: building the parser and
    printing any command's help must not import the heavy libraries (that is what made it take seconds)."""
    result = subprocess.run([sys.executable, "-c", IMPORTS_OF_THE_HELP], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-3000:]


def test_the_faces_choices_are_the_libraries_tables():
    """The light faces spell out the names their libraries' tables hold (so that `--help` loads no torch): they must
    stay the same names."""
    from auroralong_hf import create_random
    from auroralong_hf.commands import create_random as create_random_face
    from auroralong_hf.commands import train as train_face
    from auroralong_hf.training.train import STAGES

    assert tuple(create_random.SIZES) == create_random_face.SIZE_NAMES
    assert tuple(create_random.DTYPES) == create_random_face.DTYPE_NAMES
    assert tuple(STAGES) == train_face.STAGE_NAMES


def test_the_check_above_sees_a_heavy_import():
    """Without auroralong_cli's flag the package registers on import, which loads torch and transformers."""
    code = IMPORTS_OF_THE_HELP.replace("import auroralong_cli\n", "")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'torch'" in result.stdout and "'transformers'" in result.stdout


def test_the_console_script_runs():
    # the script of this interpreter's environment (PATH may hold another one)
    script = shutil.which("auroralong", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is not installed: pip install -e ."
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "create-random" in result.stdout, result.stderr


REGISTERED_ON_IMPORT = """
import json
import sys
import auroralong_hf
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
folder = sys.argv[1]
names = [type(AutoConfig.from_pretrained(folder)).__module__,
         type(AutoModelForImageTextToText.from_pretrained(folder)).__module__,
         type(AutoProcessor.from_pretrained(folder)).__module__, type(AutoTokenizer.from_pretrained(folder)).__module__]
print(json.dumps(names))
assert auroralong_hf.AuroraLongProcessor is auroralong_hf.processing.AuroraLongProcessor
"""


def test_importing_the_package_registers_the_auto_classes(tmp_path, capsys):
    """A fresh process: `import auroralong_hf`, then the Auto classes find our classes (not remote code)."""
    assert main(["create-random", str(tmp_path / "tiny")]) == 0
    result = subprocess.run([sys.executable, "-c", REGISTERED_ON_IMPORT, str(tmp_path / "tiny")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("auroralong_hf.") for module in modules), modules


def test_the_package_face_is_lazy_and_complete():
    import auroralong_hf

    for name in auroralong_hf.__all__:
        assert getattr(auroralong_hf, name) is not None, name
    assert "AuroraLongProcessor" in dir(auroralong_hf)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        auroralong_hf.Nope  # noqa: B018
