"""Set-up and layout: the README's test command is what CI runs, the code is lint-clean, one import name."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(command) == 1
    assert command[0] in (ROOT / "README.md").read_text()


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: install the test extra (pip install -e '.[test]')")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_modeling_and_processing_install_under_the_package():
    import auroralong_hf.modeling
    import auroralong_hf.processing

    assert Path(auroralong_hf.modeling.__file__).parent == ROOT / "modeling"
    assert Path(auroralong_hf.processing.__file__).parent == ROOT / "processing"
    for top_level in ("modeling", "processing"):
        code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({top_level!r}) is not None)"
        assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0, top_level


def test_modeling_imports_each_other_relatively():
    for path in (ROOT / "modeling").glob("*.py"):
        text = path.read_text()
        assert "import auroralong_hf" not in text and "from auroralong_hf" not in text, path.name


def test_cli_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "auroralong_hf.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("generate", "convert", "bench"):
        assert command in result.stdout
