"""lmms-eval 0.7.3 as installed: the release check, and the fix that lets its loglikelihood tasks run.

Both run when the adapter's model is built (eval/adapter.py), before lmms-eval starts an evaluation. The scoring of
failed documents, the other hook into lmms-eval's evaluator, is eval/scoring.py.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version

from lmms_eval import evaluator
from loguru import logger

# The lmms-eval release the adapter is written and tested against (pyproject.toml's `eval` extra pins it).
TESTED_LMMS_EVAL = "0.7.3"
# Modules lmms-eval imports only once an evaluation has started, after the model is built; a failure there ends the
# run with exit status 0 and no results, so they are imported here first and a failure is reported with its cause.
LMMS_EVAL_LATE_IMPORTS = {
    "filelock._api": "lmms-eval 0.7.3 patches it at the start of every evaluation; filelock 4 removed it "
                     "(pip install 'filelock>=3.16.1,<4', as the eval extra does)",
}


def check_lmms_eval_runtime() -> None:
    """Fail now, with the reason, where lmms-eval would fail later without one.

    Raises ImportError naming the module, why lmms-eval needs it and the fix; logs a warning when the installed
    lmms-eval is not the tested release.
    """
    installed = version("lmms-eval")
    if installed != TESTED_LMMS_EVAL:
        logger.warning(f"auroralong: lmms-eval {installed} is installed; this adapter is tested with "
                       f"{TESTED_LMMS_EVAL} (pip install -e '.[eval]').")
    for module, why in LMMS_EVAL_LATE_IMPORTS.items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            message = f"auroralong: lmms-eval {installed} cannot run an evaluation here: it imports {module}, " \
                      f"which fails ({error}). {why}."
            logger.error(message)
            raise ImportError(message) from error


def keep_loglikelihood_pairs() -> None:
    """Compatibility fix for lmms-eval 0.7.3, applied only where it is needed (checked by behaviour).

    Its evaluator passes every model output through `unwrap_generation_output`, which turns anything that is not
    text into `str(output)`: the `(logprob, is_greedy)` pairs of `loglikelihood` reach `process_results` as
    strings like "(-1.5, False)" and every loglikelihood / multiple-choice task fails ("too many values to
    unpack"), for every model. The wrapper passes such pairs through unchanged and leaves all else to lmms-eval.
    """
    unwrap = evaluator.unwrap_generation_output
    if getattr(unwrap, "keeps_loglikelihood_pairs", False) or unwrap((-1.5, False))[0] == (-1.5, False):
        return

    def unwrap_keeping_pairs(output):
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], float) and \
                isinstance(output[1], bool):
            return output, None
        return unwrap(output)

    unwrap_keeping_pairs.keeps_loglikelihood_pairs = True
    evaluator.unwrap_generation_output = unwrap_keeping_pairs


__all__ = ["LMMS_EVAL_LATE_IMPORTS", "TESTED_LMMS_EVAL", "check_lmms_eval_runtime", "keep_loglikelihood_pairs"]
