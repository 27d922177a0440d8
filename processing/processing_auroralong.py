"""AuroraLong's processor: videos and images + text in, model inputs out.

Videos are decoded with PyAV (processing/video_io.py: display rotation, each frame's own colour matrix and range,
damaged packets), images read upright by their EXIF orientation (processing/image_io.py); frames are sampled by fps
or frame count, preprocessed like SigLIP
(384x384, rescale, mean = std = 0.5) by a Pillow image processor, so neither torchvision nor torchcodec is needed.
Frames and images larger than `DECODE_MAX_PIXELS` (4K) are scaled down while they are decoded; with
`stream_videos=False`, a video tensor larger than `MAX_VIDEO_TENSOR_BYTES` is refused before decoding (streamed
videos, the default, are read chunk by chunk in constant memory: their length costs time, not memory, and the
caller caps it, as `auroralong describe --max-frames` does). Both limits are module attributes, like Pillow's
`Image.MAX_IMAGE_PIXELS`.
Text follows the "sandwich" prompt of the paper (the instruction, the visual tokens, the instruction again); each
`<video>` / `<image>` placeholder is expanded to one run of `tokens_per_frame` placeholder tokens per frame, the count
the vision tower's S-ToMe schedule yields.

Each step is a public method, for callers that build inputs themselves (the training collator, `tome-viz`):
decoding (`load_video`, `load_image`, `sample_frames`), preprocessing (`resize_frames`, `normalize_frames`,
`preprocess_frames`), placeholder expansion (`encode_text`) and batching (`pad_input_ids`, `pad_videos`).
"""

import math
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchEncoding, BatchFeature, ProcessorMixin

from .image_io import load_image
from .video_io import VideoFrames, VideoPlan, frames_from_array, load_video, plan_video, sample_frame_indices

LITERAL_MARK = "\u2063"  # INVISIBLE SEPARATOR: marks a placeholder tag that a user typed as text

# User turn: "User: " + instruction + "\n" + visual tokens + "\n" + instruction + "\n\n" (VisualRWKV's sandwich);
# a turn without visuals is "User: " + text + "\n\n"; answers are "Assistant: " + text + "\n\n", "\n\n" being the
# stop string, so a "\n\n" inside a turn collapses to "\n".
SANDWICH_CHAT_TEMPLATE = (
    r"{%- for message in messages -%}"
    r"{%- if message.content is string -%}"
    r"{%- set text = message.content -%}{%- set visuals = '' -%}"
    r"{%- else -%}"
    r"{%- set text = message.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\n') -%}"
    r"{%- set found = namespace(tokens='') -%}"
    r"{%- for block in message.content -%}"
    r"{%- if block.type == 'video' -%}{%- set found.tokens = found.tokens + '<video>' -%}"
    r"{%- elif block.type == 'image' -%}{%- set found.tokens = found.tokens + '<image>' -%}{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- set visuals = found.tokens -%}"
    r"{%- endif -%}"
    r"{%- set text = text.replace('\r\n', '\n').split('\n') | reject('equalto', '') | join('\n') -%}"
    r"{%- set text = text.strip() -%}"
    # a literal <video> / <image> typed in a message is text, not a placeholder: marked so the processor tells them
    # apart (it restores the text and encodes it as plain bytes)
    r"{%- set text = text.replace('<video>', '<" + LITERAL_MARK + r"video>')"
    r".replace('<image>', '<" + LITERAL_MARK + r"image>') -%}"
    r"{%- if message.role == 'user' -%}"
    r"{{ 'User: ' + text + '\n' }}{%- if visuals -%}{{ visuals + '\n' + text + '\n' }}{%- endif -%}{{ '\n' }}"
    r"{%- elif message.role == 'assistant' -%}"
    r"{{ 'Assistant: ' + text + '\n\n' }}"
    r"{%- elif message.role == 'system' -%}"
    r"{{ 'System: ' + text + '\n\n' }}"
    r"{%- endif -%}"
    r"{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

STOP_STRING = "\n\n"
_PLACEHOLDER = re.compile(r"<(video|image)>")
_LITERAL_TAG = re.compile("<" + LITERAL_MARK + r"(video|image)>")
# Per-call video arguments: the sampling rule (processing/video_io.py) and whether videos are streamed
SAMPLING_ARGUMENTS = ("fps", "num_frames", "max_frames", "start", "end", "include_last_frame", "strict")
# Tokenizer arguments a transformers caller (apply_chat_template, pipelines) may pass along; World adds no special
# tokens, so add_special_tokens has nothing to do
_TOKENIZER_ARGUMENTS = ("padding_side", "return_attention_mask", "add_special_tokens")
# The arguments of the frame choice alone (video_io's sample_frame_indices), without decoding's backend and strictness
_FRAME_CHOICE = ("fps", "num_frames", "max_frames", "start", "end", "include_last_frame")
_MARK = "\x00"
# Pixels: frames and images larger than this (4K UHD) are scaled down while they are decoded (video_io's max_pixels,
# image_io's), to at most this many pixels, before the SigLIP resize; up to 4K nothing changes (the SigLIP resize
# sees the full frame), and a larger frame costs no more memory than a 4K one. None: always the full frame.
DECODE_MAX_PIXELS: int | None = 3840 * 2160
# Bytes: the largest [V, F_max, 3, S, S] float32 video tensor that `stream_videos=False` builds (4 GiB: 2,427 frames
# of 384 x 384); a larger one is refused before any frame is decoded, naming the way out.
MAX_VIDEO_TENSOR_BYTES: int | None = 4 * 2**30


def _bytes(count: int) -> str:
    """1966080 -> "1,966,080 bytes (1.9 MiB)"."""
    unit = "GiB" if count >= 2**30 else "MiB"
    return f"{count:,} bytes ({count / 2**(30 if unit == 'GiB' else 20):.1f} {unit})"


def remove_placeholders(text: str) -> str:
    """`text` without its `<video>` / `<image>` tags, for prompts whose visuals travel as content blocks.

    The sandwich template places the visuals itself, so a tag's position in the text carries nothing; on a line
    with a tag, the pieces around it join with one space ("<image>\\nWhat is shown?" -> "\\nWhat is shown?").
    """
    lines = []
    for line in _PLACEHOLDER.sub(_MARK, text).split("\n"):
        if _MARK in line:
            line = " ".join(piece.strip() for piece in line.split(_MARK) if piece.strip())
        lines.append(line)
    return "\n".join(lines)


def placeholder_kinds(text: str) -> list[str]:
    """The kinds of the `<video>` / `<image>` tags in `text`, in order ("video" / "image")."""
    return _PLACEHOLDER.findall(text)


class LazyVideo:
    """One video that the model reads chunk by chunk: its sampled frames are planned (counted and timed) when it
    is made, and decoded and preprocessed only while `chunks` is iterated.

    The model's streaming prefill takes any object with `num_frames` and `chunks(chunk_frames)`; this is the one
    the processor makes (`pixel_values_videos` when videos are streamed). `chunks` can be iterated again (another
    decoding pass), so one `LazyVideo` serves beams, retries and repeated questions.
    """

    def __init__(self, plan: VideoPlan, preprocess: Callable[[np.ndarray], torch.Tensor]):
        self.plan = plan
        self._preprocess = preprocess

    @property
    def num_frames(self) -> int:
        """The number of frames `chunks` delivers."""
        return len(self.plan)

    @property
    def timestamps(self) -> list[float]:
        """The planned frames' times, seconds from the video's first frame."""
        return list(self.plan.timestamps)

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"LazyVideo({self.plan.label!r}, frames={self.num_frames})"

    def chunks(self, chunk_frames: int = 8) -> Iterator[torch.Tensor]:
        """Pixel values [K, 3, S, S] float32 of `chunk_frames` frames at a time (the last chunk may be shorter).

        Raises ValueError (naming the file) when decoding fails part-way or delivers another number of frames than
        planned."""
        delivered = 0
        for chunk in self.plan.chunks(chunk_frames):
            delivered += len(chunk)
            yield self._preprocess(chunk.frames)
        if delivered != self.num_frames:
            raise ValueError(f"{self.plan.label}: decoding gave {delivered} frames, {self.num_frames} were planned")


def _is_frame(item) -> bool:
    return isinstance(item, Image.Image) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3))


def _flatten_visuals(visuals, is_video: bool) -> list:
    """One visual, a list, or one list per prompt (apply_chat_template's nesting) -> a flat list. A list of frames
    (PIL images, [H, W, C] arrays) is ONE video; for images a 4-D array is a batch of images."""
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        if is_video and visuals and all(_is_frame(item) for item in visuals):
            return [visuals]
        flat = []
        for item in visuals:
            if isinstance(item, (list, tuple)):
                flat += _flatten_visuals(item, is_video)
            else:
                flat.append(item)
        return flat
    if not is_video and isinstance(visuals, (np.ndarray, torch.Tensor)) and visuals.ndim == 4:
        return list(visuals)
    return [visuals]


class AuroraLongProcessor(ProcessorMixin):
    """World tokenizer + SigLIP (Pillow) image processor + video decoding and sampling.

    Args:
        image_processor: A SigLIP image processor (`SiglipImageProcessorPil`: 384x384 bicubic, mean = std = 0.5).
        tokenizer: `RwkvWorldTokenizer` (it knows `<image>` and `<video>`).
        chat_template: Jinja template; default the sandwich prompt.
        tokens_per_frame: Visual tokens the vision tower yields per frame (its S-ToMe schedule's count; for a tower
            config, `auroralong_hf.tokens_per_frame(vision_config)`, or build the whole processor with
            `auroralong_hf.processor_for_vision_config`). A plain number so that the processor needs no modeling
            code: saved in processor_config.json, it loads with trust_remote_code=True without this package.
        fps: Frames sampled per second of video (the paper's 1.0 for short videos).
        num_frames: Sample this many frames evenly instead (e.g. 48 for MLVU and MVBench); wins over fps.
        max_frames: Cap on the frames sampled from one video.
        include_last_frame: Always sample the last frame of the window.
        frame_separator: Text put between the placeholder runs of consecutive frames (None: nothing).
        pad_to_square: Pad frames to a square (with the normalisation mean, i.e. grey) before resizing, keeping the
            aspect ratio, instead of squashing them to the square input size.
        video_backend: "pyav" (default) or "decord" (when installed).
        stream_videos: Hand videos to the model as `LazyVideo`s it decodes chunk by chunk (constant memory) rather
            than as one tensor of every frame (see `__call__`).
        strict_decoding: Fail on a damaged packet or frame instead of replacing lost sampled frames with the
            nearest good ones (video_io's `strict`).
        vision_config: Read only to refuse, with a way out, a processor_config.json written by an older version
            (a tower config instead of `tokens_per_frame`); never stored or saved.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        tokens_per_frame: int | None = None,
        fps: float = 1.0,
        num_frames: int | None = None,
        max_frames: int | None = None,
        include_last_frame: bool = False,
        frame_separator: str | None = None,
        pad_to_square: bool = False,
        video_backend: str = "pyav",
        strict_decoding: bool = False,
        stream_videos: bool = True,
        vision_config: dict | None = None,
        **kwargs,
    ):
        if tokens_per_frame is None:
            if vision_config is not None:
                # A processor_config.json written before the processor held plain numbers: it names the tower's
                # config, and counting its tokens needs the modeling code, which a processor must not import.
                raise ValueError(
                    "This processor config has 'vision_config' but no 'tokens_per_frame' (auroralong-hf wrote it "
                    "before processors stood alone). Add \"tokens_per_frame\": N to its processor_config.json, N "
                    "being `auroralong_hf.tokens_per_frame(AutoConfig.from_pretrained(folder).vision_config)`, or "
                    "save it again with `auroralong_hf.processor_for_vision_config(config.vision_config)`."
                )
            raise ValueError(
                "AuroraLongProcessor needs tokens_per_frame (the vision tower's visual tokens per frame: "
                "auroralong_hf.tokens_per_frame(vision_config)); auroralong_hf.processor_for_vision_config builds a "
                "processor for a tower."
            )
        if isinstance(tokens_per_frame, bool) or not isinstance(tokens_per_frame, int) or tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be a positive int, got {tokens_per_frame!r}.")
        self.tokens_per_frame = tokens_per_frame
        self.fps = fps
        self.num_frames = num_frames
        self.max_frames = max_frames
        self.include_last_frame = include_last_frame
        self.frame_separator = frame_separator
        self.pad_to_square = pad_to_square
        self.video_backend = video_backend
        self.strict_decoding = strict_decoding
        self.stream_videos = stream_videos
        super().__init__(image_processor, tokenizer, chat_template=chat_template or SANDWICH_CHAT_TEMPLATE)

        self.image_token, self.video_token = "<image>", "<video>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.stop_strings = [STOP_STRING]

    def __call__(
        self,
        text: str | list[str] | None = None,
        images=None,
        videos=None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        stream_videos: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Token ids with expanded placeholders, and every video and image ready for the model.

        text: one prompt or a batch; each `<video>` / `<image>` in it takes the next video / image, in order (a tag
            that `apply_chat_template` marked as typed text stays text).
        videos: one video, a list of them, or one list per prompt (as `apply_chat_template` passes them); a video is
            a path, an open binary file, a list of PIL images / arrays, or an [F, H, W, C] / [F, C, H, W] uint8
            array or tensor. images: likewise (PIL, path, [H, W, C] array; a 4-D array is a batch of images).
        stream_videos: True (default: the processor's `stream_videos`): each video is planned here (a demux pass
            counts its sampled frames; nothing is decoded) and `pixel_values_videos` is a list of `LazyVideo` that
            the model decodes chunk by chunk as it reads them, so memory does not grow with the video's length.
            False: every sampled frame is decoded here into one [V, F_max, 3, S, S] tensor (training, `forward`);
            a tensor larger than MAX_VIDEO_TENSOR_BYTES (4 GiB) is refused, before decoding, with a ValueError
            naming the video, its frame count and the bytes.
        kwargs: video sampling for this call (fps, num_frames, max_frames, start, end, include_last_frame, strict;
            `do_sample_frames=False` takes every frame) and padding_side / return_attention_mask for the tokenizer.
            Anything else raises TypeError: no argument is dropped silently.

        Returns input_ids / attention_mask [B, L] (left padded), `pixel_values_videos` (V `LazyVideo`, or the
        [V, F_max, 3, S, S] tensor with zero frames after each video's end) with `video_frame_counts` [V], and
        `pixel_values` [I, 3, S, S].
        """
        if text is None:
            raise ValueError("AuroraLongProcessor needs text (with one <video>/<image> placeholder per visual).")
        sampling, tokenizer_kwargs = self._call_arguments(kwargs)
        stream = self.stream_videos if stream_videos is None else bool(stream_videos)
        texts = [text] if isinstance(text, str) else list(text)
        video_list = _flatten_visuals(videos, is_video=True)
        image_list = _flatten_visuals(images, is_video=False)
        for kind, given in (("video", video_list), ("image", image_list)):
            found = sum(placeholder_kinds(t).count(kind) for t in texts)
            if found != len(given):
                raise ValueError(
                    f"The text has {found} <{kind}> placeholder(s) but {len(given)} {kind}s were given (a chat "
                    f"block {{'type': '{kind}'}} needs a '{kind}', 'path' or 'url' key; a <{kind}> typed in a "
                    "message's text stays text with apply_chat_template)."
                )

        data = {}
        frame_counts = []
        if video_list:
            lazy = [self.plan_video(video, **sampling) for video in video_list]
            frame_counts = [int(video.num_frames) for video in lazy]
            data["pixel_values_videos"] = lazy if stream else self._video_tensor(lazy, frame_counts)
            data["video_frame_counts"] = torch.tensor(frame_counts)
        if image_list:
            data["pixel_values"] = torch.cat([self.preprocess_frames(self.load_image(image)) for image in image_list])

        counts = iter(frame_counts)
        ids = [self.encode_text(t, [next(counts) for _ in range(placeholder_kinds(t).count("video"))]) for t in texts]
        encoding = self.pad_input_ids(ids, padding=padding, **tokenizer_kwargs)
        return BatchFeature(data={**encoding, **data}, tensor_type=return_tensors,
                            skip_tensor_conversion=["pixel_values_videos"] if stream else None)

    # -- decoding: videos and images into frames, with this processor's sampling and pixel limits -----------------

    def plan_video(self, video, **sampling) -> "LazyVideo":
        """One video with this processor's sampling (overridable per call), planned but not decoded. A lazy video
        already (a `LazyVideo`, or any object with `num_frames` and `chunks(chunk_frames)` yielding preprocessed
        [K, 3, S, S] pixel values) is taken as it is."""
        if hasattr(video, "num_frames") and hasattr(video, "chunks"):
            return video
        return LazyVideo(plan_video(video, **self._sampling(sampling)), self.preprocess_frames)

    def load_video(self, video, **sampling) -> VideoFrames:
        """Decode and sample one video with this processor's settings (overridable per call); frames larger than
        `DECODE_MAX_PIXELS` come out scaled down (see there)."""
        return load_video(video, **self._sampling(sampling))

    @staticmethod
    def load_image(image) -> np.ndarray:
        """One image -> [1, H, W, 3] uint8, as `__call__` reads its images: a PIL image, path or open binary file
        upright by its EXIF orientation (one read from a file larger than `DECODE_MAX_PIXELS` scaled down while it is
        decoded), or an [H, W, C] / [C, H, W] uint8 array or tensor.

        Raises FileNotFoundError for a missing path and ValueError naming the file for one Pillow cannot read."""
        if isinstance(image, (np.ndarray, torch.Tensor)):
            return frames_from_array(image[None]).frames
        return frames_from_array([load_image(image, max_pixels=DECODE_MAX_PIXELS)]).frames

    def sample_frames(self, timestamps: Sequence[float], **sampling) -> list[int]:
        """The indices of the frames that this processor's sampling picks from frames shown at `timestamps`
        (seconds, display order): video_io's `sample_frame_indices` with this processor's fps, num_frames,
        max_frames and include_last_frame, each overridable per call (and start / end). Frames without times, such
        as image files forming one video, pass their positions and fps=None (num_frames, max_frames and
        include_last_frame still apply)."""
        unknown = set(sampling) - set(_FRAME_CHOICE)
        if unknown:
            raise TypeError(f"Unknown frame sampling argument(s): {sorted(unknown)}; sample_frames takes "
                            f"{', '.join(_FRAME_CHOICE)}.")
        settings = self._sampling(sampling)
        return sample_frame_indices(timestamps, **{key: settings[key] for key in _FRAME_CHOICE if key in settings})

    # -- preprocessing: frames into pixel values ----------------------------------------------------------------

    def resize_frames(self, frames) -> np.ndarray:
        """[F, H, W, 3] uint8 frames (an array, or a sequence of [H, W, 3] arrays) -> [F, S, S, 3] uint8: the
        pictures the vision tower sees, before rescaling: padded to a square first with `pad_to_square`, then
        resized by the image processor (SigLIP: bicubic to S x S)."""
        images = [Image.fromarray(frame) for frame in frames]
        if self.pad_to_square:
            images = [self._pad_to_square(image) for image in images]
        resized = self.image_processor(images, do_rescale=False, do_normalize=False)["pixel_values"]
        return np.stack([np.moveaxis(image, 0, -1) for image in resized])

    def normalize_frames(self, resized: np.ndarray) -> torch.Tensor:
        """[F, S, S, 3] uint8 from `resize_frames` -> pixel values [F, 3, S, S] float32: the image processor's
        rescale to [0, 1] and normalisation (SigLIP: mean = std = 0.5, so [-1, 1])."""
        pixels = self.image_processor(resized, do_resize=False, input_data_format="channels_last", return_tensors="pt")
        return pixels["pixel_values"]

    def preprocess_frames(self, frames) -> torch.Tensor:
        """[F, H, W, 3] uint8 -> [F, 3, S, S] float32: `resize_frames` (optional pad to square, resize), then
        `normalize_frames` (rescale, normalise)."""
        return self.normalize_frames(self.resize_frames(frames))

    # -- text: placeholders expanded into token ids ----------------------------------------------------------------

    def encode_text(self, text: str, video_frame_counts: Sequence[int] = ()) -> list[int]:
        """One prompt -> token ids, each placeholder expanded to the ids the model fills with visual features: a
        `<video>` to `video_placeholder_ids` of its frame count (`video_frame_counts` holds one per `<video>`, in
        order), an `<image>` to one run of `tokens_per_frame` image token ids. The text around them goes through the
        tokenizer; a tag that `apply_chat_template` marked as typed text is encoded as the plain bytes of the tag.

        Raises ValueError when `video_frame_counts` does not hold one count per `<video>` of the text."""
        videos = placeholder_kinds(text).count("video")
        if len(video_frame_counts) != videos:
            raise ValueError(f"The text has {videos} <video> placeholder(s) but {len(video_frame_counts)} video frame "
                             "count(s) were given.")
        counts = iter(video_frame_counts)
        ids = []
        for position, piece in enumerate(_PLACEHOLDER.split(text)):  # text, kind, text, kind, ..., text
            if position % 2:
                if piece == "video":
                    ids += self.video_placeholder_ids(next(counts))
                else:
                    ids += [self.image_token_id] * self.tokens_per_frame
                continue
            for inner, part in enumerate(_LITERAL_TAG.split(piece)):
                if inner % 2:
                    ids += self.tokenizer.encode_bytes(f"<{part}>".encode())
                elif part:
                    ids += self.tokenizer.encode(part, add_special_tokens=False)
        return ids

    def video_placeholder_ids(self, num_frames: int) -> list[int]:
        """The ids of one `<video>` of `num_frames` frames: a run of `tokens_per_frame` video token ids per frame,
        the frame separator's ids between runs."""
        run = [self.video_token_id] * self.tokens_per_frame
        separator = []
        if self.frame_separator:
            separator = self.tokenizer.encode(self.frame_separator, add_special_tokens=False)
        ids = list(run)
        for _ in range(num_frames - 1):
            ids += separator + run
        return ids

    # -- batching: encoded samples and videos padded into one batch ------------------------------------------------

    def pad_input_ids(self, input_ids: Sequence[Sequence[int]], **kwargs) -> BatchEncoding:
        """Rows of token ids (`encode_text`'s) -> `input_ids` / `attention_mask` [B, L], padded with id 0 on the
        tokenizer's side, the left by default (an RNN reading a prompt followed by padding would carry the padding
        in its state). kwargs: the tokenizer's `pad` arguments (padding, padding_side, return_attention_mask,
        return_tensors)."""
        return self.tokenizer.pad({"input_ids": list(input_ids)}, **kwargs)

    @staticmethod
    def pad_videos(videos: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decoded videos [F_i, 3, S, S] (`preprocess_frames`' pixel values; at least one) -> the model's video
        inputs: `pixel_values_videos` [V, F_max, 3, S, S] in their dtype, zero frames after each video's end, and
        `video_frame_counts` [V] (int64). `__call__(stream_videos=False)` builds the same layout from planned videos,
        filling it chunk by chunk instead of holding each video twice."""
        if not videos:
            raise ValueError("pad_videos needs at least one video.")
        counts = [video.shape[0] for video in videos]
        longest = max(counts)
        padded = [torch.nn.functional.pad(video, (0, 0, 0, 0, 0, 0, 0, longest - video.shape[0])) for video in videos]
        return {"pixel_values_videos": torch.stack(padded),
                "video_frame_counts": torch.tensor(counts, dtype=torch.long)}

    def _video_tensor(self, videos: list, frame_counts: list[int]) -> torch.Tensor:
        """Planned videos -> [V, F_max, 3, S, S] float32, zero frames after each video's end, filled chunk by chunk.

        Refused (ValueError naming the longest video, its frames and the bytes) when larger than
        MAX_VIDEO_TENSOR_BYTES, before any frame is decoded."""
        size = self.image_processor.size
        height = size.get("height") or size.get("shortest_edge")
        width = size.get("width") or size.get("shortest_edge")
        longest = max(frame_counts)
        shape = (len(videos), longest, 3, height, width)
        nbytes = math.prod(shape) * torch.float32.itemsize
        limit = MAX_VIDEO_TENSOR_BYTES
        if limit is not None and nbytes > limit:
            video = videos[frame_counts.index(longest)]
            name = video.plan.label if isinstance(video, LazyVideo) else repr(video)
            raise ValueError(
                f"{name}: with stream_videos=False its {longest} sampled frames make a video tensor of "
                f"{'x'.join(map(str, shape))} float32 = {_bytes(nbytes)}, more than MAX_VIDEO_TENSOR_BYTES = "
                f"{_bytes(limit)} (auroralong_hf.processing.processing_auroralong). Sample fewer frames "
                "(num_frames=, max_frames=, a lower fps=), or pass stream_videos=True: the model then decodes the "
                "video chunk by chunk in constant memory."
            )
        pixels = torch.zeros(shape, dtype=torch.float32)
        for row, video in enumerate(videos):
            begin = 0
            for chunk in video.chunks(16):
                pixels[row, begin:begin + chunk.shape[0]] = chunk
                begin += chunk.shape[0]
        return pixels

    # -- decoding generated ids, prompts ------------------------------------------------------------------------

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def video_prompt_pieces(self, question: str) -> tuple[str, str]:
        """The chat template rendered for one video and `question` with the generation prompt, split at its
        `<video>`: (text before the video, text after it) — "User: Q\\n" and "\\nQ\\n\\nAssistant:" with the
        sandwich template. For answering a new question from a state that has read a video."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        rendered = self.apply_chat_template(messages, add_generation_prompt=True)
        pieces = rendered.split(self.video_token)
        if len(pieces) != 2:
            raise ValueError(
                f"The chat template renders {len(pieces) - 1} {self.video_token} placeholders for one video."
            )
        return pieces[0], pieces[1]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decode generated ids [B, T] to text, without the stop string ("\\n\\n") that ends an answer."""
        texts = self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.removesuffix(STOP_STRING) for text in texts]

    # -- helpers ----------------------------------------------------------------------------------------------

    def _sampling(self, overrides: dict) -> dict:
        sampling = {
            "fps": self.fps, "num_frames": self.num_frames, "max_frames": self.max_frames,
            "include_last_frame": self.include_last_frame, "backend": self.video_backend,
            "strict": self.strict_decoding, "max_pixels": DECODE_MAX_PIXELS,
        }
        unknown = set(overrides) - set(sampling) - {"start", "end"}
        if unknown:
            raise TypeError(f"Unknown video sampling argument(s): {sorted(unknown)}.")
        sampling.update(overrides)
        return sampling

    @staticmethod
    def _call_arguments(kwargs: dict) -> tuple[dict, dict]:
        """`__call__`'s extra arguments -> (video sampling, tokenizer arguments); TypeError for any other."""
        kwargs = dict(kwargs)
        if kwargs.pop("audio", None) is not None:  # apply_chat_template always passes audio=
            raise ValueError("AuroraLong reads no audio; remove the audio from the inputs.")
        sampling = {key: kwargs.pop(key) for key in SAMPLING_ARGUMENTS if key in kwargs}
        if kwargs.pop("do_sample_frames", True) is False:  # transformers' switch: every frame, no sampling
            sampling.update(fps=None, num_frames=None)
        tokenizer_kwargs = {key: kwargs.pop(key) for key in _TOKENIZER_ARGUMENTS if key in kwargs}
        tokenizer_kwargs.pop("add_special_tokens", None)
        if kwargs:
            raise TypeError(
                f"AuroraLongProcessor got unknown argument(s) {sorted(kwargs)}; it takes the video sampling arguments "
                f"{', '.join(SAMPLING_ARGUMENTS)}, do_sample_frames, stream_videos, padding, padding_side, "
                "return_attention_mask and return_tensors."
            )
        return sampling, tokenizer_kwargs

    def _pad_to_square(self, image: Image.Image) -> Image.Image:
        side = max(image.size)
        mean = tuple(int(round(255 * m)) for m in self.image_processor.image_mean)
        canvas = Image.new("RGB", (side, side), mean)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return canvas


__all__ = [
    "AuroraLongProcessor", "LazyVideo", "SANDWICH_CHAT_TEMPLATE", "STOP_STRING", "placeholder_kinds",
    "remove_placeholders",
]
