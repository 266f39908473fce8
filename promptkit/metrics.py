"""Metrics: per-example multiple-choice predictions and correctness, the scoring modes derived from
stored per-continuation log-likelihoods without recomputation, and the generation metrics
(`evaluate.Metric` subclasses that work offline, or any metric `evaluate.load` can find)."""

from __future__ import annotations

import re
import string as _string
import unicodedata

import evaluate
import numpy as np
import pandas as pd

from .errors import PromptkitError

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


MODES = ("raw", "per_token", "per_char", "calibrated")
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
    preds, correct = [], []
    for r in rows.to_dict("records"):  # one pass; iterrows builds a Series per row
        if r.get("kind") == "generate":  # a generated answer has one score whatever the mode
            preds.append(r["prediction"])
            correct.append(r["accuracy"])
            continue
        pred = int(np.argmax(mode_scores(r, mode)))
        preds.append(pred)
        correct.append(float(pred in (r["correct"] if isinstance(r.get("correct"), list) else [r["target"]])))
    out["prediction"] = preds
    out["accuracy"] = correct
    out["mode"] = mode
    return out


def _choice_rows(rows: pd.DataFrame):
    return rows["kind"] != "generate" if "kind" in rows else slice(None)


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


# ---------------------------------------------------------------------------- generation metrics
#
# `evaluate.Metric` subclasses defined here work offline (evaluate.load needs the Hub for its own
# metrics). Each scores one prediction against several references (the best reference counts) with
# `score()`, which the pipeline calls per example; `compute()` is evaluate's usual batch interface.

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def normalize_text(text: str, case: bool = True, whitespace: bool = True, punctuation: bool = True,
                   articles: bool = False) -> str:
    """`text` with the chosen differences removed: case, runs of whitespace, punctuation, English articles."""
    text = unicodedata.normalize("NFKC", str(text))
    if case:
        text = text.lower()
    if punctuation:
        text = "".join(" " if unicodedata.category(c).startswith("P") or c in _string.punctuation else c for c in text)
    if articles:
        text = _ARTICLES.sub(" ", text)
    if whitespace:
        text = " ".join(text.split())
    return text


class _GenerationMetric(evaluate.Metric):
    """Base class: predictions are strings, references a list of acceptable strings per prediction."""

    key = "score"
    description = ""
    defaults: dict = {"case": True, "whitespace": True, "punctuation": True, "articles": False}

    def __init__(self, **options):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise PromptkitError(f"metric '{self.key}' has no option(s) {', '.join(sorted(unknown))}; "
                                 f"its options are: {', '.join(f'{k} (default {v!r})' for k, v in self.defaults.items())}")
        self.options = {**self.defaults, **options}
        super().__init__(keep_in_memory=True)

    def _info(self):
        import datasets

        return evaluate.MetricInfo(
            description=self.description, citation="", inputs_description="predictions: list of strings; "
            "references: list of lists of acceptable strings (one list per prediction)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}))

    def _compute(self, predictions, references):
        values = [self.score(p, r) for p, r in zip(predictions, references)]
        return {self.key: float(np.mean(values)) if values else 0.0}

    @property
    def label(self) -> str:
        return self.key

    def norm(self, text: str) -> str:
        o = self.options
        return normalize_text(text, o["case"], o["whitespace"], o["punctuation"], o["articles"])

    def score(self, prediction: str, references: list[str]) -> float:
        """The best value over the references."""
        return max((self.one(prediction, r) for r in references), default=0.0)

    def one(self, prediction: str, reference: str) -> float:
        raise NotImplementedError


class ExactMatch(_GenerationMetric):
    """1 when the prediction equals a reference after normalization (by default: case, whitespace and
    punctuation are ignored; articles are kept)."""

    key = "exact_match"
    description = __doc__

    def one(self, prediction, reference):
        return float(self.norm(prediction) == self.norm(reference))


class Contains(_GenerationMetric):
    """1 when a normalized reference appears in the normalized prediction as whole words."""

    key = "contains"
    description = __doc__

    def one(self, prediction, reference):
        ref = self.norm(reference)
        return float(bool(ref) and f" {ref} " in f" {self.norm(prediction)} ")


class TokenF1(_GenerationMetric):
    """Harmonic mean of token precision and recall between prediction and reference (SQuAD-style:
    by default case, punctuation and articles are ignored)."""

    key = "f1"
    description = __doc__
    defaults = {"case": True, "whitespace": True, "punctuation": True, "articles": True}

    def one(self, prediction, reference):
        pred, ref = self.norm(prediction).split(), self.norm(reference).split()
        if not pred or not ref:
            return float(pred == ref)
        common = sum(min(pred.count(t), ref.count(t)) for t in set(pred) & set(ref))
        if not common:
            return 0.0
        precision, recall = common / len(pred), common / len(ref)
        return 2 * precision * recall / (precision + recall)


class NumericMatch(_GenerationMetric):
    """1 when the first number in the prediction equals a reference's number (within `rel_tol`);
    digits, thousands separators, decimals, signs and the words zero..twenty are read. A reference
    that is not a number is compared by exact match."""

    key = "numeric"
    description = __doc__
    defaults = {"rel_tol": 1e-6, "abs_tol": 1e-9, "case": True, "whitespace": True, "punctuation": True, "articles": False}

    def norm(self, text):
        return normalize_text(text, self.options["case"], self.options["whitespace"], self.options["punctuation"],
                              self.options["articles"])

    def one(self, prediction, reference):
        want = parse_number(reference)
        if want is None:
            return float(self.norm(prediction) == self.norm(reference))
        got = parse_number(prediction)
        if got is None:
            return 0.0
        return float(abs(got - want) <= max(self.options["rel_tol"] * abs(want), self.options["abs_tol"]))


def parse_number(text: str) -> float | None:
    """The first number in `text` (digits or a word from zero to twenty), or None."""
    text = str(text)
    match = _NUMBER.search(text)
    word = re.search(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", text, re.IGNORECASE)
    if word and (not match or word.start() < match.start()):
        return float(_WORD_NUMBERS[word.group(1).lower()])
    if match:
        try:
            return float(match.group(0).replace(",", ""))
        except ValueError:
            return None
    return None


BUILTIN_METRICS = {cls.key: cls for cls in (ExactMatch, Contains, TokenF1, NumericMatch)}
DEFAULT_GENERATION_METRIC = "exact_match"


class HubMetric:
    """A metric loaded with `evaluate.load` (a hub id or a local script path), scored one example at a
    time; with several references the best one counts."""

    def __init__(self, module, name: str, options: dict):
        self.module, self.options = module, options
        self.label = name

    def score(self, prediction: str, references: list[str]) -> float:
        values = []
        for ref in references:
            result = self.module.compute(predictions=[prediction], references=[ref], **self.options)
            values.append(_main_value(result, self.label))
        return max(values)


def _main_value(result: dict, name: str) -> float:
    if not isinstance(result, dict) or not result:
        raise PromptkitError(f"metric '{name}' returned {result!r}; a metric must return a dict of numbers")
    base = name.rstrip("/").split("/")[-1].removesuffix(".py")
    value = result.get(base, next((v for v in result.values() if isinstance(v, (int, float))), None))
    if not isinstance(value, (int, float)):
        raise PromptkitError(f"metric '{name}' returned no number ({result!r})")
    return float(value)


def load_metric(spec=None):
    """A generation metric from a task's `metric:` value: a built-in name (exact_match, contains, f1,
    numeric), an `evaluate` hub id or local path, or a mapping {name: ..., option: value, ...}."""
    spec = spec or DEFAULT_GENERATION_METRIC
    name, options = (spec, {}) if isinstance(spec, str) else (spec.get("name"), {k: v for k, v in spec.items() if k != "name"})
    if name in BUILTIN_METRICS:
        return BUILTIN_METRICS[name](**options)
    try:
        module = evaluate.load(name)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PromptkitError(
            f"metric '{name}' is not built in ({', '.join(BUILTIN_METRICS)}) and evaluate.load could not load it: {first}. "
            "Name a built-in, a local metric script or folder, or an `evaluate` hub id (needs the Hub)") from None
    return HubMetric(module, name, options)


def generation_row(example: Example, text: str, metric) -> dict:
    """The per-example score fields of a tidy results row for a generation example."""
    value = metric.score(text, example.references())
    return {"kind": "generate", "prediction": text, "target": example.references(), "correct": [],
            "accuracy": value, "accuracy_norm": value, "metric": metric.label}
