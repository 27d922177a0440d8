"""`--model auroralong` in lmms-eval 0.7.3, offline on a tiny random model and tasks made here (synthetic videos).

The CLI exits 0 even when a task fails, so every run is judged by its results JSON.
"""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance  # the test extra installs lmms-eval: no skip when it is missing
from lmms_eval_runs import run_cli, samples, write_task
from videos import write_video

from auroralong_hf.eval.adapter import AuroraLongLmms, AuroraLongLmmsChat, chat_prompt, user_turn
from auroralong_hf.eval.compat import keep_loglikelihood_pairs
from auroralong_hf.modeling import tokens_per_frame


@pytest.fixture(scope="module")
def model_dir(tiny_auroralong_folder):
    return tiny_auroralong_folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A task folder: a generation task and a multiple-choice task over four documents (one unreadable video,
    one MovieChat-1K-style breakpoint)."""
    root = tmp_path_factory.mktemp("tasks")
    videos = [
        write_video(root / "a.mp4", num_frames=12, fps=6).path,
        write_video(root / "b.webm", num_frames=8, fps=4).path,
        write_video(root / "c.mkv", num_frames=30, fps=10).path,
    ]
    broken = root / "broken.mp4"
    broken.write_bytes(os.urandom(3000))
    docs = [
        {"video": str(videos[0]), "timestep": None, "question": "What is shown?"},
        {"video": str(broken), "timestep": None, "question": "What happens next?"},
        {"video": str(videos[1]), "timestep": None, "question": "Which colour is it?"},
        {"video": str(videos[2]), "timestep": 9, "question": "What happened so far?"},
    ]
    for doc in docs:
        doc.update(answer="a grid", choices=["a grid", "a cat", "nothing at all"], label=0)
    write_task(root, "auroralong_synthetic_qa", docs, "generate_until", "synthetic_utils",
               {"max_new_tokens": 6, "until": ["ASSISTANT:"], "fps": 4, "temperature": 0, "do_sample": False})
    write_task(root, "auroralong_synthetic_mc", docs, "multiple_choice", "synthetic_utils")
    return root


def test_cli_generation_with_the_chat_class(model_dir, tasks, tmp_path):
    results, output = run_cli([
        "--model", "auroralong", "--model_args", f"pretrained={model_dir},device=cpu",
        "--tasks", "auroralong_synthetic_qa", "--include_path", str(tasks), "--log_samples",
    ], tmp_path)
    assert results["config"]["model_backend"] == "auroralong_hf.eval.adapter.AuroraLongLmmsChat (chat)"
    metrics = results["results"]["auroralong_synthetic_qa"]
    assert metrics["answered,none"] == pytest.approx(0.75)  # every document but the unreadable one
    rows = samples(tmp_path, "auroralong_synthetic_qa")
    answers = [row["filtered_resps"] for row in rows]
    assert answers[1] == "" and all(answers[i] for i in (0, 2, 3))
    assert "broken.mp4" in output  # the error names the file


def test_cli_multiple_choice_and_generation_with_the_simple_class(model_dir, tasks, tmp_path):
    results, output = run_cli([
        "--model", "auroralong", "--force_simple", "--model_args", f"pretrained={model_dir},device=cpu,fps=2",
        "--tasks", "auroralong_synthetic_mc,auroralong_synthetic_qa", "--include_path", str(tasks),
        "--batch_size", "2", "--log_samples",
    ], tmp_path)
    assert results["config"]["model_backend"] == "auroralong_hf.eval.adapter.AuroraLongLmms (simple)"
    assert 0.0 <= results["results"]["auroralong_synthetic_mc"]["acc,none"] <= 1.0, output[-3000:]
    assert results["results"]["auroralong_synthetic_qa"]["answered,none"] == pytest.approx(0.75)
    rows = samples(tmp_path, "auroralong_synthetic_mc")
    assert len(rows) == 4 and all(len(row["filtered_resps"]) == 3 for row in rows), rows


def test_simple_evaluate_batched_equals_unbatched(model_dir, tasks, monkeypatch, tmp_path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    manager = TaskManager(include_path=str(tasks))
    answers = {}
    for batch_size in (1, 3):
        model = AuroraLongLmms(pretrained=str(model_dir), device="cpu", batch_size=batch_size)
        out = simple_evaluate(model=model, tasks=["auroralong_synthetic_qa", "auroralong_synthetic_mc"],
                              task_manager=manager, log_samples=True)
        assert out["results"]["auroralong_synthetic_qa"]["answered,none"] == pytest.approx(0.75)
        assert 0.0 <= out["results"]["auroralong_synthetic_mc"]["acc,none"] <= 1.0
        rows = sorted(out["samples"]["auroralong_synthetic_qa"], key=lambda row: row["doc_id"])
        answers[batch_size] = [row["filtered_resps"] for row in rows]
    assert answers[1] == answers[3]


# -- the adapter directly ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(model_dir):
    return AuroraLongLmms(pretrained=str(model_dir), device="cpu", batch_size=2, max_new_tokens=5)


def request(kind, args, doc_id=0):
    return Instance(request_type=kind, arguments=args, idx=0,
                    metadata={"task": "t", "doc_id": doc_id, "repeats": 1})


def test_loglikelihood_encodes_each_video_once_and_matches_a_full_forward(adapter, tasks, monkeypatch):
    docs = [{"video": str(tasks / "a.mp4")}, {"video": str(tasks / "b.webm")}]
    adapter.task_dict = {"t": {"test": docs}}
    choices = ["a grid", " a cat", "nothing"]
    requests = [request("loglikelihood", ("Name it.", c, lambda doc: [doc["video"]], d, "t", "test"), d)
                for d in (0, 1) for c in choices]
    streamed = []
    original = adapter.model.prefill
    monkeypatch.setattr(adapter.model, "prefill", lambda *a, **k: streamed.append(1) or original(*a, **k))
    results = adapter.loglikelihood(requests)
    assert len(streamed) == 2  # once per document, not per choice

    processor, model = adapter.processor, adapter.model
    for (loss, greedy), req in zip(results, requests, strict=True):
        context, continuation, _, doc_id, _, _ = req.args
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": context}]}],
            add_generation_prompt=True)
        target = processor.tokenizer.encode(continuation if continuation.startswith(" ") else " " + continuation)
        inputs = processor(text=prompt, videos=docs[doc_id]["video"], **adapter.sampling)
        ids = torch.cat([inputs["input_ids"], torch.tensor([target])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values_videos=inputs["pixel_values_videos"]).logits[0].float()
        picked = torch.log_softmax(logits[-len(target) - 1:-1], dim=-1)
        reference = -picked[torch.arange(len(target)), torch.tensor(target)].mean()
        assert loss == pytest.approx(float(reference), abs=1e-4)
        assert greedy == bool((picked.argmax(-1) == torch.tensor(target)).all())


def test_unreadable_video_has_no_score_is_marked_and_logged(adapter, tasks):
    from loguru import logger

    from auroralong_hf.eval.scoring import failure_of

    adapter.task_dict = {"t": {"test": [{"video": str(tasks / "broken.mp4")}]}}
    requests = [request("loglikelihood", ("Q?", c, lambda doc: [doc["video"]], 0, "t", "test")) for c in "AB"]
    messages = []
    sink = logger.add(messages.append, level="ERROR")
    try:
        results = adapter.loglikelihood(requests)
    finally:
        logger.remove(sink)
    assert all(math.isnan(loss) and greedy is False for loss, greedy in results)  # no score, not +inf
    assert "broken.mp4: cannot open as a video" in failure_of(requests)
    # one error naming the document and the file, one summary after the request type
    assert len(messages) == 2 and all("broken.mp4: cannot open as a video" in m for m in messages)
    assert "document 0" in messages[0] and "1 document(s) of loglikelihood requests" in messages[1]


def test_breakpoint_reads_only_frames_up_to_it(adapter, tasks, monkeypatch):
    seen = []
    original = adapter.processor.plan_video

    def spy(source, **kwargs):
        video = original(source, **kwargs)
        if video is not source:  # planned here (the processor's call takes the planned video as it is)
            seen.extend(video.plan.indices)  # the frames the model will decode, planned before any is
        return video

    monkeypatch.setattr(adapter.processor, "plan_video", spy)
    video = str(tasks / "c.mkv")  # 30 frames at 10 fps
    adapter.generate([user_turn("Q?", [{"video_path": video, "timestep": 9}])], {"fps": 10})
    assert seen == list(range(10))
    seen.clear()
    adapter.generate([user_turn("Q?", [video])], {"fps": 10})
    assert seen == list(range(30))


def test_multi_round_carries_the_state(adapter, tasks):
    video = str(tasks / "a.mp4")
    adapter.task_dict = {"t": {"test": [{"video": video}]}}
    turns = ["And then?", "Why?"]

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        if round_idx > len(turns):
            return None, None, True, previous_output, None
        return [], turns[round_idx - 1], False, previous_output, previous_round_info

    req = request("generate_until_multi_round",
                  ("What is shown?", {"max_new_tokens": 4}, lambda doc: [doc["video"]], doc_to_text, 0, "t", "test"))
    (answers,) = adapter.generate_until_multi_round([req])
    assert len(answers) == 3

    # the third answer equals one generated from the whole conversation rendered at once
    processor = adapter.processor
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is shown?"}]}]
    for answer, turn in zip(answers, turns, strict=False):
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": turn}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=video, **adapter.sampling)
    output = adapter.model.generate(**inputs, max_new_tokens=4, do_sample=False, stop_strings=["\n\n"],
                                    tokenizer=processor.tokenizer)
    text = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answers[2] == text.split("\n\n")[0].strip()


def test_chat_messages_become_prompts():
    prompt = chat_prompt([
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [
            {"type": "video", "url": {"video_path": "/v.mp4", "timestep": 42}},
            {"type": "video", "url": "/w.mkv", "start_time": 1.5, "end_time": 4.0},
            {"type": "image", "url": "/x.png"},
            {"type": "text", "text": "Compare them."},
        ]},
    ])
    assert [(v.source, v.is_image, v.end_frame, v.start, v.end) for v in prompt.visuals] == [
        ("/v.mp4", False, 42, None, None), ("/w.mkv", False, None, 1.5, 4.0), ("/x.png", True, None, None, None)]
    assert [block["type"] for block in prompt.messages[1]["content"]] == ["video", "video", "image", "text"]
    with pytest.raises(TypeError, match="audio"):
        chat_prompt([{"role": "user", "content": [{"type": "audio", "url": "/a.wav"}]}])


def test_chat_class_generates_like_the_simple_class(adapter, model_dir, tasks):
    chat = AuroraLongLmmsChat(pretrained=str(model_dir), device="cpu", max_new_tokens=5)
    video = str(tasks / "a.mp4")
    chat.task_dict = adapter.task_dict = {"t": {"test": [{"video": video}]}}

    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": "video", "url": doc["video"]},
                                             {"type": "text", "text": "What is shown?"}]}]

    from_chat = chat.generate_until([request("generate_until", ("", doc_to_messages, {}, 0, "t", "test"))])
    simple = adapter.generate_until([request("generate_until", ("What is shown?", {}, lambda d: [d["video"]],
                                                                0, "t", "test"))])
    assert from_chat == simple and from_chat[0]


def test_bad_model_arguments_are_named(model_dir, tmp_path):
    with pytest.raises(TypeError, match="max_frame"):
        AuroraLongLmms(pretrained=str(model_dir), max_frame=3)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        AuroraLongLmms(pretrained=str(tmp_path / "no_such_folder"))
    with pytest.raises(ValueError, match="token_kept_ratio must be in"):
        AuroraLongLmms(pretrained=str(model_dir), device="cpu", token_kept_ratio=1.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        AuroraLongLmms(pretrained=str(model_dir), device="cpu", batch_size="auto")


def test_token_kept_ratio_and_sort_reach_the_tower(model_dir):
    model = AuroraLongLmms(pretrained=str(model_dir), device="cpu", token_kept_ratio=0.5, tome_sort="descending")
    tower = model.model.model.vision_tower.config
    assert (tower.token_kept_ratio, tower.tome_sort) == (0.5, "descending")
    # the placeholders follow the override: a count that differs from the tower's would misplace every frame
    assert model.processor.tokens_per_frame == model.model.tokens_per_frame == tokens_per_frame(tower)


def test_loglikelihood_pairs_survive_lmms_eval_0_7_3():
    from lmms_eval import evaluator

    keep_loglikelihood_pairs()
    keep_loglikelihood_pairs()  # idempotent
    unwrap = evaluator.unwrap_generation_output
    assert unwrap((1.25, True)) == ((1.25, True), None)
    assert unwrap("text") == ("text", None)
    assert unwrap(["a", "b", "c"]) == (["a", "b", "c"], None)


@pytest.mark.slow
def test_accelerate_two_processes_each_take_a_shard(model_dir, tasks, tmp_path):
    """`accelerate launch -m lmms_eval` with two CPU processes (torchrun launcher, gloo; see the config file)."""
    import auroralong_hf.training

    config = Path(auroralong_hf.training.__file__).parent / "configs" / "accelerate_cpu.yaml"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                "--main_process_port", str(30600 + os.getpid() % 1000)]
    results, output = run_cli([
        "--model", "auroralong", "--model_args", f"pretrained={model_dir}",
        "--tasks", "auroralong_synthetic_qa", "--include_path", str(tasks), "--log_samples", "--verbosity", "INFO",
    ], tmp_path, launcher=launcher)
    assert "process 0 of 2" in output and "process 1 of 2" in output
    assert results["results"]["auroralong_synthetic_qa"]["answered,none"] == pytest.approx(0.75), output[-3000:]
    assert len(samples(tmp_path, "auroralong_synthetic_qa")) == 4


def test_entry_point_manifest_is_registered():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "auroralong"]
    manifest = entry.load()()
    assert manifest.model_id == "auroralong"
    assert manifest.simple_class_path.endswith("AuroraLongLmms")
    assert manifest.chat_class_path.endswith("AuroraLongLmmsChat")
    code = textwrap.dedent("""
        import sys
        from auroralong_hf.eval.manifest import auroralong_manifest
        assert "auroralong_hf.eval.adapter" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert entry.module == "auroralong_hf.eval.manifest"


def test_a_broken_lmms_eval_install_is_reported_with_its_cause(tasks, model_dir, tmp_path):
    """filelock 4 with lmms-eval 0.7.3 (its `filelock._api` gone): the run names the module and the fix."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    # filelock 4: the package imports, its `_api` module does not
    (blocked / "sitecustomize.py").write_text("import sys\nimport filelock\nsys.modules['filelock._api'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "auroralong", "--model_args",
                           f"pretrained={model_dir}", "--include_path", str(tasks), "--tasks",
                           "auroralong_synthetic_qa", "--output_path", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    output = done.stdout + done.stderr
    assert "it imports filelock._api, which fails" in output and "filelock>=3.16.1,<4" in output, output[-3000:]
    assert not list((tmp_path / "out").rglob("*_results.json"))


def test_task_settings_win_over_model_args(model_dir):
    model = AuroraLongLmms(pretrained=str(model_dir), device="cpu", num_frames=8, max_frames_num=100,
                           max_new_tokens=7)
    assert model.sampling == {"fps": 1.0, "num_frames": 8, "max_frames": 100}
    sampling, options, stops = model._generation_settings({"fps": 1, "until": ["ASSISTANT:", ""]})
    assert sampling == {"fps": 1.0, "num_frames": None, "max_frames": 100}  # a task's fps replaces the count
    assert options == {"max_new_tokens": 7, "do_sample": False, "num_beams": 1}
    assert stops == ["\n\n", "ASSISTANT:"]
    sampling, options, _ = model._generation_settings(
        {"num_frames": 48, "max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "do_sample": False})
    assert sampling["num_frames"] == 48 and options == {"max_new_tokens": 16, "do_sample": False, "num_beams": 1}
    _, options, _ = model._generation_settings({"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert options == {"max_new_tokens": 7, "do_sample": True, "num_beams": 1, "temperature": 0.7, "top_p": 0.9}
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        model._generation_settings({"num_frames": 0})
