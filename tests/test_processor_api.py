"""The processor's public steps are the one way to read frames and build batches: the training collator's batch and
tome-viz's frames are what those steps make of the same files."""

import numpy as np
import pytest
import torch
from PIL import Image
from videos import index_frame, write_video

import auroralong_hf.tome_viz
from auroralong_hf import processor_for_vision_config
from auroralong_hf.tome_viz import load_frames, tome_viz
from auroralong_hf.training.data import IGNORE_INDEX, ConversationCollator

TINY_VISION = {  # the real 384/16 patch grid (576 patches -> 58 tokens per frame), tiny widths
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 23,
    "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1, "vision_use_head": False,
}
QUESTION, ANSWER = "What is shown?", "A grid of squares."


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """v.mp4 (5 s at 1 fps, 48 x 32), img.png (40 x 24) and f0..f5.png (32 x 32)."""
    root = tmp_path_factory.mktemp("media")
    write_video(root / "v.mp4", num_frames=5, fps=1, size=(48, 32))
    Image.fromarray(index_frame(7, width=40, height=24)).save(root / "img.png")
    for k in range(6):
        Image.fromarray(index_frame(10 + k)).save(root / f"f{k}.png")
    return root


@pytest.fixture(scope="module", params=[{}, {"frame_separator": "\n", "num_frames": 3, "pad_to_square": True}],
                ids=["defaults", "separator-square"])
def processor(request):
    return processor_for_vision_config(TINY_VISION, **request.param)


def by_hand(processor, user_content: list[dict], video_frame_counts: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one question and ANSWER from the processor's public pieces: the user turn rendered
    by its chat template and expanded by `encode_text`; the answer's " " + ANSWER + "\\n\\n" labelled."""
    tokenizer = processor.tokenizer
    user = processor.apply_chat_template([{"role": "user", "content": user_content}], tokenize=False)
    prompt = processor.encode_text(user, video_frame_counts) + tokenizer.encode("Assistant:")
    answer = tokenizer.encode(" " + ANSWER) + tokenizer.encode("\n\n")
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


def test_the_collator_batch_is_the_processors_public_steps(processor, media):
    records = [
        {"id": "media", "video": "v.mp4", "image": "img.png", "conversations": [
            {"from": "human", "value": f"<video>\n<image>\n{QUESTION}"}, {"from": "gpt", "value": ANSWER}]},
        {"id": "text", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": ANSWER}]},
    ]
    batch = ConversationCollator(processor, media)(records)

    video = processor.preprocess_frames(processor.load_video(str(media / "v.mp4")).frames)
    image = processor.preprocess_frames(processor.load_image(media / "img.png"))
    question = [{"type": "video"}, {"type": "image"}, {"type": "text", "text": QUESTION}]
    rows = [by_hand(processor, question, [video.shape[0]]), by_hand(processor, [{"type": "text", "text": "Hi?"}], [])]
    expected = dict(processor.pad_input_ids([ids for ids, _ in rows], return_tensors="pt"))
    length = expected["input_ids"].shape[1]
    expected["labels"] = torch.tensor([[IGNORE_INDEX] * (length - len(labels)) + labels for _, labels in rows])
    expected.update(processor.pad_videos([video]), pixel_values=image)

    assert list(batch) == list(expected)
    for key, value in expected.items():
        assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
    assert batch["attention_mask"][1].tolist() == [0] * (length - len(rows[1][0])) + [1] * len(rows[1][0])
    assert video.shape[0] == (3 if processor.num_frames else 5)

    # ... and the question is what the processor's own call makes of the same files (row 0 is the longer one)
    user = processor.apply_chat_template([{"role": "user", "content": question}], tokenize=False)
    called = processor(text=user, videos=[str(media / "v.mp4")], images=[str(media / "img.png")],
                       stream_videos=False)
    assert torch.equal(batch["input_ids"][0, :called["input_ids"].shape[1]], called["input_ids"][0])
    assert torch.equal(batch["pixel_values_videos"], called["pixel_values_videos"])
    assert torch.equal(batch["pixel_values"], called["pixel_values"])


def test_frames_given_as_image_files_are_sampled_by_the_processor(processor, media):
    paths = [f"f{k}.png" for k in range(6)]
    record = {"id": "frames", "frames": paths, "conversations": [
        {"from": "human", "value": f"<video>\n{QUESTION}"}, {"from": "gpt", "value": ANSWER}]}
    batch = ConversationCollator(processor, media)([record])
    picked = processor.sample_frames([float(k) for k in range(6)], fps=None)
    assert picked == ([0, 2, 5] if processor.num_frames == 3 else list(range(6)))  # no times: fps does not apply
    expected = torch.cat([processor.preprocess_frames(processor.load_image(media / paths[k])) for k in picked])
    assert torch.equal(batch["pixel_values_videos"][0], expected)


def test_tome_viz_reads_and_resizes_with_the_processor(media, tmp_path, monkeypatch):
    processor = processor_for_vision_config(auroralong_hf.tome_viz.TINY_ENCODER)
    video, info = load_frames(media / "v.mp4", 3, processor=processor)
    decoded = processor.load_video(media / "v.mp4", num_frames=3)
    assert np.array_equal(video, decoded.frames) and info["indices"] == decoded.indices == [0, 2, 4]
    image, info = load_frames(media / "img.png", processor=processor)
    assert np.array_equal(image, processor.load_image(media / "img.png")) and info["kind"] == "image"

    drawn = []

    def spy(images, *args, **kwargs):
        drawn.append(images)
        return draw_figure(images, *args, **kwargs)

    draw_figure = auroralong_hf.tome_viz.draw_figure
    monkeypatch.setattr(auroralong_hf.tome_viz, "draw_figure", spy)
    tome_viz(media / "v.mp4", tmp_path / "v.png", frames=3)
    assert np.array_equal(drawn[0], processor.resize_frames(decoded.frames))
    assert drawn[0].shape == (3, 384, 384, 3) and drawn[0].dtype == np.uint8
