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


# The functions of the local test tasks: a document names its video (None: doc_to_visual raises, a document that
# cannot be answered) and, MovieChat-1K style, an optional breakpoint frame.
TASK_UTILS = '''
def doc_to_visual(doc):
    if doc["video"] is None:
        raise KeyError("this document names no video")
    if doc.get("timestep") is not None:
        return [{"video_path": doc["video"], "timestep": doc["timestep"]}]
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return doc["choices"]


def process_results(doc, results):
    answer = results[0].strip()
    return {"answered": float(bool(answer)), "exact_match": float(answer == doc["answer"])}
'''


def write_task(root, name, docs, output_type, utils_module, generation_kwargs=None):
    """A local lmms-eval task in `root`: `name`.jsonl holding `docs`, `name`.yaml, and the functions in
    `utils_module`.py (a module name of its own per folder: lmms-eval imports them by name).

    output_type "multiple_choice" is scored by acc; "generate_until" by answered / exact_match, with
    `generation_kwargs`."""
    (root / f"{name}.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (root / f"{utils_module}.py").write_text(TASK_UTILS)
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             f"    test: {root / name}.jsonl", "test_split: test", f"output_type: {output_type}",
             f"doc_to_visual: !function {utils_module}.doc_to_visual",
             f"doc_to_text: !function {utils_module}.doc_to_text"]
    if output_type == "multiple_choice":
        lines += [f"doc_to_choice: !function {utils_module}.doc_to_choice", "doc_to_target: label"]
        metrics = ["acc"]
    else:
        lines += ["doc_to_target: answer", f"process_results: !function {utils_module}.process_results",
                  "generation_kwargs:", *(f"  {key}: {json.dumps(value)}" for key, value in generation_kwargs.items())]
        metrics = ["answered", "exact_match"]
    lines += ["metric_list:"]
    for metric in metrics:
        lines += [f"  - metric: {metric}", "    aggregation: mean", "    higher_is_better: true"]
    (root / f"{name}.yaml").write_text("\n".join(lines) + "\n")
