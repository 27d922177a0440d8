"""The state API without traps: answering from a state is one `generate` call, the state is left as it was, the
ids given are told apart (whole sequence or new tokens) by what the state has seen, and states reload from their
file alone."""

import numpy as np
import pytest
import torch
from outputs import state_of
from tiny_models import decisive_auroralong

from auroralong_hf import AuroraLongConfig, Rwkv6Cache, processor_for_vision_config

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32}
GREEDY = {"max_new_tokens": 5, "do_sample": False}


@pytest.fixture(scope="module")
def model():
    model = decisive_auroralong(VISION, TEXT)
    model.generation_config.eos_token_id = None  # always GREEDY's 5 tokens
    return model


@pytest.fixture(scope="module")
def processor():
    return processor_for_vision_config(VISION)


def video(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 64, 3), dtype=np.uint8)


def turn(question, with_video=True):
    content = [{"type": "video", "video": video(3)}] if with_video else []
    return {"role": "user", "content": [*content, {"type": "text", "text": question}]}


def snapshot(state):
    return [t.clone() for t in state.attn_shift + state.ffn_shift + state.wkv], state.seen_tokens


def test_answer_from_a_state_in_one_call_leaves_it_unchanged(model, processor, tmp_path):
    # a short state (a few text tokens) and a question longer than it: still "new tokens", told by the fingerprint
    head = processor(text="User: Hi.\n\n")
    state = model.prefill(head["input_ids"])
    question = processor(text="User: What colour is the sky on a clear day at noon?\n\nAssistant:")
    assert question["input_ids"].shape[1] > state.seen_tokens
    before = snapshot(state)
    answer = model.generate(**question, cache=state, **GREEDY)
    after = snapshot(state)
    assert after[1] == before[1] and all(torch.equal(a, b) for a, b in zip(after[0], before[0], strict=True))
    whole = torch.cat([head["input_ids"], question["input_ids"]], dim=1)
    reference = model.generate(whole, **GREEDY)
    assert torch.equal(answer[:, question["input_ids"].shape[1]:], reference[:, whole.shape[1]:])
    # the whole sequence with the same state: only the unseen part is fed, the same answer
    again = model.generate(whole, cache=state, **GREEDY)
    assert torch.equal(again[:, whole.shape[1]:], reference[:, whole.shape[1]:])
    # from its file alone (the geometry and the fingerprint travel with it)
    state.save(tmp_path / "s.state")
    loaded = Rwkv6Cache.load(tmp_path / "s.state")
    assert torch.equal(loaded.fingerprint, state.fingerprint) and loaded.seen_tokens == state.seen_tokens
    assert torch.equal(model.generate(**question, cache=loaded, **GREEDY), answer)
    # the state an answer from new tokens ends in knows every id it has seen: the next round gives the whole
    # conversation and only its unseen part is fed
    out = model.generate(**question, cache=state, return_dict_in_generate=True, **GREEDY)
    follow = processor(text="\n\nUser: Why?\n\nAssistant:")["input_ids"]
    conversation = torch.cat([head["input_ids"], out.sequences, follow], dim=1)
    assert state_of(out).has_seen(conversation)
    fed = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(next(kwargs[k] for k in ("input_ids", "inputs_embeds")
                                                     if kwargs.get(k) is not None).shape[1]), with_kwargs=True)
    try:
        continued = model.generate(conversation, cache=state_of(out), **GREEDY)
    finally:
        hook.remove()
    assert sum(fed) == 1 + follow.shape[1] + GREEDY["max_new_tokens"] - 1  # the last answer token, the turn, decoding
    assert torch.equal(continued, model.generate(conversation, **GREEDY))


def test_multi_round_continues_the_output_state_and_skips_seen_videos(model, processor):
    first = [turn("What happens?")]
    inputs = processor.apply_chat_template(first, add_generation_prompt=True, tokenize=True, return_dict=True)
    out = model.generate(**inputs, return_dict_in_generate=True, **GREEDY)
    state = state_of(out)
    assert state.seen_tokens == out.sequences.shape[1] - 1  # the last new token is not fed yet
    follow = processor(text="\n\nUser: And then?\n\nAssistant:")["input_ids"]
    ids = torch.cat([out.sequences, follow], dim=1)
    decoded = []
    video = inputs["pixel_values_videos"][0]
    original = video.chunks
    video.chunks = lambda *a, **k: decoded.append(1) or original(*a, **k)
    # the first round's video passed again (as a whole conversation would): recognised as seen, not decoded
    continued = model.generate(ids, pixel_values_videos=[video], cache=state, **GREEDY)
    assert decoded == []
    reference = model.generate(ids, pixel_values_videos=inputs["pixel_values_videos"], **GREEDY)
    assert torch.equal(continued, reference)


def test_a_state_of_another_model_or_a_broken_file_is_refused(model, tmp_path):
    state = model.new_state()
    state.save(tmp_path / "s.state")
    other = AuroraLongConfig(vision_config=VISION, text_config={**TEXT, "num_hidden_layers": 3}).text_config
    with pytest.raises(ValueError, match=r"s\.state.*another geometry"):
        Rwkv6Cache.load(tmp_path / "s.state", other)
    (tmp_path / "bad.state").write_bytes(b"not a state")
    with pytest.raises(ValueError, match=r"bad\.state"):
        Rwkv6Cache.load(tmp_path / "bad.state")
