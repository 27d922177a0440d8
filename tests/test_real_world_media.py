"""Media as users' files really are (tests/media_corpus.py): rotation, colour tags, EXIF orientation, damaged
packets, variable frame rate, odd sizes; read by video_io / image_io and by every entry point that takes media."""

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from media_corpus import (
    CORNER,
    REST,
    write_clip,
    write_damaged_h264,
    write_exif_jpeg,
    write_vfr_h264,
)
from PIL import Image
from videos import decode_frame_index

from auroralong_hf import processor_for_vision_config
from auroralong_hf.processing import AuroraLongProcessor, DamagedVideoWarning
from auroralong_hf.processing.image_io import load_image
from auroralong_hf.processing.video_io import iter_video_chunks, probe_video, read_video
from auroralong_hf.training.data import BadSampleError, ConversationCollator

TINY_VISION = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_attention_heads": 2,
               "num_hidden_layers": 2, "intermediate_size": 64, "token_kept_ratio": 0.5}
LEVELS = 3  # a lossless clip decodes within this many 8-bit levels of its source colour
has_decord = importlib.util.find_spec("decord") is not None


def interior(picture: np.ndarray, band: int = 3) -> np.ndarray:
    """A mask of the pixels at least `band` away from the two-colour picture's colour edges and from the frame's
    border (chroma is interpolated across edges: those pixels mix both colours)."""
    corner = np.all(np.abs(picture.astype(int) - CORNER) <= 1, axis=-1)
    mask = np.ones(corner.shape, bool)
    for axis in (0, 1):
        edges = np.diff(corner.astype(int), axis=axis) != 0
        for offset in range(-band, band + 1):
            moved = np.roll(np.pad(edges, [(0, 1) if a == axis else (0, 0) for a in (0, 1)]), offset, axis=axis)
            mask &= ~moved
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = False, False, False, False
    return mask


def assert_shows(frame: np.ndarray, shown: np.ndarray, levels: int = LEVELS):
    assert frame.shape == shown.shape
    mask = interior(shown)
    assert mask.sum() > 0.2 * mask.size
    difference = np.abs(frame.astype(int) - shown.astype(int))[mask]
    assert difference.max() <= levels, f"off by up to {difference.max()} levels"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return {
        "rot90": write_clip(root / "rot90", rotation=90),
        "rot180": write_clip(root / "rot180", rotation=180),
        "rot270": write_clip(root / "rot270", rotation=270),
        "tag90": write_clip(root / "tag90", rotation=90, rotate_tag=True),
        "tag270": write_clip(root / "tag270", rotation=270, rotate_tag=True),
        "jpeg6": write_exif_jpeg(root / "phone6.jpg", 6),
        "jpeg8": write_exif_jpeg(root / "phone8.jpg", 8),
        "damaged": write_damaged_h264(root / "damaged.mp4"),
        "root": root,
    }


# -- 1. rotation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, shown_size, rotation", [
    ("rot90", (32, 64), -90), ("rot180", (64, 32), 180), ("rot270", (32, 64), 90), ("tag90", (32, 64), -90),
    ("tag270", (32, 64), 90),
])
def test_frames_come_out_as_a_player_shows_them(corpus, name, shown_size, rotation):
    clip = corpus[name]
    video = read_video(clip.path, fps=None)
    assert video.frames.shape == (clip.num_frames, shown_size[1], shown_size[0], 3)
    for frame in video.frames:
        assert_shows(frame, clip.shown)
    metadata, _ = probe_video(clip.path)
    assert (metadata.width, metadata.height, metadata.rotation) == (*shown_size, rotation)
    assert video.metadata == metadata


def test_a_quarter_turn_clockwise_puts_the_top_left_corner_top_right(corpus):
    """The sign of the rotation, checked without the corpus's own turning helper."""
    frame = read_video(corpus["rot90"].path, num_frames=1).frames[0]  # stored 64 x 32, shown 32 x 64
    assert np.abs(frame[4, -4].astype(int) - CORNER).max() <= LEVELS  # top right
    assert np.abs(frame[4, 4].astype(int) - REST).max() <= LEVELS
    assert np.abs(frame[-4, -4].astype(int) - REST).max() <= LEVELS


@pytest.mark.skipif(not has_decord, reason="decord is not installed (x86-64 wheels only)")
@pytest.mark.parametrize("name", ["rot90", "rot180", "rot270", "tag90"])
def test_decord_agrees_on_rotated_files(corpus, name):
    pyav = read_video(corpus[name].path, fps=None)
    decord = read_video(corpus[name].path, fps=None, backend="decord")
    assert decord.metadata == pyav.metadata and decord.frames.shape == pyav.frames.shape
    assert_shows(decord.frames[0], corpus[name].shown)


# -- 2. colour -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    dict(matrix="bt709"),  # phones, cameras, web HD
    dict(matrix="bt709", full_range=True, codec="vp9"),
    dict(matrix="bt601"),
    dict(matrix="bt601", full_range=True),
    dict(matrix="bt2020", bits=10),
    dict(matrix="bt2020", bits=10, full_range=True, codec="ffv1"),
    dict(matrix="bt601", tagged=False),  # untagged SD: BT.601
    dict(matrix="bt709", tagged=False, size=(1280, 720)),  # untagged HD: BT.709
    dict(matrix="bt709", codec="vp9", size=(33, 17)),  # odd sizes, 4:2:0
], ids=lambda settings: "-".join(f"{k}={v}" for k, v in settings.items()))
def test_each_frame_is_converted_with_its_own_matrix_and_range(tmp_path, settings):
    clip = write_clip(tmp_path / "clip", num_frames=2, **settings)
    frames = read_video(clip.path, fps=None).frames
    assert frames.shape[0] == 2
    for frame in frames:
        assert_shows(frame, clip.shown)


def test_bt709_no_longer_reads_as_bt601(tmp_path):
    """The issue's example: solid (200, 50, 50) in BT.709 read as BT.601 gave (186, 33, 50)."""
    clip = write_clip(tmp_path / "solid", corner=(200, 50, 50), rest=(200, 50, 50))
    frame = read_video(clip.path, num_frames=1).frames[0]
    assert np.abs(frame.astype(int) - (200, 50, 50)).max() <= 2


# -- 3. EXIF orientation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    clip = write_exif_jpeg(tmp_path / "photo.jpg", orientation)
    with Image.open(clip.path) as raw:
        assert raw.size != (64, 32) or orientation == 3  # stored turned
    upright = load_image(clip.path)
    assert upright.mode == "RGB" and upright.size == (64, 32)
    assert_shows(np.asarray(upright), clip.shown, levels=6)  # JPEG
    with Image.open(clip.path) as opened:  # a PIL image a caller opened is turned too
        assert_shows(np.asarray(load_image(opened)), clip.shown, levels=6)


def test_unreadable_images_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(ValueError, match="notes.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")
    clip = write_exif_jpeg(tmp_path / "cut.jpg", 6)
    (tmp_path / "cut.jpg").write_bytes(clip.path.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.jpg: cannot read this image"):
        load_image(tmp_path / "cut.jpg")


# -- 4. a damaged packet -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", ["end", "third"])
def test_damage_costs_only_the_frames_it_damages(corpus, tmp_path, at):
    damaged = corpus["damaged"] if at == "end" else write_damaged_h264(tmp_path / "damaged.mp4", at=at)
    assert damaged.keyframes == [0, 25, 50, 75]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sampled frames (0, 25, 50, 75) are intact: no warning
        video = read_video(damaged.video.path, fps=1.0)
    assert video.indices == [0, 25, 50, 75] == [decode_frame_index(f) for f in video.frames]

    with pytest.warns(DamagedVideoWarning) as caught:
        every = read_video(damaged.video.path, fps=None)
    assert len(every) == 100
    assert [decode_frame_index(f) for f in every.frames] == every.indices  # each frame is the frame it says
    # frames 52 .. 74 follow the damage until the next keyframe: each takes the nearer of 51 and 75
    expected = [k if not 52 <= k <= 74 else (51 if k - 51 <= 75 - k else 75) for k in range(100)]
    assert every.indices == expected
    assert every.timestamps == [damaged.video.timestamps[k] for k in expected]
    message = str(caught[0].message)
    assert str(damaged.video.path) in message and "2.080 s -> 2.040 s" in message and "2.960 s -> 3.000 s" in message

    with pytest.warns(DamagedVideoWarning):
        chunks = list(iter_video_chunks(damaged.video.path, 7, fps=None))
    assert [i for chunk in chunks for i in chunk.indices] == expected
    assert np.array_equal(np.concatenate([chunk.frames for chunk in chunks]), every.frames)


@pytest.mark.parametrize("at, message", [("end", "the frame at 2.080 s decodes damaged"),
                                         ("third", "cannot decode the video stream near 2.080 s")])
def test_strict_keeps_the_error(tmp_path, at, message):
    path = write_damaged_h264(tmp_path / "damaged.mp4", at=at).video.path
    with pytest.raises(ValueError, match=r"damaged\.mp4: " + message.replace(".", r"\.")):
        read_video(path, fps=None, strict=True)
    assert len(read_video(path, fps=1.0, strict=True)) == 4  # the damage lies between the sampled frames


def test_a_file_where_too_little_decodes_is_an_error(tmp_path):
    broken = write_damaged_h264(tmp_path / "broken.mp4", num_frames=50, damaged_frames=(0, 25))
    with pytest.raises(ValueError, match=r"broken\.mp4: .*(lost to damaged data|no good frame)"):
        read_video(broken.video.path, fps=None)
    far = write_damaged_h264(tmp_path / "far.mp4", num_frames=150, fps=25, gop=100, damaged_frames=(10,))
    # frames 10 .. 99 are lost: the sampled frame at 2 s is 1.64 s from frame 9 and 2 s from frame 100
    with pytest.raises(ValueError, match=r"far\.mp4: the frame at 2\.000 s is lost .* within 1\.0 s"):
        read_video(far.video.path, fps=1.0)


# -- VFR ------------------------------------------------------------------------------------------------------------


def test_variable_frame_rate_h264(tmp_path):
    clip = write_vfr_h264(tmp_path / "vfr.mp4")
    metadata, times = probe_video(clip.path)
    assert times == pytest.approx(clip.timestamps) and metadata.num_frames == clip.num_frames
    video = read_video(clip.path, fps=2.0)
    assert [decode_frame_index(f) for f in video.frames] == video.indices
    assert video.timestamps == [clip.timestamps[i] for i in video.indices]


# -- every entry point ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor():
    return processor_for_vision_config(TINY_VISION, fps=None)


def expected_pixels(processor, picture: np.ndarray, count: int = 1) -> torch.Tensor:
    return processor.preprocess_frames(np.stack([picture] * count))


def close(pixels: torch.Tensor, expected: torch.Tensor) -> bool:
    """Pixel values match the upright picture (a sideways or miscoloured frame is far off)."""
    return float((pixels - expected).abs().mean()) < 0.03


def test_processor(processor, corpus):
    clip = corpus["rot90"]
    inputs = processor(text="<video> What?", videos=str(clip.path), stream_videos=False)
    assert close(inputs["pixel_values_videos"][0], expected_pixels(processor, clip.shown, clip.num_frames))
    assert not close(inputs["pixel_values_videos"][0],
                     expected_pixels(processor, np.rot90(clip.shown), clip.num_frames))  # the check can fail
    (chunk,) = processor(text="<video>", videos=str(clip.path))["pixel_values_videos"][0].chunks(8)  # streamed
    assert close(chunk, expected_pixels(processor, clip.shown, clip.num_frames))
    photo = corpus["jpeg6"]
    for image in (str(photo.path), Image.open(photo.path)):
        inputs = processor(text="<image> What?", images=image)
        assert close(inputs["pixel_values"], expected_pixels(processor, photo.shown))
    inputs = processor(text="<video> What?", videos=[Image.open(photo.path)] * 2, stream_videos=False)  # EXIF photos
    assert close(inputs["pixel_values_videos"][0], expected_pixels(processor, photo.shown, 2))
    strict = processor_for_vision_config(TINY_VISION, fps=None, strict_decoding=True)
    with pytest.raises(ValueError, match="damaged"):
        strict.load_video(corpus["damaged"].video.path)
    with pytest.warns(DamagedVideoWarning, match="damaged.mp4"):
        assert len(processor.load_video(corpus["damaged"].video.path)) == 100
    strict.save_pretrained(corpus["root"] / "strict-processor")
    assert AuroraLongProcessor.from_pretrained(corpus["root"] / "strict-processor").strict_decoding is True


def test_training_collator(processor, corpus):
    collator = ConversationCollator(processor, media_root=corpus["root"])
    clip, photo = corpus["rot270"], corpus["jpeg8"]
    llava_video = {"id": "v", "video": clip.path.name,  # LLaVA-Video-178K: <image> tags the video
                   "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                     {"from": "gpt", "value": "Two colours."}]}
    sample = collator.encode(llava_video)
    assert len(sample.videos) == 1 and not sample.images
    assert close(sample.videos[0], expected_pixels(processor, clip.shown, clip.num_frames))
    assert sample.input_ids.count(processor.video_token_id) == clip.num_frames * processor.tokens_per_frame
    assert processor.image_token_id not in sample.input_ids
    batch = collator([llava_video])
    assert batch["video_frame_counts"].tolist() == [clip.num_frames]

    image_record = {"id": "i", "image": photo.path.name,
                    "conversations": [{"from": "human", "value": "<image> Describe."}, {"from": "gpt", "value": "Ok."}]}
    assert close(collator.encode(image_record).images[0][None], expected_pixels(processor, photo.shown))

    damaged = {"id": "d", "video": corpus["damaged"].video.path.name,
               "conversations": [{"from": "human", "value": "<video> Go on?"}, {"from": "gpt", "value": "Yes."}]}
    with pytest.warns(DamagedVideoWarning, match="damaged.mp4"):
        assert collator.encode(damaged).videos[0].shape[0] == 100


@pytest.mark.parametrize("record, message", [
    ({"video": "a.mp4", "value": "<image>\n<image>\nWhat?"}, "2 <image> tag"),  # two tags, one video
    ({"video": "a.mp4", "image": "b.jpg", "value": "<image>\nWhat?"}, "1 <video>|0 <video>"),  # the image claims it
    ({"video": "a.mp4", "value": "<image>\n<video>\nWhat?"}, "<image>"),  # both kinds: no reinterpretation
])
def test_other_tag_mismatches_are_still_rejected(processor, corpus, record, message):
    collator = ConversationCollator(processor, media_root=corpus["root"])
    value = record.pop("value")
    record = {"id": "x", **record, "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "."}]}
    with pytest.raises(BadSampleError, match=message) as caught:
        collator.encode(record)
    assert caught.value.reason == "placeholder_mismatch"


def test_tome_viz(corpus):
    from auroralong_hf.tome_viz import load_frames

    clip = corpus["rot90"]
    frames, info = load_frames(clip.path, max_frames=2)
    assert info["kind"] == "video" and info["indices"] == [0, 2]
    for frame in frames:
        assert_shows(np.asarray(frame), clip.shown)
    photo = corpus["jpeg6"]
    (frame,), info = load_frames(photo.path)
    assert info["kind"] == "image"
    assert_shows(np.asarray(frame), photo.shown, levels=6)


def test_lmms_eval_adapter_streams_upright_pixels(tiny_auroralong_folder, corpus, monkeypatch):
    pytest.importorskip("lmms_eval")
    from auroralong_hf.eval.adapter import AuroraLongLmms, user_turn

    adapter = AuroraLongLmms(pretrained=str(tiny_auroralong_folder), device="cpu", max_new_tokens=2)
    calls = []
    original = adapter.model._feed_visual_span

    def spy(state, span_ids, pixels):
        calls.append(pixels.clone())  # one chunk of frames (a video's) or one image, as the model reads them
        return original(state, span_ids, pixels)

    monkeypatch.setattr(adapter.model, "_feed_visual_span", spy)
    clip, photo = corpus["rot90"], corpus["jpeg6"]
    (answer,) = adapter.generate([user_turn("<image>\nCompare.", [str(clip.path), str(photo.path)])], {"fps": 10})
    processor = adapter.processor
    streamed = [torch.cat(calls[:-1]), calls[-1]]  # the video's chunks, then the image (one placeholder each,
    # although the text carried its own <image>)
    assert close(streamed[0], expected_pixels(processor, clip.shown, clip.num_frames))
    assert close(streamed[1], expected_pixels(processor, photo.shown))


def test_describe_json_reports_the_shown_size(tiny_auroralong_folder, corpus, capsys):
    from auroralong_hf.cli import main

    clip = corpus["rot90"]
    code = main(["describe", str(clip.path), "--model", str(tiny_auroralong_folder), "--fps", "10",
                 "--max-new-tokens", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["frames"] == clip.num_frames
