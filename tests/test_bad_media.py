"""Bad media (issue 16): a network video that never answers times out, frames too large to decode are refused and
large ones are scaled down while they are decoded, the processor refuses a video tensor too large to build, and
tome-viz names an output path that is a directory."""

import socket
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from media_corpus import write_exif_jpeg
from PIL import Image
from videos import write_video

from auroralong_hf import processor_for_vision_config
from auroralong_hf.cli import main
from auroralong_hf.processing import image_io, processing_auroralong, video_io, video_pyav
from auroralong_hf.processing.video_io import plan_video, read_video

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5}
DEADLINE = 30  # seconds: a call that has not returned by then hangs (the timeouts under test are 0.5 s)


# ------------------------------------------------------------------------------------------- network timeouts


class SilentServer:
    """A local TCP server that accepts connections and then, after sending `reply` (nothing by default), never
    says another word: the server of issue 16's item 7."""

    def __init__(self, reply: bytes = b""):
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.held.append(connection)
            if self.reply:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                connection.sendall(self.reply)

    def close(self):
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(video_io, "NETWORK_TIMEOUT", (0.5, 0.5))


def call_with_deadline(function, *args, **kwargs):
    """`function(*args, **kwargs)` in a thread: its exception (or None), failing the test when it is still running
    after DEADLINE seconds, so that a regression fails instead of hanging the suite."""
    outcome = {}

    def target():
        try:
            function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), f"{function.__name__} still waits after {DEADLINE} s"
    return outcome.get("error")


@pytest.mark.parametrize("scheme", ["http", "rtmp", "tcp"])
def test_a_url_that_never_answers_times_out(short_timeout, scheme):
    server = SilentServer()
    url = f"{scheme}://127.0.0.1:{server.port}/clip.mp4"
    try:
        error = call_with_deadline(plan_video, url)
    finally:
        server.close()
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{url}: no answer from the server within 0.5 s while opening it")
    assert "NETWORK_TIMEOUT = (0.5, 0.5)" in str(error)


def test_the_processor_times_out_on_a_silent_url(short_timeout):
    server = SilentServer()
    url = f"http://127.0.0.1:{server.port}/clip.mp4"
    processor = processor_for_vision_config(VISION)
    messages = [{"role": "user", "content": [{"type": "video", "video": url}, {"type": "text", "text": "Hi?"}]}]
    try:
        error = call_with_deadline(processor.apply_chat_template, messages, add_generation_prompt=True,
                                   tokenize=True, return_dict=True)
    finally:
        server.close()
    assert isinstance(error, ValueError) and f"{url}: no answer from the server within 0.5 s" in str(error)


def test_a_server_that_stalls_part_way_times_out(short_timeout, tmp_path):
    # a streamable file (Matroska) sent without a length, cut off after its header and a few frames: opening
    # succeeds, then a read waits for bytes that never come
    clip = write_video(tmp_path / "clip.mkv", 120)
    data = clip.path.read_bytes()
    server = SilentServer(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-matroska\r\n\r\n" + data[:len(data) // 3])
    url = f"http://127.0.0.1:{server.port}/clip.mkv"
    try:
        error = call_with_deadline(plan_video, url)
    finally:
        server.close()
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{url}: no answer from the server within 0.5 s while reading packet")


def test_network_timeout_setting_and_decord_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="http://127.0.0.1:9/v.mp4: backend='decord' cannot read a URL"):
        plan_video("http://127.0.0.1:9/v.mp4", backend="decord")  # refused before anything is opened
    monkeypatch.setattr(video_io, "NETWORK_TIMEOUT", (0, 5))
    with pytest.raises(ValueError, match=r"NETWORK_TIMEOUT must be \(open seconds, read seconds\), each > 0"):
        plan_video("http://127.0.0.1:9/v.mp4")


# ------------------------------------------------------------------------------------------------ frame sizes


def textured_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """Frames with gradients, hard edges and noise: what a downscale can get wrong."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / 10.0
    frames = []
    for k in range(count):
        smooth = np.stack([127 + 90 * np.sin(x + k), 127 + 90 * np.cos(y * 0.7 - k), 127 + 60 * np.sin(x + y)], -1)
        blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).repeat(16, 0).repeat(16, 1)
        picture = np.where((x * 10 % 48 < 24)[..., None], smooth, blocks[:height, :width])
        frames.append(np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8))
    return frames


def write_h264(path, frames: list[np.ndarray]) -> Path:
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for index, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


def test_frames_over_the_area_limit_are_refused_before_decoding(monkeypatch, tmp_path, capsys):
    path = write_video(tmp_path / "clip.mp4", 4, size=(64, 48)).path
    monkeypatch.setattr(video_io, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    decoded = []
    monkeypatch.setattr(video_pyav, "frame_to_rgb", lambda *a: decoded.append(1))
    message = (f"{path}: refused, its frames are 64x48 = 3,072 pixels, more than "
               "auroralong_hf.processing.video_io.MAX_FRAME_PIXELS = 3,071")
    with pytest.raises(ValueError, match=message):
        read_video(path)
    with pytest.raises(ValueError, match=message):
        processor_for_vision_config(VISION)(text="<video>", videos=[str(path)])
    assert main(["tome-viz", str(path), "-o", str(tmp_path / "out.png")]) == 2
    assert message in capsys.readouterr().err
    assert not decoded and not (tmp_path / "out.png").exists()
    monkeypatch.undo()
    monkeypatch.setattr(video_io, "MAX_FRAME_PIXELS", 64 * 48)  # at the limit: read
    assert read_video(path, fps=None).frames.shape == (4, 48, 64, 3)


def test_large_frames_are_scaled_while_decoded_close_to_the_full_size_path(monkeypatch, tmp_path):
    path = write_h264(tmp_path / "big.mp4", textured_frames(3, 256, 192))
    small = read_video(path, fps=None, max_pixels=128 * 96)
    assert small.frames.shape == (3, 96, 128, 3)
    assert (small.metadata.width, small.metadata.height) == (256, 192)  # the video's own size
    assert read_video(path, fps=None, max_pixels=256 * 192).frames.shape == (3, 192, 256, 3)  # fits: untouched

    # Through the processor (SigLIP resize to 64 x 64): scaled in decoding to a quarter of the pixels against the
    # full frames, the pixel values (in [-1, 1]) differ by 0.02 on average (2.5 of 255 levels) and by 0.2 at most.
    processor = processor_for_vision_config(VISION, fps=None, stream_videos=False)
    monkeypatch.setattr(processing_auroralong, "DECODE_MAX_PIXELS", None)
    full = processor(text="<video>", videos=[str(path)])["pixel_values_videos"]
    monkeypatch.setattr(processing_auroralong, "DECODE_MAX_PIXELS", 128 * 96)
    scaled = processor(text="<video>", videos=[str(path)])["pixel_values_videos"]
    difference = (scaled - full).abs()
    assert full.shape == scaled.shape == (1, 3, 3, 64, 64)
    assert difference.mean() < 0.02 and difference.max() < 0.2, (difference.mean(), difference.max())
    # and the default limit (4K) leaves such a video exactly as it was
    monkeypatch.setattr(processing_auroralong, "DECODE_MAX_PIXELS", 3840 * 2160)
    assert processor(text="<video>", videos=[str(path)])["pixel_values_videos"].equal(full)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "GIF"])
def test_large_images_are_reduced_while_decoded(tmp_path, fmt):
    picture = textured_frames(1, 320, 240)[0]
    path = tmp_path / f"big.{fmt.lower()}"
    image = Image.fromarray(picture)
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 240 x 320
    image.save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}), exif=exif)
    full = image_io.load_image(path)
    reduced = image_io.load_image(path, max_pixels=60 * 80)  # a quarter each way
    assert reduced.mode == "RGB" and reduced.size == (full.width // 4, full.height // 4)
    # the same as reducing the full image: integer box averaging (after the palette, for a GIF)
    expected = np.asarray(full.reduce(4), dtype=np.int16)
    assert np.abs(np.asarray(reduced, dtype=np.int16) - expected).max() <= 1
    assert image_io.load_image(path, max_pixels=320 * 240).size == full.size  # fits: untouched


def test_a_large_jpeg_is_decoded_at_a_smaller_scale(tmp_path):
    clip = write_exif_jpeg(tmp_path / "phone.jpg", orientation=6, size=(256, 128))  # stored 128 x 256, turned
    full = image_io.load_image(clip.path)
    reduced = image_io.load_image(clip.path, max_pixels=64 * 32)  # DCT scaling: 1/4 each way
    assert full.size == (256, 128) and reduced.size == (64, 32)
    expected = np.asarray(full.resize(reduced.size, Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(np.asarray(reduced, dtype=np.int16) - expected).mean() < 4
    with pytest.raises(ValueError, match="max_pixels must be an int > 0 or None, got 0"):
        image_io.load_image(clip.path, max_pixels=0)


# -------------------------------------------------------------------------------------------- processor caps


def test_a_video_tensor_too_large_is_refused_before_decoding(monkeypatch, tmp_path):
    path = write_video(tmp_path / "long.mp4", 40, fps=10).path
    processor = processor_for_vision_config(VISION, fps=10)
    monkeypatch.setattr(processing_auroralong, "MAX_VIDEO_TENSOR_BYTES", 39 * 3 * 64 * 64 * 4)
    with monkeypatch.context() as decoding:
        decoding.setattr(processing_auroralong.LazyVideo, "chunks", lambda *a: pytest.fail("decoded"))
        with pytest.raises(ValueError) as caught:
            processor(text="<video>", videos=[str(path)], stream_videos=False)
        # streamed, nothing is held: no limit
        assert processor(text="<video>", videos=[str(path)])["video_frame_counts"].tolist() == [40]
    message = str(caught.value)
    assert message.startswith(f"{path}: with stream_videos=False its 40 sampled frames make a video tensor of "
                              "1x40x3x64x64 float32 = 1,966,080 bytes (1.9 MiB), more than MAX_VIDEO_TENSOR_BYTES = "
                              "1,916,928 bytes (1.8 MiB)")
    assert "num_frames=" in message and "max_frames=" in message and "stream_videos=True" in message
    # fewer frames fit
    fitted = processor(text="<video>", videos=[str(path)], stream_videos=False, max_frames=39)
    assert fitted["pixel_values_videos"].shape == (1, 39, 3, 64, 64)


# ------------------------------------------------------------------------------------------------------ tome-viz


def test_tome_viz_names_an_output_that_is_a_directory(tmp_path, capsys):
    Image.fromarray(textured_frames(1, 64, 64)[0]).save(tmp_path / "scene.png")
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["tome-viz", str(tmp_path / "scene.png"), "-o", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"auroralong tome-viz: error: {folder}: exists and is a directory; -o/--output names the PNG" in err
    assert list(folder.iterdir()) == []
