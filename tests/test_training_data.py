"""Training data: LLaVA-style records -> left-padded batches whose labels cover exactly the answers."""

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from videos import decode_frame_index, index_frame, write_random_bytes, write_video

import auroralong_hf.training
from auroralong_hf import processor_for_vision_config
from auroralong_hf.training.data import ConversationCollator, load_conversations

TINY_VISION = {  # the real 384/16 patch grid (576 patches -> 58 tokens per frame), tiny widths
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 23,
    "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1, "vision_use_head": False,
}
TPF = 58
LOGGER = "auroralong_hf.training.data"


@pytest.fixture(scope="module")
def processor():
    return processor_for_vision_config(TINY_VISION)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """media_root with v.mp4 (3 s at 1 fps -> 3 sampled frames), img.png and f0..f3.png (frames showing 10..13)."""
    root = tmp_path_factory.mktemp("media")
    write_video(root / "v.mp4", num_frames=3, fps=1, size=(32, 32))
    Image.fromarray(index_frame(7)).save(root / "img.png")
    for k in range(4):
        Image.fromarray(index_frame(10 + k)).save(root / f"f{k}.png")
    write_random_bytes(root / "broken.mp4")
    return root


def video_record(sample_id="vid-1"):
    return {"id": sample_id, "video": "v.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat is shown?"},
        {"from": "gpt", "value": "A grid of squares."},
        {"from": "human", "value": "What colours?"},
        {"from": "gpt", "value": "Black and white."},
    ]}


def text_record(sample_id="txt-1", answer="Yes."):
    return {"id": sample_id, "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": answer}]}


def frame_indices(pixels):
    """The index each preprocessed frame [F, 3, H, W] shows (mean = std = 0.5 undone)."""
    return [decode_frame_index(((frame.permute(1, 2, 0) * 0.5 + 0.5) * 255).numpy()) for frame in pixels]


def test_multi_turn_video_labels_exact(processor, media):
    batch = ConversationCollator(processor, media)([video_record()])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    # Hand count: "User" ":" " What" " is" " shown" "?" "\n" = 7 tokens, 3 frames x 58 <video> = 174 (7..180),
    # "\n" "What" " is" " shown" "?" "\n\n" (181..186), "Ass" "istant" ":" (187..189),
    # " A" " grid" " of" " squares" "." "\n\n" (190..195: labelled), "User" ":" " What" " colours" "?" "\n\n"
    # (196..201), "Ass" "istant" ":" (202..204), " Black" " and" " white" "." "\n\n" (205..209: labelled).
    assert len(ids) == 210
    assert {i for i, label in enumerate(labels) if label != -100} == set(range(190, 196)) | set(range(205, 210))
    assert all(labels[i] == ids[i] for i in range(len(ids)) if labels[i] != -100)
    tokenizer = processor.tokenizer
    assert tokenizer.decode(ids[190:196]) == " A grid of squares.\n\n"
    assert tokenizer.decode(ids[205:210]) == " Black and white.\n\n"
    assert ids[195] == ids[209] == 261  # the stop token "\n\n"
    assert ids[7:181] == [processor.video_token_id] * 3 * TPF and ids.count(processor.video_token_id) == 3 * TPF
    text = tokenizer.decode([i for i in ids if i != processor.video_token_id])
    assert text == (
        "User: What is shown?\n\nWhat is shown?\n\nAssistant: A grid of squares.\n\n"
        "User: What colours?\n\nAssistant: Black and white.\n\n"
    )
    assert batch["attention_mask"].tolist() == [[1] * 210]
    assert batch["pixel_values_videos"].shape == (1, 3, 3, 384, 384)
    assert batch["video_frame_counts"].tolist() == [3]
    assert "pixel_values" not in batch
    assert frame_indices(batch["pixel_values_videos"][0]) == [0, 1, 2]

    # the processor's own rendering and tokens of the same conversation, pixels included
    messages = [
        {"role": "user", "content": [{"type": "video", "video": str(media / "v.mp4")},
                                     {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A grid of squares."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colours?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Black and white."}]},
    ]
    reference = processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                              processor_kwargs={"stream_videos": False})
    assert reference["input_ids"][0].tolist() == ids
    assert torch.equal(reference["pixel_values_videos"], batch["pixel_values_videos"])


def test_images_and_frames_lists(processor, media):
    records = [
        {"id": "img", "image": "img.png", "conversations": [
            {"from": "human", "value": "Describe <image> briefly."}, {"from": "gpt", "value": "Seven."}]},
        {"id": "frames", "frames": [f"f{k}.png" for k in range(4)], "conversations": [
            {"from": "human", "value": "What changes?\n<video>"}, {"from": "gpt", "value": "The index."}]},
    ]
    batch = ConversationCollator(processor, media)(records)
    assert batch["pixel_values"].shape == (1, 3, 384, 384)
    assert frame_indices(batch["pixel_values"]) == [7]
    assert batch["pixel_values_videos"].shape == (1, 4, 3, 384, 384)
    assert batch["video_frame_counts"].tolist() == [4]
    assert frame_indices(batch["pixel_values_videos"][0]) == [10, 11, 12, 13]
    ids = batch["input_ids"]
    assert (ids[0] == processor.image_token_id).sum() == TPF and (ids[0] == processor.video_token_id).sum() == 0
    assert (ids[1] == processor.video_token_id).sum() == 4 * TPF and (ids[1] == processor.image_token_id).sum() == 0
    row = [i for i in ids[0].tolist() if i not in (0, processor.image_token_id)]
    assert processor.tokenizer.decode(row) == "User: Describe briefly.\n\nDescribe briefly.\n\nAssistant: Seven.\n\n"
    for r, answer in enumerate((" Seven.\n\n", " The index.\n\n")):
        labelled = [t for t, label in zip(ids[r].tolist(), batch["labels"][r].tolist(), strict=True) if label != -100]
        assert processor.tokenizer.decode(labelled) == answer

    # a frames list follows the processor's num_frames / max_frames (fps does not apply: no timestamps)
    two = processor_for_vision_config(TINY_VISION, num_frames=2)
    batch = ConversationCollator(two, media)(records[1:])
    assert batch["video_frame_counts"].tolist() == [2]
    assert frame_indices(batch["pixel_values_videos"][0]) == [10, 13]


def test_left_padding_and_pads_unlabelled(processor, media):
    batch = ConversationCollator(processor, media)([text_record("short"), video_record("long")])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape == (2, 210)
    prompt = processor.tokenizer.encode("User: Hi?\n\nAssistant:")
    assert len(prompt) == 8  # "User" ":" " Hi" "?" "\n\n" "Ass" "istant" ":"
    short = prompt + processor.tokenizer.encode(" Yes.") + [261]
    pad = 210 - len(short)
    assert ids[0].tolist() == [0] * pad + short
    assert mask[0].tolist() == [0] * pad + [1] * len(short)
    assert labels[0, :pad].eq(-100).all() and labels[0, pad:].tolist() == [-100] * 8 + short[8:]
    assert processor.tokenizer.decode(short[8:]) == " Yes.\n\n"
    assert mask[1].eq(1).all() and batch["video_frame_counts"].tolist() == [3]


def test_too_long_sample_dropped_with_counted_warning(processor, media, caplog):
    collator = ConversationCollator(processor, media, max_length=100)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        batch = collator([video_record("too-long"), text_record("fits")])
    assert batch["input_ids"].shape == (1, 11) and "pixel_values_videos" not in batch
    assert collator.skipped == {"too_long": 1}
    assert any("too-long" in r.getMessage() and "210 tokens > max_length 100" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="Every sample"):
        collator([video_record("again")])
    assert collator.skipped == {"too_long": 2}


def test_a_runaway_sample_is_dropped_by_default_naming_it(processor, media, caplog):
    """Without a max_length the Python API and the CLI still cap samples (DEFAULT_MAX_LENGTH): one huge turn is
    dropped with a warning naming it instead of growing training memory until the allocator fails."""
    from auroralong_hf.commands.train import add_arguments
    from auroralong_hf.training import DEFAULT_MAX_LENGTH

    collator = ConversationCollator(processor, media)
    assert collator.max_length == DEFAULT_MAX_LENGTH
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        batch = collator([text_record("runaway", answer="word " * DEFAULT_MAX_LENGTH), text_record("fits")])
    assert batch["input_ids"].shape == (1, 11) and collator.skipped == {"too_long": 1}
    assert any("'runaway'" in r.getMessage() and f"> max_length {DEFAULT_MAX_LENGTH}" in r.getMessage()
               for r in caplog.records)
    assert ConversationCollator(processor, media, max_length=None)([text_record("runaway", answer="word " * 9000)])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--stage", "language", "--data", "d.jsonl", "--media-root", "m", "--model", "x", "--output", "o"]
    assert parser.parse_args(base).max_length == DEFAULT_MAX_LENGTH
    assert parser.parse_args([*base, "--max-length", "0"]).max_length == 0  # train.run passes 0 as None: no cap


BAD = {
    "missing_media": {"video": "nope.mp4", "conversations": video_record()["conversations"]},
    "unreadable_media": {"video": "broken.mp4", "conversations": video_record()["conversations"]},
    "empty_conversation": {"conversations": []},
    "bad_turn_order": {"conversations": [{"from": "gpt", "value": "Hi."}, {"from": "human", "value": "Hi?"}]},
    "placeholder_mismatch": {"video": "v.mp4", "conversations": text_record()["conversations"]},
}
MORE_BAD = [
    ("bad_turn_order", {"conversations": [{"from": "human", "value": "A?"}, {"from": "human", "value": "B?"}]}),
    ("bad_turn_order", {"conversations": text_record()["conversations"] + [{"from": "human", "value": "And?"}]}),
    ("placeholder_mismatch", {"video": "v.mp4", "conversations": [
        {"from": "human", "value": "<video><video> Compare."}, {"from": "gpt", "value": "Same."}]}),
    ("placeholder_mismatch", {"conversations": [
        {"from": "human", "value": "<image> What?"}, {"from": "gpt", "value": "Nothing."}]}),
    ("missing_media", {"frames": ["f0.png", "gone.png"], "conversations": [
        {"from": "human", "value": "<video> What?"}, {"from": "gpt", "value": "Frames."}]}),
    ("empty_conversation", {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "  "}]}),
]
CASES = list(BAD.items()) + MORE_BAD


@pytest.mark.parametrize(("reason", "fields"), CASES, ids=[f"{reason}-{k}" for k, (reason, _) in enumerate(CASES)])
def test_bad_samples_raise_or_skip(processor, media, caplog, reason, fields):
    bad = {"id": f"bad-{reason}", **fields}
    with pytest.raises(ValueError, match=f"bad-{reason}") as error:
        ConversationCollator(processor, media)([text_record(), bad])
    assert reason in str(error.value)

    collator = ConversationCollator(processor, media, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        batch = collator([bad, text_record("good")])
    assert collator.skipped == {reason: 1}
    assert batch["input_ids"].shape[0] == 1
    assert any(f"bad-{reason}" in record.getMessage() for record in caplog.records)


def test_json_and_jsonl_files_load(processor, media, tmp_path):
    records = [
        video_record("a"),
        {"id": "b", "image": "img.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat number?"}, {"from": "gpt", "value": "Seven."}]},
        text_record("c"),
    ]
    (tmp_path / "data.json").write_text(json.dumps(records))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    for name in ("data.json", "data.jsonl"):
        dataset = load_conversations(tmp_path / name)
        assert len(dataset) == 3 and dataset["id"] == ["a", "b", "c"]
        assert dataset[0]["conversations"] == records[0]["conversations"]
        assert dataset[2]["video"] is None and dataset[2]["image"] is None
        batch = ConversationCollator(processor, media)([dataset[k] for k in range(3)])
        assert batch["input_ids"].shape == (3, 210)
        assert batch["video_frame_counts"].tolist() == [3] and batch["pixel_values"].shape == (1, 3, 384, 384)
    with pytest.raises(FileNotFoundError):
        load_conversations(tmp_path / "missing.json")


# -- chat ("messages") records and the shipped example ----------------------------------------------------------------

EXAMPLE = Path(auroralong_hf.training.__file__).parent / "examples" / "train_example.jsonl"


def chat_video_record(sample_id="chat-1", block=None):
    """video_record's conversation in the TRL / transformers chat format."""
    return {"id": sample_id, "messages": [
        {"role": "user", "content": [block or {"type": "video", "video": "v.mp4"},
                                     {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A grid of squares."}]},
        {"role": "user", "content": "What colours?"},
        {"role": "assistant", "content": "Black and white."},
    ]}


@pytest.mark.parametrize("block", [{"type": "video", "video": "v.mp4"}, {"type": "video", "path": "v.mp4"}])
def test_chat_record_gives_the_llava_tokens_and_labels(processor, media, block):
    llava = ConversationCollator(processor, media)([video_record()])
    chat = ConversationCollator(processor, media)([chat_video_record(block=block)])
    assert set(chat) == set(llava)
    for key in llava:
        assert torch.equal(chat[key], llava[key]), key
    # TRL's columns: bare blocks, the paths in the record's "videos"
    trl = {**chat_video_record(block={"type": "video"}), "videos": ["v.mp4"]}
    assert torch.equal(ConversationCollator(processor, media)([trl])["labels"], llava["labels"])


def test_chat_records_load_from_a_file_beside_llava_ones(processor, media, tmp_path):
    """String and block contents in one file (Arrow needs one type per column: strings become text blocks)."""
    rows = [video_record("a"), chat_video_record("b"), text_record("c")]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_conversations(tmp_path / "mixed.jsonl")
    assert dataset["id"] == ["a", "b", "c"] and dataset[1]["conversations"] is None
    batch = ConversationCollator(processor, media)([dataset[k] for k in range(3)])
    assert torch.equal(batch["input_ids"][0], batch["input_ids"][1])
    assert torch.equal(batch["labels"][0], batch["labels"][1])


BAD_CHAT = [
    ("bad_turn_order", {"messages": [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Hi?"}]}),
    ("bad_turn_order", {"messages": [{"role": "user", "content": "Hi?"}]}),
    ("bad_record", {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]},
                                 {"role": "assistant", "content": "Hm."}]}),
    ("bad_record", {"video": "v.mp4", "messages": chat_video_record()["messages"]}),  # paths given twice
    ("placeholder_mismatch", {"messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": [
        {"type": "image", "image": "img.png"}]}]}),
    ("empty_conversation", {"messages": []}),
    ("missing_media", {"messages": [{"role": "user", "content": [{"type": "image", "image": "gone.png"}]},
                                    {"role": "assistant", "content": "Nothing."}]}),
]


@pytest.mark.parametrize(("reason", "fields"), BAD_CHAT, ids=[f"{r}-{k}" for k, (r, _) in enumerate(BAD_CHAT)])
def test_bad_chat_records_raise_naming_the_sample(processor, media, reason, fields):
    with pytest.raises(ValueError, match=f"bad-chat.*{reason}"):
        ConversationCollator(processor, media).encode({"id": "bad-chat", **fields})


def test_a_row_in_neither_format_names_file_line_and_formats(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(text_record()) + "\n\n" + json.dumps({"id": "x", "question": "Hi?", "answer": "Yes."})
                    + "\n")
    with pytest.raises(ValueError, match=r"data\.jsonl, line 3: the record has neither 'conversations' nor "
                                         r"'messages' \(keys: id, question, answer\)\. Accepted formats: "
                                         r"LLaVA: .*chat"):
        load_conversations(path)
    (tmp_path / "data.json").write_text(json.dumps([text_record(), {"id": "x"}]))
    with pytest.raises(ValueError, match=r"data\.json, record 2: .*neither"):
        load_conversations(tmp_path / "data.json")
    path.write_text(json.dumps(text_record()) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"data\.jsonl, line 2: not valid JSON"):
        load_conversations(path)


@pytest.mark.parametrize("content, message", [
    (b"", r"holds no records"),
    (b"\n\n", r"holds no records"),
    (b"[]", r"holds no records"),
    (b"null\n", r"line 1: a record must be a JSON object, got NoneType"),
    (b"[null]", r"record 1: a record must be a JSON object, got NoneType"),
    (b"\xff\xfe{}", r"is not UTF-8 text"),
])
def test_empty_null_and_binary_data_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"data\.jsonl.*{message}"):
        load_conversations(path)


def make_example_media(root: Path, rows) -> None:
    """Every file the example's rows name: videos (2 frames) and images, 32x32."""
    paths = set()
    for row in rows:
        for key in ("video", "videos", "image", "frames"):
            value = row.get(key)
            paths.update([value] if isinstance(value, str) else value or [])
        for message in row.get("messages") or []:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block["type"] != "text":
                    paths.update(filter(None, [block.get(block["type"]), block.get("path")]))
    for name in paths:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".mp4"):
            write_video(root / name, num_frames=2, fps=1, size=(32, 32))
        else:
            Image.fromarray(index_frame(3)).save(root / name)


def test_the_shipped_example_parses_and_encodes(processor, tmp_path):
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    make_example_media(tmp_path, rows)
    dataset = load_conversations(EXAMPLE)
    assert dataset["id"] == [row["id"] for row in rows]
    collator = ConversationCollator(processor, tmp_path)
    samples = {dataset[k]["id"]: collator.encode(dataset[k]) for k in range(len(dataset))}
    assert [len(samples[i].videos) for i in ("llava-video", "llava-two-videos", "chat-video", "chat-trl-columns")] \
        == [1, 2, 1, 1]
    assert len(samples["llava-image"].images) == len(samples["chat-image-multi-turn"].images) == 1
    assert samples["llava-frames"].videos[0].shape[0] == 3
    # the same conversation in the two formats is the same sample
    for a, b in (("llava-video", "chat-video"),):
        assert samples[a].input_ids == samples[b].input_ids and samples[a].labels == samples[b].labels
    assert collator(list(dataset))["input_ids"].shape[0] == len(rows)


def test_the_example_ships_as_package_data():
    """pyproject's package-data installs examples/ (an editable install would find the file without it)."""
    import re

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    line = re.search(r'^"auroralong_hf\.training" = \[(.*)\]$', pyproject, re.MULTILINE)
    assert line and '"examples/*"' in line.group(1)


@pytest.mark.parametrize("escape", ["../outside.png", "{outside}", "link.png", "sub/../../outside.png"])
def test_media_paths_stay_inside_the_media_root(processor, tmp_path, escape):
    """`..`, absolute paths and symlinks that lead outside --media-root are refused before the file is looked at
    (the error is the same whether it exists), unless the user opts in."""
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.png"
    Image.fromarray(index_frame(3)).save(outside)
    (root / "link.png").symlink_to(outside)
    path = escape.format(outside=outside)
    record = {"id": "escape", "image": path, "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A frame."}]}
    with pytest.raises(ValueError, match=r"escape.*leads outside the media root.*\[outside_media_root\]"):
        ConversationCollator(processor, root)([record])
    record["image"] = path.replace("outside.png", "absent.png")
    with pytest.raises(ValueError, match="outside_media_root"):  # says nothing of whether the file exists
        ConversationCollator(processor, root)([record])
    record["image"] = path
    batch = ConversationCollator(processor, root, allow_outside_media_root=True)([record])
    assert frame_indices(batch["pixel_values"]) == [3]
