"""Running lmms-eval's CLI in tests: offline, in a subprocess, judged by its results JSON (the CLI exits 0 even
when a task fails)."""

import json
import os
import subprocess
import sys


def run_cli(args, tmp_path, *, launcher=None):
    """Run the lmms-eval CLI; returns (the results JSON, the run's output)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [*(launcher or [sys.executable]), "-m", "lmms_eval", *args, "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    output = done.stdout + done.stderr
    found = sorted((tmp_path / "out").rglob("*_results.json"))
    assert found, f"no results JSON (rc {done.returncode}):\n{output[-4000:]}"
    return json.loads(found[-1].read_text()), output


def samples(tmp_path, task):
    """The logged samples of a CLI run, in document order."""
    (path,) = (tmp_path / "out").rglob(f"*_samples_{task}.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda row: row["doc_id"])
