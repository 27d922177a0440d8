"""Set-up and layout: the README's test command is what CI runs, the code is lint-clean, one import name."""

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(command) == 2  # the README's, then the low end's venv
    assert command[0] in (ROOT / "README.md").read_text()
    assert "-c .ci/lowest.txt" in (ROOT / ".ci" / "run").read_text()


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


def test_cli_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "auroralong_hf.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("generate", "convert", "bench"):
        assert command in result.stdout


def _requirements():
    """[project] dependencies and the eval extra, as (raw line, Requirement)."""
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads TOML")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["eval"]]
    return [(line, Requirement(line)) for line in lines]


def test_every_lower_bound_is_the_version_ci_installs_at_the_low_end():
    pinned = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.strip().lower()] = Version(version)
    not_installable_on_ci = {"torch", "triton"}  # .ci/lowest.txt says why
    lower_bounds = {}
    for _, requirement in _requirements():
        lows = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
        if lows and requirement.name not in not_installable_on_ci:
            lower_bounds[requirement.name.lower()] = max(lows)
    assert lower_bounds == pinned


def test_every_upper_bound_says_why():
    text = (ROOT / "pyproject.toml").read_text().splitlines()
    for line, requirement in _requirements():
        if any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier):
            index = next(i for i, row in enumerate(text) if row.strip().startswith(f'"{line}"'))
            assert text[index - 1].strip().startswith("#"), f"{line}: no comment above it says why it is bounded"


def test_the_installed_versions_lie_within_the_bounds():
    for _, requirement in _requirements():
        if requirement.marker is None or requirement.marker.evaluate():
            assert requirement.specifier.contains(version(requirement.name), prereleases=True), requirement
