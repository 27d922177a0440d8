"""What every folder this package writes carries beside its weights and processor: a generation config whose end of
sequence is the end of an answer, and a model card (README.md with the Hub's YAML metadata).

The writers (`create_random`, `convert/rwkv6.py`, `convert/auroralong.py`, the final save of `training/train.py`) call
`answer_generation_config` before `save_pretrained` and `write_model_card` after it, so the stop token is derived
from the tokenizer here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import GenerationConfig

from .processing.processing_auroralong import STOP_STRING

# kind -> (pipeline_tag, tags, how to load it)
_KINDS = {
    "auroralong": (
        "image-text-to-text",
        ["auroralong", "video", "video-text-to-text", "rwkv", "rwkv6", "siglip", "token-merging"],
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
        "model = AutoModelForImageTextToText.from_pretrained(FOLDER, trust_remote_code=True)\n"
        "processor = AutoProcessor.from_pretrained(FOLDER, trust_remote_code=True)\n"
        "conversation = [{\"role\": \"user\", \"content\": [{\"type\": \"video\", \"path\": \"clip.mp4\"},\n"
        "                                             {\"type\": \"text\", \"text\": \"What happens?\"}]}]\n"
        "inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,\n"
        "                                       return_dict=True)  # the video is streamed by generate\n"
        "answer = model.generate(**inputs, max_new_tokens=64)  # stops at the end of the answer by itself\n"
        "print(processor.post_process_image_text_to_text(answer[:, inputs[\"input_ids\"].shape[1]:])[0])\n",
    ),
    "rwkv6": (
        "text-generation",
        ["rwkv", "rwkv6", "finch", "rnn"],
        "import auroralong_hf  # registers Rwkv6ForCausalLM with the Auto classes\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "model = AutoModelForCausalLM.from_pretrained(FOLDER)\n"
        "tokenizer = AutoTokenizer.from_pretrained(FOLDER)\n"
        "inputs = tokenizer(\"User: Where is the Eiffel tower?\\n\\nAssistant:\", return_tensors=\"pt\")\n"
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))\n",
    ),
}


def answer_generation_config(tokenizer) -> GenerationConfig:
    """The generation defaults of every model this package writes: stop after the token that ends an answer.

    Answers end with "\n\n" (the sandwich template's stop string); its id (261 in the World vocabulary) is read from
    `tokenizer`, and so are the others: `eos_token_id` is [the "\n\n" id, the tokenizer's eos] (the World
    tokenizer's "<|endoftext|>", 0, ends a document), `pad_token_id` and `bos_token_id` the tokenizer's (0). The
    tokenizer's own ids are included because transformers' Trainer adds them at `train()` anyway
    (`align_special_tokens`): every folder, trained or not, then carries the same config.
    Raises ValueError when the tokenizer does not encode "\n\n" as one token, or has no pad token.
    """
    ids = tokenizer.encode(STOP_STRING, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{type(tokenizer).__name__} encodes the end of an answer {STOP_STRING!r} as {ids}, not as "
                         "one token: generation could not stop on it.")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no pad token: batched generation needs one.")
    eos = list(dict.fromkeys(i for i in (ids[0], tokenizer.eos_token_id) if i is not None))
    return GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id)


def hub_id(source) -> str | None:
    """`source` when it names a Hub repository ("owner/name") rather than a local path, else None: a model card's
    `base_model` can only name the Hub."""
    text = str(source)
    if os.path.exists(os.path.expanduser(text)) or text.count("/") != 1:
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def read_license(folder) -> str | None:
    """The `license` of the model card in `folder` (a source being converted or trained from), if it has one."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    return ModelCard.load(card).data.to_dict().get("license")


def write_model_card(folder, kind: str, *, summary: str, license: str | None = None,
                     base_model: str | list[str] | None = None) -> Path:
    """Write `folder`/README.md: YAML metadata (license, library_name, pipeline_tag, tags, base_model) + `summary` +
    how to load the folder.

    kind: "auroralong" (pipeline image-text-to-text) or "rwkv6" (text-generation, a plain RWKV-6 language model).
    license: a Hub licence id; None writes "unknown" (converted weights keep their source's licence, which this
    package cannot always know). base_model: Hub ids only (see `hub_id`); None leaves the field out.
    Returns the card's path; ValueError for an unknown kind.
    """
    if kind not in _KINDS:
        raise ValueError(f"Unknown model card kind {kind!r}: choose one of {', '.join(_KINDS)}.")
    pipeline_tag, tags, usage = _KINDS[kind]
    data = ModelCardData(license=license or "unknown", library_name="transformers", pipeline_tag=pipeline_tag,
                         tags=list(tags), base_model=base_model)
    title = "AuroraLong" if kind == "auroralong" else "RWKV-6 (Finch)"
    text = (f"---\n{data.to_yaml()}\n---\n\n# {title}, written by auroralong-hf\n\n{summary.strip()}\n\n"
            f"## Use\n\n```python\nFOLDER = \"path/to/this/folder\"\n{usage}```\n")
    path = Path(folder) / "README.md"
    ModelCard(text).save(path)
    return path


def write_training_card(folder, stage: str, base_model) -> None:
    """The model card of a trained folder: the base's licence (from its card, if any), the base as `base_model`
    when it is a Hub id."""
    base = str(base_model)
    write_model_card(folder, "auroralong", base_model=hub_id(base), license=read_license(base) if Path(base).is_dir()
                     else None, summary=f"Trained by `auroralong train` (stage {stage}) from `{base}`.")



__all__ = [
    "write_training_card","answer_generation_config", "hub_id", "read_license", "write_model_card"]
