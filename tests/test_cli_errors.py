"""Bad input at the command line (issue 16): one `auroralong CMD: error: WHAT: WHY` line and exit 2, never a traceback;
Ctrl-C is one `interrupted` line and exit 130; an output that cannot be written is refused before the work, and one
that fails while being written (a full disk, an interrupt) leaves nothing half-written and an earlier output whole.
Also the vocabulary file: a damaged one is a ValueError naming the file and the line."""

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch
from mounts import tmpfs
from videos import write_video

import auroralong_hf.cli as cli
import auroralong_hf.commands.describe as describe_command
from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, Rwkv6Cache, processor_for_vision_config
from auroralong_hf.cli import main
from auroralong_hf.describe import interrupts_deferred
from auroralong_hf.processing.tokenization_rwkv_world import DEFAULT_VOCAB_FILE, VOCAB_FILE_NAME, RwkvWorldTokenizer

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32, "vocab_size": 65536}
FAST_TRAINING = ["--per_device_train_batch_size", "1", "--save_strategy", "no", "--disable_tqdm", "True",
                 "--max_steps", "1", "--report_to", "none"]


def error_of(capsys, command: str) -> str:
    """The error line of a failed command: its stderr's last line, the only `auroralong CMD: error:` line, and no
    traceback (progress bars and training logs may come before it)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith(f"auroralong {command}: error: "), err[-3000:]
    assert sum("error:" in line for line in lines) == 1, err[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small AuroraLong folder (64x64 frames, 2 + 2 layers), one 2-frame video and a training record on it."""
    root = tmp_path_factory.mktemp("cli-errors")
    torch.manual_seed(0)
    config = AuroraLongConfig(vision_config=VISION, text_config=TEXT)
    AuroraLongForConditionalGeneration(config).save_pretrained(root / "model")
    processor_for_vision_config(config.vision_config).save_pretrained(root / "model")
    (root / "media").mkdir()
    write_video(root / "media" / "v.mp4", 2, 1, size=(64, 64))
    (root / "data.json").write_text(json.dumps([{"id": "s", "video": "v.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat colour?"}, {"from": "gpt", "value": "red."}]}]))
    return root


def small_state(layers: int = 1) -> Rwkv6Cache:
    from auroralong_hf import Rwkv6Config

    return Rwkv6Cache(Rwkv6Config(hidden_size=64, num_hidden_layers=layers, head_size=32), batch_size=1)


# -------------------------------------------------------------------------------------- the set of errors reported


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only bad input is folded into one line: an error of another kind out of a command is a bug, and propagates."""
    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(describe_command, "run", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["describe"])
    assert capsys.readouterr().err == ""


def test_keyboard_interrupt_in_process_is_one_line_and_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(describe_command, "run", interrupted)
    assert main(["describe"]) == 130
    assert capsys.readouterr().err == "auroralong describe: interrupted\n"


def test_an_oserror_is_reported_as_path_and_reason():
    error = OSError(28, "No space left on device", "/data/out.state")
    assert cli.error_line(error) == "/data/out.state: No space left on device"
    assert cli.error_line(ValueError("first line\n  second line")) == "first line second line"
    assert cli.error_line(ValueError()) == "ValueError"


# --------------------------------------------------------------------------------------------------- model folders


@pytest.mark.parametrize("command", ["generate", "describe"])
@pytest.mark.parametrize("make, reason", [
    (lambda d: d.mkdir(), "config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("[1, 2]")), "config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": ')), "config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_bytes(b'{"model_type": "\xff"}')), "config.json"),
    (lambda d: d.write_text("a file"), "not a folder"),
    (lambda d: None, "no such model folder"),
])
def test_a_folder_that_is_not_a_model_is_one_line_naming_it(tmp_path, capsys, command, make, reason):
    folder = tmp_path / "not-a-model"
    make(folder)
    question = ["hi"] if command == "generate" else []
    assert main([command, *question, "--model", str(folder), "--max-new-tokens", "1"]) == 2
    line = error_of(capsys, command)
    assert str(folder) in line and reason in line


@pytest.mark.parametrize("command", ["generate", "describe"])
def test_a_complete_folder_with_a_list_config_is_named(workspace, tmp_path, capsys, command):
    folder = tmp_path / "model"
    shutil.copytree(workspace / "model", folder)
    (folder / "config.json").write_text("[]")
    question = ["hi"] if command == "generate" else []
    assert main([command, *question, "--model", str(folder), "--max-new-tokens", "1"]) == 2
    assert f"{folder / 'config.json'} holds a JSON array, not a model configuration" in error_of(capsys, command)


@pytest.mark.parametrize("command", ["generate", "describe"])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_damaged_weights_are_one_line_naming_the_folder(workspace, tmp_path, capsys, command, keep):
    """An empty or truncated model.safetensors (safetensors' error names no file: the folder is added)."""
    folder = tmp_path / "model"
    shutil.copytree(workspace / "model", folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(int(weights.stat().st_size * keep))
    question = ["hi"] if command == "generate" else []
    assert main([command, *question, "--model", str(folder), "--max-new-tokens", "1"]) == 2
    assert str(folder) in error_of(capsys, command)


# ------------------------------------------------------------------------------------------------ vocabulary files


VOCAB_LINES = Path(DEFAULT_VOCAB_FILE).read_bytes().splitlines(keepends=True)[:400]


@pytest.mark.parametrize("lines, where, reason", [
    (VOCAB_LINES[:300] + [b"hello world\n"] + VOCAB_LINES[300:], ":301:", "does not parse"),
    (VOCAB_LINES[:300] + [b"301 'abc 3\n"] + VOCAB_LINES[301:], ":301:", "does not parse"),
    (VOCAB_LINES[:299] + [VOCAB_LINES[300], VOCAB_LINES[299]], ":300:", "id 301 where id 300 was expected"),
    (VOCAB_LINES[:300] + [b"301 '\xff\xfe' 2\n"], ":301:", "not UTF-8"),
    (VOCAB_LINES[:300] + [b"301 'x' 1\n"], ":301:", "repeats line 121"),
    (VOCAB_LINES[:300] + [b"301 'abc' 4\n"], ":301:", "token is 3 bytes, the file says 4"),
    (VOCAB_LINES[:65] + [b"66 'B' 1\n"], ":66:", "must be the single byte 0x41"),
    ([], "", "the vocabulary file is empty"),
])
def test_a_damaged_vocabulary_names_the_file_and_line(tmp_path, lines, where, reason):
    vocab = tmp_path / VOCAB_FILE_NAME
    vocab.write_bytes(b"".join(lines))
    with pytest.raises(ValueError, match=f"{re.escape(str(vocab) + where)}.*{reason}"):
        RwkvWorldTokenizer(vocab_file=str(vocab))


def test_a_damaged_vocabulary_in_a_model_folder_is_one_line(workspace, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(workspace / "model", folder)
    vocab = folder / VOCAB_FILE_NAME
    vocab.write_bytes(b"".join(VOCAB_LINES[:10]) + b"11 \xff\n")
    assert main(["generate", "hi", "--model", str(folder), "--max-new-tokens", "1"]) == 2
    assert f"{vocab}:11: not UTF-8 text" in error_of(capsys, "generate")


def test_text_that_is_not_unicode_is_one_line(capsys):
    """Bytes that are not UTF-8 on a command line reach Python as lone surrogates."""
    assert main(["generate", "caf\udce9", "--max-new-tokens", "1"]) == 2
    assert "not valid Unicode: '\\udce9' (a lone surrogate) at character 3" in error_of(capsys, "generate")


# ---------------------------------------------------------------------------------------------------- saved states


def test_save_state_to_a_folder_or_under_a_file_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import auroralong_hf.describe as describe

    monkeypatch.setattr(describe, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["describe", "--save-state", str(tmp_path)]) == 2
    assert error_of(capsys, "describe").endswith(f"{tmp_path}: --save-state is a folder; give a file name")
    (tmp_path / "notes.txt").write_text("kept")
    target = tmp_path / "notes.txt" / "s.state"
    assert main(["describe", "--save-state", str(target)]) == 2
    assert f"{target}: --save-state cannot be written: {tmp_path / 'notes.txt'} is a file" in error_of(capsys,
                                                                                                      "describe")
    assert (tmp_path / "notes.txt").read_text() == "kept"


def test_save_state_on_a_read_only_disk_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import auroralong_hf.describe as describe

    monkeypatch.setattr(describe, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        target = read_only / "sub" / "s.state"
        assert main(["describe", "--save-state", str(target)]) == 2
        assert error_of(capsys, "describe").endswith(
            f"{target}: --save-state cannot be written in {read_only}: Read-only file system")


def test_save_state_on_a_full_disk_keeps_the_earlier_state(workspace, tmp_path, capsys):
    """The model's state (17 KB) does not fit beside the earlier state (9 KB), which stays whole; nothing is left."""
    with tmpfs(tmp_path / "full", size="16k") as full:
        target = full / "s.state"
        small_state().save(target)
        before = target.read_bytes()
        assert main(["describe", str(workspace / "media" / "v.mp4"), "--model", str(workspace / "model"),
                     "--save-state", str(target), "--max-new-tokens", "1"]) == 2
        assert error_of(capsys, "describe").endswith(
            f"{target}: the state could not be written: No space left on device")
        assert target.read_bytes() == before and os.listdir(full) == ["s.state"]


def test_an_interrupted_state_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "s.state"
    small_state().save(target)
    before = target.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)  # the bytes are written, the rename is interrupted
    with pytest.raises(KeyboardInterrupt):
        small_state(layers=2).save(target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["s.state"]


def test_a_state_that_is_a_folder_is_one_line_before_the_work(tmp_path, capsys, monkeypatch):
    import auroralong_hf.describe as describe

    monkeypatch.setattr(describe, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["describe", "--state", str(tmp_path)]) == 2
    assert error_of(capsys, "describe").endswith(f"{tmp_path}: a folder, not a state file written by Rwkv6Cache.save")


# --------------------------------------------------------------------------------------------------- create-random


def test_create_random_output_errors(tmp_path, capsys):
    existing = tmp_path / "a-file"
    existing.write_text("kept")
    assert main(["create-random", str(existing)]) == 2
    assert "exists and is not a folder" in error_of(capsys, "create-random") and existing.read_text() == "kept"
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        assert main(["create-random", str(read_only / "out")]) == 2
        assert error_of(capsys, "create-random").endswith(
            f"{read_only / 'out'}: the output folder cannot be written in {read_only}: Read-only file system")
    with tmpfs(tmp_path / "full", size="1m") as full:  # the tiny model is 36 MB
        assert main(["create-random", str(full / "out")]) == 2
        assert error_of(capsys, "create-random").endswith(
            f"{full / 'out'}: the model folder could not be written: No space left on device")
        assert os.listdir(full) == []


# ----------------------------------------------------------------------------------------------------------- train


def train_command(workspace, output) -> list[str]:
    return ["train", "--stage", "pretrain", "--data", str(workspace / "data.json"), "--media-root",
            str(workspace / "media"), "--model", str(workspace / "model"), "--output", str(output), *FAST_TRAINING]


def test_train_output_that_cannot_be_written_is_refused_before_training(workspace, tmp_path, capsys, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    existing = tmp_path / "a-file"
    existing.write_text("kept")
    assert main(train_command(workspace, existing)) == 2
    assert error_of(capsys, "train").endswith(f"{existing}: --output exists and is not a folder")
    assert main(train_command(workspace, existing / "out")) == 2
    assert f"{existing} is a file, not a folder" in error_of(capsys, "train") and existing.read_text() == "kept"
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        assert main(train_command(workspace, read_only / "out")) == 2
        assert "Read-only file system" in error_of(capsys, "train")


def test_train_on_a_full_disk_leaves_no_half_written_model(workspace, tmp_path, capsys):
    with tmpfs(tmp_path / "full", size="256k") as full:  # room for the config files, not for the weights
        assert main(train_command(workspace, full / "out")) == 2
        assert error_of(capsys, "train").endswith(
            f"{full / 'out' / 'final'}: the model folder could not be written: No space left on device")
        assert os.listdir(full / "out") == []


def test_train_interrupted_while_saving_keeps_the_earlier_model(workspace, tmp_path, capsys, monkeypatch):
    import auroralong_hf.training.train as training

    output = tmp_path / "out"
    (output / "final").mkdir(parents=True)
    (output / "final" / "config.json").write_text("{}")  # stands for an earlier run's model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_training_card", interrupted)  # the last step of writing final/
    assert main(train_command(workspace, output)) == 130
    assert capsys.readouterr().err.endswith("auroralong train: interrupted\n")
    assert os.listdir(output) == ["final"] and os.listdir(output / "final") == ["config.json"]


# ---------------------------------------------------------------------------------------------- Ctrl-C, for real


def test_a_ctrl_c_while_the_progress_bar_is_made_waits_for_it():
    """SIGINT inside `interrupts_deferred` (around tqdm's constructor) raises only once the block is done: the bar is
    whole, so no half-built object prints a traceback from its __del__; the usual handler is back afterwards."""
    handler = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs here, between bytecodes
        done.append(True)
    assert done == [True] and signal.getsignal(signal.SIGINT) is handler
    with interrupts_deferred():  # nothing received: nothing raised
        pass


def test_ctrl_c_during_describe_is_one_line(workspace, tmp_path):
    """SIGINT to a real `auroralong describe` once its progress bar is drawn (stderr is a terminal, so the bar is
    on): `interrupted`, exit 130, no traceback, and the state it was to save neither written nor half-written."""
    write_video(tmp_path / "long.mp4", 300, 10, size=(32, 32))
    earlier = tmp_path / "s.state"
    small_state().save(earlier)
    before = earlier.read_bytes()
    command = [sys.executable, "-c", "import sys, auroralong_cli; sys.exit(auroralong_cli.main())", "describe",
               str(tmp_path / "long.mp4"), "--model", str(workspace / "model"), "--num-frames", "300",
               "--save-state", str(earlier)]
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing at width 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child_side,
                               env=env)
    os.close(child_side)

    def read_until(done, seconds: float) -> bytes:
        text, deadline = b"", time.monotonic() + seconds
        while not done(text) and time.monotonic() < deadline:
            if select.select([terminal], [], [], max(0.0, deadline - time.monotonic()))[0]:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child closed the terminal (EIO)
                    break
                if not chunk:
                    break
                text += chunk
        return text

    try:
        before_signal = read_until(lambda text: b"frames:" in text, 300)
        assert b"frames:" in before_signal, before_signal[-3000:]
        process.send_signal(signal.SIGINT)
        after_signal = read_until(lambda text: False, 120)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
        os.close(terminal)
    assert b"Traceback" not in before_signal + after_signal
    # what was shown after the signal: the bar cleared (tqdm rewrites its line after a \r), then one line
    shown = [line.split("\r")[-1].strip() for line in after_signal.decode().replace("\r\n", "\n").split("\n")]
    assert [line for line in shown if line] == ["auroralong describe: interrupted"], after_signal
    assert earlier.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["long.mp4", "s.state"]

