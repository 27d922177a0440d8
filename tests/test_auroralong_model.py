"""AuroraLong end to end on a tiny random model: placeholders, generation, streaming in constant memory, states."""

import numpy as np
import pytest
import torch
from outputs import state_of
from tiny_models import decisive_auroralong
from transformers import AutoModelForImageTextToText

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, Rwkv6Cache, processor_for_vision_config

VISION = {  # the real 384/16 grid, 23 layers (58 tokens per frame at 0.1), tiny widths
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 23,
    "image_size": 384, "patch_size": 16, "token_kept_ratio": 0.1, "vision_use_head": False,
}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32}


@pytest.fixture(scope="module")
def model():
    return decisive_auroralong(VISION, TEXT)


@pytest.fixture(scope="module")
def processor():
    return processor_for_vision_config(VISION)


def frames(count, seed):
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 64, 3), dtype=np.uint8)


def ask(processor, video, question="What happens?", stream_videos=False):
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         processor_kwargs={"stream_videos": stream_videos})


def test_forward_loss_and_placeholder_checks(model, processor):
    inputs = ask(processor, frames(3, 0))
    assert (inputs["input_ids"] == 65535).sum() == 3 * 58
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == 65535, -100)
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], 65536) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="give 116 visual tokens but input_ids hold 174"):
        model(input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"][:, :2])
    with pytest.raises(ValueError, match="no video pixel values"):
        model(input_ids=inputs["input_ids"])


def test_streaming_equals_all_at_once(model, processor):
    """prefill (K frames at a time) reaches the state of the all-at-once forward; generate (which streams) answers
    as a greedy loop after that forward."""
    inputs = ask(processor, frames(5, 1))
    ids = inputs["input_ids"]
    full = model(**inputs, use_cache=True)
    for chunk_frames in (1, 2, 5):
        state = model.prefill(ids[:, :-1], pixel_values_videos=inputs["pixel_values_videos"],
                              video_frame_counts=inputs["video_frame_counts"], chunk_frames=chunk_frames)
        assert state.seen_tokens == ids.shape[1] - 1
        streamed = model(ids[:, -1:], cache=state, use_cache=True)
        assert (streamed.logits[0, -1] - full.logits[0, -1]).abs().max() <= 1e-4
    lazy = ask(processor, frames(5, 1), stream_videos=True)
    assert lazy["pixel_values_videos"][0].num_frames == 5
    answer = model.generate(**lazy, max_new_tokens=6, do_sample=False, chunk_frames=2)
    assert torch.equal(answer[:, :ids.shape[1]], ids)
    greedy, state, token = [], state_of(full), full.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(6):
        greedy.append(int(token))
        token = model(token, cache=state, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
    assert answer[0, ids.shape[1]:].tolist() == greedy


def test_stream_state_size_is_constant(model, processor):
    sizes = []
    for count in (1, 12):
        inputs = ask(processor, frames(count, 2), stream_videos=True)
        state = model.prefill(inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"], chunk_frames=2)
        sizes.append(sum(t.numel() for s in (state.attn_shift, state.ffn_shift, state.wkv) for t in s))
    assert sizes[0] == sizes[1]


def test_batch_of_videos_of_different_lengths_equals_each_alone(model, processor):
    videos, questions = [frames(4, 3), frames(2, 4)], ["Describe it.", "What color?"]
    prompts = [processor.apply_chat_template([{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": q}]}], add_generation_prompt=True) for q in questions]
    batch = processor(text=prompts, videos=videos)
    together = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for row, (video, question) in enumerate(zip(videos, questions, strict=True)):
        alone = ask(processor, video, question)
        answer = model.generate(**alone, max_new_tokens=5, do_sample=False)[0, alone["input_ids"].shape[1]:]
        assert torch.equal(together[row], answer)


def test_one_encoding_many_questions_and_state_files(model, processor, tmp_path):
    inputs = ask(processor, frames(3, 5))
    ids = inputs["input_ids"][0].tolist()
    last = len(ids) - ids[::-1].index(65535)
    encoded = state_of(model(input_ids=inputs["input_ids"][:, :last], pixel_values_videos=inputs["pixel_values_videos"],
                    use_cache=True))
    encoded.save(tmp_path / "video.state")
    reloaded = Rwkv6Cache.load(tmp_path / "video.state")  # the geometry comes from the file
    for question in ("What happens?", "Who is there?"):
        suffix = processor.tokenizer.encode(f"\n{question}\n\nAssistant:")
        whole = torch.tensor([ids[:last] + suffix])
        reference = model(input_ids=whole, pixel_values_videos=inputs["pixel_values_videos"]).logits[0, -1]
        for state in (encoded.copy(), reloaded.copy()):
            logits = model(torch.tensor([suffix]), cache=state, use_cache=True).logits[0, -1]
            assert (logits - reference).abs().max() <= 1e-4
    other = AuroraLongConfig(vision_config=VISION, text_config={**TEXT, "num_hidden_layers": 3}).text_config
    with pytest.raises(ValueError, match="another geometry"):
        Rwkv6Cache.load(tmp_path / "video.state", other)
    (tmp_path / "bad.state").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="bad.state"):
        Rwkv6Cache.load(tmp_path / "bad.state", model.config.text_config)


def test_save_load_round_trip_and_auto_class(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert isinstance(loaded, AuroraLongForConditionalGeneration)
    inputs = ask(processor, frames(2, 6))
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_gradients_and_checkpointing():
    torch.manual_seed(1)
    model = AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=VISION, text_config=TEXT)).train()
    processor = processor_for_vision_config(VISION)
    inputs = ask(processor, frames(2, 7))
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == 65535, -100)
    model(**inputs, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any("vision_tower" in n for n in reference) and any("multi_modal_projector" in n for n in reference)
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model(**inputs, labels=labels).loss.backward()
    for name, param in model.named_parameters():
        if name in reference:
            assert torch.allclose(param.grad, reference[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("mode", [{"num_beams": 3, "do_sample": False}, {"do_sample": True, "top_k": 20},
                                  {"do_sample": False, "num_return_sequences": 1}])
def test_lazy_videos_work_with_every_generate_feature(model, processor, mode):
    """Beams, sampling, streamers, return_dict_in_generate: the streamed (lazy) video gives what the same video's
    pixel tensor gives, and the streamer sees the prompt and then every new token."""
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(value.flatten().tolist())

        def end(self):
            self.puts.append("end")

    options = {"max_new_tokens": 4, "return_dict_in_generate": True, "output_scores": True, **mode}
    outputs = []
    for stream in (True, False):
        inputs = ask(processor, frames(3, 8), stream_videos=stream)
        streamer = Collect() if mode.get("num_beams", 1) == 1 else None
        torch.manual_seed(5)
        out = model.generate(**inputs, streamer=streamer, chunk_frames=2, **options)
        outputs.append(out)
        assert torch.equal(out.sequences[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert isinstance(state_of(out), Rwkv6Cache) and len(out.scores) == 4
        if streamer is not None:
            assert streamer.puts[0] == inputs["input_ids"][0].tolist() and streamer.puts[-1] == "end"
            assert sum(streamer.puts[1:-1], []) == out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    assert torch.equal(outputs[0].sequences, outputs[1].sequences)
