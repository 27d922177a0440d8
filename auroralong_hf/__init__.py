"""AuroraLong for Hugging Face transformers.

Importing this package registers every class with the Auto classes (`auroralong_hf.registration`), so
`import auroralong_hf` followed by `AutoModelForImageTextToText.from_pretrained(folder)` (or AutoConfig, AutoModel,
AutoModelForCausalLM, AutoProcessor, AutoTokenizer) finds them. The names exported here are loaded on first access
(PEP 562 `__getattr__`), so `from auroralong_hf import AuroraLongProcessor` imports the processing code, not more.

The one exception is the `auroralong` command line. Registration imports torch, transformers and every model
(seconds), which `auroralong --help` must not pay. Its console script enters through the top-level module
`auroralong_cli`, which sets `auroralong_cli.DEFER_AUTO_REGISTRATION` before it imports this package; this package
then skips registration, and `auroralong_hf.cli.main` calls `register_auto_classes()` once a command is about to
run. A flag held by that module (not an environment variable) keeps the exception to that one process: the workers
a command starts (`python -m ...`) import this package normally and register.
"""

import importlib
import sys

__version__ = "0.1.0"

# name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(
        ("CACHE_NAME", "AuroraLongConfig", "AuroraLongForConditionalGeneration", "AuroraLongModel", "Rwkv6Cache",
         "Rwkv6Config", "Rwkv6ForCausalLM", "Rwkv6Model", "SiglipToMeVisionConfig", "SiglipToMeVisionModel",
         "merge_schedule", "tokens_per_frame"),
        ".modeling",
    ),
    "AuroraLongProcessor": ".processing",
    "RwkvWorldTokenizer": ".processing",
    "processor_for_vision_config": ".processor_setup",
    "answer_generation_config": ".folder_metadata",
    "write_model_card": ".folder_metadata",
    "register_auto_classes": ".registration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})


def registration_deferred() -> bool:
    """True inside the `auroralong` console script until its command runs (see the module docstring)."""
    return getattr(sys.modules.get("auroralong_cli"), "DEFER_AUTO_REGISTRATION", False) is True


if not registration_deferred():
    from .registration import register_auto_classes

    register_auto_classes()
