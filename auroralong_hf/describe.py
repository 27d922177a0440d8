"""`auroralong describe [VIDEO] [-q QUESTION]`: answer a question about a video and say what it cost.

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

Without `--model` the model is an embedded untrained random one (`create_random`'s "small" size, seed 0, built in
memory: no download, no file), labelled as such: the pipeline and its costs are real, the answer is gibberish.
Without VIDEO the clip that ships with the package is used (auroralong_hf/data/sample.mp4, a bouncing ball made by
`synthetic_video.write_synthetic_video`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .outputs import check_writable

DEFAULT_QUESTION = "What happens in this video?"
DEFAULT_MAX_FRAMES = 7200
EMBEDDED_SIZE = "small"
EMBEDDED_SEED = 0
SAMPLE_CLIP = Path(__file__).resolve().parent / "data" / "sample.mp4"
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json")


# ------------------------------------------------------------------------------------------------------ the model


def check_config_folder(folder) -> Path:
    """`folder` (user-expanded) when it is a folder whose config.json is a JSON object; otherwise a clear error
    naming the folder or the file: FileNotFoundError (no such folder) or ValueError (a file, no config.json, a
    config.json that is not UTF-8 JSON or not an object). What the object holds is left to the config class."""
    folder = _existing_folder(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: not a model folder, it has no config.json (--model takes a save_pretrained "
                         "folder).")
    _read_config(folder)
    return folder


def _existing_folder(folder) -> Path:
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such model folder.")
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (--model takes a save_pretrained folder).")
    return folder


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not UTF-8 (UnicodeDecodeError), not JSON
        raise ValueError(f"{path}: unreadable: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: holds a JSON {type(config).__name__}, not a config object: not a model folder.")
    return config


def check_model_folder(folder) -> Path:
    """A clear error unless `folder` holds an AuroraLong model and its processor (config, weights, processor and
    tokenizer files)."""
    folder = _existing_folder(folder)
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("the weights (" + " or ".join(WEIGHT_FILES[::2]) + ")")
    missing += [name for name in PROCESSOR_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder}: incomplete model folder, missing {', '.join(missing)} (a complete one is written by "
            "model.save_pretrained + processor.save_pretrained, or `auroralong create-random`)."
        )
    model_type = _read_config(folder).get("model_type")
    if model_type != "auroralong":
        raise ValueError(f"{folder}: not an AuroraLong model folder (config.json has model_type {model_type!r}).")
    return folder


def load_model(model_dir=None, *, token_kept_ratio=None, dtype=None, device="cpu"):
    """(model, processor, label, untrained): from a folder, or the embedded untrained random model."""
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    if token_kept_ratio is not None and not 0 < token_kept_ratio <= 1:
        raise ValueError(f"--token-kept-ratio must be in (0, 1], got {token_kept_ratio}.")
    if model_dir is None:
        from .create_random import random_model

        model, processor = random_model(EMBEDDED_SIZE, seed=EMBEDDED_SEED, dtype=dtype or "float32",
                                        token_kept_ratio=token_kept_ratio)
        label = f"untrained random model ({EMBEDDED_SIZE}, seed {EMBEDDED_SEED}; its answers are gibberish)"
        return model.to(device), processor, label, True

    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from .create_random import quiet_transformers_bars

    folder = check_model_folder(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(folder))
        if token_kept_ratio is not None:
            config.vision_config.token_kept_ratio = float(token_kept_ratio)
            config.vision_config.tome_r = None  # an explicit ratio wins over a fixed per-layer count
            config.vision_config.validate()
        load_dtype = getattr(torch, dtype) if dtype else (torch.float32 if device == "cpu" else "auto")
        with quiet_transformers_bars():  # the frames get a progress bar, loading does not
            model = AutoModelForImageTextToText.from_pretrained(str(folder), config=config, dtype=load_dtype)
        processor = AutoProcessor.from_pretrained(str(folder))
    except StrictDataclassError as error:
        raise ValueError(f"{folder}: {error}") from None
    except (OSError, SafetensorError) as error:  # transformers' "no file named ...", unreadable or damaged files
        raise ValueError(f"{folder}: cannot load the model: {error}") from None
    if token_kept_ratio is not None:  # the override changes the tower's output; placeholders must follow it
        processor.tokens_per_frame = model.tokens_per_frame
    elif processor.tokens_per_frame != model.tokens_per_frame:
        raise ValueError(
            f"{folder}: the processor expects {processor.tokens_per_frame} tokens per frame but the vision tower "
            f"gives {model.tokens_per_frame}: the processor and the model do not belong together."
        )
    return model.to(device).eval(), processor, str(folder), False


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
    import torch
    from tqdm.auto import tqdm

    from .measure import PeakMemory
    from .modeling.modeling_rwkv6 import Rwkv6Cache
    from .modeling.streaming import DEFAULT_CHUNK_FRAMES

    chunk_frames = DEFAULT_CHUNK_FRAMES if chunk_frames is None else chunk_frames
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
            with tqdm(total=frames, unit="frame", desc="frames", file=sys.stderr, disable=not progress,
                      leave=False) as bar:
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


def add_arguments(parser) -> None:
    parser.add_argument("video", nargs="?", default=None,
                        help="a video file (anything PyAV decodes); absent: the short clip that ships with the package")
    parser.add_argument("-q", "--question", default=DEFAULT_QUESTION, help=f"default: {DEFAULT_QUESTION!r}")
    parser.add_argument("--model", help="an AuroraLong save_pretrained folder (model + processor); absent: an "
                                        "embedded untrained random model")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--fps", type=float, default=None, help="frames sampled per second (default: the "
                                                                "processor's, 1.0)")
    frames.add_argument("--num-frames", type=int, default=None, help="sample this many frames, spread evenly")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                        help=f"refuse a video that samples to more frames than this (default {DEFAULT_MAX_FRAMES}; "
                             "0: no cap)")
    parser.add_argument("--token-kept-ratio", type=float, default=None,
                        help="fraction of each frame's patches (576 at 384/16) kept by S-ToMe, in (0, 1] "
                             "(default: the model's)")
    parser.add_argument("--chunk-frames", type=int, default=None,
                        help="frames decoded and encoded at a time (default: generate's, "
                             "modeling/streaming.py DEFAULT_CHUNK_FRAMES)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (default 64)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample")
    parser.add_argument("--save-state", metavar="PATH", help="write the RNN state after the video (safetensors)")
    parser.add_argument("--state", metavar="PATH", help="answer from a state saved by --save-state, without a video")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: float32 on CPU, the folder's dtype on CUDA")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    report = describe(
        args.video, args.question, model_dir=args.model, fps=args.fps, num_frames=args.num_frames,
        token_kept_ratio=args.token_kept_ratio, chunk_frames=args.chunk_frames, max_new_tokens=args.max_new_tokens,
        max_frames=args.max_frames, sample=args.sample, seed=args.seed, state=args.state, save_state=args.save_state,
        dtype=args.dtype, device=args.device,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    source = f"state {report['state']}" if report["state"] else report["video"]
    print(report["answer"])
    print(f"-- {report['model']}")
    print(f"-- {source}: {report['frames']} frames x {report['tokens_per_frame']} tokens = "
          f"{report['visual_tokens']} visual tokens; state {report['state_bytes'] / 2**20:.2f} MiB; "
          f"{report['seconds']:.2f} s (+ {report['load_seconds']:.2f} s loading); peak memory "
          f"+{report['peak_memory_bytes'] / 2**20:.1f} MiB over the loaded model ({report['peak_memory_measure']}, "
          f"{report['device']})")
    return 0


__all__ = [
    "DEFAULT_QUESTION", "SAMPLE_CLIP", "check_config_folder", "check_model_folder", "describe",
]
