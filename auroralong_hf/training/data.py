"""Training data: LLaVA-style conversation files in, AuroraLong model batches out.

A record (one JSON object; a file is a JSON list of them or JSON Lines)::

    {"id": "v_001", "video": "clips/a.mp4",                 # or "frames": ["f/0.jpg", ...] or "image": "a.jpg"
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                       {"from": "gpt", "value": "A ball rolls."},
                       {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "It was pushed."}]}

`load_conversations` reads the file with `datasets` (no media is touched); `ConversationCollator` turns a list of
records into a batch, decoding the media lazily with the processor's own sampling and preprocessing.

Media: "video" is a path (or a list of paths, one `<video>` each); "frames" is a list of image paths forming ONE
video (one `<video>`; no timestamps, so the processor's `fps` does not apply but its `num_frames`, `max_frames` and
`include_last_frame` do, and only the picked images are opened); "image" is a path (or a list, one `<image>` each).
"video" and "frames" exclude each other. Relative paths are joined to `media_root`.

Text: each human turn becomes a user message whose `<video>` / `<image>` tags are removed from the text and become
`{"type": "video"}` / `{"type": "image"}` blocks (in tag order); gpt turns become assistant messages; the processor's
sandwich chat template renders them, and the placeholders are expanded exactly as the processor expands them
(one run of `tokens_per_frame` tokens per frame, `frame_separator` between frames).

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
counted in `collator.skipped` by reason. A sample longer than `max_length` tokens is always dropped (never
truncated) with a warning, counted under "too_long". With DataLoader workers, each worker counts in its own copy.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..processing.image_io import load_image
from ..processing.processing_auroralong import placeholder_kinds, remove_placeholders

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
PAD_ID = 0
ROLES = {"human": "user", "gpt": "assistant"}
ANSWER_PREFIX = "Assistant:"
STOP = "\n\n"

# The reasons under which `ConversationCollator.skipped` counts samples.
REASONS = (
    "bad_record", "empty_conversation", "bad_turn_order", "placeholder_mismatch", "missing_media", "unreadable_media",
    "too_long",
)


class BadSampleError(ValueError):
    """A record that cannot become a training sample; `reason` is one of `REASONS`."""

    def __init__(self, sample_id, reason: str, message: str):
        super().__init__(f"Sample {sample_id!r}: {message} [{reason}]")
        self.sample_id, self.reason = sample_id, reason


def load_conversations(data_file: str | os.PathLike) -> datasets.Dataset:
    """A LLaVA-style JSON file (a list of records) or JSON Lines file as a `datasets.Dataset` (media not opened).

    Records lacking a field that others have get None there (e.g. "image" in a video record).
    """
    from datasets import load_dataset

    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"Training data file not found: {path}")
    return load_dataset("json", data_files=str(path), split="train")


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
    """

    def __init__(self, processor, media_root: str | os.PathLike | None = None, max_length: int | None = None,
                 skip_bad_samples: bool = False):
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be > 0 or None, got {max_length}")
        self.processor = processor
        self.media_root = Path(media_root) if media_root is not None else None
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
        sample_id = record.get("id")
        messages = self.to_messages(record)
        videos, images = self._media(record, messages)
        frame_counts = iter([video.shape[0] for video in videos])
        tokenizer = self.processor.tokenizer
        input_ids, labels = [], []

        def add(text: str, labelled: bool):
            ids = tokenizer.encode(text, add_special_tokens=False)
            input_ids.extend(ids)
            labels.extend(ids if labelled else [IGNORE_INDEX] * len(ids))

        for message in messages:
            rendered = self.processor.apply_chat_template([message], add_generation_prompt=False, tokenize=False)
            if message["role"] == "assistant":
                if not (rendered.startswith(ANSWER_PREFIX) and rendered.endswith(STOP)):
                    raise RuntimeError(f"Unexpected rendering of an answer by the chat template: {rendered!r}")
                add(ANSWER_PREFIX, False)
                add(rendered[len(ANSWER_PREFIX):-len(STOP)], True)
                add(STOP, True)
            else:
                add(self._expand(rendered, frame_counts), False)
        return EncodedSample(sample_id, input_ids, labels, videos, images)

    def to_messages(self, record) -> list[dict]:
        """The record's conversation as chat messages (checked: human/gpt alternating, answers present)."""
        sample_id = record.get("id")
        turns = record.get("conversations")
        if not turns:
            raise BadSampleError(sample_id, "empty_conversation", "the conversation is empty or missing")
        if not isinstance(turns, (list, tuple)):
            raise BadSampleError(sample_id, "bad_record", f"'conversations' must be a list, got {type(turns).__name__}")
        messages = []
        for position, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise BadSampleError(sample_id, "bad_record", f"turn {position} is not {{'from': ..., 'value': str}}")
            expected = "human" if position % 2 == 0 else "gpt"
            if turn.get("from") != expected:
                raise BadSampleError(
                    sample_id, "bad_turn_order",
                    f"turn {position} is from {turn.get('from')!r}, expected {expected!r} (turns must alternate "
                    "human, gpt, ... starting with human)",
                )
            text = turn["value"]
            if expected == "gpt":
                if placeholder_kinds(text):
                    raise BadSampleError(sample_id, "placeholder_mismatch", f"answer turn {position} has a media tag")
                if not text.strip():
                    raise BadSampleError(sample_id, "empty_conversation", f"answer turn {position} is empty")
                messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
            else:
                kinds = placeholder_kinds(text)
                content = [{"type": kind} for kind in kinds] + [{"type": "text", "text": remove_placeholders(text)}]
                messages.append({"role": "user", "content": content})
        if len(turns) % 2:
            raise BadSampleError(sample_id, "bad_turn_order", "the last turn is from 'human': it has no answer")
        return messages

    def _media(self, record, messages) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Check the placeholder counts against the record's media, then decode and preprocess the media."""
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

        videos = [self._load_video(path, sample_id) for path in video_paths]
        if frames is not None:
            videos.append(self._load_frames(frames, sample_id))
        images = [self._load_image(path, sample_id)[0] for path in image_paths]
        return videos, images

    def _resolve(self, path: str, sample_id) -> Path:
        resolved = Path(path) if self.media_root is None else self.media_root / path
        if not resolved.is_file():
            raise BadSampleError(sample_id, "missing_media", f"media file not found: {resolved}")
        return resolved

    def _load_video(self, path: str, sample_id) -> torch.Tensor:
        resolved = self._resolve(path, sample_id)
        try:
            frames = self.processor.load_video(str(resolved)).frames
        except (ValueError, OSError) as error:
            raise BadSampleError(sample_id, "unreadable_media", f"cannot read video {resolved}: {error}") from error
        return self.processor.preprocess_frames(frames)

    def _load_frames(self, paths: list[str], sample_id) -> torch.Tensor:
        from ..processing.video_io import sample_frame_indices

        resolved = [self._resolve(path, sample_id) for path in paths]
        processor = self.processor
        picked = sample_frame_indices(
            [float(k) for k in range(len(resolved))], fps=None, num_frames=processor.num_frames,
            max_frames=processor.max_frames, include_last_frame=processor.include_last_frame,
        )
        return torch.cat([self._load_image(resolved[k], sample_id) for k in picked])

    def _load_image(self, path, sample_id) -> torch.Tensor:
        """[1, 3, H, W] pixel values of one image file, upright by its EXIF orientation."""
        resolved = self._resolve(path, sample_id) if isinstance(path, str) else path
        try:
            image = load_image(resolved)
        except (ValueError, OSError) as error:
            raise BadSampleError(sample_id, "unreadable_media", f"cannot read image {resolved}: {error}") from error
        return self.processor.preprocess_frames([_as_array(image)])

    def _expand(self, text: str, frame_counts) -> str:
        """Placeholders -> the processor's runs of visual tokens (videos take the next frame count in order)."""
        processor = self.processor
        image_run = processor.image_token * processor.tokens_per_frame
        pieces = text.split(processor.video_token)
        text = pieces[0] + "".join(processor.video_placeholder(next(frame_counts)) + piece for piece in pieces[1:])
        return text.replace(processor.image_token, image_run)

    # -- the batch -----------------------------------------------------------------------------------------------

    def pad(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        """Left-pad encoded samples into one batch."""
        length = max(len(sample.input_ids) for sample in samples)
        batch_size = len(samples)
        input_ids = torch.full((batch_size, length), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample.input_ids)
            input_ids[row, length - n:] = torch.tensor(sample.input_ids, dtype=torch.long)
            attention_mask[row, length - n:] = 1
            labels[row, length - n:] = torch.tensor(sample.labels, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        videos = [video for sample in samples for video in sample.videos]
        if videos:
            longest = max(video.shape[0] for video in videos)
            batch["pixel_values_videos"] = torch.stack(
                [torch.nn.functional.pad(video, (0, 0, 0, 0, 0, 0, 0, longest - video.shape[0])) for video in videos]
            )
            batch["video_frame_counts"] = torch.tensor([video.shape[0] for video in videos], dtype=torch.long)
        images = [image for sample in samples for image in sample.images]
        if images:
            batch["pixel_values"] = torch.stack(images)
        return batch


def _as_paths(value, sample_id, key: str) -> list[str]:
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, (list, tuple)) or not all(isinstance(path, str) and path for path in paths):
        raise BadSampleError(sample_id, "bad_record", f"'{key}' must be a path or a list of paths, got {value!r}")
    return list(paths)


def _as_array(image):
    import numpy as np

    return np.asarray(image, dtype=np.uint8)


__all__ = ["BadSampleError", "ConversationCollator", "EncodedSample", "IGNORE_INDEX", "REASONS", "load_conversations"]
