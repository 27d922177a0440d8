import logging
import os
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tiny_models import spread_logits  # noqa: E402

import auroralong_hf  # noqa: E402  (registers the Auto classes)
import auroralong_hf.modeling  # noqa: E402
import auroralong_hf.processing  # noqa: E402


@pytest.fixture
def tiny_rwkv6():
    """A 2-layer random Finch model whose logits are spread enough for greedy decoding to be decisive."""
    from auroralong_hf import Rwkv6Config, Rwkv6ForCausalLM

    torch.manual_seed(0)
    config = Rwkv6Config(hidden_size=128, num_hidden_layers=2, head_size=32, vocab_size=300, wkv_chunk_size=16)
    return spread_logits(Rwkv6ForCausalLM(config).eval(), head_std=0.25)


@pytest.fixture(autouse=True)
def pil_refuses_truncated_images(monkeypatch):
    """Pillow's default for every test: importing lmms_eval.api.task (the lmms-eval tests do, at collection) sets
    the process-wide PIL.ImageFile.LOAD_TRUNCATED_IMAGES to True, which would let truncated images load."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


@pytest.fixture(scope="session")
def tiny_auroralong_folder(tmp_path_factory):
    """A tiny AuroraLong folder (create-random's tiny size: model + processor) whose logits are spread enough for
    greedy decoding to be decisive."""
    from auroralong_hf.create_random import random_model

    folder = tmp_path_factory.mktemp("tiny-auroralong")
    model, processor = random_model("tiny", seed=0)
    spread_logits(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# A deprecation reported while our code is the caller: a FutureWarning / DeprecationWarning, or a transformers log
# line saying "deprecated", whose nearest caller outside transformers, torch and the standard library is in this
# repository. Both ends of the supported transformers range run this suite (.ci/run), so a rename there (5.24's
# `cache`) shows up here. Other libraries' own deprecated uses (e.g. an older peft's) are theirs.
_OURS = tuple(str(Path(p).resolve().parent) for p in (auroralong_hf.__file__, auroralong_hf.modeling.__file__,
                                                        auroralong_hf.processing.__file__, __file__))
_PASS_THROUGH = (str(Path(transformers.__file__).resolve().parent), str(Path(torch.__file__).resolve().parent),
                 str(Path(logging.__file__).resolve().parent), str(Path(warnings.__file__).resolve().parent))


def _caller_is_ours() -> bool:
    for frame in reversed(traceback.extract_stack()[:-2]):  # innermost first, past this helper and its caller
        path = str(Path(frame.filename).resolve())
        if path == str(Path(__file__).resolve()) or path.startswith(_PASS_THROUGH):
            continue
        return path.startswith(_OURS)
    return False


class _DeprecationRecorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if "deprecat" in record.getMessage().lower() and _caller_is_ours():
            self.messages.append(record.getMessage())

    def showwarning(self, message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (FutureWarning, DeprecationWarning)) and _caller_is_ours():
            self.messages.append(f"{category.__name__} at {filename}:{lineno}: {message}")


@pytest.fixture(autouse=True)
def no_deprecated_use_from_our_code(request, monkeypatch):
    """Fail a test in which our code makes a deprecated call (see above). Opt out with
    @pytest.mark.deprecated_use_expected (a test of a deprecated name on purpose)."""
    if request.node.get_closest_marker("deprecated_use_expected"):
        yield
        return
    warning_once = getattr(logging.Logger, "warning_once", None)
    if hasattr(warning_once, "cache_clear"):
        warning_once.cache_clear()  # transformers logs each deprecation once per process
    recorder = _DeprecationRecorder()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(recorder)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", recorder.showwarning)
        yield
    transformers_logger.removeHandler(recorder)
    assert not recorder.messages, "deprecated use: " + "\n".join(recorder.messages)
