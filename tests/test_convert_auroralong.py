"""`auroralong convert auroralong` (the released xtuner layout) and `auroralong convert compose`, on tiny checkpoints.

The reference is a plain composition of the parts the test wrote: transformers' SiglipVisionModel (untruncated)
hidden_states[-2] without token 0 -> the xtuner projector as torch ops -> Rwkv6ForCausalLM on the embeddings.
"""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from auroralong_checkpoints import (
    TINY_TEXT,
    make_siglip_vision,
    write_siglip_full,
    write_siglip_vision,
    write_xtuner_checkpoint,
)
from rwkv6_checkpoints import make_blinkdl_state_dict, write_blinkdl_checkpoint
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from auroralong_hf import AuroraLongForConditionalGeneration, Rwkv6ForCausalLM
from auroralong_hf.cli import main
from auroralong_hf.convert.auroralong import compose_auroralong, convert_auroralong_checkpoint, format_report
from auroralong_hf.convert.rwkv6 import load_rwkv6_checkpoint

VIDEO_ID = 65535
PROMPT = "User: What happens?\n<video>\nWhat happens?\n\nAssistant:"


@pytest.fixture(scope="module")
def xtuner(tmp_path_factory):
    """The released layout (LLM pytorch_model.bin at the root; vision with `vision_model.` prefix and xtuner's
    extra `pos_emb`; projector safetensors), converted once with the defaults."""
    base = tmp_path_factory.mktemp("xtuner")
    parts = write_xtuner_checkpoint(base / "src", pos_emb=True)
    out = base / "converted"
    parts["report"] = convert_auroralong_checkpoint(parts["root"], out)
    parts["out"] = out
    return parts


def frames(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 40, 56, 3), dtype=np.uint8)


def no_leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def reference_logits(parts, input_ids, pixel_values_videos):
    """SigLIP (all 4 layers, no merging) hidden_states[-2][:, 1:] -> projector -> Rwkv6ForCausalLM."""
    siglip = parts["vision"]
    pixels = pixel_values_videos[0]
    with torch.no_grad():
        hidden = siglip(pixel_values=pixels, output_hidden_states=True).hidden_states
        assert len(hidden) == siglip.config.num_hidden_layers + 1
        features = hidden[-2][:, 1:]
        p = parts["projector_sd"]
        visual = F.linear(F.gelu(F.linear(features, p["model.0.weight"], p["model.0.bias"])),
                          p["model.2.weight"], p["model.2.bias"])
        sd, config = load_rwkv6_checkpoint(parts["root"])
        lm = Rwkv6ForCausalLM(config).eval()
        lm.load_state_dict(sd)
        embeds = lm.model.embeddings(input_ids).clone()
        mask = input_ids[0] == VIDEO_ID
        embeds[0, mask] = visual.flatten(0, 1)
        return lm(inputs_embeds=embeds).logits


def test_report_names_format_sizes_and_switches(xtuner):
    report = xtuner["report"]
    assert report["language"]["format"] == "RWKV/v6-Finch-HF" and report["language"]["hidden_size"] == 64
    vision = report["vision"]
    assert (vision["source_layers"], vision["layers"], vision["key_prefix"]) == (4, 3, "vision_model.")
    assert (vision["hidden_size"], vision["num_patches"]) == (32, 16)
    dropped = {name for names in vision["dropped"].values() for name in names}
    assert "vision_model.encoder.layers.3.mlp.fc1.weight" in dropped and "vision_model.head.probe" in dropped
    assert "pos_emb" in dropped and not any(".layers.2." in name for name in dropped)
    switches = {name.split(".", 1)[1]: item["value"] for name, item in report["switches"].items()}
    # r = int(16 * 0.9 / 4) = 3 from the ORIGINAL depth 4, for each of the 3 remaining layers
    assert switches == {"num_hidden_layers": 3, "drop_first_token": True, "tome_schedule": "aurora",
                        "tome_r": [3, 3, 3], "token_kept_ratio": 0.1, "proportional_attention": False,
                        "protect_first_token": True, "tome_sort": "ascending", "vision_use_head": False}
    assert report["tokens_per_frame"] == 16 - 9 - 1 and report["unexpected_tensors"] == []
    text = format_report(report)
    for phrase in ("hidden_states[-2]", "drop_first_token = True", "proportional_attention = False",
                   "tome_r = [3, 3, 3]", "original depth L = 4", "protect_first_token = True"):
        assert phrase in text
    assert {"config.json", "model.safetensors", "processor_config.json"} <= set(report["files"])
    assert no_leftovers(xtuner["out"].parent) == []


def test_logits_match_the_composition_of_the_parts_with_merging_off(xtuner):
    out = xtuner["out"]
    config = AutoConfig.from_pretrained(out)
    config.vision_config.tome_r = 0  # merging off (the converted config says [3, 3, 3])
    model = AutoModelForImageTextToText.from_pretrained(out, config=config).eval()
    assert isinstance(model, AuroraLongForConditionalGeneration)
    assert len(model.model.vision_tower.encoder.layers) == 3
    processor = AutoProcessor.from_pretrained(out)
    processor.tokens_per_frame = 16 - 1  # no merges, token 0 dropped
    inputs = processor(text=PROMPT, videos=frames(2), stream_videos=False)
    assert int((inputs["input_ids"] == VIDEO_ID).sum()) == 2 * 15
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = reference_logits(xtuner, inputs["input_ids"], inputs["pixel_values_videos"])
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max() <= 1e-4


def test_merging_on_converts_and_runs(xtuner):
    model = AutoModelForImageTextToText.from_pretrained(xtuner["out"]).eval()
    processor = AutoProcessor.from_pretrained(xtuner["out"])
    assert processor.tokens_per_frame == 6 and processor.image_processor.size == {"height": 64, "width": 64}
    inputs = processor(text=PROMPT, videos=frames(3, seed=1), stream_videos=False)
    assert int((inputs["input_ids"] == VIDEO_ID).sum()) == 3 * 6
    with torch.no_grad():
        tower = model.model.vision_tower(inputs["pixel_values_videos"][0])
        out = model(**inputs)
    assert tower.last_layer_state.shape == (3, 6, 32)
    assert torch.isfinite(out.logits).all()


def test_cli_ratio_one_gives_zero_merges_and_the_same_model(xtuner, tmp_path, capsys):
    out = tmp_path / "ratio1"
    assert main(["convert", "auroralong", str(xtuner["root"]), str(out), "--token-kept-ratio", "1.0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["switches"]["vision_config.tome_r"]["value"] == [0, 0, 0] and report["tokens_per_frame"] == 15
    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(text=PROMPT, videos=frames(1, seed=2), stream_videos=False)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = reference_logits(xtuner, inputs["input_ids"], inputs["pixel_values_videos"])
    assert (logits - expected).abs().max() <= 1e-4
    # a second run into the same folder is refused (exit 2, the path named); --overwrite replaces it
    assert main(["convert", "auroralong", str(xtuner["root"]), str(out)]) == 2
    assert str(out) in capsys.readouterr().err
    assert main(["convert", "auroralong", str(xtuner["root"]), str(out), "--overwrite"]) == 0
    assert "drop_first_token = True" in capsys.readouterr().out
    assert AutoProcessor.from_pretrained(out).tokens_per_frame == 6
    assert no_leftovers(tmp_path) == []


def test_other_source_variants(tmp_path):
    """Unprefixed vision names, .bin vision/projector files, safetensors LLM; a 23-layer tower is not truncated."""
    vision = make_siglip_vision(seed=3, num_hidden_layers=23, image_size=32)
    rwkv = make_blinkdl_state_dict(**{**TINY_TEXT, "num_layers": 1}, seed=4)
    root = tmp_path / "src"
    write_xtuner_checkpoint(root, vision=vision, rwkv_sd=rwkv, vision_safetensors=False, projector_safetensors=False,
                            llm_safetensors=True)
    shutil.rmtree(root / "visual_encoder")
    write_siglip_vision(vision, root / "visual_encoder", prefix=False, safetensors=False, preprocessor=False)
    report = convert_auroralong_checkpoint(root, tmp_path / "out", dtype="bfloat16")
    assert (report["vision"]["layers"], report["vision"]["key_prefix"], report["dtype"]) == (23, "none", "bfloat16")
    assert "already truncated" in report["switches"]["vision_config.num_hidden_layers"]["why"]
    # r = int(4 * 0.9 / 23) = 0: a 4-patch frame merges nothing
    assert report["switches"]["vision_config.tome_r"]["value"] == [0] * 23
    assert any("no preprocessor_config.json" in note for note in report["notes"])
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.bfloat16
    forced = convert_auroralong_checkpoint(root, tmp_path / "forced", truncate_vision=True)
    assert forced["vision"]["layers"] == 22 and forced["switches"]["vision_config.tome_r"]["value"] == [0] * 22
    assert torch.equal(model.model.vision_tower.encoder.layers[22].mlp.fc1.weight,
                       vision.encoder.layers[22].mlp.fc1.weight.to(torch.bfloat16))


def _broken(xtuner, tmp_path, breaker):
    root = tmp_path / "src"
    shutil.copytree(xtuner["root"], root)
    breaker(root)
    return root


@pytest.mark.parametrize(
    ("case", "breaker", "named"),
    [
        ("no projector weights", lambda r: (r / "projector" / "model.safetensors").unlink(), "projector"),
        ("no projector folder", lambda r: shutil.rmtree(r / "projector"), "projector"),
        ("no visual_encoder", lambda r: shutil.rmtree(r / "visual_encoder"), "visual_encoder"),
        ("no LLM weights", lambda r: (r / "pytorch_model.bin").unlink(), "src"),
        ("truncated vision weights", lambda r: _truncate(r / "visual_encoder" / "model.safetensors"),
         "model.safetensors"),
        ("truncated LLM weights", lambda r: _truncate(r / "pytorch_model.bin"), "pytorch_model.bin"),
        ("a vision tensor missing", lambda r: _drop_tensor(r / "visual_encoder" / "model.safetensors",
                                                           "vision_model.encoder.layers.1.mlp.fc2.weight"),
         "vision_model.encoder.layers.1.mlp.fc2.weight"),
        ("a projector bias missing", lambda r: _drop_tensor(r / "projector" / "model.safetensors", "model.2.bias"),
         "model.2.bias"),
    ],
)
def test_broken_sources_are_clear_errors_and_leave_nothing(xtuner, tmp_path, capsys, case, breaker, named):
    root = _broken(xtuner, tmp_path, breaker)
    out = tmp_path / "out"
    assert main(["convert", "auroralong", str(root), str(out)]) == 2, case
    error = capsys.readouterr().err
    assert named in error and str(root) in error, error
    assert not out.exists() and no_leftovers(tmp_path) == []


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_tensor(path, name):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    del sd[name]
    save_file(sd, str(path))


def test_compose_keeps_the_sources_and_initialises_the_projector(xtuner, tmp_path):
    pth = write_blinkdl_checkpoint(xtuner["rwkv_sd"], tmp_path / "lm.pth")
    out = tmp_path / "composed"
    report = compose_auroralong(xtuner["root"] / "visual_encoder", pth, out, seed=5)
    assert report["language"]["format"] == "BlinkDL .pth" and report["projector"]["init"].startswith("random")
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    vision = model.model.vision_tower
    assert len(vision.encoder.layers) == 4 and not vision.config.vision_use_head
    assert (vision.config.tome_schedule, vision.config.proportional_attention, vision.config.drop_first_token,
            vision.config.token_kept_ratio, vision.config.tome_r) == ("even", True, False, 0.1, None)
    source = xtuner["vision"].state_dict()
    tower = vision.state_dict()
    assert all(torch.equal(tower[name], source[name]) for name in tower if name != "embeddings.position_ids")
    language, _ = load_rwkv6_checkpoint(pth)
    ours = {**{"model." + k[len("language_model."):]: v for k, v in model.model.state_dict().items()
               if k.startswith("language_model.")}, "lm_head.weight": model.lm_head.weight}
    assert set(ours) == set(language)
    assert all(torch.equal(ours[name], tensor) for name, tensor in language.items())
    projector = model.model.multi_modal_projector
    for linear in (projector.linear_1, projector.linear_2):
        assert torch.count_nonzero(linear.bias) == 0
        assert abs(linear.weight.std().item() - linear.in_features ** -0.5) < 0.25 * linear.in_features ** -0.5
    assert not torch.allclose(projector.linear_1.weight, xtuner["projector_sd"]["model.0.weight"])
    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(text=PROMPT, videos=frames(2, seed=3), stream_videos=False)
    assert int((inputs["input_ids"] == VIDEO_ID).sum()) == 2 * report["tokens_per_frame"]
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_compose_cli_from_a_full_siglip_model_with_fewer_layers(xtuner, tmp_path, capsys):
    full = write_siglip_full(xtuner["vision"], tmp_path / "siglip")
    out = tmp_path / "composed"
    argv = ["convert", "compose", "--vision", str(full), "--language", str(xtuner["root"]), str(out),
            "--vision-layers", "2", "--token-kept-ratio", "0.5", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["vision"]["source_layers"], report["vision"]["layers"]) == (4, 2)
    assert any("text tower" in why for why in report["vision"]["dropped"])
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.config.vision_config.token_kept_ratio == 0.5
    assert torch.equal(model.model.vision_tower.encoder.layers[1].self_attn.q_proj.weight,
                       xtuner["vision"].encoder.layers[1].self_attn.q_proj.weight)
    # a missing language source: a clear error, nothing written
    assert main(["convert", "compose", "--vision", str(full), "--language", str(tmp_path / "nope.pth"),
                 str(tmp_path / "out2")]) == 2
    assert "nope.pth" in capsys.readouterr().err and not (tmp_path / "out2").exists()
