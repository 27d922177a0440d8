"""Training data: LLaVA-style or chat-format conversation files in, AuroraLong model batches out.

A record (one JSON object; a file is a JSON list of them or JSON Lines), LLaVA style::

    {"id": "v_001", "video": "clips/a.mp4",                 # or "frames": ["f/0.jpg", ...] or "image": "a.jpg"
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "A ball rolls."},
                       {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "It was pushed."}]}

or in the chat format of TRL / transformers (`chat_media_to_top_level`)::

    {"id": "v_001", "messages": [
        {"role": "user", "content": [{"type": "video", "video": "clips/a.mp4"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A ball rolls."}]}        # content: a list of blocks or a string

Media blocks name their file under their type or "path"; bare blocks ({"type": "video"}) take the record's
"video(s)" / "image(s)" lists in order, as TRL's columns hold them. Both formats give the same tokens and labels.
A file row in neither format is a ValueError naming the file and line.

`load_conversations` reads the file into a `datasets.Dataset` (no media is touched); `ConversationCollator` turns a
list of records into a batch. What is about conversations is here (turns, labels, media paths, bad samples); what is
about model inputs is the processor's, through its public methods: decoding with its sampling and pixel limits,
preprocessing, placeholder expansion and padding, so a batch holds what the processor would make of the same media.

Media: "video" is a path (or a list of paths, one `<video>` each); "frames" is a list of image paths forming ONE
video (one `<video>`; no timestamps, so the processor's `fps` does not apply but its `num_frames`, `max_frames` and
`include_last_frame` do, and only the picked images are opened); "image" is a path (or a list, one `<image>` each).
"video" and "frames" exclude each other. Relative paths are joined to `media_root`.

Text: each human turn becomes a user message whose `<video>` / `<image>` tags are removed from the text and become
`{"type": "video"}` / `{"type": "image"}` blocks (in tag order; a chat message's media blocks come first, its text
blocks join with newlines); gpt turns become assistant messages; the processor's
sandwich chat template renders them, and the processor expands the placeholders (`encode_text`: one run of
`tokens_per_frame` tokens per frame, `frame_separator` between frames).

Tags as public data sets write them: LLaVA-Video-178K and LLaVA-OneVision tag the video of a `"video"` record with
`<image>` (``{"video": "a.mp4", "conversations": [{"from": "human", "value": "<image>\\nWhat happens?"}, ...]}``).
A record with a "video" (or "frames") and no "image", whose conversation has only `<image>` tags, as many as it has
videos, is read that way: its tags stand for its videos, in order. Any other disagreement between tags and media is
a `placeholder_mismatch`.

Media are read upright: videos by their display rotation and colour tags (processing/video_io.py; a damaged packet
costs only the frames it damages, with a `DamagedVideoWarning`), images by their EXIF orientation
(processing/image_io.py).

Labels (-100 elsewhere) cover every assistant answer " " + answer + "\\n\\n": the space after "Assistant:" is part
of the label, because generation starts from a prompt ending in "Assistant:" and the model must produce the space
itself (the World tokenizer puts it in the first word's token, e.g. " The"). Tokenisation is per segment, split at
those boundaries: "...Assistant:" | " answer" | "\\n\\n" | "User: ..." are encoded separately and concatenated, so the
prompt tokens match the inference prompt's tokens and every answer ends in the stop token "\\n\\n" (id 261).
Rows are left padded with id 0 (attention 0, label -100), as the processor pads.

Bad samples raise ValueError naming the sample id; with `skip_bad_samples=True` they are skipped with a warning and
counted in `collator.skipped` by reason. A sample longer than `max_length` tokens (default `DEFAULT_MAX_LENGTH`,
8,192; None: no cap) is always dropped (never truncated) with a warning naming it, counted under "too_long".
With DataLoader workers, each worker counts in its own copy.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..processing.processing_auroralong import STOP_STRING, placeholder_kinds, remove_placeholders
from . import DEFAULT_MAX_LENGTH

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant"}
ANSWER_PREFIX = "Assistant:"
STOP = STOP_STRING

# The reasons under which `ConversationCollator.skipped` counts samples.
REASONS = (
    "bad_record", "empty_conversation", "bad_turn_order", "placeholder_mismatch", "missing_media", "outside_media_root",
    "unreadable_media",
    "too_long",
)


class BadSampleError(ValueError):
    """A record that cannot become a training sample; `reason` is one of `REASONS`."""

    def __init__(self, sample_id, reason: str, message: str):
        super().__init__(f"Sample {sample_id!r}: {message} [{reason}]")
        self.sample_id, self.reason = sample_id, reason


FORMATS = (
    "LLaVA: {\"conversations\": [{\"from\": \"human\", \"value\": ...}, {\"from\": \"gpt\", ...}], \"video\": ...}; "
    "chat (TRL / transformers): {\"messages\": [{\"role\": \"user\", \"content\": [...blocks...] or text}, "
    "{\"role\": \"assistant\", ...}]}"
)


def load_conversations(data_file: str | os.PathLike) -> datasets.Dataset:
    """A JSON file (a list of records) or JSON Lines file of LLaVA or chat records as a `datasets.Dataset` (media not
    opened; see the module docstring for both formats).

    Records lacking a field that others have get None there (e.g. "image" in a video record). So that every row has
    the same column types, a single media path becomes a list of one and a chat message's string content one text
    block (the collator reads both forms alike).
    ValueError naming the file and line (JSON Lines) or record (JSON list) for a row that is not JSON, not an
    object, or in neither format; FileNotFoundError for a missing file.
    """
    from datasets import Dataset

    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"Training data file not found: {path}")
    rows = []
    for where, row in _read_rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}, {where}: a record must be a JSON object, got {type(row).__name__}.")
        if row.get("conversations") is None and row.get("messages") is None:
            raise ValueError(f"{path}, {where}: the record has neither 'conversations' nor 'messages' (keys: "
                             f"{', '.join(map(str, row)) or 'none'}). Accepted formats: {FORMATS}.")
        if isinstance(row.get("messages"), list):
            row["messages"] = [_text_as_block(message) for message in row["messages"]]
        for key in ("video", "videos", "image", "images"):
            if isinstance(row.get(key), str):
                row[key] = [row[key]]
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no records (an empty file, or only blank lines / an empty list).")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_dict({key: [row.get(key) for row in rows] for key in keys})


def _read_rows(path: Path):
    """(where, record) for each record of a JSON list or JSON Lines file; `where` is "line N" or "record N"."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}): training data is JSON / JSON Lines."
                         ) from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: a JSON training file must hold a list of records.")
        yield from ((f"record {k + 1}", record) for k, record in enumerate(records))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error}).") from None


def _text_as_block(message):
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return {**message, "content": [{"type": "text", "text": message["content"]}]}
    return message


@dataclass
class EncodedSample:
    """One record, tokenised: input_ids / labels (same length), its videos [F, 3, H, W] and images [3, H, W]."""

    sample_id: object
    input_ids: list[int]
    labels: list[int]
    videos: list[torch.Tensor] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)


class ConversationCollator:
    """Records -> a batch for `AuroraLongForConditionalGeneration.forward` (see the module docstring).

    Returns input_ids, attention_mask, labels [B, L] and, when the batch has any, pixel_values_videos
    [V, F_max, 3, H, W] (zero frames after each video's end) + video_frame_counts [V] and pixel_values [I, 3, H, W],
    videos and images in the order their placeholders appear in the batch.

    With a `media_root`, every media path must resolve inside it (`..`, absolute paths and symlinks included):
    one that leads outside is a bad sample ("outside_media_root") before the file is even looked at, unless
    `allow_outside_media_root=True`.
    """

    def __init__(self, processor, media_root: str | os.PathLike | None = None,
                 max_length: int | None = DEFAULT_MAX_LENGTH, skip_bad_samples: bool = False,
                 allow_outside_media_root: bool = False):
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be > 0 or None, got {max_length}")
        self.processor = processor
        self.media_root = Path(media_root) if media_root is not None else None
        self.allow_outside_media_root = allow_outside_media_root
        self.max_length = max_length
        self.skip_bad_samples = skip_bad_samples
        self.skipped: Counter = Counter()

    def __call__(self, records) -> dict[str, torch.Tensor]:
        samples = []
        for record in records:
            sample = self._encode_or_skip(record)
            if sample is not None:
                samples.append(sample)
        if not samples:
            raise ValueError(
                f"Every sample of this batch of {len(records)} was dropped (skipped so far: {dict(self.skipped)})."
            )
        return self.pad(samples)

    # -- one record ----------------------------------------------------------------------------------------------

    def _encode_or_skip(self, record) -> EncodedSample | None:
        try:
            sample = self.encode(record)
        except BadSampleError as error:
            if not self.skip_bad_samples:
                raise
            self.skipped[error.reason] += 1
            logger.warning("Skipping %s (skipped so far: %s)", error, dict(self.skipped))
            return None
        if self.max_length is not None and len(sample.input_ids) > self.max_length:
            self.skipped["too_long"] += 1
            logger.warning(
                "Dropping sample %r: %d tokens > max_length %d (dropped as too long so far: %d)",
                sample.sample_id, len(sample.input_ids), self.max_length, self.skipped["too_long"],
            )
            return None
        return sample

    def encode(self, record) -> EncodedSample:
        """Tokenise one record and load its media; BadSampleError (a ValueError) for bad data."""
        if not isinstance(record, dict):
            raise BadSampleError(None, "bad_record", f"a record must be a dict, got {type(record).__name__}")
        if record.get("conversations") is None and record.get("messages") is not None:
            record = chat_media_to_top_level(record)
        messages = self.to_messages(record)
        videos, images = self.load_media(record, messages)
        input_ids, labels = self.encode_messages(messages, [video.shape[0] for video in videos])
        return EncodedSample(record.get("id"), input_ids, labels, videos, images)

    def encode_messages(self, messages: list[dict], video_frame_counts: list[int]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of checked messages (`to_messages`) whose videos have these frame counts, in order:
        each message rendered alone by the processor's chat template, a user message's placeholders expanded by the
        processor (`encode_text`), labels on the answers only (see the module docstring)."""
        processor = self.processor
        counts = iter(video_frame_counts)
        input_ids, labels = [], []

        def add(ids: list[int], labelled: bool):
            input_ids.extend(ids)
            labels.extend(ids if labelled else [IGNORE_INDEX] * len(ids))

        def encode(text: str) -> list[int]:
            return processor.tokenizer.encode(text, add_special_tokens=False)

        for message in messages:
            rendered = processor.apply_chat_template([message], add_generation_prompt=False, tokenize=False)
            if message["role"] == "assistant":
                if not (rendered.startswith(ANSWER_PREFIX) and rendered.endswith(STOP)):
                    raise RuntimeError(f"Unexpected rendering of an answer by the chat template: {rendered!r}")
                add(encode(ANSWER_PREFIX), False)
                add(encode(rendered[len(ANSWER_PREFIX):-len(STOP)]), True)
                add(encode(STOP), True)
            else:
                videos = placeholder_kinds(rendered).count("video")
                add(processor.encode_text(rendered, [next(counts) for _ in range(videos)]), False)
        return input_ids, labels

    def to_messages(self, record) -> list[dict]:
        """The record's conversation (LLaVA "conversations" or chat "messages") as chat messages for the template,
        checked: user / assistant alternating from user, answers present. A user message's media, from its tags
        and (chat format) its media blocks, become bare {"type": "video" | "image"} blocks before its text."""
        sample_id = record.get("id")
        if record.get("conversations") is not None:
            turns, speaker, expected_names = record["conversations"], "from", ("human", "gpt")
            key = "conversations"
        elif record.get("messages") is not None:
            turns, speaker, expected_names = record["messages"], "role", ("user", "assistant")
            key = "messages"
        else:
            raise BadSampleError(sample_id, "empty_conversation",
                                 f"the conversation is missing: neither 'conversations' nor 'messages'. {FORMATS}")
        if not turns:
            raise BadSampleError(sample_id, "empty_conversation", f"the conversation ('{key}') is empty")
        if not isinstance(turns, (list, tuple)):
            raise BadSampleError(sample_id, "bad_record", f"'{key}' must be a list, got {type(turns).__name__}")
        messages = []
        for position, turn in enumerate(turns):
            text, block_kinds = _turn_text(turn, key)
            if text is None:
                shape = "{'from': ..., 'value': str}" if key == "conversations" else (
                    "{'role': ..., 'content': str or [{'type': 'text' | 'video' | 'image', ...}]}")
                raise BadSampleError(sample_id, "bad_record", f"turn {position} is not {shape}")
            expected = expected_names[position % 2]
            if turn.get(speaker) != expected:
                raise BadSampleError(
                    sample_id, "bad_turn_order",
                    f"turn {position} is from {turn.get(speaker)!r}, expected {expected!r} (turns must alternate "
                    f"{expected_names[0]}, {expected_names[1]}, ... starting with {expected_names[0]})",
                )
            if expected == expected_names[1]:
                if block_kinds:
                    raise BadSampleError(sample_id, "placeholder_mismatch", f"answer turn {position} has media")
                if placeholder_kinds(text):
                    raise BadSampleError(sample_id, "placeholder_mismatch", f"answer turn {position} has a media tag")
                if not text.strip():
                    raise BadSampleError(sample_id, "empty_conversation", f"answer turn {position} is empty")
                messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
            else:
                kinds = block_kinds + placeholder_kinds(text)
                content = [{"type": kind} for kind in kinds] + [{"type": "text", "text": remove_placeholders(text)}]
                messages.append({"role": "user", "content": content})
        if len(turns) % 2:
            raise BadSampleError(sample_id, "bad_turn_order",
                                 f"the last turn is from {expected_names[0]!r}: it has no answer")
        return messages

    def load_media(self, record, messages) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The record's videos [F, 3, S, S] and images [3, S, S], decoded and preprocessed by the processor, after
        checking its media against the placeholders of `messages` (`to_messages`; LLaVA-Video's `<image>` tags of
        a video record are turned into video blocks here). BadSampleError for a mismatch or an unusable file."""
        sample_id = record.get("id")
        video_paths = _as_paths(record.get("video"), sample_id, "video")
        frames = record.get("frames")
        if frames is not None:
            if video_paths:
                raise BadSampleError(sample_id, "bad_record", "a record has 'video' or 'frames', not both")
            if not isinstance(frames, (list, tuple)) or not frames or not all(isinstance(f, str) for f in frames):
                raise BadSampleError(sample_id, "bad_record", "'frames' must be a non-empty list of image paths")
        image_paths = _as_paths(record.get("image"), sample_id, "image")
        num_videos = len(video_paths) + (frames is not None)
        blocks = [block for message in messages for block in message["content"] if block["type"] != "text"]
        tags = Counter(block["type"] for block in blocks)
        if num_videos and not image_paths and not tags["video"] and tags["image"] == num_videos:
            for block in blocks:  # LLaVA-Video-178K / LLaVA-OneVision: <image> tags the record's video
                block["type"] = "video"
            tags = Counter(video=num_videos)
        if num_videos and not image_paths and not tags["video"] and tags["image"]:
            raise BadSampleError(
                sample_id, "placeholder_mismatch",
                f"{tags['image']} <image> tag(s) in the conversation but {num_videos} video(s) and no image in the "
                "record (LLaVA-Video style, one <image> tag per video)",
            )
        for kind, given in (("video", num_videos), ("image", len(image_paths))):
            if tags[kind] != given:
                raise BadSampleError(
                    sample_id, "placeholder_mismatch",
                    f"{tags[kind]} <{kind}> tag(s) in the conversation but {given} {kind}(s) in the record",
                )

        videos = [self._video(path, sample_id) for path in video_paths]
        if frames is not None:
            videos.append(self._frame_files(frames, sample_id))
        images = [self._image(self._resolve(path, sample_id), sample_id)[0] for path in image_paths]
        return videos, images

    def _resolve(self, path: str, sample_id) -> Path:
        resolved = Path(path) if self.media_root is None else self.media_root / path
        if self.media_root is not None and not self.allow_outside_media_root:
            root = self.media_root.resolve()
            if not resolved.resolve().is_relative_to(root):  # checked before the file is, so nothing is confirmed
                raise BadSampleError(sample_id, "outside_media_root", f"media path {path!r} leads outside the media "
                                     f"root {root} (allow_outside_media_root / --allow-outside-media-root reads it)")
        if not resolved.is_file():
            raise BadSampleError(sample_id, "missing_media", f"media file not found: {resolved}")
        return resolved

    def _video(self, path: str, sample_id) -> torch.Tensor:
        """[F, 3, S, S] pixel values of one video file, sampled by the processor."""
        resolved = self._resolve(path, sample_id)
        try:
            frames = self.processor.load_video(str(resolved)).frames
        except (ValueError, OSError) as error:
            raise BadSampleError(sample_id, "unreadable_media", f"cannot read video {resolved}: {error}") from error
        return self.processor.preprocess_frames(frames)

    def _frame_files(self, paths: list[str], sample_id) -> torch.Tensor:
        """[F, 3, S, S] pixel values of image files forming one video: every path is checked, only the frames that
        the processor's sampling picks (no timestamps, so its fps does not apply) are opened."""
        resolved = [self._resolve(path, sample_id) for path in paths]
        picked = self.processor.sample_frames([float(k) for k in range(len(resolved))], fps=None)
        return torch.cat([self._image(resolved[k], sample_id) for k in picked])

    def _image(self, resolved: Path, sample_id) -> torch.Tensor:
        """[1, 3, S, S] pixel values of one image file, read as the processor reads images (upright by its EXIF
        orientation, a huge one reduced while it is decoded)."""
        try:
            image = self.processor.load_image(resolved)
        except (ValueError, OSError) as error:
            raise BadSampleError(sample_id, "unreadable_media", f"cannot read image {resolved}: {error}") from error
        return self.processor.preprocess_frames(image)

    # -- the batch -----------------------------------------------------------------------------------------------

    def pad(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        """Encoded samples -> one batch: input_ids / attention_mask left padded by the processor, labels padded
        alike with IGNORE_INDEX, videos padded by the processor, images stacked."""
        batch = dict(self.processor.pad_input_ids([sample.input_ids for sample in samples], padding_side="left",
                                                  return_tensors="pt"))
        length = batch["input_ids"].shape[1]
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            labels[row, length - len(sample.labels):] = torch.tensor(sample.labels, dtype=torch.long)
        batch["labels"] = labels
        videos = [video for sample in samples for video in sample.videos]
        if videos:
            batch.update(self.processor.pad_videos(videos))
        images = [image for sample in samples for image in sample.images]
        if images:
            batch["pixel_values"] = torch.stack(images)
        return batch


def _turn_text(turn, key: str) -> tuple[str | None, list[str]]:
    """(text, media kinds of its blocks) of one turn; text None when the turn is malformed. A chat turn's text
    blocks join with newlines."""
    if not isinstance(turn, dict):
        return None, []
    if key == "conversations":
        return (turn["value"], []) if isinstance(turn.get("value"), str) else (None, [])
    content = turn.get("content")
    if isinstance(content, str):
        return content, []
    if not isinstance(content, (list, tuple)) or not all(isinstance(block, dict) for block in content):
        return None, []
    texts, kinds = [], []
    for block in content:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in ("video", "image"):
            kinds.append(kind)
        else:
            return None, []
    return "\n".join(texts), kinds


def chat_media_to_top_level(record: dict) -> dict:
    """A chat ("messages") record with the paths of its media blocks moved to the record's "video" / "image" lists
    (in order), as LLaVA records hold them; blocks keep only their type.

    A block names its file as {"type": "video", "video": PATH} (or "path": PATH; likewise for images). Blocks with
    no path take the record's own media instead, from "video" / "videos" and "image" / "images" (TRL's column
    names), in order; a record mixing both ways is a BadSampleError ("bad_record").
    """
    sample_id = record.get("id")
    record = dict(record)
    for plural, singular in (("videos", "video"), ("images", "image")):
        if record.get(plural) is not None:
            if record.get(singular) is not None:
                raise BadSampleError(sample_id, "bad_record", f"a record has '{singular}' or '{plural}', not both")
            record[singular] = record.pop(plural)
    found = {"video": [], "image": []}
    bare = 0
    messages = []
    for message in record["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, (list, tuple)):
            blocks = []
            for block in content:
                if isinstance(block, dict) and block.get("type") in found:
                    path = block.get(block["type"]) or block.get("path")
                    if path is None:
                        bare += 1
                    else:
                        found[block["type"]].append(path)
                    block = {"type": block["type"]}
                blocks.append(block)
            message = {**message, "content": blocks}
        messages.append(message)
    named = len(found["video"]) + len(found["image"])
    if named:
        if bare or any(record.get(key) is not None for key in ("video", "image", "frames")):
            raise BadSampleError(sample_id, "bad_record", "media blocks name their files and the record lists media "
                                 "too (or some blocks have no path): give the paths one way")
        record.update({kind: paths or None for kind, paths in found.items()})
    record["messages"] = messages
    return record


def _as_paths(value, sample_id, key: str) -> list[str]:
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, (list, tuple)) or not all(isinstance(path, str) and path for path in paths):
        raise BadSampleError(sample_id, "bad_record", f"'{key}' must be a path or a list of paths, got {value!r}")
    return list(paths)


__all__ = [
    "BadSampleError", "ConversationCollator", "EncodedSample", "FORMATS", "IGNORE_INDEX", "REASONS",
    "chat_media_to_top_level", "load_conversations",
]
