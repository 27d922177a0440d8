"""`auroralong tome-viz`: images and videos in, a PNG out; clear errors (exit code 2, the file named) otherwise."""

import json

import av
import numpy as np
import pytest
from PIL import Image

from auroralong_hf.cli import main
from auroralong_hf.tome_viz import even_indices, merge_groups

COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230),
           (250, 250, 250), (20, 20, 20)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A small image, an 8-frame 64x64 mp4 of distinct colours, a WAV (no video stream), and broken files."""
    folder = tmp_path_factory.mktemp("media")
    image = np.zeros((80, 96, 3), dtype=np.uint8)
    image[:40] = (40, 90, 200)  # sky
    image[40:] = (60, 160, 60)  # grass
    image[20:60, 30:60] = (240, 200, 40)  # a box
    Image.fromarray(image).save(folder / "scene.png")

    video = folder / "colours.mp4"
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for index, colour in enumerate(COLOURS):
            frame = np.empty((64, 64, 3), dtype=np.uint8)
            frame[:] = colour
            frame[16:48, 4 * index:4 * index + 16] = 128  # a grey square moving right
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())

    audio = folder / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = (np.sin(np.arange(800) / 5) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())

    (folder / "broken.mp4").write_bytes(b"this is not a video" * 50)
    png = (folder / "scene.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    return folder


def _check_png(path):
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.width > 300 and image.height > 300
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []  # the temp file was renamed


def test_image(media, tmp_path, capsys):
    out = tmp_path / "scene-viz.png"
    assert main(["tome-viz", str(media / "scene.png"), "-o", str(out), "--token-kept-ratio", "0.1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    _check_png(out)
    assert report["kind"] == "image" and report["frame_indices"] == [0]
    assert report["num_patches"] == 576 and report["tokens_per_frame"] == 58  # 384/16 grid, 23-layer schedule


def test_video(media, tmp_path, capsys):
    out = tmp_path / "sub" / "video-viz.png"  # a missing parent folder is created
    argv = ["tome-viz", str(media / "colours.mp4"), "-o", str(out), "--token-kept-ratio", "0.1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    _check_png(out)
    assert report["kind"] == "video" and report["total_frames"] == 8
    assert report["frame_indices"] == [0, 2, 5, 7]  # 4 frames, evenly by index
    # again over the same output, 2 frames, another order: the PNG is replaced
    assert main([*argv[:-1], "--frames", "2", "--sort", "none"]) == 0
    _check_png(out)


@pytest.mark.parametrize("name, reason", [
    ("broken.mp4", "neither an image"),
    ("truncated.png", "cannot read this image"),
    ("tone.wav", "no video stream"),
    ("missing.jpg", "no such file"),
])
def test_unreadable_inputs_are_clear_errors(media, tmp_path, capsys, name, reason):
    out = tmp_path / "out.png"
    assert main(["tome-viz", str(media / name), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert name in err and reason in err
    assert not out.exists()


def test_even_indices():
    assert even_indices(8, 4) == [0, 2, 5, 7]
    assert even_indices(3, 4) == [0, 1, 2]
    assert even_indices(9, 1) == [4]
    assert even_indices(0, 4) == []


def test_merge_groups():
    # a 2x2 grid, two tokens: token 0 covers patch 0, token 1 covers patches 1, 2, 3
    sources = np.array([[1, 0, 0, 0], [0, 1, 1, 1]], dtype=bool)
    label, centroids, sizes = merge_groups(sources, (2, 2))
    assert label.tolist() == [[0, 1], [1, 1]]
    assert sizes.tolist() == [1, 3]
    np.testing.assert_allclose(centroids, [[0.5, 0.5], [(1.5 + 0.5 + 1.5) / 3, (0.5 + 1.5 + 1.5) / 3]])


def test_model_folder(media, tmp_path, capsys):
    """--model loads a save_pretrained folder; --token-kept-ratio overrides its config (here 64 patches -> 16)."""
    import torch

    from auroralong_hf.modeling import SiglipToMeVisionConfig, SiglipToMeVisionModel

    torch.manual_seed(0)
    config = SiglipToMeVisionConfig(image_size=128, patch_size=16, hidden_size=32, num_attention_heads=2,
                                    num_hidden_layers=4, intermediate_size=64, token_kept_ratio=0.5)
    SiglipToMeVisionModel(config).save_pretrained(tmp_path / "tower")
    out = tmp_path / "viz.png"
    argv = ["tome-viz", str(media / "scene.png"), "-o", str(out), "--model", str(tmp_path / "tower"),
            "--token-kept-ratio", "0.25", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _check_png(out)
    assert report["num_patches"] == 64 and report["tokens_per_frame"] == 16 and report["token_kept_ratio"] == 0.25
    assert main([*argv[:5], str(tmp_path / "no-such-tower")]) == 2
    assert "no-such-tower" in capsys.readouterr().err
