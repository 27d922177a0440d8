"""The RWKV-6 language model: state continuation, padding, generation, Auto classes, fla layout, bad input."""

import pytest
import torch
from outputs import state_of
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from auroralong_hf import Rwkv6Cache, Rwkv6Config, Rwkv6ForCausalLM, Rwkv6Model, RwkvWorldTokenizer


def test_config_derives_finch_geometry_and_validates():
    config = Rwkv6Config()
    assert (config.num_heads, config.intermediate_size) == (32, 7168)
    assert (config.time_mix_lora_rank, config.time_decay_lora_rank) == (32, 64)
    assert config.group_norm_eps == 64e-5
    wide = Rwkv6Config(hidden_size=4096, num_hidden_layers=1)
    assert (wide.intermediate_size, wide.time_mix_lora_rank, wide.time_decay_lora_rank) == (14336, 64, 128)
    with pytest.raises(Exception, match="multiple of head_size"):
        Rwkv6Config(hidden_size=100)
    with pytest.raises(Exception, match="wkv_backend"):
        Rwkv6Config(wkv_backend="cuda")
    with pytest.raises(Exception, match="num_hidden_layers"):
        Rwkv6Config(num_hidden_layers=0)
    with pytest.raises(Exception, match="expected int"):
        Rwkv6Config(hidden_size="2048")


def test_parameter_names_and_shapes_follow_fla():
    fla_models = pytest.importorskip("fla.models")
    width, layers = 128, 2
    ours = Rwkv6ForCausalLM(Rwkv6Config(hidden_size=width, num_hidden_layers=layers, vocab_size=300))
    theirs = fla_models.RWKV6ForCausalLM(fla_models.RWKV6Config(
        hidden_size=width, num_hidden_layers=layers, vocab_size=300, expand_k=1, expand_v=1, num_heads=width // 64,
        intermediate_size=ours.config.intermediate_size, proj_low_rank_dim=32, gate_low_rank_dim=64,
        fuse_norm=False, fuse_cross_entropy=False,
    ))
    our_shapes = {name: tuple(t.shape) for name, t in ours.state_dict().items()}
    their_shapes = {name: tuple(t.shape) for name, t in theirs.state_dict().items()}
    assert our_shapes == their_shapes


def test_state_continuation_equals_one_pass(tiny_rwkv6):
    ids = torch.randint(0, 300, (2, 53))
    full = tiny_rwkv6(ids).logits
    cache, pieces = None, []
    for start, end in [(0, 20), (20, 21), (21, 22), (22, 53)]:
        out = tiny_rwkv6(ids[:, start:end], cache=cache, use_cache=True)
        cache = state_of(out)
        pieces.append(out.logits)
    assert isinstance(cache, Rwkv6Cache) and cache.get_seq_length() == 53
    assert (torch.cat(pieces, dim=1) - full).abs().max() <= 1e-5


def test_state_size_does_not_grow(tiny_rwkv6):
    def state_numel(length):
        cache = state_of(tiny_rwkv6(torch.randint(0, 300, (1, length)), use_cache=True))
        return sum(t.numel() for states in (cache.attn_shift, cache.ffn_shift, cache.wkv) for t in states)

    config = tiny_rwkv6.config
    expected = config.num_hidden_layers * (2 * config.hidden_size + config.num_heads * config.head_size ** 2)
    assert state_numel(3) == state_numel(200) == expected
    cache = state_of(tiny_rwkv6(torch.randint(0, 300, (1, 5)), use_cache=True))
    assert all(t.dtype == torch.float32 for t in cache.wkv)


def test_left_padded_rows_equal_rows_alone(tiny_rwkv6):
    lengths = [40, 23, 1]
    rows = [torch.randint(1, 300, (n,)) for n in lengths]
    ids = torch.zeros(3, 40, dtype=torch.long)
    mask = torch.zeros(3, 40, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, 40 - len(row):] = row
        mask[i, 40 - len(row):] = 1
    batched = tiny_rwkv6(ids, attention_mask=mask, use_cache=True)
    for i, row in enumerate(rows):
        alone = tiny_rwkv6(row[None], use_cache=True)
        assert (batched.logits[i, 40 - len(row):] - alone.logits[0]).abs().max() <= 1e-5
        # and the state carried on is that row's own state
        nxt = torch.randint(1, 300, (1, 3))
        cont_batched = tiny_rwkv6(nxt.expand(3, -1), cache=state_of(batched), use_cache=True)
        batched = tiny_rwkv6(ids, attention_mask=mask, use_cache=True)  # fresh state for the next row
        cont_alone = tiny_rwkv6(nxt, cache=state_of(alone), use_cache=True)
        assert (cont_batched.logits[i] - cont_alone.logits[0]).abs().max() <= 1e-5


def test_generate_with_cache_equals_without(tiny_rwkv6):
    ids = torch.randint(1, 300, (2, 12))
    mask = torch.ones_like(ids)
    for kwargs in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        cached = tiny_rwkv6.generate(ids, attention_mask=mask, max_new_tokens=8, **kwargs)
        uncached = tiny_rwkv6.generate(ids, attention_mask=mask, max_new_tokens=8, use_cache=False, **kwargs)
        assert torch.equal(cached, uncached), kwargs
    torch.manual_seed(3)
    sampled = tiny_rwkv6.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20)
    torch.manual_seed(3)
    sampled_uncached = tiny_rwkv6.generate(
        ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20, use_cache=False
    )
    assert torch.equal(sampled, sampled_uncached)
    several = tiny_rwkv6.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=True, num_return_sequences=3)
    assert several.shape == (6, 16)


def test_generate_left_padded_batch_equals_each_row(tiny_rwkv6):
    long, short = torch.randint(1, 300, (1, 15)), torch.randint(1, 300, (1, 6))
    ids = torch.cat([long, torch.cat([torch.zeros(1, 9, dtype=torch.long), short], dim=1)])
    mask = (torch.arange(15) >= torch.tensor([[0], [9]])).long()
    batched = tiny_rwkv6.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(batched[0, 15:], tiny_rwkv6.generate(long, max_new_tokens=6, do_sample=False)[0, 15:])
    assert torch.equal(batched[1, 15:], tiny_rwkv6.generate(short, max_new_tokens=6, do_sample=False)[0, 6:])


def positions_fed(model):
    """A list that receives the number of positions of every forward of `model`'s RWKV-6 stack, and the hook."""
    fed = []

    def record(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        fed.append((kwargs.get("input_ids") if embeds is None else embeds).shape[1])

    stack = model.model if isinstance(model, Rwkv6ForCausalLM) else model.model.language_model
    return fed, stack.register_forward_pre_hook(record, with_kwargs=True)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_generate_from_a_user_state_feeds_only_the_unseen_tokens(tiny_rwkv6, name):
    prefix, question = torch.randint(1, 300, (1, 10)), torch.randint(1, 300, (1, 5))
    whole = torch.cat([prefix, question], dim=1)
    from_scratch = tiny_rwkv6.generate(whole, max_new_tokens=6, do_sample=False)
    cases = {  # what the user passes besides the state -> the tokens of the answer
        "whole sequence": {"inputs": whole},
        "whole sequence, mask as long": {"inputs": whole, "attention_mask": torch.ones(1, 15, dtype=torch.long)},
        "new tokens, mask of seen + new": {"inputs": question, "attention_mask": torch.ones(1, 15, dtype=torch.long)},
        "new tokens alone": {"inputs": question},  # the state's fingerprint tells them from a whole sequence
    }
    for case, kwargs in cases.items():
        state = tiny_rwkv6.new_state()
        tiny_rwkv6(prefix, cache=state)
        fed, hook = positions_fed(tiny_rwkv6)
        try:
            answer = tiny_rwkv6.generate(**kwargs, max_new_tokens=6, do_sample=False, **{name: state})
        finally:
            hook.remove()
        assert fed == [4, 1] + [1] * 5, case  # the prompt but its last id (read into the state), then one by one
        assert torch.equal(answer[:, -6:], from_scratch[:, -6:]), case
        assert state.seen_tokens == 10, case  # the user's state is left as it was (generation advanced a copy)
    state = tiny_rwkv6.new_state()
    tiny_rwkv6(whole, cache=state)
    with pytest.raises(ValueError, match="nothing is left to feed"):
        tiny_rwkv6.generate(whole, max_new_tokens=2, **{name: state})


@pytest.mark.parametrize("mode", [{"do_sample": False}, {"num_beams": 3, "do_sample": False},
                                  {"do_sample": True, "top_k": 20}])
def test_every_decoding_mode_continues_a_state_as_a_fresh_run(tiny_rwkv6, mode):
    prefix, question = torch.randint(1, 300, (2, 10)), torch.randint(1, 300, (2, 5))
    whole = torch.cat([prefix, question], dim=1)
    torch.manual_seed(3)
    fresh = tiny_rwkv6.generate(whole, max_new_tokens=6, return_dict_in_generate=True, **mode)
    state = tiny_rwkv6.new_state(2)
    tiny_rwkv6(prefix, cache=state)
    torch.manual_seed(3)
    continued = tiny_rwkv6.generate(whole, cache=state, max_new_tokens=6, return_dict_in_generate=True, **mode)
    assert torch.equal(continued.sequences, fresh.sequences)
    assert isinstance(state_of(continued), Rwkv6Cache) and isinstance(state_of(fresh), Rwkv6Cache)


def test_states_prefilled_apart_decode_together(tiny_rwkv6):
    prompts = [torch.randint(1, 300, (1, n)) for n in (12, 5, 8)]
    states = [state_of(tiny_rwkv6(p[:, :-1], use_cache=True)) for p in prompts]
    stacked = Rwkv6Cache.stack(states)
    assert stacked.batch_size == 3 and stacked.seen_tokens == 11
    last = torch.cat([p[:, -1:] for p in prompts])
    mask = torch.ones(3, stacked.seen_tokens + 1, dtype=torch.long)
    together = tiny_rwkv6.generate(last, attention_mask=mask, cache=stacked, max_new_tokens=6,
                                   do_sample=False)[:, 1:]
    for row, prompt in enumerate(prompts):
        alone = tiny_rwkv6.generate(prompt, max_new_tokens=6, do_sample=False)[0, prompt.shape[1]:]
        assert torch.equal(together[row], alone)
    assert all(s.batch_size == 1 for s in states)  # stacking copies
    other = Rwkv6Config(hidden_size=64, num_hidden_layers=2, head_size=32, vocab_size=300)
    with pytest.raises(ValueError, match="different geometries"):
        Rwkv6Cache.stack([states[0], Rwkv6Cache(other, 1)])
    with pytest.raises(ValueError, match="at least one"):
        Rwkv6Cache.stack([])


def test_assisted_and_speculative_decoding_are_refused(tiny_rwkv6):
    ids = torch.randint(1, 300, (1, 6))
    with pytest.raises(ValueError, match="stateful"):
        tiny_rwkv6.generate(ids, max_new_tokens=3, assistant_model=tiny_rwkv6)
    with pytest.raises(ValueError, match="stateful"):
        tiny_rwkv6.generate(ids, max_new_tokens=3, prompt_lookup_num_tokens=2)
    with pytest.raises(NotImplementedError, match="rolled back"):
        state_of(tiny_rwkv6(ids, use_cache=True)).crop(3)


def test_training_step_and_gradient_checkpointing(tiny_rwkv6):
    ids = torch.randint(0, 300, (2, 40))
    model = tiny_rwkv6.train()
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads["model.layers.0.attn.bonus"].abs().sum() > 0
    assert grads["model.layers.1.attn.w_proj.linear.lora.2.bias"].abs().sum() > 0
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss_ckpt = model(ids, labels=ids).loss
    loss_ckpt.backward()
    assert torch.allclose(loss, loss_ckpt)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-6, rtol=1e-4), name


def test_bf16_forward_is_close_to_fp32(tiny_rwkv6):
    ids = torch.randint(0, 300, (1, 30))
    reference = tiny_rwkv6(ids).logits
    logits = tiny_rwkv6.to(torch.bfloat16)(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() <= 0.1 * reference.abs().max()


def test_auto_classes_and_save_load_round_trip(tiny_rwkv6, tmp_path):
    tiny_rwkv6.save_pretrained(tmp_path)
    RwkvWorldTokenizer().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "auroralong_rwkv6"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, Rwkv6ForCausalLM)
    ids = torch.randint(0, 300, (1, 20))
    assert torch.equal(loaded(ids).logits, tiny_rwkv6(ids).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), Rwkv6Model)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), RwkvWorldTokenizer)


def test_backend_choice(tiny_rwkv6, monkeypatch):
    assert tiny_rwkv6.model.wkv_backend(torch.device("cpu")) == "torch"
    monkeypatch.setenv("AURORALONG_WKV_BACKEND", "fla")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        tiny_rwkv6(torch.randint(0, 300, (1, 4)))
    monkeypatch.setenv("AURORALONG_WKV_BACKEND", "triton")
    with pytest.raises(ValueError, match="AURORALONG_WKV_BACKEND"):
        tiny_rwkv6(torch.randint(0, 300, (1, 4)))


def test_bad_input_is_named(tiny_rwkv6):
    with pytest.raises(ValueError, match="token id 300, outside the vocabulary"):
        tiny_rwkv6(torch.tensor([[1, 2, 300]]))
    with pytest.raises(ValueError, match="token id -1"):
        tiny_rwkv6(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, seq_len\]"):
        tiny_rwkv6(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="no tokens"):
        tiny_rwkv6(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        tiny_rwkv6(inputs_embeds=torch.zeros(1, 4, 64))
    with pytest.raises(ValueError, match="attention_mask must be"):
        tiny_rwkv6(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2))
    other = Rwkv6Config(hidden_size=64, num_hidden_layers=2, head_size=32, vocab_size=300)
    with pytest.raises(ValueError, match="another geometry"):
        tiny_rwkv6(torch.tensor([[1, 2]]), cache=Rwkv6Cache(other, 1), use_cache=True)
    with pytest.raises(ValueError, match="holds 2 sequences"):
        tiny_rwkv6(torch.tensor([[1, 2]]), cache=Rwkv6Cache(tiny_rwkv6.config, 2), use_cache=True)


def test_state_holds_no_activations(tiny_rwkv6):
    cache = state_of(tiny_rwkv6(torch.randint(0, 300, (1, 500)), use_cache=True))
    for states in (cache.attn_shift, cache.ffn_shift, cache.wkv):
        for state in states:
            assert state.untyped_storage().nbytes() == state.numel() * state.element_size()


def test_feed_reads_a_long_input_in_bounded_pieces_to_the_state_of_one_forward(tiny_rwkv6):
    """feed (Rwkv6Model.feed) runs `chunk_tokens` positions at a time and keeps no output, so memory does not grow
    with the input; its state is the one a single forward reaches (fp32, atol 1e-5: the WKV sums in other chunks),
    padded rows included."""
    torch.manual_seed(1)
    ids = torch.randint(1, 300, (2, 150))
    mask = torch.ones_like(ids)
    mask[1, :37] = 0  # left padding in the second row
    whole = tiny_rwkv6.new_state(2)
    tiny_rwkv6(ids, attention_mask=mask, cache=whole)
    fed, hook = positions_fed(tiny_rwkv6)
    try:
        pieces = tiny_rwkv6.feed(tiny_rwkv6.new_state(2), ids, attention_mask=mask, chunk_tokens=64)
    finally:
        hook.remove()
    assert fed == [64, 64, 22]
    for name in ("attn_shift", "ffn_shift", "wkv"):
        for got, want in zip(getattr(pieces, name), getattr(whole, name), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert pieces.seen_tokens == whole.seen_tokens == 150
    assert pieces.has_seen(ids)  # the fingerprint is the one of the whole input
    with pytest.raises(ValueError, match="chunk_tokens"):
        tiny_rwkv6.feed(tiny_rwkv6.new_state(2), ids, chunk_tokens=0)


def test_generate_reads_a_long_prompt_in_bounded_pieces(tiny_rwkv6):
    from auroralong_hf.modeling import FEED_CHUNK_TOKENS

    prompt = torch.randint(1, 300, (1, FEED_CHUNK_TOKENS + 300))
    fed, hook = positions_fed(tiny_rwkv6)
    try:
        answer = tiny_rwkv6.generate(prompt, max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert fed == [FEED_CHUNK_TOKENS, 299, 1, 1, 1]  # the prompt but its last id, in pieces; then one at a time
    state = tiny_rwkv6.new_state()
    tiny_rwkv6(prompt[:, :-1], cache=state)  # one forward over the whole prompt gives the same answer
    assert torch.equal(answer, tiny_rwkv6.generate(prompt, max_new_tokens=3, do_sample=False, cache=state))
