"""AuroraLongProcessor: placeholders, sandwich prompt, pixel values from paths / frames / images, round trip."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor
from videos import decode_frame_index, write_video

from auroralong_hf import AuroraLongProcessor, SiglipToMeVisionConfig, processor_for_vision_config, tokens_per_frame

TINY_VISION = {  # the real 384/16 patch grid (576 patches), tiny widths
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 23,
    "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1,
}


@pytest.fixture(scope="module")
def processor():
    return processor_for_vision_config(TINY_VISION, stream_videos=False)  # pixels to inspect


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4 s, 10 fps mp4 whose frames show their own index."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_video(path, num_frames=40, fps=10, size=(64, 48))
    return path


def test_sandwich_prompt_exact_text(processor):
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?\n\nBe brief."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A ball rolls."}]},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
    ]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == (
        "User: What happens?\nBe brief.\n<video>\nWhat happens?\nBe brief.\n\n"
        "Assistant: A ball rolls.\n\n"
        "User: Why?\n\n"
        "Assistant:"
    )
    assert processor.stop_strings == ["\n\n"] and processor.tokenizer.encode("\n\n") == [261]
    assert (processor.video_token, processor.image_token) == ("<video>", "<image>")
    assert (processor.video_token_id, processor.image_token_id) == (65535, 65534)


def test_placeholder_runs_match_the_tome_schedule(processor, clip):
    out = processor(text="User: Describe.\n<video>\nDescribe.\n\nAssistant:", videos=str(clip))
    frames = out["video_frame_counts"].item()
    assert frames == 4  # 1 fps over a 4 s video: t = 0, 1, 2, 3
    assert out["pixel_values_videos"].shape == (1, 4, 3, 384, 384)
    ids = out["input_ids"][0].tolist()
    assert ids.count(processor.video_token_id) == frames * 58
    # the text parts are plain World-tokenizer ids
    first = ids.index(processor.video_token_id)
    assert ids[:first] == processor.tokenizer.encode("User: Describe.\n")
    assert ids[first + frames * 58:] == processor.tokenizer.encode("\nDescribe.\n\nAssistant:")


@pytest.mark.parametrize("settings", [
    {"token_kept_ratio": 0.5}, {"token_kept_ratio": 0.2, "tome_schedule": "aurora", "num_hidden_layers": 24},
    {"token_kept_ratio": 1.0}, {"tome_r": 10, "drop_first_token": True},
])
def test_tokens_per_frame_is_the_encoder_count(settings):
    vision = {**TINY_VISION, **settings}
    processor = processor_for_vision_config(vision, frame_separator="\n")
    expected = tokens_per_frame(SiglipToMeVisionConfig(**vision))
    assert processor.tokens_per_frame == expected
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    ids = processor(text="<video>", videos=frames)["input_ids"][0].tolist()
    assert ids.count(processor.video_token_id) == 3 * expected
    assert ids.count(processor.tokenizer.encode("\n")[0]) == 2  # separators between the frames' runs


def test_path_and_predecoded_frames_agree(processor, clip):
    from_path = processor(text="<video>", videos=str(clip), num_frames=5)
    decoded = processor.load_video(str(clip), num_frames=5)
    assert [decode_frame_index(frame) for frame in decoded.frames] == decoded.indices
    from_frames = processor(text="<video>", videos=decoded.frames)
    from_list = processor(text="<video>", videos=[__import__("PIL.Image").Image.fromarray(f) for f in decoded.frames])
    from_tensor = processor(text="<video>", videos=torch.from_numpy(decoded.frames).permute(0, 3, 1, 2))
    for other in (from_frames, from_list, from_tensor):
        assert torch.equal(from_path["pixel_values_videos"], other["pixel_values_videos"])
        assert torch.equal(from_path["input_ids"], other["input_ids"])


def test_one_frame_video_equals_the_image(processor):
    frame = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    as_video = processor(text="<video>", videos=frame[None])
    as_image = processor(text="<image>", images=frame)
    assert torch.equal(as_video["pixel_values_videos"][0], as_image["pixel_values"])
    assert (as_video["input_ids"] == processor.video_token_id).sum() == (
        as_image["input_ids"] == processor.image_token_id).sum() == processor.tokens_per_frame


def test_batch_of_videos_of_different_lengths(processor, clip):
    out = processor(text=["<video> one", "two <video>"], videos=[str(clip), np.zeros((2, 8, 8, 3), np.uint8)])
    assert out["video_frame_counts"].tolist() == [4, 2]
    assert out["pixel_values_videos"].shape == (2, 4, 3, 384, 384)
    assert out["pixel_values_videos"][1, 2:].abs().sum() == 0  # padding frames
    assert out["attention_mask"][1, 0] == 0  # left padding
    assert (out["input_ids"] == processor.video_token_id).sum(1).tolist() == [4 * 58, 2 * 58]


def test_pad_to_square_keeps_aspect(processor):
    wide = np.full((20, 80, 3), 255, dtype=np.uint8)  # white, 4:1
    padded = processor_for_vision_config(TINY_VISION, pad_to_square=True)(
        text="<image>", images=wide)["pixel_values"][0]
    assert padded.shape == (3, 384, 384)
    assert torch.allclose(padded[:, 0, :], torch.zeros(3, 384), atol=0.02)  # grey band = normalised 0
    assert torch.allclose(padded[:, 192, :], torch.ones(3, 384), atol=0.02)  # the white image in the middle
    squashed = processor(text="<image>", images=wide)["pixel_values"][0]
    assert torch.allclose(squashed, torch.ones_like(squashed), atol=0.02)


def test_chat_template_loads_videos(processor, clip):
    messages = [{"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": "Hi"}]}]
    out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert out["pixel_values_videos"].shape[1] == 4
    text = processor.decode(out["input_ids"][0], skip_special_tokens=True)
    assert text == "User: Hi\n\nHi\n\nAssistant:"


def test_video_chunks_stream_the_same_frames(processor, clip):
    whole = processor(text="<video>", videos=str(clip), fps=5)["pixel_values_videos"][0]
    video = processor.plan_video(str(clip), fps=5)
    chunks = list(video.chunks(6))
    assert [c.shape[0] for c in chunks] == [6, 6, 6, 2]
    assert torch.equal(torch.cat(chunks), whole)
    assert video.plan.indices == list(range(0, 40, 2))


def test_save_and_load_round_trip(processor, clip, tmp_path):
    custom = processor_for_vision_config(TINY_VISION, num_frames=3, frame_separator="\n")
    custom.save_pretrained(tmp_path)
    for loaded in (AuroraLongProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, AuroraLongProcessor)
        assert (loaded.num_frames, loaded.frame_separator, loaded.tokens_per_frame) == (3, "\n", 58)
        a, b = (p(text="x <video>", videos=str(clip), stream_videos=False) for p in (custom, loaded))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        rendered = loaded.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True)
        assert rendered == "User: q\n\nAssistant:"


def test_placeholder_count_must_match(processor):
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="1 <video> placeholder.*but 2 videos"):
        processor(text="<video>", videos=[frames, frames])
    with pytest.raises(ValueError, match="2 <video> placeholder.*but 1 videos"):
        processor(text="<video><video>", videos=frames)
    with pytest.raises(ValueError, match="0 <image> placeholder.*but 1 images"):
        processor(text="hi", images=frames[0])
    with pytest.raises(TypeError, match="unknown argument"):
        processor(text="<video>", videos=frames, fpss=2)


def test_image_size_must_match_the_tower():
    from transformers import SiglipImageProcessorPil

    with pytest.raises(ValueError, match="resizes to 224x224 but the vision tower takes 384x384"):
        processor_for_vision_config(TINY_VISION,
                                    image_processor=SiglipImageProcessorPil(size={"height": 224, "width": 224}))


def test_the_processor_holds_plain_numbers(processor, tmp_path):
    from auroralong_hf import RwkvWorldTokenizer

    parts = (processor.image_processor, RwkvWorldTokenizer())
    assert AuroraLongProcessor(*parts, tokens_per_frame=7).tokens_per_frame == 7
    for bad in (0, -3, 2.5, True, "58"):
        with pytest.raises(ValueError, match="tokens_per_frame must be a positive int"):
            AuroraLongProcessor(*parts, tokens_per_frame=bad)
    with pytest.raises(ValueError, match="needs tokens_per_frame.*processor_for_vision_config"):
        AuroraLongProcessor(*parts)

    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["tokens_per_frame"] == 58 and "vision_config" not in saved


def test_an_old_processor_config_with_a_vision_config_fails_clearly(processor, tmp_path):
    """Folders written before the processor held plain numbers name the tower's config instead: counting its
    tokens needs modeling code, so loading refuses and says how to fix the file."""
    processor.save_pretrained(tmp_path)
    path = tmp_path / "processor_config.json"
    saved = json.loads(path.read_text())
    del saved["tokens_per_frame"]
    saved["vision_config"] = dict(TINY_VISION, model_type="siglip_tome_vision_model")
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="'vision_config' but no 'tokens_per_frame'.*tokens_per_frame"):
        AutoProcessor.from_pretrained(tmp_path)

    saved["tokens_per_frame"] = 58  # the fix the message gives; the stale vision_config is then ignored
    path.write_text(json.dumps(saved))
    assert AutoProcessor.from_pretrained(tmp_path).tokens_per_frame == 58


def test_streamed_videos_are_planned_not_decoded(clip):
    """The default: apply_chat_template(tokenize=True) plans each video (frame count, times) and hands the model a
    LazyVideo; sampling arguments given any way transformers users pass them are honoured, unknown ones raise."""
    processor = processor_for_vision_config(TINY_VISION)
    messages = [{"role": "user", "content": [{"type": "video", "path": str(clip)}, {"type": "text", "text": "Q?"}]}]
    kwargs = {"add_generation_prompt": True, "tokenize": True, "return_dict": True}
    for extra, frames in (({}, 4), ({"num_frames": 3}, 3), ({"processor_kwargs": {"fps": 2}}, 8),
                          ({"processor_kwargs": {"max_frames": 2}}, 2), ({"fps": 2, "max_frames": 5}, 5)):
        out = processor.apply_chat_template(messages, **kwargs, **extra)
        (video,) = out["pixel_values_videos"]
        assert video.num_frames == frames == int(out["video_frame_counts"][0]), extra
        assert (out["input_ids"] == processor.video_token_id).sum() == frames * 58
    pixels = torch.cat(list(video.chunks(2)))
    eager = processor(text="<video>", videos=str(clip), stream_videos=False, fps=2, max_frames=5)
    assert torch.equal(pixels, eager["pixel_values_videos"][0])
    with pytest.raises(TypeError, match="num_frame"):
        processor.apply_chat_template(messages, **kwargs, processor_kwargs={"num_frame": 3})


def test_batched_conversations_generation_prompt_and_literal_tags(clip):
    processor = processor_for_vision_config(TINY_VISION)
    first = [{"role": "user", "content": [{"type": "video", "path": str(clip)},
                                          {"type": "text", "text": "Is <video> or <image> a tag here?"}]}]
    second = [{"role": "user", "content": [{"type": "text", "text": "Hi."}]},
              {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}]
    out = processor.apply_chat_template([first, second], tokenize=True, return_dict=True, num_frames=2)
    assert out["input_ids"].shape[0] == 2 and out["video_frame_counts"].tolist() == [2]
    assert (out["input_ids"] == processor.video_token_id).sum() == 2 * 58  # the typed tags stay text
    assert (out["input_ids"] == processor.image_token_id).sum() == 0
    text = processor.decode(out["input_ids"][0], skip_special_tokens=True)
    assert text.count("Is <video> or <image> a tag here?") == 2
    # as in transformers: no generation prompt unless asked; continue_final_message continues the last answer
    assert not processor.apply_chat_template(second).endswith("Assistant:")
    assert processor.apply_chat_template(second, continue_final_message=True).endswith("Assistant: Hello")
    assert processor.apply_chat_template(first, add_generation_prompt=True).endswith("Assistant:")
    assert processor.post_process_image_text_to_text(torch.tensor([processor.tokenizer.encode(" Yes.\n\n")])) == [
        " Yes."]
