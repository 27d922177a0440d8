"""Tests of `auroralong_hf.convert.rwkv6`: the three checkpoint formats, parity with the `rwkv` pip package, errors.

The `rwkv` package (BlinkDL's ChatRWKV, pure PyTorch on CPU) runs the same random BlinkDL .pth that the converter
reads, so it is an independent numerical reference for the converted `Rwkv6ForCausalLM`. A second, tiny
hand-written reference (`_reference_logits`, on the converted tensors) tells a wrong key mapping apart from a wrong
model when parity fails.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from outputs import state_of
from safetensors.torch import load_file

from auroralong_hf.convert.rwkv6 import FORMATS, convert_rwkv6_checkpoint, detect_rwkv6_format, load_rwkv6_checkpoint
from auroralong_hf.convert.rwkv6_layout import blinkdl_state_dict_keys, fla_state_dict_keys

try:
    from rwkv6_checkpoints import (
        make_blinkdl_state_dict,
        write_blinkdl_checkpoint,
        write_fla_checkpoint,
        write_hf_checkpoint,
    )
except ImportError:  # tests/ imported as a package
    from tests.rwkv6_checkpoints import (
        make_blinkdl_state_dict,
        write_blinkdl_checkpoint,
        write_fla_checkpoint,
        write_hf_checkpoint,
    )

PARITY_ATOL = 1e-4

GEOMETRIES = {
    # FFN width not Finch's derived value and small LoRA ranks: the geometry must come from the tensors. Decays up
    # to exp(-exp(~3)) per step (channels that forget within one step, as in released models).
    "c128_l2": dict(hidden_size=128, num_layers=2, head_size=64, vocab=256, ffn=320, mix_rank=8, decay_rank=16,
                    seed=0, decay_range=(-6.0, 2.0)),
    # Odd vocabulary, Finch's derived FFN width and LoRA ranks, small keys/values (small per-head WKV outputs, so
    # the GroupNorm eps matters as in the released models).
    "c192_l3": dict(hidden_size=192, num_layers=3, head_size=64, vocab=300, ffn=None, mix_rank=32, decay_rank=64,
                    seed=1, key_scale=0.1, value_scale=0.1),
}


def _tokens(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _model_class():
    from auroralong_hf.modeling.modeling_rwkv6 import Rwkv6ForCausalLM

    return Rwkv6ForCausalLM


def _load_ours(folder: Path, **kwargs):
    return _model_class().from_pretrained(folder, dtype=torch.float32, **kwargs).eval()


# ----------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def rwkv_cls():
    """`rwkv.model.RWKV`, imported with its JIT and CUDA kernels off (both are read at import time)."""
    pytest.importorskip("rwkv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RWKV_JIT_ON", "0")
        mp.setenv("RWKV_CUDA_ON", "0")
        module = sys.modules.get("rwkv.model")
        module = importlib.reload(module) if module is not None else importlib.import_module("rwkv.model")
        yield module.RWKV


@pytest.fixture(autouse=True)
def _torch_wkv(monkeypatch):
    """These are CPU tests: the pure-PyTorch WKV, whatever the machine has."""
    monkeypatch.setenv("AURORALONG_WKV_BACKEND", "torch")


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def converted(request, tmp_path_factory):
    """One random checkpoint written in all three formats, each converted to its own output folder."""
    name = request.param
    root = tmp_path_factory.mktemp(f"rwkv6_{name}")
    blinkdl = make_blinkdl_state_dict(**GEOMETRIES[name])
    sources = {
        "blinkdl": write_blinkdl_checkpoint(blinkdl, root / "RWKV-x060-tiny.pth"),
        "hf": write_hf_checkpoint(blinkdl, root / "v6-Finch-tiny-HF"),
        "fla": write_fla_checkpoint(blinkdl, root / "rwkv6-tiny-finch"),
    }
    outputs = {fmt: root / f"converted_{fmt}" for fmt in FORMATS}
    reports = {fmt: convert_rwkv6_checkpoint(sources[fmt], outputs[fmt]) for fmt in FORMATS}
    return SimpleNamespace(name=name, geometry=GEOMETRIES[name], blinkdl=blinkdl, sources=sources,
                           outputs=outputs, reports=reports)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    """A tiny checkpoint for the error tests (1 layer, head size 32)."""
    root = tmp_path_factory.mktemp("rwkv6_small")
    sd = make_blinkdl_state_dict(64, 1, 32, 50, ffn=96, mix_rank=4, decay_rank=8, seed=3)
    return SimpleNamespace(root=root, sd=sd, pth=write_blinkdl_checkpoint(sd, root / "small.pth"))


def _rwkv_reference(rwkv_cls, converted):
    return rwkv_cls(model=str(converted.sources["blinkdl"]), strategy="cpu fp32", verbose=False)


# ----------------------------------------------------------------------------------------------------------------
# Detection, loading, conversion of the three formats


def test_detect_formats(converted, tmp_path):
    assert {fmt: detect_rwkv6_format(src) for fmt, src in converted.sources.items()} == {f: f for f in FORMATS}
    folder = tmp_path / "only_pth"
    folder.mkdir()
    (folder / "model.pth").write_bytes(converted.sources["blinkdl"].read_bytes())
    assert detect_rwkv6_format(folder) == "blinkdl"
    # our own converted folder uses fla's names
    assert detect_rwkv6_format(converted.outputs["blinkdl"]) == "fla"


def test_geometry_read_from_tensors(converted):
    g = converted.geometry
    hidden = g["hidden_size"]
    ffn = g["ffn"] or int(hidden * 3.5) // 32 * 32
    for fmt in FORMATS:
        sd, config, notes = load_rwkv6_checkpoint(converted.sources[fmt], return_notes=True)
        assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.head_size) == (
            g["vocab"], hidden, g["num_layers"], g["head_size"])
        assert (config.intermediate_size, config.time_mix_lora_rank, config.time_decay_lora_rank) == (
            ffn, g["mix_rank"], g["decay_rank"])
        assert config.group_norm_eps == pytest.approx(64e-5)
        assert config.layer_norm_eps == pytest.approx(1e-5)
        assert config.tie_word_embeddings is False
        assert set(sd) == set(fla_state_dict_keys(g["num_layers"]))
        if fmt == "fla":  # fla's config says norm_eps 1e-5; the GroupNorm keeps 64e-5 and says so
            assert any("GroupNorm" in note and "0.00064" in note for note in notes)


def test_three_formats_convert_to_identical_models(converted):
    tensors = {fmt: load_file(str(converted.outputs[fmt] / "model.safetensors")) for fmt in FORMATS}
    configs = {fmt: json.loads((converted.outputs[fmt] / "config.json").read_text()) for fmt in FORMATS}
    reference = tensors["blinkdl"]
    assert set(reference) == set(fla_state_dict_keys(converted.geometry["num_layers"]))
    for fmt in ("hf", "fla"):
        assert set(tensors[fmt]) == set(reference)
        for name, tensor in reference.items():
            assert torch.equal(tensors[fmt][name], tensor), f"{fmt}: {name} differs"
        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "head_size", "intermediate_size",
                      "time_mix_lora_rank", "time_decay_lora_rank", "layer_norm_eps", "group_norm_eps",
                      "tie_word_embeddings"):
            assert configs[fmt][field] == configs["blinkdl"][field], field
    assert configs["blinkdl"]["model_type"] == "auroralong_rwkv6"
    assert all(t.dtype == torch.float32 for t in reference.values())  # the source dtype is kept by default


def test_report_is_plain_and_complete(converted):
    for fmt, report in converted.reports.items():
        assert json.loads(json.dumps(report)) == report
        assert report["format"] == fmt
        assert report["hidden_size"] == converted.geometry["hidden_size"]
        assert report["num_hidden_layers"] == converted.geometry["num_layers"]
        assert report["dtype"] == "float32"
        assert report["num_tensors"] == len(fla_state_dict_keys(converted.geometry["num_layers"]))
        assert report["num_parameters"] == sum(t.numel() for t in converted.blinkdl.values())
        assert "model.safetensors" in report["files"] and "config.json" in report["files"]
        assert "tokenizer_config.json" in report["files"]
        out = Path(report["output_dir"])
        assert sorted(p.name for p in out.iterdir()) == report["files"]
        assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_converted_tensors_match_rwkv_with_hand_reference(converted, rwkv_cls):
    """The key mapping alone (no Rwkv6ForCausalLM): a plain per-token reference on the converted tensors."""
    sd = load_file(str(converted.outputs["fla"] / "model.safetensors"))
    config = json.loads((converted.outputs["fla"] / "config.json").read_text())
    tokens = _tokens(40, converted.geometry["vocab"], seed=11)
    expected, _ = _rwkv_reference(rwkv_cls, converted).forward(tokens, None, full_output=True)
    err = (_reference_logits(sd, config, torch.tensor(tokens)) - expected).abs().max().item()
    print(f"\n[{converted.name}] hand reference vs rwkv: max abs {err:.2e}")
    assert err <= PARITY_ATOL


# ----------------------------------------------------------------------------------------------------------------
# Parity with the rwkv package


@pytest.mark.parametrize("seq_len", [40, 67])
def test_parity_full_sequence(converted, rwkv_cls, seq_len):
    model = _load_ours(converted.outputs["blinkdl"])
    assert seq_len > model.config.wkv_chunk_size
    tokens = _tokens(seq_len, converted.geometry["vocab"], seed=seq_len)
    expected, _ = _rwkv_reference(rwkv_cls, converted).forward(tokens, None, full_output=True)
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float()
    assert logits.shape == expected.shape
    err = (logits - expected).abs().max().item()
    print(f"\n[{converted.name}] full pass T={seq_len}: max abs {err:.2e} (logit scale {expected.abs().max():.2f})")
    assert 0.5 < expected.abs().max() < 100  # the random checkpoint gives O(1-10) logits, not saturated ones
    assert err <= PARITY_ATOL


def test_parity_token_by_token(converted, rwkv_cls):
    model = _load_ours(converted.outputs["hf"])
    reference = _rwkv_reference(rwkv_cls, converted)
    tokens = _tokens(40, converted.geometry["vocab"], seed=5)
    state, past, err = None, None, 0.0
    with torch.no_grad():
        for token in tokens:
            expected, state = reference.forward([token], state)
            out = model(torch.tensor([[token]]), cache=past, use_cache=True)
            past = state_of(out)
            err = max(err, (out.logits[0, -1].float() - expected).abs().max().item())
    print(f"\n[{converted.name}] token by token, 40 steps: max abs {err:.2e}")
    assert err <= PARITY_ATOL


def test_parity_prefill_then_decode(converted, rwkv_cls):
    """A prefill longer than a chunk and not a whole number of chunks, then one token at a time from its state."""
    model = _load_ours(converted.outputs["fla"])
    prefill = model.config.wkv_chunk_size + 5
    tokens = _tokens(prefill + 12, converted.geometry["vocab"], seed=7)
    expected, _ = _rwkv_reference(rwkv_cls, converted).forward(tokens, None, full_output=True)
    with torch.no_grad():
        out = model(torch.tensor([tokens[:prefill]]), use_cache=True)
        logits = [out.logits[0].float()]
        past = state_of(out)
        for token in tokens[prefill:]:
            out = model(torch.tensor([[token]]), cache=past, use_cache=True)
            past = state_of(out)
            logits.append(out.logits[0].float())
    err = (torch.cat(logits) - expected).abs().max().item()
    print(f"\n[{converted.name}] prefill {prefill} + decode 12: max abs {err:.2e}")
    assert err <= PARITY_ATOL


@pytest.mark.parametrize("converted", ["c192_l3"], indirect=True)  # the geometry with small per-head outputs
def test_parity_detects_wrong_group_norm_eps(converted, rwkv_cls):
    """The parity check is sharp enough to see fla's GroupNorm eps (1e-5) instead of Finch's 64e-5."""
    model = _load_ours(converted.outputs["fla"], group_norm_eps=1e-5)
    tokens = _tokens(40, converted.geometry["vocab"], seed=40)
    expected, _ = _rwkv_reference(rwkv_cls, converted).forward(tokens, None, full_output=True)
    with torch.no_grad():
        err = (model(torch.tensor([tokens])).logits[0].float() - expected).abs().max().item()
    print(f"\n[{converted.name}] with GroupNorm eps 1e-5 instead of 64e-5: max abs {err:.2e}")
    assert err > 100 * PARITY_ATOL


# ----------------------------------------------------------------------------------------------------------------
# Other layouts and dtypes


def test_sharded_and_safetensors_layouts(small_source, tmp_path):
    sd = small_source.sd
    expected, _ = load_rwkv6_checkpoint(small_source.pth)
    for folder in (write_hf_checkpoint(sd, tmp_path / "hf_st", safetensors=True, shards=3),
                   write_hf_checkpoint(sd, tmp_path / "hf_bin", shards=2),
                   write_fla_checkpoint(sd, tmp_path / "fla_sharded", shards=2)):
        assert any(p.name.endswith(".index.json") for p in folder.iterdir())
        loaded, config = load_rwkv6_checkpoint(folder)
        assert set(loaded) == set(expected)
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)
        assert (config.hidden_size, config.head_size, config.num_hidden_layers) == (64, 32, 1)


def test_bfloat16_source_and_dtype_option(small_source, tmp_path):
    bf16 = {k: v.to(torch.bfloat16) for k, v in small_source.sd.items()}
    src = write_blinkdl_checkpoint(bf16, tmp_path / "bf16.pth")
    report = convert_rwkv6_checkpoint(src, tmp_path / "kept", save_tokenizer=False)
    assert report["dtype"] == "bfloat16" and not report["tokenizer_saved"]
    kept = load_file(str(tmp_path / "kept" / "model.safetensors"))
    assert {t.dtype for t in kept.values()} == {torch.bfloat16}
    report = convert_rwkv6_checkpoint(src, tmp_path / "fp32", dtype="float32", save_tokenizer=False)
    assert report["dtype"] == "float32"
    widened = load_file(str(tmp_path / "fp32" / "model.safetensors"))
    assert all(torch.equal(widened[k], kept[k].float()) for k in kept)
    with pytest.raises(ValueError, match="dtype"):
        convert_rwkv6_checkpoint(src, tmp_path / "bad", dtype="int8")
    assert not (tmp_path / "bad").exists()


def test_tied_head_only_when_config_says_so(small_source, tmp_path):
    from safetensors.torch import save_file

    fla = write_fla_checkpoint(small_source.sd, tmp_path / "fla_tied")
    tensors = load_file(str(fla / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(fla / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight"):
        load_rwkv6_checkpoint(fla)
    config = json.loads((fla / "config.json").read_text())
    (fla / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    report = convert_rwkv6_checkpoint(fla, tmp_path / "out", save_tokenizer=False)
    assert report["tie_word_embeddings"] is True
    model = _load_ours(tmp_path / "out")
    assert model.config.tie_word_embeddings is True
    assert torch.equal(model.lm_head.weight, tensors["model.embeddings.weight"])


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def _assert_nothing_written(output_dir: Path):
    assert not output_dir.exists()
    if output_dir.parent.exists():
        leftovers = [p.name for p in output_dir.parent.iterdir() if p.name.startswith(f".{output_dir.name}.")]
        assert not leftovers


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "no_such_model.pth"
    with pytest.raises(FileNotFoundError, match="no_such_model.pth"):
        detect_rwkv6_format(missing)
    with pytest.raises(FileNotFoundError, match="no_such_model.pth"):
        load_rwkv6_checkpoint(missing)
    with pytest.raises(FileNotFoundError):
        convert_rwkv6_checkpoint(missing, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_unknown_formats(tmp_path):
    from safetensors.torch import save_file

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        detect_rwkv6_format(empty)

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    llama_tensors = {"model.norm.weight": torch.ones(4), "lm_head.weight": torch.ones(2, 4)}
    save_file(llama_tensors, str(llama / "model.safetensors"))
    with pytest.raises(ValueError, match="llama") as info:
        detect_rwkv6_format(llama)
    assert str(llama) in str(info.value) and "lm_head.weight" in str(info.value)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        load_rwkv6_checkpoint(text)

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pth", "b.pth"):
        (two / name).write_bytes(b"")
    with pytest.raises(ValueError, match="several .pth"):
        detect_rwkv6_format(two)

    with pytest.raises(ValueError, match=str(llama)):
        convert_rwkv6_checkpoint(llama, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_corrupt_and_truncated_files(small_source, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                        .numpy().tobytes())
    truncated = tmp_path / "truncated.pth"
    data = small_source.pth.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for bad in (garbage, truncated):
        with pytest.raises(ValueError, match=bad.name) as info:
            load_rwkv6_checkpoint(bad)
        assert "Could not read" in str(info.value)
        with pytest.raises(ValueError, match=bad.name):
            convert_rwkv6_checkpoint(bad, tmp_path / "out")
        _assert_nothing_written(tmp_path / "out")

    fla = write_fla_checkpoint(small_source.sd, tmp_path / "fla_cut")
    weights = fla / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_rwkv6_checkpoint(fla)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(ValueError, match="state dict"):
        load_rwkv6_checkpoint(not_a_dict)


def test_missing_and_unexpected_tensors(small_source, tmp_path):
    sd = small_source.sd
    missing = {k: v for k, v in sd.items() if k != "blocks.0.ffn.key.weight"}
    with pytest.raises(ValueError, match=r"missing tensors \(1\): blocks\.0\.ffn\.key\.weight"):
        load_rwkv6_checkpoint(write_blinkdl_checkpoint(missing, tmp_path / "missing.pth"))
    # HF errors quote the HF names
    with pytest.raises(ValueError, match=r"rwkv\.blocks\.0\.feed_forward\.key\.weight"):
        load_rwkv6_checkpoint(write_hf_checkpoint(missing, tmp_path / "missing_hf"))

    extra = {**sd, "blocks.0.att.time_state": torch.zeros(2, 32, 32)}
    with pytest.raises(ValueError, match=r"unexpected tensors \(1\): blocks\.0\.att\.time_state"):
        load_rwkv6_checkpoint(write_blinkdl_checkpoint(extra, tmp_path / "extra.pth"))

    fla = write_fla_checkpoint(sd, tmp_path / "fla_missing")
    tensors = load_file(str(fla / "model.safetensors"))
    del tensors["model.layers.0.attn.bonus"]
    from safetensors.torch import save_file

    save_file(tensors, str(fla / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.attn\.bonus"):
        load_rwkv6_checkpoint(fla)

    headless = {k: v for k, v in sd.items() if k != "head.weight"}
    with pytest.raises(ValueError, match="head.weight"):
        load_rwkv6_checkpoint(write_blinkdl_checkpoint(headless, tmp_path / "headless.pth"))

    wrong_shape = {**sd, "blocks.0.att.key.weight": torch.zeros(64, 65)}
    with pytest.raises(ValueError, match=r"blocks\.0\.att\.key\.weight \(64, 65\)"):
        load_rwkv6_checkpoint(write_blinkdl_checkpoint(wrong_shape, tmp_path / "shape.pth"))

    assert set(blinkdl_state_dict_keys(1)) == set(sd)


def test_output_dir_protection_and_atomicity(small_source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_rwkv6_checkpoint(small_source.pth, out)
    assert (out / "keep.txt").read_text() == "precious"

    # a failure while writing (here: the tokenizer) leaves the old folder as it was and no temporary folders
    from auroralong_hf.processing.tokenization_rwkv_world import RwkvWorldTokenizer

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as mp:
        mp.setattr(RwkvWorldTokenizer, "save_pretrained", broken_save)
        with pytest.raises(OSError, match="disk full"):
            convert_rwkv6_checkpoint(small_source.pth, out, overwrite=True)
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
        fresh = tmp_path / "fresh"
        with pytest.raises(OSError, match="disk full"):
            convert_rwkv6_checkpoint(small_source.pth, fresh)
        _assert_nothing_written(fresh)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    report = convert_rwkv6_checkpoint(small_source.pth, out, overwrite=True)
    assert not (out / "keep.txt").exists() and "model.safetensors" in report["files"]
    empty = tmp_path / "empty_out"
    empty.mkdir()
    convert_rwkv6_checkpoint(small_source.pth, empty, save_tokenizer=False)  # an empty folder is fine
    assert (empty / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------------------
# A plain reference forward on fla-named tensors (written from the RWKV-6 equations, per token)


def _reference_logits(sd: dict[str, torch.Tensor], config: dict, tokens: torch.Tensor) -> torch.Tensor:
    C, K = config["hidden_size"], config["head_size"]
    H, R, T = C // K, config["time_mix_lora_rank"], tokens.shape[0]
    sd = {k: v.float() for k, v in sd.items()}

    def ln(x, prefix):
        return F.layer_norm(x, (C,), sd[prefix + ".weight"], sd[prefix + ".bias"], config["layer_norm_eps"])

    def shift_delta(x):  # x_{t-1} - x_t with zeros before the first token
        return torch.cat([x.new_zeros(1, C), x[:-1]]) - x

    x = ln(sd["model.embeddings.weight"][tokens], "model.layers.0.pre_norm")
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = ln(x, p + "attn_norm")
        d = shift_delta(h)
        z = torch.tanh((h + d * sd[p + "attn.x_proj.0.mu"]) @ sd[p + "attn.x_proj.0.linear.weight"].T)
        mix = torch.einsum("tnr,cnr->tnc", z.view(T, 5, R), sd[p + "attn.x_proj.2.weight"].view(C, 5, R))
        mix = mix + sd[p + "attn.x_bias"]  # groups r, w, k, v, g
        xr, xw, xk, xv, xg = (h + d * mix[:, n] for n in range(5))
        r = (xr @ sd[p + "attn.r_proj.linear.weight"].T).view(T, H, K)
        k = (xk @ sd[p + "attn.k_proj.linear.weight"].T).view(T, H, K)
        v = (xv @ sd[p + "attn.v_proj.linear.weight"].T).view(T, H, K)
        g = F.silu(xg @ sd[p + "attn.g_proj.linear.weight"].T)
        lora = p + "attn.w_proj.linear.lora."
        w_raw = torch.tanh(xw @ sd[lora + "0.weight"].T) @ sd[lora + "2.weight"].T + sd[lora + "2.bias"]
        decay = torch.exp(-torch.exp(w_raw)).view(T, H, K, 1)
        u = sd[p + "attn.bonus"].unsqueeze(-1)
        state = torch.zeros(H, K, K)
        outs = []
        for t in range(T):
            kv = k[t].unsqueeze(-1) * v[t].unsqueeze(-2)
            outs.append(torch.einsum("hk,hkv->hv", r[t], state + u * kv))
            state = decay[t] * state + kv
        o = F.group_norm(torch.stack(outs).reshape(T, C), H, sd[p + "attn.g_norm.weight"],
                         sd[p + "attn.g_norm.bias"], config["group_norm_eps"])
        x = x + (o * g) @ sd[p + "attn.o_proj.weight"].T
        h = ln(x, p + "ffn_norm")
        d = shift_delta(h)
        key = torch.relu((h + d * sd[p + "ffn.key.mu"]) @ sd[p + "ffn.key.linear.weight"].T) ** 2
        gate = torch.sigmoid((h + d * sd[p + "ffn.receptance.mu"]) @ sd[p + "ffn.receptance.linear.weight"].T)
        x = x + gate * (key @ sd[p + "ffn.value.weight"].T)
    return ln(x, "model.norm") @ sd["lm_head.weight"].T

