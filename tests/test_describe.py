"""`auroralong describe`: the streaming pipeline end to end (shipped clip + embedded model, test videos + a tiny
model folder), equality with the all-at-once path, saved states, and the bad inputs."""

import json
import math
from pathlib import Path

import av
import pytest
import torch
from outputs import state_of
from videos import write_random_bytes, write_video

from auroralong_hf.cli import main
from auroralong_hf.describe import SAMPLE_CLIP, describe
from auroralong_hf.processing.video_io import probe_video

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"answer": str, "frames": int, "tokens_per_frame": int, "visual_tokens": int, "state_bytes": int,
        "seconds": float, "peak_memory_bytes": int}


@pytest.fixture(scope="module")
def tiny_folder(tiny_auroralong_folder):
    return tiny_auroralong_folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s at 10 fps, 64 x 48."""
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", 30, fps=10, size=(64, 48)).path


def run(capsys, *args):
    code = main(["describe", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_shipped_clip_is_small_and_packaged():
    assert SAMPLE_CLIP.is_file() and SAMPLE_CLIP.parent == ROOT / "auroralong_hf" / "data"
    assert SAMPLE_CLIP.stat().st_size < 100_000
    metadata, timestamps = probe_video(SAMPLE_CLIP)
    assert 3 <= metadata.duration <= 10 and metadata.num_frames == len(timestamps)
    assert '"auroralong_hf" = ["data/*.mp4"]' in (ROOT / "pyproject.toml").read_text()  # ships in the wheel


def test_default_run_embedded_model_on_the_shipped_clip(capsys):
    report = run_json(capsys)  # `auroralong describe --json`: no video, no model
    for key, kind in KEYS.items():
        assert isinstance(report[key], kind), key
    _, timestamps = probe_video(SAMPLE_CLIP)
    assert report["frames"] == math.floor(timestamps[-1]) + 1  # 1 fps from t = 0 over the clip
    assert report["tokens_per_frame"] == 58 and report["visual_tokens"] == report["frames"] * 58
    assert report["untrained"] and "untrained random model" in report["model"]
    assert report["video"] == str(SAMPLE_CLIP) and report["peak_memory_bytes"] >= 0
    # 4 layers x (2 shift vectors of 256 fp32 + 4 heads x 64 x 64 fp32)
    assert report["state_bytes"] == 4 * (2 * 256 * 4 + 4 * 64 * 64 * 4)
    assert 0 < report["new_tokens"] <= 64

    code, out, err = run(capsys, "--max-new-tokens", "2", "-q", "Where does the ball go?")
    assert code == 0, err
    assert "untrained random model" in out and f"{report['frames']} frames x 58 tokens" in out and "MiB" in out


def test_test_video_with_a_tiny_folder(capsys, tiny_folder, clip):
    report = run_json(capsys, clip, "--model", tiny_folder, "--fps", "2", "--chunk-frames", "4",
                      "--max-new-tokens", "3")
    assert report["frames"] == 6 and report["visual_tokens"] == 6 * 58 and not report["untrained"]
    assert report["model"] == str(tiny_folder) and report["new_tokens"] <= 3
    assert report["state_bytes"] == 2 * (2 * 64 * 4 + 2 * 32 * 32 * 4)
    report = run_json(capsys, clip, "--model", tiny_folder, "--num-frames", "2", "--token-kept-ratio", "0.5",
                      "--max-new-tokens", "1")
    assert report["frames"] == 2 and report["tokens_per_frame"] == 288 and report["visual_tokens"] == 2 * 288


def test_folder_sampling_rule_and_fps_override(capsys, tiny_folder, clip, tmp_path):
    folder = tmp_path / "by-count"
    folder.mkdir()
    for path in tiny_folder.iterdir():
        if path.name != "processor_config.json":
            (folder / path.name).symlink_to(path)
    settings = json.loads((tiny_folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**settings, "num_frames": 4}))
    assert run_json(capsys, clip, "--model", folder, "--max-new-tokens", "1")["frames"] == 4  # the folder's rule
    assert run_json(capsys, clip, "--model", folder, "--fps", "2", "--max-new-tokens", "1")["frames"] == 6


def test_streaming_equals_all_at_once(tiny_folder, clip):
    """describe (the main path: lazy video, streamed prefill, generate) answers as the all-at-once forward over
    every frame's pixels followed by a plain greedy loop."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    question = "What is shown?"
    streamed = describe(clip, question, model_dir=tiny_folder, chunk_frames=2, max_new_tokens=8)

    model = AutoModelForImageTextToText.from_pretrained(tiny_folder).eval()
    processor = AutoProcessor.from_pretrained(tiny_folder)
    messages = [{"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           processor_kwargs={"stream_videos": False})
    assert inputs["video_frame_counts"].tolist() == [streamed["frames"]] == [3]
    assert inputs["pixel_values_videos"].shape[:2] == (1, 3)
    stop = processor.tokenizer.encode(processor.stop_strings[0])
    new = greedy_all_at_once(model, inputs, 8, stop)
    assert streamed["new_tokens"] == len(new)
    assert streamed["answer"] == processor.decode(new, skip_special_tokens=True).removesuffix("\n\n").strip()


def greedy_all_at_once(model, inputs, max_new_tokens: int, stop: list[int]) -> list[int]:
    """The reference: one forward over the whole prompt (every frame's pixels at once), then one token at a time."""
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        new = []
        while True:
            token = int(out.logits[0, -1].argmax())
            new.append(token)
            if new[-len(stop):] == stop or len(new) == max_new_tokens:
                return new
            out = model(torch.tensor([[token]]), cache=state_of(out), use_cache=True)


def test_saved_state_answers_again_without_the_video(capsys, tiny_folder, clip, tmp_path):
    state = tmp_path / "states" / "clip.state"
    first = run_json(capsys, clip, "--model", tiny_folder, "--save-state", state, "--max-new-tokens", "6")
    assert state.is_file()
    again = run_json(capsys, "--state", state, "--model", tiny_folder, "--max-new-tokens", "6")
    assert again["answer"] == first["answer"] and again["frames"] == 0 and again["state"] == str(state)
    assert again["state_bytes"] == first["state_bytes"]
    other = run_json(capsys, "--state", state, "--model", tiny_folder, "-q", "Who is there?", "--max-new-tokens", "3")
    assert isinstance(other["answer"], str)
    # a state of another model (the embedded small one has 4 layers of 256, the tiny folder 2 of 64)
    code, _, err = run(capsys, "--state", state, "--max-new-tokens", "1")
    assert code == 2 and "another geometry" in err and str(state) in err
    code, _, err = run(capsys, clip, "--state", state)
    assert code == 2 and "not both" in err


def _zero_packets(source, target, packet_numbers):
    """Copy `source` with some packets' bytes zeroed: the container stays readable, those frames do not decode."""
    with av.open(str(source)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(Path(source).read_bytes())
    for packet_number in packet_numbers:
        pos, size = packets[packet_number]
        data[pos:pos + size] = bytes(size)
    Path(target).write_bytes(data)
    return Path(target)


def test_bad_inputs_are_clear_errors(capsys, tiny_folder, clip, tmp_path):
    missing = tmp_path / "nowhere.mp4"
    code, _, err = run(capsys, missing)
    assert code == 2 and str(missing) in err and "no such video file" in err

    corrupt = write_random_bytes(tmp_path / "corrupt.mp4")
    code, _, err = run(capsys, corrupt, "--model", tiny_folder)
    assert code == 2 and str(corrupt) in err

    # MJPEG frames decode independently: a zeroed frame 15 of 30 costs only that frame (1 fps samples 0, 10, 20)
    avi = write_video(tmp_path / "good.avi", 30, fps=10, size=(64, 48)).path
    damaged = _zero_packets(avi, tmp_path / "damaged.avi", [15])
    code, out, _ = run(capsys, damaged, "--model", tiny_folder, "--chunk-frames", "1")
    assert code == 0 and out
    # frames 10 .. 29 zeroed: 2 of the 3 sampled frames are lost, too little decodes; the error comes mid-stream
    broken = _zero_packets(avi, tmp_path / "broken.avi", range(10, 30))
    code, _, err = run(capsys, broken, "--model", tiny_folder, "--chunk-frames", "1")
    assert code == 2 and str(broken) in err and "after 1 of 3 sampled frames" in err and "too little" in err

    code, _, err = run(capsys, clip, "--model", tiny_folder, "--fps", "10", "--max-frames", "20")
    assert code == 2 and "30 frames, more than the cap --max-frames 20" in err and str(clip) in err
    code, _, err = run(capsys, clip, "--num-frames", "21", "--max-frames", "20")
    assert code == 2 and "--num-frames 21" in err


@pytest.mark.parametrize("remove", ["config.json", "model.safetensors", "processor_config.json"])
def test_incomplete_model_folder(capsys, tiny_folder, clip, tmp_path, remove):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in tiny_folder.iterdir():
        if path.name != remove:
            (folder / path.name).symlink_to(path)
    code, _, err = run(capsys, clip, "--model", folder)
    assert code == 2 and str(folder) in err and "missing" in err and remove in err
    code, _, err = run(capsys, clip, "--model", tmp_path / "absent")
    assert code == 2 and "no such model folder" in err
