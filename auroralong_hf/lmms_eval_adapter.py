"""AuroraLong in lmms-eval: `--model auroralong` (chat class by default, the simple class with `--force_simple`).

Every document is answered the way AuroraLong reads a video of any length: the sandwich prompt's text before a
visual is fed to the RNN, the video is decoded `chunk_frames` frames at a time and streamed through the S-ToMe
tower into the state, then the rest of the prompt. Rows of a batch are prefilled one at a time (constant memory,
whatever the video lengths) and decoded together from their stacked states.

- `generate_until`: greedy unless the task asks for sampling; stops at the task's `until` strings, at "\\n\\n"
  (AuroraLong's end of turn) and at `max_new_tokens`. Requests are grouped by identical generation settings.
- `loglikelihood`: one prefill per document (context + video); every choice continues a copy of that state, all
  choices of a document in one batched forward. Like lmms-eval's built-in models it returns (loss, is_greedy), the
  loss being the continuation's mean negative log-likelihood per token: lmms-eval's multiple-choice scoring picks
  the choice with the smallest first value.
- `generate_until_multi_round`: one state carried across rounds; each answer and the next user turn are fed on.

Video sampling: model args `fps`, `num_frames` (evenly spaced, wins over fps), `max_frames_num` (a cap); a task
overrides them with the same keys in its `generation_kwargs` (eval_tasks/ uses this for the paper's settings).
A visual may be a path (a video, or an image by its extension), a PIL image, MovieChat-1K's breakpoint
`{"video_path": ..., "timestep": frame index}` (only frames up to the breakpoint are read) or a chat video block
with `start_time` / `end_time` seconds.

Images are read upright by their EXIF orientation and videos by their display rotation and colour tags
(processing/image_io.py, processing/video_io.py). Placeholder tags in a task's text (`<image>`, `<video>`, as
LLaVA-style prompts write them) are dropped: the visuals are placed by the chat template, one placeholder each.

Failed documents: one whose image or video cannot be read, or whose answering raises, never ends the run and never
counts as correct. It is answered "" (NaN for every choice of a log-likelihood request), an error in the log names
the task, the document and the reason, and after each request type a summary counts them. Model arg `on_failure`:
"wrong" (default) scores them as wrong (lmms_eval_scoring.py: the worst value of every numeric metric, and the
`unreadable_docs` metric in the results counts them); "fail" ends the evaluation after the model has answered every
request, with an error naming each failed document, before anything is scored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image
from tqdm import tqdm

from .lmms_eval_scoring import UNREADABLE_METRIC, mark_failed, score_failed_documents
from .modeling.cache_rwkv6 import Rwkv6Cache
from .modeling.streaming import DEFAULT_CHUNK_FRAMES
from .processing import processing_auroralong
from .processing.image_io import load_image
from .processing.processing_auroralong import STOP_STRING, placeholder_kinds, remove_placeholders

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp"}
# generation_kwargs keys that choose the frames of a task's videos (read here, not passed to generate)
SAMPLING_KEYS = ("fps", "num_frames", "max_frames_num")
GENERATE_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty")
# Keys lmms-eval tasks set for other models; dropped without a warning.
IGNORED_KEYS = ("until", "image_aspect_ratio", "modalities")
FAILURE_POLICIES = ("wrong", "fail")


# The lmms-eval release this adapter is written and tested against (pyproject.toml's `eval` extra pins it).
TESTED_LMMS_EVAL = "0.7.3"
# Modules lmms-eval imports only once an evaluation has started, after the model is built; a failure there ends the
# run with exit status 0 and no results, so they are imported here first and a failure is reported with its cause.
LMMS_EVAL_LATE_IMPORTS = {
    "filelock._api": "lmms-eval 0.7.3 patches it at the start of every evaluation; filelock 4 removed it "
                     "(pip install 'filelock>=3.16.1,<4', as the eval extra does)",
}


def check_lmms_eval_runtime() -> None:
    """Fail now, with the reason, where lmms-eval would fail later without one.

    Raises ImportError naming the module, why lmms-eval needs it and the fix; logs a warning when the installed
    lmms-eval is not the tested release.
    """
    import importlib
    from importlib.metadata import version

    installed = version("lmms-eval")
    if installed != TESTED_LMMS_EVAL:
        logger.warning(f"auroralong: lmms-eval {installed} is installed; this adapter is tested with "
                       f"{TESTED_LMMS_EVAL} (pip install -e '.[eval]').")
    for module, why in LMMS_EVAL_LATE_IMPORTS.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            message = f"auroralong: lmms-eval {installed} cannot run an evaluation here: it imports {module}, " \
                      f"which fails ({error}). {why}."
            logger.error(message)
            raise ImportError(message) from error


def keep_loglikelihood_pairs() -> None:
    """Compatibility fix for lmms-eval 0.7.3, applied only where it is needed (checked by behaviour).

    Its evaluator passes every model output through `unwrap_generation_output`, which turns anything that is not
    text into `str(output)`: the `(logprob, is_greedy)` pairs of `loglikelihood` reach `process_results` as
    strings like "(-1.5, False)" and every loglikelihood / multiple-choice task fails ("too many values to
    unpack"), for every model. The wrapper passes such pairs through unchanged and leaves all else to lmms-eval.
    """
    from lmms_eval import evaluator
    unwrap = evaluator.unwrap_generation_output
    if getattr(unwrap, "keeps_loglikelihood_pairs", False) or unwrap((-1.5, False))[0] == (-1.5, False):
        return

    def unwrap_keeping_pairs(output):
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], float) and \
                isinstance(output[1], bool):
            return output, None
        return unwrap(output)

    unwrap_keeping_pairs.keeps_loglikelihood_pairs = True
    evaluator.unwrap_generation_output = unwrap_keeping_pairs


@dataclass
class Visual:
    """One image or video of a prompt, and the part of it to read."""

    source: object  # a path, or a PIL image
    is_image: bool
    end_frame: int | None = None  # MovieChat-1K breakpoint: the last frame (index in the file) that may be read
    start: float | None = None  # seconds
    end: float | None = None

    @property
    def name(self) -> str:
        return str(self.source) if isinstance(self.source, (str, os.PathLike)) else type(self.source).__name__


def as_visual(item) -> Visual:
    """A visual as lmms-eval tasks give it -> `Visual` (TypeError for an unknown kind)."""
    if isinstance(item, Image.Image):
        return Visual(item, is_image=True)
    if isinstance(item, (str, os.PathLike)):
        return Visual(str(item), is_image=os.path.splitext(str(item))[1].lower() in IMAGE_EXTENSIONS)
    if isinstance(item, dict) and "video_path" in item:
        timestep = item.get("timestep")
        return Visual(str(item["video_path"]), is_image=False, end_frame=None if timestep is None else int(timestep))
    raise TypeError(f"unsupported visual {type(item).__name__}: expected a path, a PIL image or a MovieChat-1K "
                    f"breakpoint dict {{'video_path': ..., 'timestep': ...}}")


@dataclass
class Prompt:
    """A conversation to continue: messages in AuroraLong's chat format (content blocks of type text / video /
    image) and the visuals of its blocks, in order."""

    messages: list[dict]
    visuals: list[Visual] = field(default_factory=list)


def user_turn(text: str, visuals: Iterable) -> Prompt:
    """A task's text and visuals -> one user turn (placeholder tags in the text are dropped: one block per visual)."""
    visuals = [as_visual(item) for item in visuals]
    content = [{"type": "image" if v.is_image else "video"} for v in visuals]
    return Prompt([{"role": "user", "content": [*content, {"type": "text", "text": remove_placeholders(text)}]}],
                  visuals)


def chat_prompt(messages) -> Prompt:
    """lmms-eval chat messages (dicts or its pydantic ChatMessage) -> `Prompt`."""
    from lmms_eval.protocol import ChatMessages

    parsed = ChatMessages(messages=[m.model_dump() if hasattr(m, "model_dump") else m for m in messages])
    converted, visuals = [], []
    for message in parsed.messages:
        content = []
        for block in message.content:
            if block.type == "text":
                content.append({"type": "text", "text": remove_placeholders(block.text)})
            elif block.type in ("image", "video") or _is_webm(block):
                visual = as_visual(block.url)
                if block.type != "image":
                    visual.start, visual.end = getattr(block, "start_time", None), getattr(block, "end_time", None)
                visuals.append(visual)
                content.append({"type": "image" if visual.is_image else "video"})
            else:
                raise TypeError(f"AuroraLong takes text, images and videos, not {block.type}")
        converted.append({"role": message.role, "content": content})
    return Prompt(converted, visuals)


def _is_webm(block) -> bool:
    """lmms-eval's chat tasks file a .webm path under audio (by its extension); for AuroraLong it is a video."""
    url = getattr(block, "url", None)
    return block.type == "audio" and isinstance(url, str) and url.lower().endswith(".webm")


class UnreadableVisual(Exception):
    """A document's image or video could not be read (the message names the file and the reason)."""


class AuroraLongLmms(lmms):
    """lmms-eval's simple interface: requests carry the task's text and a `doc_to_visual` function.

    Args (lmms-eval model args, `--model_args k=v,...`):
        pretrained: An AuroraLong folder (`auroralong convert auroralong ...` / `save_pretrained`).
        fps, num_frames, max_frames_num: Video sampling (default: the folder's processor settings, 1 fps).
        token_kept_ratio: S-ToMe tokens kept per frame (the checkpoint's by default, 0.1 = 58 tokens).
        tome_sort: Token order after merging: ascending (the paper's), descending, none or random.
        chunk_frames: Frames decoded and encoded at a time; memory does not grow with the video's length.
        dtype: "auto" (the checkpoint's), float32, bfloat16 or float16.
        device: e.g. "cuda", "cuda:1", "cpu" (default: cuda when available). Under `accelerate launch` each
            process takes its own GPU and evaluates its shard of the documents.
        batch_size: Rows decoded together.
        max_new_tokens: Default cap on generated tokens (a task's generation_kwargs win).
        on_failure: What a document that could not be answered (unreadable visual, an error) scores: "wrong"
            (default; counted in the `unreadable_docs` metric) or "fail" (the evaluation stops with an error naming
            every such document once the model has answered the rest). See the module docstring.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        fps: float | None = None,
        num_frames: int | None = None,
        max_frames_num: int | None = None,
        token_kept_ratio: float | None = None,
        tome_sort: str | None = None,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = 256,
        max_batch_size: int | None = None,
        on_failure: str = "wrong",
        **unknown,
    ) -> None:
        super().__init__()
        check_lmms_eval_runtime()
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if unknown:
            raise TypeError(f"auroralong: unknown model argument(s) {sorted(unknown)}; see {type(self).__name__}'s "
                            "docstring for the arguments it takes.")
        if not os.path.isdir(str(pretrained)):
            raise FileNotFoundError(f"auroralong: pretrained={pretrained!r} is not a folder (an AuroraLong folder "
                                    "written by `auroralong convert` or save_pretrained is expected).")
        self.batch_size_per_gpu = self._positive_int("batch_size", batch_size)
        self.chunk_frames = self._positive_int("chunk_frames", chunk_frames)
        self.max_new_tokens = self._positive_int("max_new_tokens", max_new_tokens)
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"auroralong: on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}")
        self.on_failure = on_failure
        self.failed_documents: list[tuple[str, object, str]] = []  # (task, doc_id, reason), this process's
        del max_batch_size  # lmms-eval's automatic batch size search does not apply: memory per row is constant

        # One process per GPU under `accelerate launch` / torchrun: lmms-eval gives each rank its shard of the
        # documents (from RANK / WORLD_SIZE) and gathers the results; the model only picks its device.
        self._rank, self._world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        logger.info(f"auroralong: process {self.rank} of {self.world_size} evaluates on {self._device}")

        config = AutoConfig.from_pretrained(pretrained)
        vision = config.vision_config
        if token_kept_ratio is not None:
            vision.token_kept_ratio, vision.tome_r = float(token_kept_ratio), None
        if tome_sort is not None:
            vision.tome_sort = str(tome_sort)
        try:
            vision.validate()
        except Exception as error:  # huggingface_hub's StrictDataclassClassValidationError
            raise ValueError(f"auroralong: token_kept_ratio / tome_sort: {error}") from None
        if dtype != "auto" and dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"auroralong: dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
        self.model = AutoModelForImageTextToText.from_pretrained(
            pretrained, config=config, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        ).to(self._device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.tokenizer = self.processor.tokenizer
        self.sampling = {"fps": self.processor.fps, "num_frames": self.processor.num_frames,
                         "max_frames": self.processor.max_frames}
        model_args = {"fps": fps, "num_frames": num_frames, "max_frames_num": max_frames_num}
        self.sampling.update(self._task_sampling(model_args))
        self.stop_strings = list(self.processor.stop_strings)
        self._warned_keys: set[str] = set()
        keep_loglikelihood_pairs()
        score_failed_documents()

    # -- lmms-eval interface ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        failed_before = len(self.failed_documents)
        groups: dict[str, tuple[dict, list[int]]] = {}  # requests with identical generation settings
        for index, request in enumerate(requests):
            gen_kwargs = self._gen_kwargs(request)
            key = json.dumps(gen_kwargs, sort_keys=True, default=str)
            groups.setdefault(key, (gen_kwargs, []))[1].append(index)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="auroralong generate_until")
        for gen_kwargs, indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch, prompts = [], []
                for i in indices[start:start + self.batch_size]:
                    try:
                        prompts.append(self._prompt(requests[i]))
                        batch.append(i)
                    except Exception as error:  # noqa: BLE001 - one document never ends the run
                        self._fail([requests[i]], error)
                        answers[i] = ""
                texts, failures = self._answer(prompts, gen_kwargs)
                for row, (i, text) in enumerate(zip(batch, texts, strict=True)):
                    answers[i] = text
                    if row in failures:
                        self._fail([requests[i]], failures[row])
                progress.update(len(indices[start:start + self.batch_size]))
        progress.close()
        self._report_failures("generate_until", failed_before)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        failed_before = len(self.failed_documents)
        documents: dict[tuple, list[int]] = {}  # the choices of one document share its prefilled state
        for index, request in enumerate(requests):
            args = request.args
            key = (args[0],) if len(args) == 2 else (args[0], args[3], args[4], args[5])
            documents.setdefault(key, []).append(index)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="auroralong loglikelihood")
        for indices in documents.values():
            continuations = [requests[i].args[1] for i in indices]
            try:
                args = requests[indices[0]].args
                if len(args) == 2:  # acc_mutual_info's unconditional requests: ("", continuation), no document
                    prompt = user_turn(args[0], [])
                else:
                    context, _, doc_to_visual, doc_id, task, split = args
                    prompt = self._simple_prompt(context, doc_to_visual, doc_id, task, split)
                scores = self.score(prompt, continuations)
            except Exception as error:  # noqa: BLE001 - one document never ends the run
                self._fail([requests[i] for i in indices], error)
                scores = [(math.nan, False)] * len(indices)  # no score; lmms_eval_scoring makes it a wrong one
            for i, result in zip(indices, scores, strict=True):
                results[i] = result
            progress.update(len(indices))
        progress.close()
        self._report_failures("loglikelihood", failed_before)
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        failed_before = len(self.failed_documents)
        answers = []
        for request in tqdm(requests, disable=self.rank != 0, desc="auroralong generate_until_multi_round"):
            try:
                answers.append(self.converse(*self._conversation(request)))
            except Exception as error:  # noqa: BLE001 - one document never ends the run
                self._fail([request], error)
                answers.append([""])
        self._report_failures("generate_until_multi_round", failed_before)
        return answers

    # -- AuroraLong ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], gen_kwargs: dict) -> list[str]:
        """Answer each prompt ("" for a prompt that cannot be answered, with an error in the log): prefill one at a
        time, decode the answerable ones together."""
        answers, failures = self._answer(prompts, gen_kwargs)
        for row, error in failures.items():
            logger.error(f"auroralong: prompt {row}: answering with an empty string: {error}")
        return answers

    @torch.no_grad()
    def _answer(self, prompts: list[Prompt], gen_kwargs: dict) -> tuple[list[str], dict[int, Exception]]:
        """`generate`'s answers and, by row, the errors of the prompts answered "" (nothing is logged here)."""
        sampling, options, stops = self._generation_settings(gen_kwargs)
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
            for row, text in zip(rows, self._decode(states, last_ids, options, stops), strict=True):
                answers[row] = text
        return answers, failures

    @torch.no_grad()
    def score(self, prompt: Prompt, continuations: list[str]) -> list[tuple[float, bool]]:
        """(mean negative log-likelihood per token, is greedy) of each continuation after the prompt's
        "Assistant:"; the prompt and its video are encoded once. A continuation is the answer text: a leading space
        is added when it has none, as the chat format writes "Assistant: " + answer. Raises UnreadableVisual (or
        ValueError for a prompt whose placeholders and visuals disagree)."""
        state, last_id = self.prefill(prompt, self.sampling)
        targets = [self.tokenizer.encode(c if c[:1].isspace() else " " + c) for c in continuations]
        scores = self.model.score_continuations(state, last_id, targets)
        return [(-total / max(len(target), 1), greedy) for (total, greedy), target in zip(scores, targets, strict=True)]

    @torch.no_grad()
    def converse(self, first: Prompt, next_turn, gen_kwargs: dict) -> list[str]:
        """A multi-round conversation on one state: answer `first`, then `next_turn(answers, info, round_idx)`
        -> (the next Prompt or None to stop, info), feeding every answer and turn onto the same state. A round
        whose visual cannot be read ends the conversation with an empty answer (logged); other errors raise."""
        sampling, options, stops = self._generation_settings(gen_kwargs)
        answers, info, prompt, state = [], None, first, None
        while prompt is not None:
            try:
                state, last_id = self.prefill(prompt, sampling, state)
            except UnreadableVisual as error:
                if not answers:
                    raise  # nothing answered: the document failed
                logger.error(f"auroralong: ending the conversation with an empty answer: {error}")
                answers.append("")
                break
            answer = self._decode([state], [last_id], options, stops)[0]  # decodes a copy
            answers.append(answer)
            # the answer as the chat format writes it: "Assistant:" + " " + answer + the stop string
            self.model.feed(state, torch.tensor([[last_id, *self.tokenizer.encode(f" {answer}{STOP_STRING}")]],
                                                device=self.device))
            prompt, info = next_turn(answers, info, len(answers))
        return answers

    def prefill(self, prompt: Prompt, sampling: dict, state: Rwkv6Cache | None = None) -> tuple[Rwkv6Cache, int]:
        """Feed the prompt (rendered with the sandwich chat template, ending in "Assistant:") into `state` (a new
        one by default) through the model's streaming prefill; returns the state and the prompt's last token id,
        left unfed so that decoding starts from it. Raises UnreadableVisual."""
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
                        window["end"] = self._frame_time(visual)
                    videos.append(self.processor.plan_video(visual.source, **sampling, **window))
            except (OSError, ValueError, TypeError) as error:  # FileNotFoundError is an OSError
                message = str(error) if visual.name in str(error) else f"{visual.name}: {error}"
                raise UnreadableVisual(message) from error
        inputs = self.processor(text=text, videos=videos or None, images=images or None)
        ids = inputs["input_ids"].to(self.device)
        try:
            state = self.model.prefill(ids[:, :-1], pixel_values_videos=inputs.get("pixel_values_videos"),
                                       pixel_values=inputs.get("pixel_values"), cache=state,
                                       chunk_frames=self.chunk_frames)
        except (OSError, ValueError) as error:  # a video that fails part-way through decoding
            raise UnreadableVisual(str(error)) from error
        return state, int(ids[0, -1])

    def _fail(self, requests: list[Instance], error: Exception) -> None:
        """Record, mark (for lmms_eval_scoring) and log a document that could not be answered."""
        request = requests[0]
        reason = str(error) if isinstance(error, UnreadableVisual) else f"{type(error).__name__}: {error}"
        self.failed_documents.append((request.task_name, request.doc_id, reason))
        mark_failed(requests, reason)
        logger.error(f"auroralong: task {request.task_name}, document {request.doc_id} failed, scored as "
                     f"{'wrong' if self.on_failure == 'wrong' else 'an error at the end'}: {reason}")

    def _report_failures(self, kind: str, before: int) -> None:
        """After a request type: count this call's failed documents in the log; with on_failure=fail, raise."""
        failed = self.failed_documents[before:]
        if not failed:
            return
        listing = "\n".join(f"  {task} document {doc_id}: {reason}" for task, doc_id, reason in failed)
        if self.on_failure == "fail":
            raise RuntimeError(f"auroralong: {len(failed)} document(s) of {kind} requests could not be answered "
                               f"(on_failure=fail; on_failure=wrong scores them as wrong instead):\n{listing}")
        logger.error(f"auroralong: {len(failed)} document(s) of {kind} requests could not be answered and are "
                     f"scored as wrong (counted in the {UNREADABLE_METRIC} metric):\n{listing}")

    # -- helpers ------------------------------------------------------------------------------------------------

    @staticmethod
    def _frame_time(visual: Visual) -> float:
        """Seconds from the first frame to frame `end_frame` (MovieChat-1K counts its breakpoints in frames)."""
        from .processing.video_io import probe_video

        _, times = probe_video(visual.source)
        if visual.end_frame < 0:
            raise ValueError(f"breakpoint timestep {visual.end_frame} is negative")
        return times[min(visual.end_frame, len(times) - 1)] - times[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _decode(self, states: list[Rwkv6Cache], last_ids: list[int], options: dict, stops: list[str]) -> list[str]:
        """Generate from prefilled states (decoded together) and cut each answer at its first stop string."""
        input_ids = torch.tensor([[token] for token in last_ids], device=self.device)
        output = self.model.generate(input_ids, cache=Rwkv6Cache.stack(states), stop_strings=stops,
                                     tokenizer=self.tokenizer, **options)
        answers = []
        for text in self.processor.post_process_image_text_to_text(output[:, 1:]):
            cut = min((text.find(stop) for stop in stops if stop in text), default=len(text))
            answers.append(text[:cut].strip())
        return answers

    def _generation_settings(self, gen_kwargs: dict) -> tuple[dict, dict, list[str]]:
        """A task's generation_kwargs -> (video sampling, generate() options, stop strings)."""
        sampling = {**self.sampling, **self._task_sampling(gen_kwargs)}
        options = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        options.update({key: gen_kwargs[key] for key in GENERATE_KEYS if key in gen_kwargs})
        temperature = float(options.get("temperature", 0) or 0)
        options["do_sample"] = bool(options["do_sample"]) and temperature > 0
        if not options["do_sample"]:  # greedy: sampling settings would only draw warnings
            for key in ("temperature", "top_p", "top_k"):
                options.pop(key, None)
        options["max_new_tokens"] = self._positive_int("max_new_tokens", options["max_new_tokens"])
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        stops = list(dict.fromkeys([*self.stop_strings, *(s for s in until if s)]))
        for key in set(gen_kwargs) - set(GENERATE_KEYS) - set(SAMPLING_KEYS) - set(IGNORED_KEYS) - self._warned_keys:
            logger.warning(f"auroralong: ignoring generation setting {key}={gen_kwargs[key]!r}")
            self._warned_keys.add(key)
        return sampling, options, stops

    def _task_sampling(self, settings: dict) -> dict:
        """fps / num_frames / max_frames_num from model args or a task's generation_kwargs -> sampling overrides.
        A task's fps replaces a frame count given in the model args."""
        sampling = {}
        if settings.get("fps") is not None:
            sampling.update(fps=float(settings["fps"]), num_frames=None)
        if settings.get("num_frames") is not None:
            sampling["num_frames"] = self._positive_int("num_frames", settings["num_frames"])
        if settings.get("max_frames_num") is not None:
            sampling["max_frames"] = self._positive_int("max_frames_num", settings["max_frames_num"])
        return sampling

    def _gen_kwargs(self, request: Instance) -> dict:
        return dict(request.args[1] or {})

    def _prompt(self, request: Instance) -> Prompt:
        context, _, doc_to_visual, doc_id, task, split = request.args
        return self._simple_prompt(context, doc_to_visual, doc_id, task, split)

    def _conversation(self, request: Instance) -> tuple[Prompt, object, dict]:
        """A multi-round request -> (first prompt, next_turn for `converse`, generation kwargs)."""
        context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]

        def next_turn(answers, info, round_idx):
            visuals, text, done, _, info = doc_to_text(doc, previous_output=answers, round_idx=round_idx,
                                                       previous_round_info=info)
            return (None if done else user_turn(text, visuals or [])), info

        return self._simple_prompt(context, doc_to_visual, doc_id, task, split), next_turn, gen_kwargs or {}

    def _simple_prompt(self, context: str, doc_to_visual, doc_id, task: str, split: str) -> Prompt:
        visuals = []
        if doc_to_visual is not None:
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        return user_turn(context, [v for v in visuals if v is not None])

    @staticmethod
    def _positive_int(name: str, value) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"auroralong: {name} must be a positive integer, got {value!r}") from None
        if number <= 0 or number != float(value):
            raise ValueError(f"auroralong: {name} must be a positive integer, got {value!r}")
        return number


class AuroraLongLmmsChat(AuroraLongLmms):
    """lmms-eval's chat interface: requests carry `doc_to_messages` (lmms-eval's chat message format)."""

    is_simple = False

    def _gen_kwargs(self, request: Instance) -> dict:
        return dict(request.args[2] or {})

    def _prompt(self, request: Instance) -> Prompt:
        _, doc_to_messages, _, doc_id, task, split = request.args
        return chat_prompt(doc_to_messages(self.task_dict[task][split][doc_id]))

    def _conversation(self, request: Instance) -> tuple[Prompt, object, dict]:
        _, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]

        def next_turn(answers, info, round_idx):
            messages, done, _, info = doc_to_messages(doc, round_idx=round_idx, previous_output=answers,
                                                      previous_round_info=info)
            return (None if done or messages is None else chat_prompt(messages)), info

        return chat_prompt(doc_to_messages(doc)), next_turn, gen_kwargs or {}
