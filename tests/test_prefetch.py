"""Decoding a lazy video ahead of the model (`prefetched`, `frame_chunks`) and the device's default chunk size."""

import threading

import numpy as np
import pytest
import torch
from tiny_models import decisive_auroralong

from auroralong_hf.modeling import streaming
from auroralong_hf.modeling.streaming import (
    CHUNK_FRAMES,
    default_chunk_frames,
    frame_chunks,
    prefetched,
    resolve_chunk_frames,
)


class CountingVideo:
    """A lazy video of `num_frames` frames whose chunks record which thread made them and when they were closed."""

    def __init__(self, num_frames: int, fail_at: int | None = None):
        self.num_frames, self.fail_at = num_frames, fail_at
        self.made, self.threads, self.closed = 0, set(), threading.Event()

    def chunks(self, chunk_frames: int):
        try:
            for start in range(0, self.num_frames, chunk_frames):
                if start == self.fail_at:
                    raise ValueError(f"damaged packet at frame {start}")
                self.threads.add(threading.current_thread().name)
                self.made += 1
                count = min(chunk_frames, self.num_frames - start)
                yield torch.arange(start, start + count, dtype=torch.float32).view(count, 1, 1, 1).expand(-1, 3, 2, 2)
        finally:
            self.closed.set()


def test_prefetched_chunks_are_the_chunks_in_order_from_another_thread():
    video = CountingVideo(10)
    plain = list(frame_chunks(video, 3, prefetch=0))
    ahead = list(frame_chunks(video, 3, prefetch=1))
    assert [c.shape[0] for c in ahead] == [3, 3, 3, 1]
    assert all(torch.equal(a, b) for a, b in zip(ahead, plain, strict=True))
    assert video.threads == {threading.main_thread().name, "auroralong-prefetch"}


def test_prefetched_raises_the_sources_error_after_the_items_before_it():
    video = CountingVideo(10, fail_at=6)
    got = []
    with pytest.raises(ValueError, match="damaged packet at frame 6"):
        for chunk in frame_chunks(video, 3, prefetch=1):
            got.append(chunk)
    assert [int(c[0, 0, 0, 0]) for c in got] == [0, 3]  # the two chunks before the damage, then the error
    assert video.closed.is_set()


def test_closing_early_stops_the_decoding_thread_and_closes_the_source():
    """A consumer that fails (the model raising on chunk 1) stops the decoding: the source is closed and at most
    `depth` + 1 chunks past the last one consumed were made; no thread is left behind."""
    video = CountingVideo(1000)
    chunks = frame_chunks(video, 1, prefetch=1)
    next(chunks)
    chunks.close()
    assert video.closed.is_set()
    assert video.made <= 3
    assert not any(t.name == "auroralong-prefetch" for t in threading.enumerate())


def test_prefetched_makes_the_next_item_while_the_consumer_holds_this_one():
    """The overlap itself, without timing: while the consumer still holds item 0, the producer starts item 1."""
    started = [threading.Event() for _ in range(3)]

    def items():
        for i in range(3):
            started[i].set()
            yield i

    iterator = prefetched(items(), depth=1)
    assert next(iterator) == 0
    assert started[1].wait(timeout=30)  # not asked for yet: made ahead
    assert list(iterator) == [1, 2]


def test_streaming_on_cuda_would_prefetch(monkeypatch, tmp_path):
    """prefill asks frame_chunks for the device's PREFETCH_CHUNKS (CPU: none; CUDA: one chunk ahead); forced
    here for the CPU, the streamed state is the same as without."""
    model = decisive_auroralong({"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                                 "num_attention_heads": 2, "token_kept_ratio": 0.25, "image_size": 32,
                                 "patch_size": 16}, {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32})
    per_frame = model.tokens_per_frame
    video = CountingVideo(5)
    frames = torch.rand(5, 3, 32, 32) * 2 - 1

    class Lazy:
        num_frames = 5

        def chunks(self, chunk_frames):
            for chunk in video.chunks(chunk_frames):
                yield frames[int(chunk[0, 0, 0, 0]):int(chunk[-1, 0, 0, 0]) + 1]

    ids = torch.tensor([[11] + [model.config.video_token_id] * (5 * per_frame) + [12]])
    plain = model.prefill(ids, pixel_values_videos=[frames], chunk_frames=2)
    monkeypatch.setitem(streaming.PREFETCH_CHUNKS, "cpu", 1)
    ahead = model.prefill(ids, pixel_values_videos=[Lazy()], chunk_frames=2)
    assert "auroralong-prefetch" in video.threads
    assert all(torch.equal(a, b) for a, b in zip(plain.wkv + plain.attn_shift, ahead.wkv + ahead.attn_shift,
                                                 strict=True))


def test_chunk_frames_default_by_device_and_checked():
    assert default_chunk_frames("cpu") == CHUNK_FRAMES["cpu"] == 8
    assert default_chunk_frames(torch.device("cuda", 1)) == CHUNK_FRAMES["cuda"] == 64
    assert default_chunk_frames("meta") == CHUNK_FRAMES["cpu"]
    assert resolve_chunk_frames(None, "cuda") == 64 and resolve_chunk_frames(5, "cuda") == 5
    assert type(resolve_chunk_frames(np.int64(4), "cpu")) is int
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="chunk_frames must be an int > 0"):
            resolve_chunk_frames(bad, "cpu")
