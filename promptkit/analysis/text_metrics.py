"""Generation metrics: `evaluate.Metric` subclasses defined here, so they work offline (evaluate.load
needs the Hub for its own metrics), and any metric `evaluate.load` can find by hub id or local path.
Each scores one prediction against several references (the best reference counts) with `score()`,
which the pipeline calls per example; `compute()` is evaluate's usual batch interface."""

from __future__ import annotations

import re
import string as _string
import unicodedata

import evaluate
import numpy as np

from ..errors import PromptkitError
from ..tasks.core import Example

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
    if punctuation:  # a number keeps its sign, decimal point and thousands separators: "-5" is not "5"
        parts = _NUMBER.split(text)
        numbers = _NUMBER.findall(text)
        strip = lambda s: "".join(" " if unicodedata.category(c).startswith("P") or c in _string.punctuation else c for c in s)
        text = strip(parts[0]) + "".join(f" {n.replace(',', '')} " + strip(p) for n, p in zip(numbers, parts[1:]))
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
        for key, value in options.items():
            want = type(self.defaults[key])
            if not (isinstance(value, want) or want is float and isinstance(value, int)) or isinstance(value, bool) != (want is bool):
                raise PromptkitError(f"metric '{self.key}': option {key} must be {'true or false' if want is bool else 'a number'} "
                                     f"(got {value!r})")
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

    def row(self, example: Example, text: str) -> dict:
        return generation_row(example, text, self)

    def score(self, prediction: str, references: list[str]) -> float:
        """The best value over the references (each subclass scores one pair in `one`)."""
        return max((self.one(prediction, r) for r in references), default=0.0)



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

    row = _GenerationMetric.row

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

