"""The streaming engine: a prompt with videos and images goes into the RNN state a chunk of frames at a time.

This is how AuroraLong keeps memory flat in the video's length, and it is the only place that does it: `generate`
runs every prompt through `prefill` and leaves only the prompt's last token to transformers' decoding loop;
`describe`, the lmms-eval adapter and the benchmarks call the same methods. It lives beside the model (and not in
the `auroralong_hf` package) so that a saved folder loaded with `trust_remote_code=True` streams too.

The prompt is what the processor makes: `input_ids` [B, T] in which each visual is a run of placeholder ids
(`tokens_per_frame` per frame, the frame separator's ids between frames), and the visuals in placeholder order:

- `pixel_values_videos`: a [V, F, 3, S, S] tensor with `video_frame_counts` [V], or a sequence of V videos, each a
  [F, 3, S, S] tensor or a lazy video: any object with `num_frames` and `chunks(chunk_frames)` yielding
  [K, 3, S, S] pixel values (the processor's `LazyVideo`, which decodes as it is read);
- `pixel_values`: [I, 3, S, S], one frame's run per image.

`prefill` walks each row's real tokens (attention mask 1) in order: text runs are fed as ids; a video is fed
`chunk_frames` frames at a time, each chunk's span of `input_ids` (its placeholder runs and the separators between
them) embedded with the frames' visual tokens written in place. Only one chunk's pixels and activations exist at a
time. Every row gives the state it gives alone; the all-at-once forward (`model(**inputs)`) reaches the same state
up to float rounding (the WKV recurrence is summed in other chunks), which tests/test_streaming.py checks.
"""

import numbers
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, nullcontext

import torch

from .cache_rwkv6 import Rwkv6Cache

# Frames decoded and encoded at a time when the caller does not say (generate, describe, lmms-eval, the benchmarks),
# by the device of the model. CPU: 8 frames are ~14 MB of fp32 pixels at 384x384 plus the preprocessing's copies and
# the tower's activations, and the peak grows with it (16 frames: +70 MiB over 8 on a 600-frame video) for no speed.
# GPU: a chunk is one batch of the tower and one prefill of the LM; 64 frames are 64 x 577 tower tokens and ~3,700 LM
# tokens (58 a frame), the sizes at which issue 12 measured both near their best on an H200 (tower at 64 frames,
# prefill at T=4096), for ~110 MB of pixels and a few hundred MB of activations.
CHUNK_FRAMES = {"cpu": 8, "cuda": 64}

# Chunks of a lazy video decoded ahead of the one being encoded, in a background thread, by the device of the model.
# On a GPU, decoding (PyAV, the resize: CPU work) then overlaps the tower and the LM instead of taking turns with them.
# On a CPU both compete for the same cores: measured on 2 cores (256 frames of a 720p clip, the small random model,
# 34.6 s in turn of which decoding 7.5 s), one chunk ahead gave 33.8 s (-2%) for +40 MiB of peak memory; so none.
PREFETCH_CHUNKS = {"cpu": 0, "cuda": 1}


def default_chunk_frames(device: torch.device | str) -> int:
    """Frames streamed at a time on `device` when the caller does not say (`CHUNK_FRAMES`; other devices as CPU)."""
    return CHUNK_FRAMES.get(torch.device(device).type, CHUNK_FRAMES["cpu"])


def resolve_chunk_frames(chunk_frames: int | None, device: torch.device | str) -> int:
    """`chunk_frames` as an int (any integral number, numpy's included), or the device's default for None. Raises
    ValueError unless it is an integer > 0 (a bool, float or string is refused)."""
    if chunk_frames is None:
        return default_chunk_frames(device)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, numbers.Integral) or chunk_frames <= 0:
        raise ValueError(f"chunk_frames must be an int > 0, got {chunk_frames!r}.")
    return int(chunk_frames)


def video_list(pixel_values_videos, video_frame_counts=None) -> list:
    """`pixel_values_videos` in any accepted form -> a list of videos (tensors [F, 3, S, S] or lazy videos)."""
    if pixel_values_videos is None:
        return []
    if isinstance(pixel_values_videos, torch.Tensor):
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                "pixel_values_videos must be [videos, frames, 3, height, width] or a list of videos, "
                f"got a tensor of shape {list(pixel_values_videos.shape)}."
            )
        if video_frame_counts is None:
            return list(pixel_values_videos)
        counts = video_frame_counts.tolist()
        if len(counts) != pixel_values_videos.shape[0]:
            raise ValueError(
                f"video_frame_counts holds {len(counts)} counts for {pixel_values_videos.shape[0]} videos."
            )
        return [video[:count] for video, count in zip(pixel_values_videos, counts, strict=True)]
    videos = list(pixel_values_videos)
    for video in videos:
        if not (isinstance(video, torch.Tensor) and video.dim() == 4) and not hasattr(video, "chunks"):
            raise TypeError(
                "each video of pixel_values_videos must be a [frames, 3, height, width] tensor or a lazy video "
                f"(with num_frames and chunks(chunk_frames)), got {type(video).__name__}."
            )
    return videos


def frame_count(video) -> int:
    return video.shape[0] if isinstance(video, torch.Tensor) else int(video.num_frames)


def frame_chunks(video, chunk_frames: int, prefetch: int = 0) -> Iterator[torch.Tensor]:
    """A video's pixel values [K, 3, S, S], `chunk_frames` frames at a time; a lazy video's are decoded `prefetch`
    chunks ahead in a background thread (0: in the caller's thread, when asked for; see `PREFETCH_CHUNKS`). Close
    the iterator (or let it go) to stop the decoding early."""
    if isinstance(video, torch.Tensor):
        yield from video.split(chunk_frames)
    elif prefetch > 0:
        yield from prefetched(video.chunks(chunk_frames), prefetch)
    else:
        yield from video.chunks(chunk_frames)


def prefetched(source: Iterator, depth: int) -> Iterator:
    """The items of `source`, produced in a background thread up to `depth` items ahead of the consumer.

    An exception raised by `source` is raised here, where its item would have come, after the items before it.
    Closing this iterator (or dropping it) stops the thread once the item it is making is done, closes `source`
    there, and waits for it: no decoding goes on behind a caller that has moved on or failed.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        with closing(source) if hasattr(source, "close") else nullcontext():
            try:
                for item in source:
                    if not put((item, None)):
                        return
                put((done, None))
            except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
                put((done, error))

    thread = threading.Thread(target=produce, name="auroralong-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item, error = items.get(timeout=0.1)
            except queue.Empty:
                if not thread.is_alive() and items.empty():  # it cannot end without a word, but never hang on it
                    raise RuntimeError("the frame-decoding thread ended without its result") from None
                continue
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class AuroraLongStreamingMixin:
    """`prefill` and `score_continuations` for `AuroraLongForConditionalGeneration` (see the module docstring)."""

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos=None,
        video_frame_counts: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        cache: Rwkv6Cache | None = None,
        chunk_frames: int | None = None,
    ) -> Rwkv6Cache:
        """Feed every position of `input_ids` [B, T] into a state, visuals streamed `chunk_frames` frames at a time.

        attention_mask: [B, T] (or [B, seen + T]), 0 at padding; padding positions are skipped (and counted, so the
            state's `seen_tokens` grows by T, as in `forward`).
        cache: a state to continue (advanced in place); default a new one.
        chunk_frames: frames decoded and encoded at a time (None: `default_chunk_frames` of the model's device). On
            a GPU a lazy video's next chunk is decoded meanwhile in a background thread (`PREFETCH_CHUNKS`).
        Returns the state. Raises ValueError when placeholders and visuals disagree (naming both counts), and
        whatever a lazy video raises when it cannot be decoded.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq_len], got shape {list(input_ids.shape)}.")
        chunk_frames = resolve_chunk_frames(chunk_frames, self.device)
        batch, length = input_ids.shape
        state = cache if cache is not None else self.new_state(batch)
        state.check_compatible(self.config.text_config, batch)
        fingerprint, seen = (state.fingerprint, state.fingerprint_length), state.seen_tokens
        if attention_mask is not None:
            attention_mask = attention_mask[:, -length:]
        videos = iter(self._matched_videos(input_ids, attention_mask, pixel_values_videos, video_frame_counts))
        images = iter(() if pixel_values is None else pixel_values.split(1))
        rows = []
        for row in range(batch):
            ids = input_ids[row] if attention_mask is None else input_ids[row][attention_mask[row].bool()]
            row_state = state.select_rows([row])
            if ids.numel():
                self._feed_row(row_state, ids.to(self.device), videos, images, chunk_frames)
            rows.append(row_state)
        merged = Rwkv6Cache.stack(rows) if batch > 1 else rows[0]
        state.attn_shift[:], state.ffn_shift[:], state.wkv[:] = merged.attn_shift, merged.ffn_shift, merged.wkv
        state.fingerprint, state.fingerprint_length = fingerprint  # the rows were fed their real ids only; the
        state.record(input_ids)  # state has seen all of input_ids
        state.seen_tokens = seen + length
        return state

    @torch.no_grad()
    def score_continuations(self, cache: Rwkv6Cache, last_id: int, continuations: Sequence[Sequence[int]]
                            ) -> list[tuple[float, bool]]:
        """(sum of log-probabilities, is greedy) of each continuation's ids after a prefilled single-row `cache`
        whose prompt's last token `last_id` is still unfed; the continuations are read side by side (one row
        each, right padded) from copies of the state, which is left as it was. An empty continuation scores
        (0.0, True)."""
        if cache.batch_size != 1:
            raise ValueError(f"score_continuations takes a state of one row, got {cache.batch_size}.")
        if not continuations:
            return []
        length = 1 + max(len(c) for c in continuations)
        input_ids = torch.zeros(len(continuations), length, dtype=torch.long)
        mask = torch.zeros(len(continuations), length, dtype=torch.long)
        for row, target in enumerate(continuations):  # right padding: masked positions are skipped by the RNN
            input_ids[row, :1 + len(target)] = torch.tensor([last_id, *target])
            mask[row, :1 + len(target)] = 1
        states = Rwkv6Cache.stack([cache] * len(continuations))
        logits = self(input_ids.to(self.device), attention_mask=mask.to(self.device), cache=states,
                      use_cache=True).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if not bool(torch.isfinite(logprobs).all()):  # a NaN score would rank silently (every comparison false)
            raise ValueError("The log-probabilities of the continuations are not finite: the state or the model's "
                             "weights hold NaN or infinite values.")
        results = []
        for row, target in enumerate(continuations):
            if not target:
                results.append((0.0, True))
                continue
            wanted = torch.tensor(list(target), device=logprobs.device)
            picked = logprobs[row, torch.arange(len(target)), wanted]
            greedy = bool((logprobs[row, :len(target)].argmax(-1) == wanted).all())
            results.append((float(picked.sum()), greedy))
        return results

    # -- one row --------------------------------------------------------------------------------------------

    def _matched_videos(self, input_ids, attention_mask, pixel_values_videos, video_frame_counts) -> list:
        """The videos, checked against the placeholders: each takes `num_frames * tokens_per_frame` of them."""
        videos = video_list(pixel_values_videos, video_frame_counts)
        per_frame = self.tokens_per_frame
        placeholders = input_ids == self.config.video_token_id
        if attention_mask is not None:
            placeholders &= attention_mask.bool()
        found, needed = int(placeholders.sum()), sum(frame_count(v) for v in videos) * per_frame
        if found != needed:
            raise ValueError(
                f"input_ids hold {found} video placeholders but the {len(videos)} video(s) give {needed} visual "
                f"tokens ({per_frame} per frame): the processor and the model disagree on frames or tokens per frame."
            )
        return videos

    def _feed_row(self, state: Rwkv6Cache, ids: torch.LongTensor, videos: Iterator, images: Iterator,
                  chunk_frames: int) -> None:
        """Feed one row's real ids [T] into its one-row `state`: text as ids, visuals a chunk of frames at a time."""
        video_id, image_id, per_frame = self.config.video_token_id, self.config.image_token_id, self.tokens_per_frame
        video_at = (ids == video_id).nonzero().flatten().tolist()
        image_at = (ids == image_id).nonzero().flatten().tolist()
        length, pos, v, i = ids.numel(), 0, 0, 0
        while pos < length:
            next_video = video_at[v] if v < len(video_at) else length
            next_visual = min(next_video, image_at[i] if i < len(image_at) else length)
            if next_visual > pos:  # text up to the next visual
                self.feed(state, ids[pos:next_visual].unsqueeze(0))
                pos = next_visual
            elif i < len(image_at) and image_at[i] == pos:
                pixels = next(images, None)
                if pixels is None:
                    raise ValueError("input_ids hold more image placeholder runs than images were given.")
                end = self._span_end(image_at, i, 1, "image")
                self._feed_visual_span(state, ids[pos:end], pixels)
                pos, i = end, i + per_frame
            else:
                prefetch = PREFETCH_CHUNKS.get(self.device.type, 0)
                with closing(frame_chunks(next(videos), chunk_frames, prefetch)) as chunks:
                    for pixels in chunks:
                        end = self._span_end(video_at, v, pixels.shape[0], "video")
                        if i < len(image_at) and image_at[i] < end:
                            raise ValueError("an image placeholder lies among a video's frames in input_ids.")
                        self._feed_visual_span(state, ids[pos:end], pixels)
                        pos, v = end, v + pixels.shape[0] * per_frame

    def _span_end(self, positions: list[int], first: int, frames: int, kind: str) -> int:
        """The end (exclusive) of the span of input_ids holding `frames` frames' runs from `positions[first]`."""
        last = first + frames * self.tokens_per_frame - 1
        if last >= len(positions):
            raise ValueError(f"input_ids hold fewer {kind} placeholders than the {kind}'s frames need.")
        return positions[last] + 1

    def _feed_visual_span(self, state: Rwkv6Cache, span_ids: torch.LongTensor, pixels: torch.FloatTensor) -> None:
        """Embed a span of ids [L] with the visual tokens of `pixels` [K, 3, S, S] written over its placeholders."""
        config = self.config
        placeholders = (span_ids == config.video_token_id) | (span_ids == config.image_token_id)
        features = self.model.get_image_features(pixels.to(self.device)).flatten(0, 1)  # [K * T_f, C]
        embeds = self.model.language_model.embed(span_ids.unsqueeze(0))[0]
        embeds = embeds.masked_scatter(placeholders.unsqueeze(-1), features.to(embeds.dtype))
        self.feed(state, inputs_embeds=embeds.unsqueeze(0))


__all__ = [
    "CHUNK_FRAMES", "PREFETCH_CHUNKS", "AuroraLongStreamingMixin", "default_chunk_frames", "frame_chunks",
    "frame_count", "prefetched", "resolve_chunk_frames", "video_list",
]
