"""Scores that cannot be silently wrong: lmms-eval's scoring of documents AuroraLong could not answer.

A document fails when its image or video cannot be read, or when answering it raised (a bad prompt, a bad visual
description): the adapter (eval/adapter.py) then answers "" (generation) or NaN for every choice (log-likelihood),
logs an error naming the task, the document and the reason, and marks the document's requests. lmms-eval would
score those answers like any other: an all-NaN (or all-inf) choice list makes its `argmin` pick choice 0, so every
failed document whose answer is choice 0 counted as correct. `score_failed_documents` hooks lmms-eval's per-document
scoring so that a failed document

- scores the worst value of every numeric metric: 0 where higher is better, +inf where lower is better, NaN where
  the task does not say (a task-specific metric whose per-document value is not a number, e.g. a dict a task's own
  aggregation reads, keeps the task's scoring of the empty answer; a warning names such metrics once);
- counts in the metric `unreadable_docs` (summed over the documents; 0 for the others), which lmms-eval prints in
  its results table and writes to the results JSON beside the task's own metrics;
- carries its reason as `auroralong_failure` in the logged samples (`--log_samples`).
"""

from __future__ import annotations

import math
import numbers

from lmms_eval import evaluator
from loguru import logger

FAILURE_ATTRIBUTE = "auroralong_failure"  # set on a failed document's lmms-eval Instances: the reason, a string
UNREADABLE_METRIC = "unreadable_docs"
_warned_metrics: set[tuple[str, str]] = set()


def mark_failed(instances, reason: str) -> None:
    """Mark a document's requests (lmms-eval `Instance`s) as failed, for `score_failed_documents`."""
    for instance in instances:
        setattr(instance, FAILURE_ATTRIBUTE, reason)


def failure_of(instances) -> str | None:
    """The failure reason recorded on any of a document's requests, None when it was answered."""
    return next((getattr(r, FAILURE_ATTRIBUTE) for r in instances if getattr(r, FAILURE_ATTRIBUTE, None)), None)


def worst(value, higher_is_better: bool | None):
    """The worst score a numeric per-document metric value can take (non-numbers are returned unchanged)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if higher_is_better is None:
        return math.nan
    return 0.0 if higher_is_better else math.inf


def score_failed_documents() -> None:
    """Install the scoring hook described in the module docstring into lmms-eval 0.7.3's evaluator (once).

    It wraps `lmms_eval.evaluator._process_document_results(item=(doc_id, doc, requests), task=...)`, which the
    evaluator calls for every document after the model has answered; documents without a failure mark are
    scored exactly as before (plus `unreadable_docs` = 0).
    """
    process = evaluator._process_document_results
    if getattr(process, "scores_failed_documents", False):
        return

    def process_scoring_failures(item, *, task, **kwargs):
        processed = process(item, task=task, **kwargs)
        _, _, requests = item
        failure = failure_of(requests)
        task.aggregation().setdefault(UNREADABLE_METRIC, sum)
        task.higher_is_better().setdefault(UNREADABLE_METRIC, False)
        if failure is not None:
            higher = task.higher_is_better()
            metrics = {}
            for name, value in processed.metrics.items():
                metrics[name] = worst(value, higher.get(name))
                key = (task.task_name, name)
                if metrics[name] is value and key not in _warned_metrics:
                    _warned_metrics.add(key)
                    kind = type(value).__name__
                    logger.warning(f"auroralong: {task.task_name}: metric {name} is task-specific ({kind} per "
                                   "document); failed documents keep the task's own score of an empty answer")
            processed.metrics = metrics
        processed.metrics[UNREADABLE_METRIC] = int(failure is not None)
        if processed.logged_sample is not None:
            processed.logged_sample.update(processed.metrics)
            processed.logged_sample[FAILURE_ATTRIBUTE] = failure
        return processed

    process_scoring_failures.scores_failed_documents = True
    evaluator._process_document_results = process_scoring_failures


__all__ = ["FAILURE_ATTRIBUTE", "UNREADABLE_METRIC", "failure_of", "mark_failed", "score_failed_documents", "worst"]
