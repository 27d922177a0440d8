"""Bad input (issue 16): a state never replaces a file that is not a state, a damaged or foreign state file
is refused naming the file and the reason, a state's count of seen tokens costs no memory, and decompression bombs
are refused."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from auroralong_hf import AuroraLongConfig, AuroraLongForConditionalGeneration, Rwkv6Cache
from auroralong_hf.cli import main
from auroralong_hf.modeling.generation_rwkv6 import NaNLogitsCheck

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
          "image_size": 64, "patch_size": 16, "token_kept_ratio": 0.5, "vision_use_head": False}
TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "head_size": 32}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AuroraLongForConditionalGeneration(AuroraLongConfig(vision_config=VISION, text_config=TEXT)).eval()


@pytest.fixture
def saved(model, tmp_path):
    state = model.prefill(torch.tensor([[24281, 59, 11, 261]]))
    path = tmp_path / "s.state"
    state.save(path)
    return state, path


def test_a_state_never_replaces_another_file(saved, tmp_path):
    state, path = saved
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 a video")
    with pytest.raises(FileExistsError, match="clip.mp4 exists and is not an RWKV-6 state"):
        state.save(video)
    assert video.read_bytes() == b"\x00\x00\x00\x18ftypmp42 a video"
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, weights)
    with pytest.raises(FileExistsError, match="model.safetensors"):
        state.save(weights)
    assert torch.equal(load_file(weights)["w"], torch.ones(2))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        state.save(tmp_path)
    state.save(path)  # a state of ours is replaced
    state.save(video, overwrite=True)  # or anything, when asked
    assert Rwkv6Cache.is_state_file(video) and not list(tmp_path.glob(".*tmp*"))


def test_describe_refuses_to_save_a_state_over_its_video(capsys, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not touched")
    assert main(["describe", str(video), "--save-state", str(video)]) == 2
    assert "is not a state written by --save-state" in capsys.readouterr().err
    assert video.read_bytes() == b"not touched"


@pytest.mark.parametrize("damage, message", [
    (lambda t, m: t.update({"wkv.1": t["wkv.1"][:, :1]}), "disagree in shape"),
    (lambda t, m: t.update({"ffn_shift.1": torch.ones(3, 64)}), "disagree in shape"),
    (lambda t, m: t.update({"wkv.0": t["wkv.0"].int()}), "wrong dtypes"),
    (lambda t, m: t["attn_shift.1"].fill_(float("nan")), "NaN or infinite"),
    (lambda t, m: m.update({"seen_tokens": "-1000"}), "seen_tokens is '-1000'"),
    (lambda t, m: m.update({"seen_tokens": "abc"}), "seen_tokens is 'abc'"),
    (lambda t, m: t.update({"fingerprint": torch.zeros(1, dtype=torch.int32)}), "fingerprint is torch.int32"),
])
def test_damaged_state_files_are_refused_naming_the_file(saved, tmp_path, damage, message):
    _, path = saved
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(path)
    damage(tensors, metadata)
    bad = tmp_path / "bad.state"
    save_file(tensors, bad, metadata=metadata)
    with pytest.raises(ValueError, match=rf"bad\.state.*{message}"):
        Rwkv6Cache.load(bad)


def test_the_count_of_seen_tokens_costs_no_memory(model, saved):
    """generate from a state that claims 10^9 seen tokens builds no mask of that length (8 GB): only the ids
    given are masked."""
    state, _ = saved
    state.seen_tokens = state.fingerprint_length = 10**9
    state.fingerprint = None  # unknown ids: the length rule decides, and 5 ids are new tokens
    out = model.generate(torch.tensor([[11, 5585, 41693, 59, 33]]), cache=state, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 8) and state.seen_tokens == 10**9


def test_a_decompression_bomb_image_is_a_clear_error_everywhere(tmp_path, monkeypatch, capsys):
    """An image that decodes to far more pixels than Pillow's guard allows (a tiny file here, with the guard lowered
    to match) is a ValueError naming the file: for the processor, training data, lmms-eval and tome-viz alike."""
    from PIL import Image

    from auroralong_hf.processing.image_io import load_image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400 * 400 // 3)  # more than twice the limit: Pillow refuses
    with pytest.raises(ValueError, match=r"bomb\.png: refused, the image is too large"):
        load_image(path)
    assert main(["tome-viz", str(path), "-o", str(tmp_path / "out.png")]) == 2
    assert "bomb.png: refused" in capsys.readouterr().err


@pytest.mark.parametrize("drop", ["layers.1.ffn.key.mu", "multi_modal_projector.linear_1.weight", "attn.g_norm.weight"])
def test_a_folder_missing_weights_is_refused_not_left_random(tmp_path, drop, capsys):
    """transformers would report these as "newly initialized" and leave them as uninitialised memory."""
    from transformers import AutoModelForImageTextToText

    from auroralong_hf.create_random import random_model

    model, processor = random_model("tiny", seed=0)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = [key for key in weights if key.endswith(drop)]
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"lacks {len(dropped)} of the model's weights \(.*{drop}"):
        AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert main(["describe", "--model", str(tmp_path), "--max-new-tokens", "1"]) == 2
    assert "they would be left uninitialised" in capsys.readouterr().err


@pytest.mark.parametrize("section, layers", [("text_config", 3000), ("vision_config", 40)])
def test_a_config_asking_for_more_layers_than_the_checkpoint_is_refused_before_building(tmp_path, monkeypatch, section,
                                                                                        layers):
    """Before: 3000 layers were built and filled at random (for the real width, ~170B parameters) before the
    missing weights were noticed."""
    import json

    from transformers import AutoModelForImageTextToText

    from auroralong_hf.create_random import random_model

    model, processor = random_model("tiny", seed=0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[section]["num_hidden_layers"] = layers
    (tmp_path / "config.json").write_text(json.dumps(config))
    built, init = [], AuroraLongForConditionalGeneration.__init__
    monkeypatch.setattr(AuroraLongForConditionalGeneration, "__init__",
                        lambda self, *args, **kwargs: built.append(1) or init(self, *args, **kwargs))
    with pytest.raises(ValueError, match=rf"asks for {layers} layers \({section}\.num_hidden_layers\) but the "
                                         r"checkpoint holds at most \d+ .*does not belong to these weights"):
        AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert not built  # refused before the model was built


def video_prompt(model, frames: int) -> torch.Tensor:
    """input_ids [1, T]: text, a video's placeholder run of `frames` frames, text."""
    placeholders = [model.config.video_token_id] * (frames * model.tokens_per_frame)
    return torch.tensor([[24281, 59, 11, *placeholders, 11, 38, 59]])


@pytest.mark.parametrize("value, message", [
    (float("nan"), "pixel_values hold 5 NaN or infinite"),
    (float("inf"), "pixel_values hold 5 NaN or infinite"),
    (1e30, r"not finite for pixel values in \[-1, 1e\+30\]"),
])
def test_non_finite_pixels_are_refused_not_answered_with_nothing(model, value, message):
    """NaN / inf pixels, or finite ones far outside [-1, 1] that overflow in the tower, stop generate, prefill
    and forward with a clear error (before: an empty answer and no error)."""
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    pixels[1, 0, 0, :5] = value
    if value == 1e30:
        pixels[0, 0, 0, 0] = -1
    ids = video_prompt(model, 2)
    with pytest.raises(ValueError, match=message):
        model.generate(ids, pixel_values_videos=[pixels], max_new_tokens=2)
    with pytest.raises(ValueError, match=message):
        model.prefill(ids, pixel_values_videos=[pixels])
    with pytest.raises(ValueError, match=message):
        model(ids, pixel_values_videos=[pixels])


@pytest.mark.parametrize("bad_at", [0, 2])
def test_deferred_nan_check_raises_one_step_late_or_at_finish(bad_at):
    """The GPU mode of NaNLogitsCheck (deferred, forced here on CPU): bad scores at step k raise at step k + 1,
    naming the positions of step k, or at `finish()` when step k was the last; finite scores never raise."""
    finite = torch.zeros(2, 5)
    bad = finite.clone()
    bad[1, 3] = float("nan")
    check = NaNLogitsCheck(defer=True)
    for step in range(3):
        scores = bad if step == bad_at else finite
        if step == bad_at + 1:
            with pytest.raises(ValueError, match=f"after {4 + bad_at} positions"):
                check(torch.zeros(2, 4 + step, dtype=torch.long), scores)
            return
        assert check(torch.zeros(2, 4 + step, dtype=torch.long), scores) is scores
    with pytest.raises(ValueError, match=f"after {4 + bad_at} positions"):
        check.finish()
    check.finish()  # the verdict was read once


def test_non_finite_weights_stop_generation_and_scoring(model):
    """A NaN weight makes the state NaN: generate and score_continuations refuse (before: token 0 for every step, an
    empty answer, and NaN scores that lose every comparison silently)."""
    broken = AuroraLongForConditionalGeneration(model.config).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.model.language_model.layers[1].ffn.value.weight[0, 0] = float("nan")
    ids = torch.tensor([[24281, 59, 11, 261]])
    for sample in (False, True):
        with pytest.raises(ValueError, match="next-token scores hold NaN or infinite values after 4 positions"):
            broken.generate(ids, max_new_tokens=2, do_sample=sample)
    state = broken.prefill(ids[:, :-1])
    with pytest.raises(ValueError, match="log-probabilities of the continuations are not finite"):
        broken.score_continuations(state, 261, [[11, 12]])
    assert model.generate(ids, max_new_tokens=2).shape == (1, 6)  # the same model with finite weights answers
