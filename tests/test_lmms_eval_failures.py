"""Through lmms-eval 0.7.3: documents that cannot be answered never count as correct and never end a run, and the
placeholders LLaVA-style task prompts carry do not multiply (issue 15, items 5 and 6)."""


import pytest
from lmms_eval.api.instance import Instance  # the test extra installs lmms-eval: no skip when it is missing
from lmms_eval_runs import run_cli, samples, write_task
from videos import write_video

from auroralong_hf.eval.adapter import AuroraLongLmms, chat_prompt, user_turn


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """`missing_mc`: three documents whose videos are all missing, answers 0, 1, 0 (the issue's 0.667);
    `llava_qa`: LLaVA-style prompts that carry `<image>` for their one video, and a document whose
    doc_to_visual raises."""
    root = tmp_path_factory.mktemp("failure-tasks")
    missing = [{"video": str(root / f"missing-{k}.mp4"), "question": "Which one?", "answer": "",
                "choices": ["a grid", "a cat"], "label": label} for k, label in enumerate([0, 1, 0])]
    videos = [write_video(root / "a.mp4", num_frames=8, fps=4).path, write_video(root / "b.mkv", 6, fps=4).path]
    llava = [{"video": str(videos[0]), "question": "<image>\nWhat is shown?"},
             {"video": None, "question": "<image>\nAnd here?"},
             {"video": str(videos[1]), "question": "Look: <image> what changes?"}]
    for doc in llava:
        doc.update(answer="a grid", choices=["a grid"], label=0)
    write_task(root, "missing_mc", missing, "multiple_choice", "failure_utils")
    write_task(root, "llava_qa", llava, "generate_until", "failure_utils", {"max_new_tokens": 4, "fps": 4})
    return root


def test_missing_videos_never_count_as_correct(tiny_auroralong_folder, tasks, tmp_path):
    """The issue's case: every choice scored +inf, argmin took choice 0, and 2 of 3 documents counted correct."""
    results, output = run_cli([
        "--model", "auroralong", "--force_simple", "--model_args", f"pretrained={tiny_auroralong_folder},device=cpu",
        "--tasks", "missing_mc", "--include_path", str(tasks), "--log_samples",
    ], tmp_path)
    metrics = results["results"]["missing_mc"]
    assert metrics["acc,none"] == 0.0
    assert metrics["unreadable_docs,none"] == 3  # in the results JSON and the printed table
    assert "unreadable_docs" in output
    rows = samples(tmp_path, "missing_mc")
    assert all("missing-" in row["auroralong_failure"] and row["acc"] == 0.0 for row in rows)
    for k in range(3):
        assert f"missing-{k}.mp4" in output  # each failure is logged naming its file
    assert "3 document(s) of loglikelihood requests could not be answered" in output


def test_on_failure_fail_ends_the_run_naming_every_file(tiny_auroralong_folder, tasks, monkeypatch, tmp_path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu", on_failure="fail")
    with pytest.raises(RuntimeError, match="on_failure=fail") as caught:
        simple_evaluate(model=model, tasks=["missing_mc"], task_manager=TaskManager(include_path=str(tasks)))
    assert all(f"missing-{k}.mp4" in str(caught.value) for k in range(3))
    with pytest.raises(ValueError, match="on_failure must be one of"):
        AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu", on_failure="ignore")


def test_llava_prompts_and_a_failing_document(tiny_auroralong_folder, tasks, monkeypatch, tmp_path):
    """`<image>` in the task's text plus one visual: one placeholder, every readable document answered; the
    document whose doc_to_visual raises is logged, counted and scored wrong, and the run goes on."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    messages = []
    sink = logger.add(messages.append, level="ERROR")
    try:
        model = AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu", batch_size=2)
        out = simple_evaluate(model=model, tasks=["llava_qa"], task_manager=TaskManager(include_path=str(tasks)),
                              log_samples=True)
    finally:
        logger.remove(sink)
    metrics = out["results"]["llava_qa"]
    assert metrics["answered,none"] == pytest.approx(2 / 3) and metrics["unreadable_docs,none"] == 1
    rows = sorted(out["samples"]["llava_qa"], key=lambda row: row["doc_id"])
    assert [bool(row["auroralong_failure"]) for row in rows] == [False, True, False]
    assert "this document names no video" in rows[1]["auroralong_failure"]
    assert any("llava_qa, document 1" in str(message) for message in messages)
    assert model.failed_documents == [("llava_qa", 1, rows[1]["auroralong_failure"])]


def test_placeholders_in_task_text_do_not_multiply(tiny_auroralong_folder):
    model = AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu")
    processor = model.processor
    for prompt in (user_turn("<image>\nWhat is shown?", ["/v.mp4"]),
                   user_turn("<video> <image> Compare.", ["/v.mp4", "/x.png"]),
                   chat_prompt([{"role": "user", "content": [{"type": "video", "url": "/v.mp4"},
                                                             {"type": "text", "text": "<image>\nWhat is shown?"}]}])):
        text = processor.apply_chat_template(prompt.messages, add_generation_prompt=True)
        assert text.count("<image>") + text.count("<video>") == len(prompt.visuals), text
    # a prompt whose placeholders and visuals still disagree is a clear error, not a StopIteration
    broken = user_turn("What?", ["/v.mp4"])
    broken.visuals.append(broken.visuals[0])
    with pytest.raises(ValueError, match="1 image/video placeholder.* for 2 visual"):
        model.answerer.prefill(broken, model.sampling)


def test_a_multi_round_document_that_fails(tiny_auroralong_folder, tasks):
    model = AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu", max_new_tokens=3)
    model.task_dict = {"t": {"test": [{"video": str(tasks / "nowhere.mp4")}]}}

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        return [], "Why?", round_idx > 1, previous_output, None

    request = Instance(request_type="generate_until_multi_round", idx=0,
                       arguments=("Q?", {}, lambda doc: [doc["video"]], doc_to_text, 0, "t", "test"),
                       metadata={"task": "t", "doc_id": 0, "repeats": 1})
    assert model.generate_until_multi_round([request]) == [[""]]
    assert "nowhere.mp4" in request.auroralong_failure
