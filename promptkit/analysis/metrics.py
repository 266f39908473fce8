"""Metrics: per-example multiple-choice predictions and correctness, and the scoring modes derived
from stored per-continuation log-likelihoods without recomputation. Generation metrics are in
text_metrics.py (they import `evaluate`, which only generation runs need)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import PromptkitError

from ..backends.base import ContinuationScore
from ..prompts.choice_generation import parse_choice
from .names import MODES
from ..tasks.core import Example


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
        "kind": "choice",
        "prediction": pred,
        "target": example.target,
        "correct": correct,
        "accuracy": float(pred in correct),
        "accuracy_norm": float(pred_norm in correct),
        "logprobs": [s.logprob for s in scores],
        "n_tokens": [s.n_tokens for s in scores],
        "n_chars": [s.n_chars for s in scores],
        "greedy": [s.is_greedy for s in scores],
    }


def generated_choice_row(example: Example, answer: str) -> dict:
    """The row of a multiple-choice example scored by generation: the generated answer mapped back to a choice
    (prompts.choice_generation.parse_choice); an answer that names no choice is wrong and counts as a parse failure."""
    correct = example.correct_indices()
    pred = parse_choice(answer, list(example.choices or []))
    hit = float(pred is not None and pred in correct)
    return {"kind": "choice_generated", "prediction": -1 if pred is None else pred, "target": example.target,
            "correct": correct, "accuracy": hit, "accuracy_norm": hit, "generated": answer,
            "parse_failed": pred is None}


# rows whose prediction was made without per-choice log-likelihoods: every scoring mode keeps it
FIXED_KINDS = ("generate", "aggregate", "choice_generated")

CONTENT_FREE_INPUT = "N/A"  # Zhao et al. 2021's content-free input


def mode_scores(row, mode: str) -> np.ndarray:
    """Per-choice scores of one results row under a scoring mode."""
    lp = np.asarray(row["logprobs"], dtype=float)
    if mode == "raw":
        return lp
    if mode == "per_token":
        return lp / np.maximum(np.asarray(row["n_tokens"], dtype=float), 1)
    if mode == "per_char":
        return lp / np.maximum(np.asarray(row["n_chars"], dtype=float), 1)
    if mode == "calibrated":
        # contextual calibration: divide each choice's probability by its probability under a
        # content-free input (normalized over the choices); in log space, a subtraction
        cf = np.asarray(row["cf_logprobs"], dtype=float)
        return lp - (cf - np.logaddexp.reduce(cf))
    raise PromptkitError(f"unknown scoring mode '{mode}'; use one of {', '.join(MODES)}")


def with_mode(rows: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Results rows re-scored under `mode`: prediction and accuracy recomputed from the stored log-likelihoods."""
    if mode == "calibrated" and ("cf_logprobs" not in rows or rows.loc[_choice_rows(rows), "cf_logprobs"].isna().any()):
        raise PromptkitError("the calibrated mode needs content-free scores: run with --calibrate (calibrate=True)")
    out = rows.copy()
    n = len(rows)
    column = lambda name: rows[name].tolist() if name in rows else [None] * n  # columns, not records: 10x faster
    kinds, logprobs = column("kind"), column("logprobs")
    preds: list = [None] * n
    correct: list = [None] * n
    stored, acc, acc_mode = column("prediction"), column("accuracy"), column(f"accuracy@{mode}")
    lists = []  # multiple-choice rows: their prediction comes from their per-choice scores, all at once
    for i, kind in enumerate(kinds):
        if kind in FIXED_KINDS:  # a generated answer has one score; a mean over noise conditions keeps one per mode
            preds[i] = stored[i]
            value = acc_mode[i]
            correct[i] = acc[i] if value is None or value != value else value
        elif isinstance(logprobs[i], (list, tuple, np.ndarray)):
            lists.append(i)
        else:  # no list of scores (a malformed row): as mode_scores reads it
            preds[i] = int(np.argmax(mode_scores(rows.iloc[i], mode)))
    if lists:
        for at, scores in mode_score_groups(rows.iloc[lists], mode):
            for j, pred in zip(at.tolist(), scores.argmax(axis=1).tolist()):
                preds[lists[j]] = pred
    right, targets = column("correct"), column("target")
    for i, kind in enumerate(kinds):
        if kind not in FIXED_KINDS:
            correct[i] = float(preds[i] in (right[i] if isinstance(right[i], list) else [targets[i]]))
    out["prediction"] = preds
    out["accuracy"] = correct
    out["mode"] = mode
    return out


def mode_score_groups(rows: pd.DataFrame, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-choice scores of `rows` (multiple-choice rows with lists of log-likelihoods) under `mode`, as one
    (positions, scores) pair per number of choices: scores[j] equals mode_scores(rows.iloc[positions[j]], mode),
    computed for all rows of that width at once."""
    if mode not in MODES:
        raise PromptkitError(f"unknown scoring mode '{mode}'; use one of {', '.join(MODES)}")
    lp = rows["logprobs"].tolist()
    other = {"per_token": "n_tokens", "per_char": "n_chars", "calibrated": "cf_logprobs"}.get(mode)
    extra = rows[other].tolist() if other else None
    widths = np.fromiter((len(x) for x in lp), dtype=np.int64, count=len(lp))
    groups = []
    for width in np.unique(widths).tolist():
        at = np.flatnonzero(widths == width)
        matrix = lambda values: np.array([values[i] for i in at.tolist()], dtype=float).reshape(len(at), width)
        scores = matrix(lp)
        if mode in ("per_token", "per_char"):
            scores = scores / np.maximum(matrix(extra), 1)
        elif mode == "calibrated":
            cf = matrix(extra)
            scores = scores - (cf - np.logaddexp.reduce(cf, axis=1, keepdims=True))
        groups.append((at, scores))
    return groups


def _choice_rows(rows: pd.DataFrame):
    return ~rows["kind"].isin(list(FIXED_KINDS)) if "kind" in rows else slice(None)


def available_modes(rows: pd.DataFrame) -> list[str]:
    has_cf = "cf_logprobs" in rows and not rows.loc[_choice_rows(rows), "cf_logprobs"].isna().any()
    return [m for m in MODES if m != "calibrated" or has_cf]


def modes_as_variants(rows: pd.DataFrame, modes: list[str] | None = None) -> pd.DataFrame:
    """Rows for every (variant, mode) as if each were its own variant `VARIANT@MODE`, so that
    scoring modes can be ranked like variants."""
    parts = []
    for mode in modes or available_modes(rows):
        part = with_mode(rows, mode)
        part["variant"] = part["variant"] + "@" + mode
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
