"""Metrics: per-example multiple-choice predictions and correctness (plain and length-normalized)."""

from __future__ import annotations

from .backends.hf import ContinuationScore
from .tasks import Example


def choose(scores: list[ContinuationScore], normalize: bool = False) -> int:
    """Index of the best-scoring choice (first one on ties); `normalize` divides by characters."""
    values = [s.logprob / max(s.n_chars, 1) if normalize else s.logprob for s in scores]
    return max(range(len(values)), key=lambda i: values[i])


def example_row(example: Example, scores: list[ContinuationScore]) -> dict:
    """The per-example score fields of a tidy results row."""
    correct = example.correct_indices()
    pred = choose(scores)
    pred_norm = choose(scores, normalize=True)
    return {
        "prediction": pred,
        "target": example.target,
        "accuracy": float(pred in correct),
        "accuracy_norm": float(pred_norm in correct),
        "logprobs": [s.logprob for s in scores],
        "n_tokens": [s.n_tokens for s in scores],
        "n_chars": [s.n_chars for s in scores],
        "greedy": [s.is_greedy for s in scores],
    }
