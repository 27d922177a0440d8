"""lmms-eval plugin entry point (group `lmms_eval.models`): the model name `auroralong` and where its classes live.

lmms-eval loads every plugin's entry point inside one try/except at start-up, whatever model is asked for, so this
names the classes by path only: the adapter (eval/adapter.py) is imported when `--model auroralong` is actually
used. (Loading the entry point imports the package itself, whose Auto-class registrations need torch and
transformers; lmms-eval's CLI imports both anyway, and start-up time is the same with and without this plugin.)
"""

try:
    from lmms_eval.models.registry_v2 import ModelManifest
except ImportError as error:  # lmms-eval logs this and goes on without the plugin: say what to install
    raise ImportError(f"auroralong-hf's lmms-eval plugin needs lmms-eval 0.7.3, whose plugin registry it uses "
                      f"(pip install -e '.[eval]'): {error}") from error

ADAPTER = "auroralong_hf.eval.adapter"


def auroralong_manifest() -> ModelManifest:
    return ModelManifest(
        model_id="auroralong",
        simple_class_path=f"{ADAPTER}.AuroraLongLmms",
        chat_class_path=f"{ADAPTER}.AuroraLongLmmsChat",
    )
