"""`auroralong describe [VIDEO] [-q QUESTION]`: answer a question about a video and say what it cost.

This module is the pipeline (`describe`); the command's options, defaults and printing are its face,
auroralong_hf/commands/describe.py.

It runs the transformers main path, which streams, so memory does not grow with the video's length:
`processor.apply_chat_template(messages, tokenize=True, ...)` plans the sampled frames (a demux pass, nothing
decoded) and hands the video over as a `LazyVideo`; `model.generate(**inputs)` feeds the prompt into the RNN state
with the video decoded and encoded `--chunk-frames` frames at a time (modeling/streaming.py), then answers, greedy
unless `--sample`, until the model's generation config stops it ("\\n\\n") or after `--max-new-tokens`.

`--save-state PATH` writes the state after the video (`Rwkv6Cache.save`): the prompt up to the video's last visual
token is prefilled (`model.prefill`), saved, and the rest of the prompt answered from it. `--state PATH` answers a
new question from such a file without the video: only the text after the video (with the new question) is fed.
The question of the run that saved the state stays in it; the sandwich repeats the question after the video, which
is what the answer follows. A state of another geometry (layers, width, heads) is refused.

Frames: the processor's sampling (1 fps unless the model folder's processor says otherwise), `--fps F` or
`--num-frames N` (N frames spread evenly). `--max-frames M` (default 7200, two hours at 1 fps; 0: no cap) is a
safety cap: a video whose sampling gives more than M frames is refused with an error before anything is decoded,
and so is `--num-frames N` with N > M; nothing is sampled down silently (lower `--fps`, or ask `--num-frames`).
A `max_frames` saved in a model folder's processor is that model's own sampling rule and still applies.

Cost, as reported: `frames` sampled, `tokens_per_frame` (the tower's S-ToMe schedule), `visual_tokens` (frames x
tokens per frame), `state_bytes` (the sum of the state's tensors), `seconds` (prompt + decoding + encoding +
generation, without loading the model; that is `load_seconds`) and `peak_memory_bytes`: the peak of the memory in
use during that pipeline above what was in use when it started (the loaded model, the Python runtime), i.e. the
working memory that streaming keeps constant, measured by
`auroralong_hf.measure.PeakMemory`, whose `kind` is `peak_memory_measure`: CUDA's max_memory_allocated
("cuda_max_allocated"), the process's peak resident set reset at the start ("rss_high_water_mark", Linux), or
ru_maxrss after minus before ("ru_maxrss_delta", elsewhere; it can read low, even 0).

`--model` is loaded by `auroralong_hf.loading.load_pretrained` (its checks and errors). Without it the model is an
embedded untrained random one (`create_random`'s "small" size, seed 0, built in memory: no download, no file),
labelled as such: the pipeline and its costs are real, the answer is gibberish.
Without VIDEO the clip that ships with the package is used (auroralong_hf/data/sample.mp4, a bouncing ball made by
`synthetic_video.write_synthetic_video`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .commands.describe import DEFAULT_MAX_FRAMES, DEFAULT_QUESTION
from .create_random import random_model
from .loading import load_pretrained
from .measure import PeakMemory
from .modeling.cache_rwkv6 import Rwkv6Cache
from .modeling.streaming import resolve_chunk_frames
from .outputs import check_writable

EMBEDDED_SIZE = "small"
EMBEDDED_SEED = 0
SAMPLE_CLIP = Path(__file__).resolve().parent / "data" / "sample.mp4"


# ------------------------------------------------------------------------------------------------------ the model


def load_model(model_dir=None, *, token_kept_ratio=None, dtype=None, device="cpu"):
    """(model, processor, label, untrained): `loading.load_pretrained(model_dir, ...)` (its errors), or without a
    folder the embedded untrained random model (`create_random`'s EMBEDDED_SIZE, seed EMBEDDED_SEED, built in
    memory), labelled as such."""
    if model_dir is not None:
        model, processor = load_pretrained(model_dir, token_kept_ratio=token_kept_ratio, dtype=dtype, device=device)
        return model, processor, str(Path(model_dir).expanduser()), False
    model, processor = random_model(EMBEDDED_SIZE, seed=EMBEDDED_SEED, dtype=dtype or "float32",
                                    token_kept_ratio=token_kept_ratio)
    label = f"untrained random model ({EMBEDDED_SIZE}, seed {EMBEDDED_SEED}; its answers are gibberish)"
    return model.to(device), processor, label, True


# ------------------------------------------------------------------------------------------------------ describe


class _ProgressVideo:
    """A lazy video that advances a progress bar as the model reads its chunks, and names how far decoding got
    when it fails part-way."""

    def __init__(self, video, bar):
        self.video, self.bar, self.num_frames = video, bar, video.num_frames

    def chunks(self, chunk_frames: int):
        done = 0
        iterator = self.video.chunks(chunk_frames)
        while True:
            try:
                pixels = next(iterator)
            except StopIteration:
                return
            except ValueError as error:
                raise ValueError(f"decoding stopped after {done} of {self.num_frames} sampled frames, no answer was "
                                 f"generated: {error}") from error
            yield pixels
            done += pixels.shape[0]
            self.bar.update(pixels.shape[0])


@contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) inside the block raises KeyboardInterrupt when the block ends, not in its middle (main
    thread only: elsewhere Python delivers no signal, and the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _write_state(state, path) -> None:
    """`state.save` (atomic; an existing file that is not a state is refused, never replaced), parents made."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state.save(path)


def describe(
    video=None,
    question: str = DEFAULT_QUESTION,
    *,
    model_dir=None,
    fps: float | None = None,
    num_frames: int | None = None,
    token_kept_ratio: float | None = None,
    chunk_frames: int | None = None,
    max_new_tokens: int = 64,
    max_frames: int = DEFAULT_MAX_FRAMES,
    sample: bool = False,
    seed: int = 0,
    state: str | os.PathLike | None = None,
    save_state: str | os.PathLike | None = None,
    dtype: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Answer `question` about `video` (default: the shipped sample clip) by streaming it into the RNN state, or
    from a saved `state`; returns the answer and its cost (see the module docstring)."""
    if state is not None and video is not None:
        raise ValueError("Give a VIDEO or --state, not both (--state answers from a video already read).")
    if state is not None and save_state is not None:
        raise ValueError("--save-state writes the state after a video; with --state there is no new video.")
    if fps is not None and num_frames is not None:
        raise ValueError("Give --fps or --num-frames, not both.")
    if num_frames is not None and num_frames <= 0:
        raise ValueError(f"--num-frames must be > 0, got {num_frames}.")
    if max_frames < 0:
        raise ValueError(f"--max-frames must be >= 0 (0: no cap), got {max_frames}.")
    if max_frames and num_frames is not None and num_frames > max_frames:
        raise ValueError(f"--num-frames {num_frames} is more than the cap --max-frames {max_frames}.")
    if chunk_frames is not None and chunk_frames <= 0:
        raise ValueError(f"--chunk-frames must be > 0, got {chunk_frames}.")
    if max_new_tokens <= 0:
        raise ValueError(f"--max-new-tokens must be > 0, got {max_new_tokens}.")
    if not question or not question.strip():
        raise ValueError("The question is empty.")
    if save_state is not None:  # before the model is loaded and the video read, not after
        save_state = check_writable(save_state, what="--save-state", folder=False)
        if save_state.exists() and not Rwkv6Cache.is_state_file(save_state):
            raise FileExistsError(f"--save-state {save_state}: the file exists and is not a state written by "
                                  "--save-state; it is left as it is (choose another path).")
    if state is None:
        video = str(SAMPLE_CLIP if video is None else video)
        if not Path(video).expanduser().exists():
            raise FileNotFoundError(f"{video}: no such video file.")
    else:
        saved = Rwkv6Cache.load(state)  # a missing, damaged or foreign file is named before the model is loaded
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    start = time.perf_counter()
    model, processor, label, untrained = load_model(model_dir, token_kept_ratio=token_kept_ratio, dtype=dtype,
                                                    device=device)
    load_seconds = time.perf_counter() - start
    chunk_frames = resolve_chunk_frames(chunk_frames, model.device)
    per_frame = model.tokens_per_frame
    if progress is None:
        progress = sys.stderr.isatty()
    # --fps also clears a num_frames the folder's processor may set (it would win over fps); neither: the processor's
    sampling = {"num_frames": num_frames} if num_frames is not None else {}
    if fps is not None:
        sampling = {"fps": fps, "num_frames": None}

    memory = PeakMemory(device)
    start = time.perf_counter()
    options = {"max_new_tokens": max_new_tokens, "do_sample": sample, "chunk_frames": chunk_frames}
    if sample:
        torch.manual_seed(seed)
    with torch.inference_mode():
        if state is not None:
            try:
                saved.check_compatible(model.config.text_config, saved.batch_size)
            except ValueError as error:
                raise ValueError(f"{state}: {error}") from None
            rnn = saved
            rnn.attn_shift[:] = [t.to(model.device, model.dtype) for t in rnn.attn_shift]
            rnn.ffn_shift[:] = [t.to(model.device, model.dtype) for t in rnn.ffn_shift]
            rnn.wkv[:] = [t.to(model.device) for t in rnn.wkv]  # float32, as saved
            frames, state_bytes = 0, rnn.nbytes
            _, after_video = processor.video_prompt_pieces(question)
            inputs = processor(text=after_video).to(model.device)
            output = model.generate(**inputs, cache=rnn, **options)
        else:
            messages = [{"role": "user", "content": [{"type": "video", "video": video},
                                                     {"type": "text", "text": question}]}]
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, processor_kwargs=sampling).to(model.device)
            frames = int(inputs["video_frame_counts"][0])
            if max_frames and frames > max_frames:
                raise ValueError(
                    f"{video}: sampling gives {frames} frames, more than the cap --max-frames {max_frames}; lower "
                    "--fps, ask for --num-frames, or raise the cap (0: none)."
                )
            with interrupts_deferred():  # a Ctrl-C inside tqdm's constructor leaves a half-built bar, whose
                bar = tqdm(total=frames, unit="frame", desc="frames", file=sys.stderr, disable=not progress,
                           leave=False)  # __del__ then prints a traceback
            with bar:
                inputs["pixel_values_videos"] = [_ProgressVideo(inputs["pixel_values_videos"][0], bar)]
                if save_state is not None:
                    # the state after the video's last visual token is what a later --state run starts from
                    ids = inputs["input_ids"]
                    end = int((ids[0] == processor.video_token_id).nonzero().max()) + 1
                    rnn = model.prefill(ids[:, :end], pixel_values_videos=inputs["pixel_values_videos"],
                                        chunk_frames=chunk_frames)
                    _write_state(rnn, save_state)
                    output = model.generate(ids, cache=rnn, **options)
                else:
                    output = model.generate(**inputs, **options)
            state_bytes = model.new_state(1).nbytes
        prompt_length = inputs["input_ids"].shape[1]
    new_tokens = output[0, prompt_length:].tolist()
    seconds = time.perf_counter() - start
    peak = memory.growth_bytes()
    answer = processor.post_process_image_text_to_text([new_tokens])[0].strip()
    return {
        "answer": answer,
        "question": question,
        "video": None if state is not None else video,
        "state": None if state is None else str(state),
        "model": label,
        "untrained": untrained,
        "frames": frames,
        "tokens_per_frame": per_frame,
        "visual_tokens": frames * per_frame,
        "new_tokens": len(new_tokens),
        "state_bytes": state_bytes,
        "seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "peak_memory_bytes": peak,
        "peak_memory_measure": memory.kind,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "chunk_frames": chunk_frames,
    }


__all__ = ["SAMPLE_CLIP", "describe", "load_model"]
