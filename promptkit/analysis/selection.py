"""Choosing a prompt for tasks it was not chosen on: selection rules, prompt ensembles, task-aware choice,
and the rule recommended by nested leave-one-task-out on the selection tasks alone.

Everything works on a ChoiceTable: per task, every variant's choice probabilities on every example (from
the stored log-likelihoods, under a scoring mode) and which choices are correct. A rule looks at selection
tasks only (and, if task-aware, at the label-free features of the task it is choosing for) and returns a
Candidate: one variant, or an ensemble of k variants that averages their choice probabilities or takes a
majority vote (k model calls per example instead of one)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import PromptkitError
from . import adapt
from .metrics import mode_score_groups

METHODS = ("single", "mean_prob", "vote")
FEATURES = ("n_choices", "yes_no", "options_in_input", "answer_chars", "input_chars")
BANDWIDTH = 1.0  # task-aware choice: kernel width on standardized features (fixed, not tuned on any benchmark)


@dataclass(frozen=True)
class Candidate:
    """What a rule chooses: one variant, or an ensemble of `members` combined by `method`."""

    members: tuple[str, ...]
    method: str = "single"

    def __post_init__(self):
        if self.method not in METHODS:
            raise PromptkitError(f"unknown ensemble method '{self.method}'; use one of {', '.join(METHODS)}")
        if not self.members or (self.method == "single" and len(self.members) != 1):
            raise PromptkitError("a single-variant candidate has exactly one member; an ensemble at least one")

    @property
    def cost(self) -> int:
        """Model calls per example, relative to one prompt."""
        return len(self.members)

    @property
    def name(self) -> str:
        if self.method == "single":
            return self.members[0]
        return f"{self.method}({'+'.join(self.members)})"


@dataclass
class ChoiceTable:
    """Per multiple-choice task: probabilities (variants × examples × choices, -1 where an example has fewer
    choices), a correct-choice mask (examples × choices), the chance level and the task's features."""

    variants: list[str]
    tasks: list[str]
    probs: dict[str, np.ndarray]
    correct: dict[str, np.ndarray]
    chance: dict[str, float]
    features: dict[str, dict] = field(default_factory=dict)
    prompt_ll: dict[str, np.ndarray] = field(default_factory=dict)  # variants × examples: the prompt's mean
    # log-likelihood per token (NaN where the run did not score the prompt itself)
    _single: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, tasks_info: dict[str, dict], mode: str = "raw",
                  features: dict[str, dict] | None = None) -> ChoiceTable:
        """Build from a run's tidy rows (multiple-choice tasks; generative tasks have no choices to combine)."""
        kinds = rows["kind"] if "kind" in rows else pd.Series("choice", index=rows.index)
        choice_rows = rows[kinds == "choice"]
        variants = sorted(rows["variant"].unique())
        vindex = {v: i for i, v in enumerate(variants)}
        probs, correct, tasks, prompt_ll = {}, {}, [], {}
        present = set(choice_rows["task"])
        for task in [t for t in tasks_info if t in present]:
            part = choice_rows[choice_rows["task"] == task]
            examples = sorted(part["example"].unique(), key=str)
            eindex = {e: i for i, e in enumerate(examples)}
            width = int(part["logprobs"].map(len).max())
            p = np.full((len(variants), len(examples), width), -1.0)
            c = np.zeros((len(examples), width), dtype=bool)
            seen = np.zeros((len(variants), len(examples)), dtype=bool)
            vi = np.array([vindex[v] for v in part["variant"].tolist()], dtype=np.int64)
            ei = np.array([eindex[e] for e in part["example"].tolist()], dtype=np.int64)
            for at, s in mode_score_groups(part, mode):  # all rows with the same number of choices at once
                p[vi[at], ei[at], : s.shape[1]] = np.exp(s - np.logaddexp.reduce(s, axis=1, keepdims=True))
            right = part["correct"].tolist() if "correct" in part else [None] * len(part)
            for e, r, target in zip(ei.tolist(), right, part["target"].tolist()):
                c[e, list(r) if isinstance(r, (list, tuple, np.ndarray)) else [target]] = True
            seen[vi, ei] = True
            if not seen.all():
                raise PromptkitError(f"task '{task}': some variants lack scores on some examples; prompt choice "
                                     "needs every variant scored on the same examples")
            probs[task], correct[task] = p, c
            tasks.append(task)
            if "prompt_logprob" in part:
                ll = np.full((len(variants), len(examples)), np.nan)
                per_token = (pd.to_numeric(part["prompt_logprob"], errors="coerce")
                             / pd.to_numeric(part["prompt_tokens"], errors="coerce").clip(lower=1)).to_numpy(dtype=float)
                ll[vi, ei] = per_token
                prompt_ll[task] = ll
        info = {t: (features or {}).get(t) or tasks_info[t].get("features") or {} for t in tasks}
        return cls(variants, tasks, probs, correct, {t: float(tasks_info[t]["chance"]) for t in tasks}, info, prompt_ll)

    def n_examples(self, task: str) -> int:
        return self.correct[task].shape[0]

    # ------------------------------------------------------------------ scores
    def predictions(self, candidate: Candidate, task: str) -> np.ndarray:
        """The predicted choice per example."""
        p = self.probs[task][[self.variants.index(m) for m in candidate.members]]
        if candidate.method == "vote":
            votes = np.stack([(p.argmax(axis=2) == c).sum(axis=0) for c in range(p.shape[2])], axis=1).astype(float)
            votes[p[0] < 0] = -1  # no such choice
            return (votes + 1e-6 * p.mean(axis=0)).argmax(axis=1)  # ties: the higher mean probability
        return p.mean(axis=0).argmax(axis=1)  # single, mean_prob

    def accuracy(self, candidate: Candidate, task: str) -> float:
        pred = self.predictions(candidate, task)
        return float(self.correct[task][np.arange(len(pred)), pred].mean())

    def normalized(self, candidate: Candidate, task: str) -> float:
        """(accuracy − chance) / (1 − chance)."""
        c = self.chance[task]
        return (self.accuracy(candidate, task) - c) / (1 - c if c < 1 else 1.0)

    def correct_by_variant(self, task: str, examples: np.ndarray | None = None) -> np.ndarray:
        """variants × examples: 1 where the variant alone answers the example right."""
        p = self.probs[task] if examples is None else self.probs[task][:, examples]
        c = self.correct[task] if examples is None else self.correct[task][examples]
        pred = p.argmax(axis=2)
        return c[np.arange(pred.shape[1])[None, :], pred].astype(float)

    def single(self, task: str) -> np.ndarray:
        """Every variant's normalized accuracy on one task (cached)."""
        if task not in self._single:
            pred = self.probs[task].argmax(axis=2)  # variants × examples
            acc = self.correct[task][np.arange(pred.shape[1])[None, :], pred].mean(axis=1)
            c = self.chance[task]
            self._single[task] = (acc - c) / (1 - c if c < 1 else 1.0)
        return self._single[task]

    def table(self, tasks: list[str]) -> np.ndarray:
        """variants × tasks normalized accuracy."""
        return np.column_stack([self.single(t) for t in tasks])

    def score(self, candidate: Candidate, tasks: list[str]) -> float:
        """Mean normalized accuracy of a candidate over tasks (the mean_norm aggregate)."""
        if candidate.method == "single":
            i = self.variants.index(candidate.members[0])
            return float(np.mean([self.single(t)[i] for t in tasks]))
        return float(np.mean([self.normalized(candidate, t) for t in tasks]))


# ---------------------------------------------------------------------------- rules
# A rule: (table, selection tasks, the task chosen for or None) -> Candidate. Only task-aware rules read the
# target, and only its features (never its labels).

Rule = Callable[[ChoiceTable, list, "str | None"], Candidate]


def _best(ct: ChoiceTable, values: np.ndarray) -> Candidate:
    return Candidate((ct.variants[int(np.argmax(values))],))  # first variant id on ties


def _order(ct: ChoiceTable, selection: list[str]) -> np.ndarray:
    """Variants by mean_norm on the selection tasks, best first (variant id breaks ties)."""
    mean = ct.table(selection).mean(axis=1)
    return np.lexsort((np.arange(len(ct.variants)), -mean))


def top1(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
    """The highest mean normalized accuracy over the selection tasks (mean_norm)."""
    return _best(ct, ct.table(selection).mean(axis=1))


def mean_rank(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
    """The lowest mean rank across selection tasks (ties share the average rank)."""
    table = ct.table(selection)
    ranks = np.column_stack([rankdata(-table[:, j]) for j in range(table.shape[1])])
    return _best(ct, -ranks.mean(axis=1))


def worst_task(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
    """The best worst case: the highest minimum normalized accuracy over selection tasks."""
    return _best(ct, ct.table(selection).min(axis=1))


def shrinkage(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
    """Empirical Bayes: each variant's mean is shrunk toward the grand mean by how noisy it is across tasks
    (a variant that is great on two tasks and poor on the rest moves further than a steady one)."""
    table = ct.table(selection)
    return _best(ct, shrunk_means(table))


def shrunk_means(table: np.ndarray) -> np.ndarray:
    """Posterior means of the variants' cross-task means (normal-normal model, moment estimate of τ²)."""
    n_tasks = table.shape[1]
    means = table.mean(axis=1)
    if n_tasks < 2 or len(means) < 2:
        return means
    se2 = table.var(axis=1, ddof=1) / n_tasks
    tau2 = max(float(means.var(ddof=1) - se2.mean()), 1e-6)
    grand = float(means.mean())
    return grand + tau2 / (tau2 + se2) * (means - grand)


def ensemble(k: int, method: str = "mean_prob") -> Rule:
    """The top-k variants by mean_norm, combined by averaging choice probabilities or by majority vote."""
    def rule(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
        order = _order(ct, selection)[:k]
        return Candidate(tuple(ct.variants[i] for i in order), method if len(order) > 1 else "single")
    rule.__doc__ = f"The top {k} variants by mean_norm, {'averaged choice probabilities' if method == 'mean_prob' else 'majority vote'}."
    return rule


def feature_matrix(ct: ChoiceTable, tasks: list[str]) -> np.ndarray | None:
    """Tasks × features (log lengths), or None when a task has no features recorded."""
    if not all(ct.features.get(t) for t in tasks):
        return None
    rows = []
    for t in tasks:
        f = ct.features[t]
        rows.append([f["n_choices"], f["yes_no"], f["options_in_input"], math.log1p(f["answer_chars"]),
                     math.log1p(f["input_chars"])])
    return np.asarray(rows, dtype=float)


def task_weights(ct: ChoiceTable, selection: list[str], target: str) -> np.ndarray | None:
    """Gaussian-kernel similarity of each selection task to the target, on standardized features."""
    m = feature_matrix(ct, selection + [target])
    if m is None:
        return None
    sd = m.std(axis=0)
    z = (m - m.mean(axis=0)) / np.where(sd > 1e-9, sd, 1.0)
    d2 = ((z[:-1] - z[-1]) ** 2).mean(axis=1)
    w = np.exp(-d2 / (2 * BANDWIDTH ** 2))
    return w / w.sum() if w.sum() > 0 else None


def task_aware(ct: ChoiceTable, selection: list[str], target: str | None = None) -> Candidate:
    """The best variant on the selection tasks that look most like the target (number of choices, yes/no,
    options already in the input, answer and input length): mean_norm weighted by similarity."""
    w = task_weights(ct, selection, target) if target is not None else None
    if w is None:
        return top1(ct, selection)
    return _best(ct, ct.table(selection) @ w)


RULES: dict[str, Rule] = {
    "top1": top1,
    "mean_rank": mean_rank,
    "worst": worst_task,
    "shrinkage": shrinkage,
    "task_aware": task_aware,
    "ensemble3": ensemble(3, "mean_prob"),
    "ensemble5": ensemble(5, "mean_prob"),
    "vote3": ensemble(3, "vote"),
    "vote5": ensemble(5, "vote"),
}
SINGLE_RULES = ("top1", "mean_rank", "worst", "shrinkage", "task_aware")
RULE_COST = {"ensemble3": 3, "vote3": 3, "ensemble5": 5, "vote5": 5}
T_NEEDED = 3.0  # a rule replaces the default only with a paired t statistic this large over the LOTO folds
# (about p < 0.05 after a Bonferroni correction for the 8 alternatives on 10-40 folds)


def rule(name: str) -> Rule:
    if name not in RULES:
        raise PromptkitError(f"unknown selection rule '{name}'; use one of {', '.join(RULES)}")
    return RULES[name]


def held_out_score(ct: ChoiceTable, name: str, selection: list[str], held_out: list[str]) -> tuple[float, list[Candidate]]:
    """Mean normalized accuracy over `held_out` of what rule `name` chooses on `selection` (a task-aware rule
    chooses once per held-out task), and the candidates it chose."""
    fn = rule(name)
    if name == "task_aware":
        chosen = [fn(ct, selection, t) for t in held_out]
        return float(np.mean([ct.score(c, [t]) for c, t in zip(chosen, held_out)])), chosen
    c = fn(ct, selection, None)
    return ct.score(c, held_out), [c]


def fit_prior(ct: ChoiceTable, selection: list[str]) -> adapt.Prior:
    """The cross-task prior of few-label adaptation from the selection tasks, with each task's paired noise."""
    noise = np.array([adapt.paired_noise(ct.correct_by_variant(t), ct.chance[t]) for t in selection])
    return adapt.prior(ct.table(selection), np.array([ct.n_examples(t) for t in selection]),
                       np.array([ct.chance[t] for t in selection]), noise)


# ---------------------------------------------------------------------------- recommendation


@dataclass
class Recommendation:
    """The rule nested leave-one-task-out prefers, what it chooses on all selection tasks, and the evidence."""

    rule: str
    candidate: Candidate
    loto: pd.DataFrame  # rule, loto_mean_norm, cost, t_vs_default, folds_behind, folds_ahead (of the default's)
    default: str = "top1"  # the rule kept unless another beat it clearly, or a cheaper one was never behind it
    basis: str = "default"  # why: "clear" (beat the default clearly), "cheaper" (never behind it), "default"

    def as_dict(self) -> dict:
        return {"rule": self.rule, "default": self.default, "choice": self.candidate.name, "members": list(self.candidate.members),
                "method": self.candidate.method, "cost": self.candidate.cost, "basis": self.basis,
                "loto": self.loto.to_dict("records")}


def nested_loto(ct: ChoiceTable, selection: list[str], rules: list[str] | None = None,
                default: str = "top1") -> pd.DataFrame:
    """Each rule judged out of sample on the selection tasks alone: each task left out in turn, the rule
    chooses on the others, and is scored on the one left out. Held-out tasks are never read. Per rule: the
    mean over folds, its cost, and the paired t statistic of its fold scores against the `default` rule's."""
    if len(selection) < 2:
        raise PromptkitError("choosing a selection rule needs at least 2 selection tasks (one is left out in turn)")
    names = list(dict.fromkeys([default, *(rules or list(RULES))]))
    folds, costs = fold_scores(ct, selection, names)
    out = []
    for name in names:
        diff = folds[name] - folds[default]
        sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
        mean = float(diff.mean()) if abs(diff.mean()) > 1e-12 else 0.0  # no -0.0 from rounding
        # the same difference on every fold: as clear as it gets (an infinite t), not no difference at all
        t_stat = float(mean / (sd / np.sqrt(len(diff)))) if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0
        out.append({"rule": name, "loto_mean_norm": float(folds[name].mean()), "cost": costs[name],
                    "t_vs_default": t_stat, "folds_behind": int((diff < -1e-9).sum()),
                    "folds_ahead": int((diff > 1e-9).sum())})
    return pd.DataFrame(out)


def fold_scores(ct: ChoiceTable, selection: list[str], names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per rule: its score on each selection task left out in turn (chosen on the others), and its cost."""
    folds, costs = {}, {}
    for name in names:
        scores, cost = [], 1
        for t in selection:
            rest = [s for s in selection if s != t]
            c = rule(name)(ct, rest, t)
            scores.append(ct.score(c, [t]))
            cost = max(cost, c.cost)
        folds[name], costs[name] = np.asarray(scores), cost
    return folds, costs


def default_rule(max_cost: int | None = None) -> str:
    """What the recommendation keeps unless another rule is clearly better out of sample: the 5-prompt ensemble
    (averaged probabilities), or the largest ensemble within `max_cost` calls per example, or top-1 at cost 1."""
    if max_cost is None or max_cost >= 5:
        return "ensemble5"
    return "ensemble3" if max_cost >= 3 else "top1"


def recommend(ct: ChoiceTable, selection: list[str], rules: list[str] | None = None, target: str | None = None,
              max_cost: int | None = None, t_needed: float = T_NEEDED) -> Recommendation:
    """The default rule (default_rule(max_cost)), unless another rule within `max_cost` beats it out of sample
    clearly (the best nested-LOTO mean whose paired t statistic against the default reaches `t_needed`), or a
    cheaper rule is behind it on none of the left-out tasks (then the costlier default buys nothing this run can
    see, and the cheapest such rule is taken). Picking the plain best mean among nine noisy LOTO estimates mostly
    picks noise (benchmarks/README); the default is what the generalization benchmark found best on its own pool,
    so keeping it is that benchmark's prior, not an out-of-sample choice (advice.why says which it was)."""
    default = default_rule(max_cost)
    allowed = [r for r in (rules or list(RULES)) if max_cost is None or RULE_COST.get(r, 1) <= max_cost]
    loto = nested_loto(ct, selection, allowed, default)
    order = np.lexsort((np.arange(len(loto)), loto["cost"].to_numpy(), -loto["loto_mean_norm"].round(9).to_numpy()))
    loto = loto.iloc[order].reset_index(drop=True)
    clear = loto[(loto["rule"] == default) | (loto["t_vs_default"] >= t_needed)]
    best = str(clear.iloc[0]["rule"])
    basis = "clear" if best != default else "default"
    if best == default:  # a cheaper rule never behind the default on a left-out task: the extra calls buy nothing seen
        cost = int(loto.loc[loto["rule"] == default, "cost"].iloc[0])
        cheaper = loto[(loto["cost"] < cost) & (loto["folds_behind"] == 0)]
        if len(cheaper):
            best, basis = str(cheaper.sort_values("cost", kind="stable").iloc[0]["rule"]), "cheaper"
    return Recommendation(best, rule(best)(ct, selection, target), loto, default, basis)
