"""Choosing a prompt for a new task from its inputs alone (no labels): label-free criteria computed from every
candidate's choice probabilities on the task's inputs, combined with the run's cross-task prior.

Criteria, per variant, on the new task's N inputs (higher is better):
- mi: mutual information between input and answer, H(mean over inputs of p(answer|input)) − mean over inputs of
  H(p(answer|input)) (Sorensen et al. 2022): a prompt whose answers depend on the input, confidently;
- agreement: the share of inputs where the variant's answer is the ensemble's (every candidate's mean probability)
  answer (zero-label prompt selection, Liao et al. 2022);
- calibrated: the mean top probability after batch calibration, each choice's log-probability minus its mean over
  the batch (Zhou et al. 2023);
- perplexity: the prompt's own log-likelihood per token, averaged over the inputs (the negative log of its
  perplexity): a prompt the model finds likely ranks high (Gonen et al. 2022). It needs one more call per prompt and input (the run
  scores the prompts of each task's first examples, `prompt_likelihood`), so it is used where every variant has it.

How much a criterion is trusted is learned where labels exist: on the run's selection tasks, each left out in
turn, the criteria come from its inputs alone (N of them), the prior from the other selection tasks, and each
weighting (z-scored prior + weight × z-scored criterion, or the criterion alone) is scored by the held-out accuracy
of what it picks. The default (prior + 1 × mutual information) is kept unless another weighting, the prior alone
included, beats it clearly over the folds (paired t >= 3), as selection.recommend keeps its default rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import PromptkitError
from .selection import Candidate, ChoiceTable

CRITERIA = ("mi", "agreement", "calibrated", "perplexity")
NAMES = {"mi": "mutual information", "agreement": "agreement with the ensemble's pseudo-labels",
         "calibrated": "confidence after batch calibration", "perplexity": "prompt perplexity (lower ranks higher)"}
WEIGHTS = (0.25, 0.5, 1.0, 2.0)
ALONE = math.inf  # the criterion alone, no prior
DEFAULT = ("mi", 1.0)  # prior + 1 × mutual information, equal weight on the z scale: kept unless another weighting
# beats it clearly on the run's selection tasks. On the offline pool's splits (benchmarks/README) a criterion's
# gain is real but too small to be seen on 10-20 selection tasks left out in turn, so the run's own folds rarely decide.
T_NEEDED = 3.0  # as selection.T_NEEDED: a paired t this large over the folds replaces the default


def _clean(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with missing choices (-1) set to 0, and the mask of real choices."""
    probs = np.asarray(probs, dtype=float)
    mask = probs >= 0
    return np.where(mask, probs, 0.0), mask


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


def criteria(probs: np.ndarray, prompt_ll: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every criterion per variant from a variants × inputs × choices array of choice probabilities (-1 where an
    input has fewer choices) and, where given, the prompts' mean log-likelihood per token (variants × inputs, NaN
    where not scored): perplexity only when every variant has it on some input. Reads no label."""
    p, mask = _clean(probs)
    mi = _entropy(p.mean(axis=1)) - _entropy(p).mean(axis=1)
    ensemble = p.mean(axis=0)
    ensemble[~mask[0]] = -1
    pseudo = ensemble.argmax(axis=1)
    agreement = (p.argmax(axis=2) == pseudo[None, :]).mean(axis=1)
    logp = np.log(np.clip(p, 1e-12, None))
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    centred = logp - (np.where(mask, logp, 0.0).sum(axis=1, keepdims=True) / counts)
    centred = np.where(mask, centred, -np.inf)
    cal = np.exp(centred - centred.max(axis=2, keepdims=True))
    cal = cal / cal.sum(axis=2, keepdims=True)
    calibrated = cal.max(axis=2).mean(axis=1)
    out = {"mi": mi, "agreement": agreement, "calibrated": calibrated}
    if prompt_ll is not None:
        ll = np.asarray(prompt_ll, dtype=float)
        both = np.isfinite(ll).all(axis=0)  # inputs every variant's prompt was scored on: compared on the same inputs
        if both.any():
            out["perplexity"] = ll[:, both].mean(axis=1)
    return out


def task_criteria(ct: ChoiceTable, task: str, inputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The criteria of one task of a ChoiceTable on some of its inputs (all when None)."""
    probs = ct.probs[task] if inputs is None else ct.probs[task][:, inputs]
    ll = ct.prompt_ll.get(task)
    return criteria(probs, None if ll is None else (ll if inputs is None else ll[:, inputs]))


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def combined(prior_mu: np.ndarray, crit: dict[str, np.ndarray], criterion: str, weight: float) -> np.ndarray:
    """The score a weighting maximizes: z(prior) + weight × z(criterion); the criterion alone at weight inf; the
    prior alone for criterion 'prior'."""
    if criterion == "prior" or weight == 0:
        return zscore(prior_mu)
    if weight == ALONE:
        return zscore(crit[criterion])
    return zscore(prior_mu) + weight * zscore(crit[criterion])


def configs(available: tuple[str, ...] = CRITERIA) -> list[tuple[str, float]]:
    return [("prior", 0.0)] + [(c, w) for c in CRITERIA if c in available for w in (*WEIGHTS, ALONE)]


def config_name(criterion: str, weight: float) -> str:
    if criterion == "prior":
        return "prior"
    return f"{criterion} alone" if weight == ALONE else f"prior + {weight:g}×{criterion}"


def subset(n_examples: int, n: int | None, seed: int = 0, first: np.ndarray | None = None) -> np.ndarray:
    """The inputs a criterion reads: `n` of them drawn with `seed` (all when n is None or larger), those in `first`
    (a mask: the inputs whose prompts were scored too) drawn before the others."""
    if n is None or n >= n_examples:
        return np.arange(n_examples)
    order = np.random.default_rng(seed).permutation(n_examples)
    if first is not None:
        order = order[np.argsort(~np.asarray(first, dtype=bool)[order], kind="stable")]
    return np.sort(order[:n])


def inputs_of(ct: ChoiceTable, task: str, n: int | None, seed: int = 0) -> np.ndarray:
    """`n` inputs of a task as the label-free choice reads them: those with every prompt's likelihood first."""
    ll = ct.prompt_ll.get(task)
    return subset(ct.n_examples(task), n, seed, None if ll is None else np.isfinite(ll).all(axis=0))


def available(ct: ChoiceTable, tasks: list[str]) -> tuple[str, ...]:
    """The criteria every one of `tasks` has: perplexity only where the run scored the prompts of each."""
    have = all(t in ct.prompt_ll and np.isfinite(ct.prompt_ll[t]).all(axis=0).any() for t in tasks)
    return tuple(c for c in CRITERIA if c != "perplexity" or have)


def pick(scores: np.ndarray, k: int = 1) -> np.ndarray:
    """The k best by score, best first (the first variant on ties)."""
    return np.lexsort((np.arange(len(scores)), -np.round(scores, 12)))[:k]


@dataclass
class Learned:
    """The weighting learned on the selection tasks, and every weighting's folds."""

    criterion: str
    weight: float
    loto: pd.DataFrame  # weighting, criterion, weight, loto_mean_norm, gain_vs_prior, folds_ahead/behind, t_vs_default
    n_tasks: int
    n_inputs: int | None
    criteria: tuple[str, ...] = CRITERIA  # the ones weighed (perplexity only where every task had it)

    @property
    def name(self) -> str:
        return config_name(self.criterion, self.weight)

    def reason(self) -> str:
        row = self.loto.set_index("weighting").loc[self.name]
        folds = f"the run's {self.n_tasks} selection tasks, each left out in turn with {self.n_inputs or 'all its'} inputs"
        seen = (f"there it scores {row['gain_vs_prior']:+.3f} mean_norm against the prior alone (ahead on "
                f"{int(row['folds_ahead'])}, behind on {int(row['folds_behind'])} folds)")
        if self.name != config_name(*DEFAULT):
            return (f"it beats the default {config_name(*DEFAULT)} clearly on {folds} (paired t "
                    f"{row['t_vs_default']:+.1f}, at least {T_NEEDED:g} needed); {seen}")
        return (f"the default: on the offline pool's splits it held up better than the prior alone (benchmarks/README), "
                f"and no weighting beats it clearly on {folds} (paired t >= {T_NEEDED:g} needed); {seen}")


def learn(ct: ChoiceTable, selection: list[str], n: int | None = None, seed: int = 0,
          t_needed: float = T_NEEDED, also: list[str] = ()) -> Learned:
    """Every weighting of criteria and prior judged on the selection tasks left out in turn (labels read only to
    score the pick). The default
    weighting is kept unless another beats it clearly (paired t >= `t_needed` over the folds): the prior alone
    when no criterion helps, a criterion alone when the prior does not. Only the criteria that the selection tasks
    and the tasks in `also` (those the choice is for) all have are weighed."""
    if len(selection) < 2:
        raise PromptkitError("learning how far to trust a label-free criterion needs at least 2 selection tasks")
    table = ct.table(selection)
    have = available(ct, [*selection, *[t for t in also if t in ct.probs]])
    grid = configs(have)
    folds = np.zeros((len(grid), len(selection)))
    for j, t in enumerate(selection):
        mu = np.delete(table, j, axis=1).mean(axis=1)
        crit = task_criteria(ct, t, inputs_of(ct, t, n, seed))
        for i, (c, w) in enumerate(grid):
            folds[i, j] = table[pick(combined(mu, crit, c, w))[0], j]
    d = grid.index(DEFAULT)
    rows = []
    for i, (c, w) in enumerate(grid):
        gain, vs = folds[i] - folds[0], folds[i] - folds[d]
        sd = vs.std(ddof=1) if len(vs) > 1 else 0.0
        t_stat = (float(vs.mean() / (sd / np.sqrt(len(vs)))) if sd > 0
                  else math.copysign(math.inf, vs.mean()) if abs(vs.mean()) > 1e-12 else 0.0)
        rows.append({"weighting": config_name(c, w), "criterion": c, "weight": w, "loto_mean_norm": float(folds[i].mean()),
                     "gain_vs_prior": float(gain.mean()) if abs(gain.mean()) > 1e-12 else 0.0,
                     "folds_ahead": int((gain > 1e-9).sum()), "folds_behind": int((gain < -1e-9).sum()),
                     "t_vs_default": t_stat})
    loto = pd.DataFrame(rows)
    loto = loto.iloc[np.lexsort((np.arange(len(loto)), -loto["loto_mean_norm"].round(9).to_numpy()))].reset_index(drop=True)
    clear = loto[(loto["weighting"] == config_name(*DEFAULT)) | (loto["t_vs_default"] >= t_needed)]
    best = clear.iloc[0]
    return Learned(str(best["criterion"]), float(best["weight"]), loto, len(selection), n, have)


def choose(probs: np.ndarray, prior_mu: np.ndarray, variants: list[str], learned: Learned,
           k: int = 1, prompt_ll: np.ndarray | None = None) -> tuple[Candidate, pd.DataFrame]:
    """The candidate for a new task from its inputs' choice probabilities (variants × inputs × choices; with their
    prompts' likelihoods where scored) and the prior: the best variant by the learned weighting, or the top k
    averaged; and every variant's criteria."""
    crit = criteria(probs, prompt_ll)
    score = combined(prior_mu, crit, learned.criterion, learned.weight)
    top = pick(score, max(1, k))
    members = tuple(variants[i] for i in top)
    table = pd.DataFrame({"variant": variants, "prior_mean_norm": prior_mu, **crit, "choice_score": score})
    table = table.iloc[pick(score, len(variants))].reset_index(drop=True)
    return Candidate(members, "mean_prob" if len(members) > 1 else "single"), table


def transductive(ct: ChoiceTable, selection: list[str], held_out: list[str], chosen_on_selection: Candidate | None = None,
                 k: int = 1) -> tuple[Learned | None, pd.DataFrame]:
    """Every held-out task as a new task: the label-free choice from its inputs alone (its labels read only for
    the score shown beside it), with the weighting learned on the selection tasks."""
    cols = ["task", "transductive", "weighting", "criterion_value", "held_out_mean_norm", "chosen_on_selection",
            "chosen_on_selection_mean_norm", "best_in_hindsight_mean_norm"]
    if len(selection) < 2 or not held_out:
        return None, pd.DataFrame(columns=cols)
    learned = learn(ct, selection, also=held_out)
    mu = ct.table(selection).mean(axis=1)
    rows = []
    for t in held_out:
        cand, table = choose(ct.probs[t], mu, ct.variants, learned, k, ct.prompt_ll.get(t))
        crit = learned.criterion if learned.criterion != "prior" else None
        value = float(table.loc[table["variant"] == cand.members[0], crit].iloc[0]) if crit else float("nan")
        rows.append({"task": t, "transductive": cand.name, "weighting": learned.name, "criterion_value": value,
                     "held_out_mean_norm": ct.score(cand, [t]),
                     "chosen_on_selection": chosen_on_selection.name if chosen_on_selection else "",
                     "chosen_on_selection_mean_norm": ct.score(chosen_on_selection, [t]) if chosen_on_selection else float("nan"),
                     "best_in_hindsight_mean_norm": float(ct.single(t).max())})
    return learned, pd.DataFrame(rows, columns=cols)
