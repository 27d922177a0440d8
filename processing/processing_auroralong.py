"""AuroraLong's processor: videos and images + text in, model inputs out.

Videos are decoded with PyAV (processing/video_io.py: display rotation, each frame's own colour matrix and range,
damaged packets), images read upright by their EXIF orientation (processing/image_io.py); frames are sampled by fps
or frame count, preprocessed like SigLIP
(384x384, rescale, mean = std = 0.5) by a Pillow image processor, so neither torchvision nor torchcodec is needed.
Text follows the "sandwich" prompt of the paper (the instruction, the visual tokens, the instruction again); each
`<video>` / `<image>` placeholder is expanded to one run of `tokens_per_frame` placeholder tokens per frame, the count
the vision tower's S-ToMe schedule yields.
"""

import re
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from .image_io import load_image
from .video_io import VideoFrames, frames_from_array, iter_video_chunks, load_video

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
_MARK = "\x00"


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
        return_tensors: str = "pt",
        padding: bool | str = True,
        **sampling,
    ) -> BatchFeature:
        """Tokenised text with expanded placeholders, and the pixels of every video and image.

        text: one prompt or a batch; each `<video>` / `<image>` in it takes the next video / image, in order.
        videos: one video or a list of them; a video is a path, an open file, a list of PIL images, or a
            [F, H, W, C] / [F, C, H, W] uint8 array or tensor. images: one image or a list (PIL, path, array).
        sampling: fps, num_frames, max_frames, start, end, include_last_frame, strict for this call.

        Returns input_ids / attention_mask [B, L] (left padded), pixel_values_videos [V, F_max, 3, H, W]
        (zero frames after each video's end), video_frame_counts [V], pixel_values [I, 3, H, W].
        """
        if text is None:
            raise ValueError("AuroraLongProcessor needs text (with one <video>/<image> placeholder per visual).")
        texts = [text] if isinstance(text, str) else list(text)
        video_list = self._as_list(videos, is_video=True)
        image_list = self._as_list(images, is_video=False)
        expected = ((self.video_token, video_list, "videos"), (self.image_token, image_list, "images"))
        for placeholder, given, kind in expected:
            found = sum(t.count(placeholder) for t in texts)
            if found != len(given):
                raise ValueError(
                    f"The text has {found} {placeholder} placeholder(s) but {len(given)} {kind} were given."
                )

        data = {}
        frame_counts = []
        if video_list:
            clips = [self.preprocess_frames(self.load_video(video, **sampling).frames) for video in video_list]
            frame_counts = [clip.shape[0] for clip in clips]
            longest = max(frame_counts)
            data["pixel_values_videos"] = torch.stack(
                [torch.nn.functional.pad(clip, (0, 0, 0, 0, 0, 0, 0, longest - clip.shape[0])) for clip in clips]
            )
            data["video_frame_counts"] = torch.tensor(frame_counts)
        if image_list:
            data["pixel_values"] = torch.cat([self.preprocess_frames(self._image_array(image)) for image in image_list])

        expanded = self._expand_placeholders(texts, frame_counts, len(image_list))
        encoding = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors)
        return BatchFeature(data={**encoding, **data}, tensor_type=return_tensors)

    def load_video(self, video, **sampling) -> VideoFrames:
        """Decode and sample one video with this processor's settings (overridable per call)."""
        return load_video(video, **self._sampling(sampling))

    def video_chunks(self, video, chunk_frames: int, **sampling) -> Iterator[BatchFeature]:
        """Stream a video of any length: [1, K, 3, H, W] pixel values of K sampled frames at a time, plus their
        frame indices and timestamps; only one chunk is held at a time."""
        for chunk in iter_video_chunks(video, chunk_frames, **self._sampling(sampling)):
            yield BatchFeature({
                "pixel_values_videos": self.preprocess_frames(chunk.frames).unsqueeze(0),
                "frame_indices": torch.tensor(chunk.indices),
                "timestamps": torch.tensor(chunk.timestamps, dtype=torch.float64),
            })

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        """[F, H, W, 3] uint8 -> [F, 3, S, S] float: optional pad to square, resize, rescale, normalise."""
        images = [Image.fromarray(frame) for frame in frames]
        if self.pad_to_square:
            images = [self._pad_to_square(image) for image in images]
        return self.image_processor(images, return_tensors="pt")["pixel_values"]

    def video_placeholder(self, num_frames: int) -> str:
        """The expansion of one `<video>` with `num_frames` frames: one run of tokens per frame."""
        separator = self.frame_separator or ""
        return separator.join([self.video_token * self.tokens_per_frame] * num_frames)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = False,
                            return_tensors: str = "pt", **kwargs):
        """Render messages with the sandwich template; with `tokenize=True` also load their videos and images.

        Video blocks are `{"type": "video", "video" | "path" | "url": ...}` (local paths, files or frames), image
        blocks `{"type": "image", "image" | "path" | "url": ...}`.
        """
        prompt = super().apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
        )
        if not tokenize:
            return prompt
        videos, images = [], []
        for message in conversation:
            if isinstance(message["content"], str):
                continue
            for block in message["content"]:
                if block.get("type") in ("video", "image"):
                    source = next((block[key] for key in (block["type"], "path", "url") if key in block), None)
                    if source is None:
                        raise ValueError(f"A {block['type']} block has no '{block['type']}', 'path' or 'url': {block}")
                    (videos if block["type"] == "video" else images).append(source)
        return self(text=prompt, videos=videos or None, images=images or None, return_tensors=return_tensors)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _sampling(self, overrides: dict) -> dict:
        sampling = {
            "fps": self.fps, "num_frames": self.num_frames, "max_frames": self.max_frames,
            "include_last_frame": self.include_last_frame, "backend": self.video_backend,
            "strict": self.strict_decoding,
        }
        unknown = set(overrides) - set(sampling) - {"start", "end"}
        if unknown:
            raise TypeError(f"Unknown video sampling argument(s): {sorted(unknown)}.")
        sampling.update(overrides)
        return sampling

    def _expand_placeholders(self, texts: list[str], frame_counts: list[int], num_images: int) -> list[str]:
        videos = iter(frame_counts)
        image_run = self.image_token * self.tokens_per_frame
        expanded = []
        for text in texts:
            pieces = text.split(self.video_token)
            text = pieces[0] + "".join(self.video_placeholder(next(videos)) + piece for piece in pieces[1:])
            expanded.append(text.replace(self.image_token, image_run))
        return expanded

    @staticmethod
    def _as_list(visuals, is_video: bool) -> list:
        """One visual or a list of them -> a list (a list of PIL images is ONE video, not several)."""
        if visuals is None:
            return []
        if isinstance(visuals, (list, tuple)):
            if is_video and visuals and all(isinstance(item, Image.Image) for item in visuals):
                return [visuals]
            return list(visuals)
        if isinstance(visuals, (np.ndarray, torch.Tensor)) and not is_video and visuals.ndim == 4:
            return list(visuals)  # a batch of images
        return [visuals]

    @staticmethod
    def _image_array(image) -> np.ndarray:
        """An image (PIL, path, open file: upright by its EXIF orientation; or an [H, W, C] / [C, H, W] array)
        -> [1, H, W, 3] uint8."""
        if isinstance(image, (np.ndarray, torch.Tensor)):
            return frames_from_array(image[None]).frames
        return frames_from_array([load_image(image)]).frames

    def _pad_to_square(self, image: Image.Image) -> Image.Image:
        side = max(image.size)
        mean = tuple(int(round(255 * m)) for m in self.image_processor.image_mean)
        canvas = Image.new("RGB", (side, side), mean)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return canvas


__all__ = ["AuroraLongProcessor", "SANDWICH_CHAT_TEMPLATE", "STOP_STRING", "placeholder_kinds", "remove_placeholders"]
