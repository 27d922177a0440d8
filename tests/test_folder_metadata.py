"""Every folder this package writes carries a generation config that stops at the end of an answer ("\\n\\n") and a
model card whose YAML metadata parses: create-random, convert rwkv6, convert auroralong, convert compose, and
`generate` from a loaded folder stops by itself."""

import json

import pytest
import torch
from auroralong_checkpoints import write_siglip_full, write_xtuner_checkpoint
from huggingface_hub import metadata_load
from rwkv6_checkpoints import make_blinkdl_state_dict, write_blinkdl_checkpoint
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from auroralong_hf import RwkvWorldTokenizer, answer_generation_config, write_model_card
from auroralong_hf.convert.auroralong import compose_auroralong, convert_auroralong_checkpoint
from auroralong_hf.convert.rwkv6 import convert_rwkv6_checkpoint
from auroralong_hf.create_random import create_random, random_model

STOP_ID = 261  # "\n\n" in the World vocabulary, written here once to check the derived value (0: "<|endoftext|>")


def check_folder(folder, pipeline_tag: str, license: str = "unknown") -> dict:
    """The folder's generation config stops at "\\n\\n" and pads with 0; its card's metadata parses. Returns it."""
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == ([STOP_ID, 0], 0)
    metadata = metadata_load(folder / "README.md")
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == pipeline_tag
    assert metadata["license"] == license and "rwkv6" in metadata["tags"]
    return metadata


class ForceTokenAt(LogitsProcessor):
    """Greedy decoding picks `token` at the `step`-th new token (0-based), and never before; "<|endoftext|>" (0, the
    config's other end of sequence) never, so that only `token` can end the generation."""

    def __init__(self, prompt_length: int, step: int, token: int):
        self.prompt_length, self.step, self.token = prompt_length, step, token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        if input_ids.shape[1] - self.prompt_length == self.step:
            scores[:] = -float("inf")
            scores[:, self.token] = 0.0
        else:
            scores[:, [self.token, 0]] = -float("inf")
        return scores


def generate_with_forced_stop(model, step: int = 3, max_new_tokens: int = 10, **kwargs) -> list[int]:
    input_ids = torch.tensor([RwkvWorldTokenizer().encode("User: Hi\n\nAssistant:")])
    forced = LogitsProcessorList([ForceTokenAt(input_ids.shape[1], step, STOP_ID)])
    with torch.no_grad():
        output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=forced,
                                **kwargs)
    return output[0, input_ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metadata") / "tiny"
    create_random(folder, "tiny")
    return folder


def test_the_stop_token_comes_from_the_tokenizer():
    config = answer_generation_config(RwkvWorldTokenizer())
    assert isinstance(config, GenerationConfig) and (config.eos_token_id, config.pad_token_id) == ([STOP_ID, 0], 0)

    class SplitsTheStop:
        pad_token_id = eos_token_id = bos_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [11, 11]

    with pytest.raises(ValueError, match="SplitsTheStop encodes the end of an answer '\\\\n\\\\n' as \\[11, 11\\]"):
        answer_generation_config(SplitsTheStop())


def test_create_random_folder_stops_at_the_end_of_an_answer(random_folder):
    check_folder(random_folder, "image-text-to-text", license="mit")
    model = AutoModelForImageTextToText.from_pretrained(random_folder).eval()
    assert model.generation_config.eos_token_id[0] == STOP_ID
    # no eos argument: generation ends right after the forced "\n\n"
    new = generate_with_forced_stop(model, step=3)
    assert len(new) == 4 and new[-1] == STOP_ID and STOP_ID not in new[:-1]
    # the same forcing without an end-of-sequence token runs to max_new_tokens: the stop above is the config's
    model.generation_config.eos_token_id = None
    assert len(generate_with_forced_stop(model, step=3)) == 10


def test_models_built_in_memory_stop_too():
    model, processor = random_model("tiny")
    assert model.generation_config.eos_token_id[0] == processor.tokenizer.encode("\n\n")[0] == STOP_ID
    new = generate_with_forced_stop(model, step=1)
    assert new[-1] == STOP_ID and len(new) == 2


def test_convert_rwkv6_folder(tmp_path):
    source = write_blinkdl_checkpoint(make_blinkdl_state_dict(hidden_size=64, num_layers=1, vocab=65536),
                                      tmp_path / "src" / "m.pth")
    (source.parent / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Finch\n")  # the source's own card
    out = tmp_path / "out"
    convert_rwkv6_checkpoint(source, out)
    metadata = check_folder(out, "text-generation", license="apache-2.0")
    assert "base_model" not in metadata  # a local file is no Hub id
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    new = generate_with_forced_stop(model, step=2)
    assert new[-1] == STOP_ID and len(new) == 3
    assert AutoTokenizer.from_pretrained(out).encode("\n\n") == [STOP_ID]


def test_convert_auroralong_and_compose_folders(tmp_path):
    parts = write_xtuner_checkpoint(tmp_path / "src")
    out = tmp_path / "converted"
    convert_auroralong_checkpoint(parts["root"], out)
    check_folder(out, "image-text-to-text")
    assert "xtuner" in (out / "README.md").read_text()

    composed = tmp_path / "composed"
    compose_auroralong(write_siglip_full(parts["vision"], tmp_path / "siglip"), parts["root"], composed)
    check_folder(composed, "image-text-to-text")
    assert "RANDOMLY initialised" in (composed / "README.md").read_text()
    model = AutoModelForImageTextToText.from_pretrained(composed).eval()
    assert generate_with_forced_stop(model, step=0) == [STOP_ID]


def test_model_card_kinds_and_base_model(tmp_path):
    path = write_model_card(tmp_path, "rwkv6", summary="x", license="apache-2.0", base_model="RWKV/v6-Finch-1B6-HF")
    metadata = metadata_load(path)
    assert (metadata["pipeline_tag"], metadata["base_model"]) == ("text-generation", "RWKV/v6-Finch-1B6-HF")
    with pytest.raises(ValueError, match="Unknown model card kind 'bert'"):
        write_model_card(tmp_path, "bert", summary="x")


def test_pipeline_answers_stop_by_themselves_without_the_stop_string(random_folder, tmp_path):
    """pipeline("image-text-to-text") on a video chat: the processor streams the video, generation ends at the
    forced "\\n\\n" by the folder's config, and the text carries no trailing "\\n\\n"."""
    from transformers import pipeline
    from videos import write_video

    clip = write_video(tmp_path / "clip.mp4", 20, fps=10, size=(64, 48)).path
    pipe = pipeline("image-text-to-text", model=str(random_folder))
    messages = [{"role": "user", "content": [{"type": "video", "path": str(clip)},
                                             {"type": "text", "text": "What happens?"}]}]
    inputs = pipe.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    forced = LogitsProcessorList([ForceTokenAt(inputs["input_ids"].shape[1], 3, STOP_ID)])
    (result,) = pipe(text=messages, max_new_tokens=10, return_full_text=False,
                     generate_kwargs={"logits_processor": forced})
    text = result["generated_text"]
    expected = pipe.processor.decode(generate_with_forced_stop(pipe.model, step=3)[:3], skip_special_tokens=True)
    assert isinstance(text, str) and not text.endswith("\n\n")
    assert len(pipe.tokenizer.encode(text)) <= 3  # three answer tokens, then the stop
    assert expected  # the check can fail: the forced answer is not empty


def test_the_model_card_usage_runs_as_written(random_folder, tmp_path, monkeypatch):
    """The Python block of a written folder's card runs, with its FOLDER and the clip it names."""
    import re

    from videos import write_video

    card = (random_folder / "README.md").read_text()
    (block,) = re.findall(r"^```python\n(.*?)^```$", card, flags=re.S | re.M)
    write_video(tmp_path / "clip.mp4", 20, fps=10, size=(64, 48))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block.replace('"path/to/this/folder"', repr(str(random_folder))), "card", "exec"), namespace)  # noqa: S102
    assert namespace["answer"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
