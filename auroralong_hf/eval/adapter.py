"""AuroraLong in lmms-eval: `--model auroralong` (chat class by default, the simple class with `--force_simple`).

This module is the glue only: it unpacks lmms-eval's requests into prompts, turns a task's settings into video
sampling and generation options, applies the failure policy and holds the two model classes lmms-eval builds. The
answering itself is `auroralong_hf.answering.Answerer` (no lmms-eval in it), which calls the streaming engine:
every document is answered the way AuroraLong reads a video of any length, the sandwich prompt's text before a
visual fed to the RNN, the video decoded `chunk_frames` frames at a time and streamed through the S-ToMe tower into
the state, then the rest of the prompt. Rows of a batch are prefilled one at a time (constant memory, whatever the
video lengths) and decoded together from their stacked states.

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
"wrong" (default) scores them as wrong (eval/scoring.py: the worst value of every numeric metric, and the
`unreadable_docs` metric in the results counts them); "fail" ends the evaluation after the model has answered every
request, with an error naming each failed document, before anything is scored.

lmms-eval is an optional extra (`pip install -e '.[eval]'`): it is imported here at the top, and nothing in the
package imports this module; lmms-eval finds the classes through the entry point (eval/manifest.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages
from loguru import logger
from PIL import Image
from tqdm import tqdm

from ..answering import Answerer, Prompt, UnreadableVisual, Visual
from ..loading import load_pretrained
from ..processing.processing_auroralong import remove_placeholders
from .compat import check_lmms_eval_runtime, keep_loglikelihood_pairs
from .scoring import UNREADABLE_METRIC, mark_failed, score_failed_documents

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp"}
# generation_kwargs keys that choose the frames of a task's videos (read here, not passed to generate)
SAMPLING_KEYS = ("fps", "num_frames", "max_frames_num")
GENERATE_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty")
# Keys lmms-eval tasks set for other models; dropped without a warning.
IGNORED_KEYS = ("until", "image_aspect_ratio", "modalities")
FAILURE_POLICIES = ("wrong", "fail")


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


def user_turn(text: str, visuals: Iterable) -> Prompt:
    """A task's text and visuals -> one user turn (placeholder tags in the text are dropped: one block per visual)."""
    visuals = [as_visual(item) for item in visuals]
    content = [{"type": "image" if v.is_image else "video"} for v in visuals]
    return Prompt([{"role": "user", "content": [*content, {"type": "text", "text": remove_placeholders(text)}]}],
                  visuals)


def chat_prompt(messages) -> Prompt:
    """lmms-eval chat messages (dicts or its pydantic ChatMessage) -> `Prompt`."""
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


class AuroraLongLmms(lmms):
    """lmms-eval's simple interface: requests carry the task's text and a `doc_to_visual` function.

    Args (lmms-eval model args, `--model_args k=v,...`):
        pretrained: An AuroraLong folder (`auroralong convert auroralong ...` / `save_pretrained`).
        fps, num_frames, max_frames_num: Video sampling (default: the folder's processor settings, 1 fps).
        token_kept_ratio: S-ToMe tokens kept per frame (the checkpoint's by default, 0.1 = 58 tokens).
        tome_sort: Token order after merging: ascending (the paper's), descending, none or random.
        chunk_frames: Frames decoded and encoded at a time; memory does not grow with the video's length
            (default: the device's, 8 on CPU and 64 on CUDA; `modeling.streaming.CHUNK_FRAMES`).
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
        chunk_frames: int | None = None,
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
        if unknown:
            raise TypeError(f"auroralong: unknown model argument(s) {sorted(unknown)}; see {type(self).__name__}'s "
                            "docstring for the arguments it takes.")
        if not os.path.isdir(str(pretrained)):
            raise FileNotFoundError(f"auroralong: pretrained={pretrained!r} is not a folder (an AuroraLong folder "
                                    "written by `auroralong convert` or save_pretrained is expected).")
        self.batch_size_per_gpu = self._positive_int("batch_size", batch_size)
        self.chunk_frames = None if chunk_frames is None else self._positive_int("chunk_frames", chunk_frames)
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

        # the processor's token count follows an overridden kept ratio (loading.load_pretrained)
        self.model, self.processor = load_pretrained(pretrained, token_kept_ratio=token_kept_ratio,
                                                     tome_sort=tome_sort, dtype=dtype, device=self._device)
        self.tokenizer = self.processor.tokenizer
        self.answerer = Answerer(self.model, self.processor, self.chunk_frames)
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
                texts, failures = self.answerer.answer(prompts, *self._generation_settings(gen_kwargs))
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
                scores = self.answerer.score(prompt, continuations, self.sampling)
            except Exception as error:  # noqa: BLE001 - one document never ends the run
                self._fail([requests[i] for i in indices], error)
                scores = [(math.nan, False)] * len(indices)  # no score; eval/scoring.py makes it a wrong one
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
                answers.append(self._converse(*self._conversation(request)))
            except Exception as error:  # noqa: BLE001 - one document never ends the run
                self._fail([request], error)
                answers.append([""])
        self._report_failures("generate_until_multi_round", failed_before)
        return answers

    # -- answering (auroralong_hf.answering) ------------------------------------------------------------------

    def generate(self, prompts: list[Prompt], gen_kwargs: dict) -> list[str]:
        """Answer each prompt with a task's generation settings ("" for a prompt that cannot be answered, with an
        error in the log): prefill one at a time, decode the answerable ones together."""
        answers, failures = self.answerer.answer(prompts, *self._generation_settings(gen_kwargs))
        for row, error in failures.items():
            logger.error(f"auroralong: prompt {row}: answering with an empty string: {error}")
        return answers

    def _converse(self, first: Prompt, next_turn, gen_kwargs: dict) -> list[str]:
        """`Answerer.converse` with a task's settings; a later round whose visual cannot be read ends the
        conversation with an empty answer, logged."""
        answers, error = self.answerer.converse(first, next_turn, *self._generation_settings(gen_kwargs))
        if error is not None:
            logger.error(f"auroralong: ending the conversation with an empty answer: {error}")
        return answers

    def _fail(self, requests: list[Instance], error: Exception) -> None:
        """Record, mark (for eval/scoring.py) and log a document that could not be answered."""
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

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

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
