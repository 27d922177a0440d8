"""`auroralong train` (auroralong_hf/training/train.py) on a tiny AuroraLong, on CPU.

The data: four 2-frame videos from tests/videos.py, each showing a different frame-index grid (rows of white cells),
and one question whose answer depends only on the video ("red." / "blue." / "green." / "black.").
The two-process DDP test (`accelerate launch`, gloo) is the slowest one here (about 10 s): marked `slow`.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import metadata_load
from safetensors.torch import load_file

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, processor_for_vision_config
from auroralong_hf.training.lora import lora_parameter_count, merge_lora
from auroralong_hf.training.train import PART_PREFIXES, STAGES, UNUSED_PARAMETERS, part_of, train

sys.path.insert(0, str(Path(__file__).parent))
from videos import write_video  # noqa: E402

QUESTION = "What colour is it?"
ANSWERS = {0x0000: "red.", 0xF000: "blue.", 0x0F00: "green.", 0x00F0: "black."}  # first frame index -> answer
FAST = ["--per_device_train_batch_size", "4", "--save_strategy", "no", "--disable_tqdm", "True",
        "--logging_steps", "1", "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny model folder (64x64 frames: 16 patches, 2 ViT layers, 2 RWKV layers) and the 4-sample data set."""
    root = tmp_path_factory.mktemp("training")
    torch.manual_seed(0)
    config = AuroraLongConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False},
        text_config={"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536},
    )
    model = AuroraLongForConditionalGeneration(config)
    processor = processor_for_vision_config(config.vision_config)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    (root / "media").mkdir()
    records = []
    for i, (first_index, answer) in enumerate(ANSWERS.items()):
        write_video(root / "media" / f"v{i}.mp4", 2, 1, first_index=first_index, size=(64, 64))
        records.append({"id": f"s{i}", "video": f"v{i}.mp4", "conversations": [
            {"from": "human", "value": f"<video>\n{QUESTION}"}, {"from": "gpt", "value": answer}]})
    (root / "data.json").write_text(json.dumps(records))
    return root


def run(workspace, out, stage, *overrides, **options):
    return train(stage, str(workspace / "data.json"), str(workspace / "media"), str(workspace / "model"),
                 str(workspace / out), training_overrides=[*FAST, *overrides], **options)


def weights(folder):
    return load_file(Path(folder) / "model.safetensors")


def greedy_answers(folder, media):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    answers = []
    for i in range(len(ANSWERS)):
        messages = [{"role": "user", "content": [{"type": "video", "video": str(media / f"v{i}.mp4")},
                                                 {"type": "text", "text": QUESTION}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        answers.append(processor.decode(output[0, inputs["input_ids"].shape[1]:]).split("\n\n")[0].strip())
    return answers


def test_learns_video_dependent_answers(workspace):
    report = run(workspace, "learn", "language", "--max_steps", "100", "--learning_rate", "1e-2")
    losses = report["logged_losses"]
    assert len(losses) == 100
    assert losses[-1] <= 0.2 * losses[0], losses
    assert report["token_kept_ratio"] == 0.1
    assert greedy_answers(workspace / "learn" / "final", workspace / "media") == list(ANSWERS.values())


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_trains_exactly_its_parts(workspace, stage):
    before = weights(workspace / "model")
    report = run(workspace, f"freeze-{stage}", stage, "--max_steps", "1", "--learning_rate", "1e-2")
    after = weights(workspace / f"freeze-{stage}" / "final")
    assert set(after) == set(before)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    expected = {name for name in before if part_of(name) in STAGES[stage].trains and not UNUSED_PARAMETERS.search(name)}
    assert changed == expected
    assert report["trainable_parameters"] == sum(before[name].numel() for name in expected)
    # the stage's kept ratio is in the saved model and processor, and they agree
    config = json.loads((workspace / f"freeze-{stage}" / "final" / "config.json").read_text())
    assert config["vision_config"]["token_kept_ratio"] == STAGES[stage].token_kept_ratio
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(workspace / f"freeze-{stage}" / "final")
    assert processor.tokens_per_frame == report["tokens_per_frame"]
    assert set(PART_PREFIXES) >= set(STAGES[stage].trains)
    # a complete folder: generation stops at the end of an answer, and a model card
    final = workspace / f"freeze-{stage}" / "final"
    assert json.loads((final / "generation_config.json").read_text())["eos_token_id"] == [261, 0]
    assert metadata_load(final / "README.md")["pipeline_tag"] == "image-text-to-text"


def test_gradient_checkpointing_gives_the_same_step(workspace):
    plain = run(workspace, "gc-off", "language", "--max_steps", "2", "--learning_rate", "1e-3")
    checkpointed = run(workspace, "gc-on", "language", "--max_steps", "2", "--learning_rate", "1e-3",
                       "--activation_checkpointing", "True")
    assert checkpointed["activation_checkpointing"] and not plain["activation_checkpointing"]
    assert plain["logged_losses"] == pytest.approx(checkpointed["logged_losses"], rel=1e-5)
    a, b = weights(workspace / "gc-off" / "final"), weights(workspace / "gc-on" / "final")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpoints_resume(workspace):
    out = workspace / "resume"
    first = run(workspace, "resume", "pretrain", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1")
    assert first["global_step"] == 2 and (out / "checkpoint-2").is_dir()
    again = run(workspace, "resume", "pretrain", "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1",
                "--resume_from_checkpoint", "last")
    assert again["global_step"] == 3 and (out / "checkpoint-3").is_dir()


def test_cli_passes_training_arguments_through(workspace, capsys):
    from auroralong_hf.cli import main

    out = workspace / "cli"
    code = main(["train", "--stage", "pretrain", "--data", str(workspace / "data.json"), "--media-root",
                 str(workspace / "media"), "--model", str(workspace / "model"), "--output", str(out), "--json",
                 *FAST, "--max_steps", "2"])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # the report alone: Trainer's log lines (logging_steps 1) went to stderr
    assert report["global_step"] == 2 and report["learning_rate"] == 1e-4
    assert "'loss'" in captured.err and "weights sha256" in captured.err
    assert main(["train", "--stage", "pretrain", "--data", str(workspace / "data.json"), "--media-root",
                 str(workspace / "media"), "--model", str(workspace / "model"), "--output", str(out),
                 "--lora"]) == 2  # LoRA is for the language stage
    with pytest.raises(SystemExit):  # HfArgumentParser refuses a value that does not parse
        main(["train", "--stage", "pretrain", "--data", str(workspace / "data.json"), "--media-root",
              str(workspace / "media"), "--model", str(workspace / "model"), "--output", str(out),
              "--max_steps", "many"])


def test_cli_json_stdout_is_the_report_alone(workspace):
    """`auroralong train --json` as users run it (a process, progress bar on, a log line each step, --lora with a
    preset): stdout parses as one JSON object; the Trainer's lines are on stderr."""
    out = workspace / "cli-json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "auroralong_hf.cli", "train", "--stage", "language", "--data",
               str(workspace / "data.json"), "--media-root", str(workspace / "media"), "--model",
               str(workspace / "model"), "--output", str(out), "--json", "--lora", "--lora-targets", "attention",
               "--lora-r", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--logging_steps", "1",
               "--max_steps", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["global_step"] == 2 and len(report["logged_losses"]) == 2
    assert report["lora_targets"] == "attention" and report["trainable_by_part"]["vision_tower"] == 0
    assert "'loss'" in result.stderr and "weights sha256" in result.stderr


@pytest.mark.parametrize("lora_vision", [False, True])
def test_lora_counts_and_merge(workspace, lora_vision):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    out = workspace / f"lora-{lora_vision}"
    report = run(workspace, out.name, "language", "--max_steps", "2", "--learning_rate", "1e-2", lora=True,
                 lora_vision=lora_vision, lora_r=4, lora_alpha=8, merge=True)
    base = AutoModelForImageTextToText.from_pretrained(workspace / "model")
    parts = {part: sum(p.numel() for n, p in base.named_parameters() if part_of(n) == part
                       and not UNUSED_PARAMETERS.search(n)) for part in PART_PREFIXES}
    expected = lora_parameter_count(base, 4, lora_vision) + parts["projector"]
    assert report["trainable_parameters"] == expected  # the tower: frozen, or adapters only with lora_vision
    assert report["trainable_by_part"]["vision_tower"] == lora_parameter_count(base, 4, lora_vision) - \
        lora_parameter_count(base, 4, False)
    assert report["lora_targets"] == "all"
    assert lora_parameter_count(base, 4, False) == 2 * (5 * 4 * (64 + 64) + 4 * (64 + 224) + 4 * (64 + 64)
                                                        + 4 * (224 + 64))

    # the adapter on the base (with the run's config) and the merged plain folder give the same logits
    config = AutoConfig.from_pretrained(out / "adapter")
    adapted = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(workspace / "model", config=config), out / "adapter"
    ).eval()
    merged = AutoModelForImageTextToText.from_pretrained(out / "final").eval()
    processor = AutoProcessor.from_pretrained(out / "final")
    messages = [{"role": "user", "content": [{"type": "video", "video": str(workspace / "media" / "v1.mp4")},
                                             {"type": "text", "text": QUESTION}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        fresh = AutoModelForImageTextToText.from_pretrained(workspace / "model", config=config).eval()
        original = fresh(**inputs).logits
        a, b = adapted(**inputs).logits, merged(**inputs).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a, original, atol=1e-3)  # the adapter did change the model
    # the helper gives the same merged folder
    again = merge_lora(out / "adapter", workspace / f"merged-again-{lora_vision}", base_model=workspace / "model")
    for name, tensor in weights(out / "final").items():
        torch.testing.assert_close(weights(again)[name], tensor, msg=name)
    for folder in (out / "final", again):
        assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [261, 0]
        assert metadata_load(folder / "README.md")["library_name"] == "transformers"
    assert "(stage language (LoRA merged))" in (again / "README.md").read_text()


@pytest.mark.slow
def test_two_process_ddp_ranks_agree(workspace):
    """accelerate launch, 2 CPU processes over gloo (configs/accelerate_cpu.yaml): a few steps of the vision stage;
    each rank prints a checksum of its weights, and they must match."""
    import auroralong_hf.training

    config = Path(auroralong_hf.training.__file__).parent / "configs" / "accelerate_cpu.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = workspace / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--main_process_port", str(29500 + os.getpid() % 1000), "-m", "auroralong_hf.cli", "train",
               "--stage", "vision", "--data", str(workspace / "data.json"), "--media-root", str(workspace / "media"),
               "--model", str(workspace / "model"), "--output", str(out), "--json", *FAST,
               "--per_device_train_batch_size", "2", "--max_steps", "3", "--learning_rate", "1e-2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    # the two ranks print at the same moment, so their lines may run together: match, do not split
    sums = {int(rank): digest for rank, digest in
            re.findall(r"auroralong train: rank (\d+) weights sha256 ([0-9a-f]{64})", result.stderr)}
    assert set(sums) == {0, 1}, result.stderr[-4000:]
    assert sums[0] == sums[1]
    report = json.loads(result.stdout)  # --json: rank 0's report alone; logs and checksums on stderr
    assert report["world_size"] == 2 and report["global_step"] == 3
    before, after = weights(workspace / "model"), weights(out / "final")
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("model.vision_tower."))
