"""Answering conversations about videos and images with a loaded AuroraLong: chat messages and files in, text or
scores out. Nothing here imports lmms-eval; its adapter (auroralong_hf/eval/adapter.py) answers every document
through `Answerer`.

The streaming engine (modeling/streaming.py: `model.prefill`, `model.score_continuations`, and `model.generate`,
which runs its prompt through `prefill`) takes token ids and pixel values. This module is the step before and after
it for a caller that holds a conversation and files: a `Prompt` (messages in AuroraLong's chat format and its
`Visual`s) is rendered with the processor's sandwich chat template, its images are read and its videos planned by
the processor (a demux pass, nothing decoded), and the engine streams the prompt into an RNN state, each video
decoded and encoded `chunk_frames` frames at a time, so memory does not grow with the video's length.

Every prompt ends in "Assistant:" (the generation prompt). `prefill` feeds all of it but that last token and returns
the state and the token's id, the convention `model.score_continuations` takes; decoding starts from it too:

- `answer`: each prompt prefilled alone (memory constant, whatever the video lengths), then all of them decoded
  together from their stacked states; a prompt that cannot be answered gets "" and its error is returned.
- `score`: one prefill per prompt, every continuation scored from a copy of the state in one batched forward.
- `converse`: several rounds on one state; each answer and the next turn are fed on, nothing is prefilled twice.

A visual that cannot be read (a missing or damaged file, no video stream, a window past its end) raises
`UnreadableVisual`, naming the file and the reason; a prompt whose placeholders and visuals disagree is a ValueError.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .modeling.cache_rwkv6 import Rwkv6Cache
from .processing import processing_auroralong
from .processing.image_io import load_image
from .processing.processing_auroralong import STOP_STRING, placeholder_kinds
from .processing.video_io import probe_video


@dataclass
class Visual:
    """One image or video of a prompt, and the part of it to read."""

    source: object  # a path, or a PIL image
    is_image: bool
    end_frame: int | None = None  # the last frame (index in the file) that may be read, e.g. a MovieChat-1K breakpoint
    start: float | None = None  # seconds
    end: float | None = None

    @property
    def name(self) -> str:
        return str(self.source) if isinstance(self.source, (str, os.PathLike)) else type(self.source).__name__


@dataclass
class Prompt:
    """A conversation to continue: messages in AuroraLong's chat format (content blocks of type text / video /
    image) and the visuals of its blocks, in order."""

    messages: list[dict]
    visuals: list[Visual] = field(default_factory=list)


class UnreadableVisual(Exception):
    """A prompt's image or video could not be read (the message names the file and the reason)."""


def frame_time(video, frame: int) -> float:
    """Seconds from the first frame of `video` (a path) to its frame `frame` (clamped to the last one): the end of
    the window that reads frames up to `frame` only. ValueError for a negative index."""
    _, times = probe_video(video)
    if frame < 0:
        raise ValueError(f"breakpoint timestep {frame} is negative")
    return times[min(frame, len(times) - 1)] - times[0]


class Answerer:
    """Answers `Prompt`s with a loaded AuroraLong model and its processor (see the module docstring).

    Args:
        model: An `AuroraLongForConditionalGeneration` (eval mode; on the device where the answering runs).
        processor: Its `AuroraLongProcessor` (tokens per frame matching the model's vision tower).
        chunk_frames: Frames decoded and encoded at a time; memory does not grow with a video's length (None: the
            model device's default, `modeling.streaming.default_chunk_frames`).

    `sampling` arguments are video sampling overrides for the processor (fps, num_frames, max_frames; None: the
    processor's settings). `options` are `model.generate` options (max_new_tokens, do_sample, ...; None: the model's
    generation config), `stops` the strings an answer is cut at (None: the processor's, "\\n\\n").
    """

    def __init__(self, model, processor, chunk_frames: int | None = None) -> None:
        self.model, self.processor, self.chunk_frames = model, processor, chunk_frames
        self.tokenizer = processor.tokenizer

    @torch.no_grad()
    def prefill(self, prompt: Prompt, sampling: dict | None = None, state: Rwkv6Cache | None = None
                ) -> tuple[Rwkv6Cache, int]:
        """Feed the prompt (rendered with the sandwich chat template, ending in "Assistant:") into `state` (a new
        one by default, else advanced in place) through the model's streaming prefill; returns the state and the
        prompt's last token id, left unfed so that decoding starts from it. Raises UnreadableVisual, or ValueError
        (before any file is opened) when the rendered prompt's placeholders and the visuals disagree."""
        text = self.processor.apply_chat_template(prompt.messages, add_generation_prompt=True)
        found = len(placeholder_kinds(text))
        if found != len(prompt.visuals):  # before any file is opened: the prompt itself is wrong
            raise ValueError(f"the prompt has {found} image/video placeholder(s) for {len(prompt.visuals)} visual(s) "
                             f"({', '.join(v.name for v in prompt.visuals) or 'none'})")
        videos, images = [], []
        for visual in prompt.visuals:
            try:
                if visual.is_image:
                    # a large image is reduced as it is decoded, as the processor does with a path
                    images.append(load_image(visual.source, max_pixels=processing_auroralong.DECODE_MAX_PIXELS))
                else:
                    window = {"start": visual.start, "end": visual.end}
                    if visual.end_frame is not None:
                        window["end"] = frame_time(visual.source, visual.end_frame)
                    videos.append(self.processor.plan_video(visual.source, **(sampling or {}), **window))
            except (OSError, ValueError, TypeError) as error:  # FileNotFoundError is an OSError
                message = str(error) if visual.name in str(error) else f"{visual.name}: {error}"
                raise UnreadableVisual(message) from error
        inputs = self.processor(text=text, videos=videos or None, images=images or None)
        ids = inputs["input_ids"].to(self.model.device)
        try:
            state = self.model.prefill(ids[:, :-1], pixel_values_videos=inputs.get("pixel_values_videos"),
                                       pixel_values=inputs.get("pixel_values"), cache=state,
                                       chunk_frames=self.chunk_frames)
        except (OSError, ValueError) as error:  # a video that fails part-way through decoding
            raise UnreadableVisual(str(error)) from error
        return state, int(ids[0, -1])

    @torch.no_grad()
    def decode(self, states: Sequence[Rwkv6Cache], last_ids: Sequence[int], options: dict | None = None,
               stops: Sequence[str] | None = None) -> list[str]:
        """Generate from prefilled one-row states (decoded together, from copies) and cut each answer at its first
        stop string; answers are stripped of surrounding whitespace."""
        stops = list(self.processor.stop_strings if stops is None else stops)
        input_ids = torch.tensor([[token] for token in last_ids], device=self.model.device)
        output = self.model.generate(input_ids, cache=Rwkv6Cache.stack(list(states)), stop_strings=stops,
                                     tokenizer=self.tokenizer, **(options or {}))
        answers = []
        for text in self.processor.post_process_image_text_to_text(output[:, 1:]):
            cut = min((text.find(stop) for stop in stops if stop in text), default=len(text))
            answers.append(text[:cut].strip())
        return answers

    @torch.no_grad()
    def answer(self, prompts: Sequence[Prompt], sampling: dict | None = None, options: dict | None = None,
               stops: Sequence[str] | None = None) -> tuple[list[str], dict[int, Exception]]:
        """Answer each prompt: prefilled one at a time, the answerable ones decoded together. Returns the answers
        ("" for a prompt that could not be answered) and, by row, the error of each such prompt; one prompt's
        error never ends the batch."""
        rows, states, last_ids, failures = [], [], [], {}
        for row, prompt in enumerate(prompts):
            try:
                state, last_id = self.prefill(prompt, sampling)
            except Exception as error:  # noqa: BLE001 - one prompt never ends the batch
                failures[row] = error
                continue
            rows.append(row)
            states.append(state)
            last_ids.append(last_id)
        answers = [""] * len(prompts)
        if rows:
            for row, text in zip(rows, self.decode(states, last_ids, options, stops), strict=True):
                answers[row] = text
        return answers, failures

    @torch.no_grad()
    def score(self, prompt: Prompt, continuations: Sequence[str], sampling: dict | None = None
              ) -> list[tuple[float, bool]]:
        """(mean negative log-likelihood per token, is greedy) of each continuation after the prompt's
        "Assistant:"; the prompt and its visuals are encoded once. A continuation is the answer text: a leading
        space is added when it has none, as the chat format writes "Assistant: " + answer. Raises UnreadableVisual
        (or ValueError for a prompt whose placeholders and visuals disagree)."""
        state, last_id = self.prefill(prompt, sampling)
        targets = [self.tokenizer.encode(c if c[:1].isspace() else " " + c) for c in continuations]
        scores = self.model.score_continuations(state, last_id, targets)
        return [(-total / max(len(target), 1), greedy) for (total, greedy), target in zip(scores, targets, strict=True)]

    @torch.no_grad()
    def converse(self, first: Prompt, next_turn: Callable, sampling: dict | None = None, options: dict | None = None,
                 stops: Sequence[str] | None = None) -> tuple[list[str], UnreadableVisual | None]:
        """A multi-round conversation on one state: answer `first`, then `next_turn(answers, info, round_idx)`
        -> (the next Prompt or None to stop, info), feeding every answer and turn onto the same state.

        Returns the answers and, when a later round's visual could not be read, that error: the conversation then
        ends with an empty answer for that round. Raises UnreadableVisual when the first round's cannot (nothing
        was answered), and any other error of any round.
        """
        answers, info, prompt, state = [], None, first, None
        while prompt is not None:
            try:
                state, last_id = self.prefill(prompt, sampling, state)
            except UnreadableVisual as error:
                if not answers:
                    raise
                answers.append("")
                return answers, error
            answer = self.decode([state], [last_id], options, stops)[0]  # decodes a copy
            answers.append(answer)
            # the answer as the chat format writes it: "Assistant:" + " " + answer + the stop string
            self.model.feed(state, torch.tensor([[last_id, *self.tokenizer.encode(f" {answer}{STOP_STRING}")]],
                                                device=self.model.device))
            prompt, info = next_turn(answers, info, len(answers))
        return answers, None


__all__ = ["Answerer", "Prompt", "UnreadableVisual", "Visual", "frame_time"]
