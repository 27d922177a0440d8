"""AuroraLong in lmms-eval (`--model auroralong`; the `eval` extra installs lmms-eval 0.7.3).

- `manifest.py`: the `lmms_eval.models` entry point; names the model classes by path, imports nothing heavy.
- `adapter.py`: the glue: lmms-eval's requests unpacked into prompts, a task's settings into video sampling and
  generation options, the failure policy, and the simple and chat model classes. It answers through
  `auroralong_hf.answering.Answerer`, which calls the streaming engine and does not need lmms-eval.
- `scoring.py`: documents that could not be answered score as wrong and are counted.
- `compat.py`: the installed lmms-eval release checked, and its loglikelihood results kept as pairs.

Those four import lmms-eval at their top; this package face imports none of them, so `import auroralong_hf.eval`
works without the extra, and nothing else in auroralong_hf imports them: lmms-eval reaches them through the entry
point.
"""
