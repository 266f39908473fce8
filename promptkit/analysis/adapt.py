"""Adapting the prompt choice to a new task from a few labelled examples: the cross-task evidence is the prior,
the new task's labelled examples are the data (hierarchical normal model, empirical Bayes).

On the chance-normalized scale, variant v on task t scores   s[v, t] = mu[v] + b[t] + e[v, t]:
mu[v] its cross-task mean, b[t] how easy the task is for every prompt, e[v, t] the variant × task interaction
with variance tau2 (the part a new task can change). N labelled examples of the new task give each variant an
observed score y[v] with binomial noise sigma2 / N. The posterior of s[v, new] shrinks y[v] − mu[v] − b toward
0 by tau2 / (tau2 + sigma2 / N): with N = 0 the choice is the cross-task choice (argmax mu), and as N grows it
moves to the variant that is best on the task's own examples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PromptkitError

Z95 = 1.959964


@dataclass(frozen=True)
class Prior:
    """What the selection tasks say about a new task before any of its labels are seen."""

    mu: np.ndarray  # per variant: mean normalized score over the selection tasks
    tau2: float  # variance of the variant × task interaction (sampling noise removed)
    task_var: float  # variance of task difficulty b[t] across tasks
    grand: float  # mean over variants and tasks


def paired_noise(correct: np.ndarray, chance: float) -> float:
    """Sampling variance of one variant's score *relative to the other variants* on the same examples
    (normalized scale): variants scored on the same examples err together, and only their differences
    decide the choice. `correct`: variants × examples of 0/1."""
    correct = np.asarray(correct, dtype=float)
    n = correct.shape[1]
    scale = 1 - chance if chance < 1 else 1.0
    deviation = correct - correct.mean(axis=0, keepdims=True)
    per_example = float((deviation ** 2).sum() / max(correct.shape[0] * n, 1))
    return max(per_example, 0.01) / n / scale ** 2  # a floor: a few examples that all variants agree on prove little


def prior(table: np.ndarray, n_examples: np.ndarray, chance: np.ndarray, noise: np.ndarray | None = None) -> Prior:
    """Fit the prior from a variants × tasks table of normalized scores (each task with `n_examples` examples and
    its chance level): interaction variance net of the sampling noise of the per-task scores — `noise` per task
    (paired_noise of its per-example scores), or else the binomial variance."""
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[1] < 1 or table.shape[0] < 1:
        raise PromptkitError("adapting a prompt needs a variants × tasks table with at least one task")
    mu = table.mean(axis=1)
    grand = float(mu.mean())
    col = table.mean(axis=0) - grand
    resid = table - mu[:, None] - col[None, :]
    scale = np.where(chance < 1, 1 - chance, 1.0)
    if noise is None:
        acc = chance + table * scale  # back to accuracy for the binomial noise
        noise = np.clip(acc * (1 - acc), 0, 0.25) / np.maximum(n_examples, 1) / scale ** 2
    noise = float(np.mean(noise))
    dof = max((table.shape[0] - 1) * (table.shape[1] - 1), 1)
    tau2 = max(float((resid ** 2).sum() / dof - noise), 1e-4)
    task_var = float(col.var(ddof=1)) if table.shape[1] > 1 else tau2
    return Prior(mu, tau2, max(task_var, 0.0), grand)


@dataclass(frozen=True)
class Posterior:
    """Per variant: the expected normalized score on the new task and its standard deviation."""

    mean: np.ndarray
    sd: np.ndarray
    n_labelled: int
    shrink: float  # weight on the task's own evidence, tau2 / (tau2 + sigma2 / N); 0 with N = 0

    def choice(self) -> int:
        return int(np.argmax(self.mean))  # the first variant on ties

    def interval(self, i: int, chance: float, level_z: float = Z95) -> tuple[float, float]:
        """An interval for variant i's normalized score, within what the scale allows."""
        low_bound = -chance / (1 - chance) if chance < 1 else -1.0
        lo, hi = self.mean[i] - level_z * self.sd[i], self.mean[i] + level_z * self.sd[i]
        return float(max(lo, low_bound)), float(min(hi, 1.0))


def posterior(p: Prior, correct: np.ndarray | None, chance: float) -> Posterior:
    """Combine the prior with `correct`, a variants × N matrix of 0/1 (each variant on the same N labelled
    examples of the new task; None or N = 0 for no labels)."""
    scale = 1 - chance if chance < 1 else 1.0
    n = 0 if correct is None else int(np.asarray(correct).shape[1])
    if n == 0:
        sd = np.full_like(p.mu, np.sqrt(p.tau2 + p.task_var))
        return Posterior(p.mu.copy(), sd, 0, 0.0)
    correct = np.asarray(correct, dtype=float)
    if correct.shape[0] != len(p.mu):
        raise PromptkitError(f"the labelled scores cover {correct.shape[0]} variants; the prior has {len(p.mu)}")
    y = (correct.mean(axis=1) - chance) / scale
    sigma2 = paired_noise(correct, chance)
    b = float(np.mean(y - p.mu))  # how easy the new task is for every prompt
    k = p.tau2 / (p.tau2 + sigma2)
    mean = p.mu + b + k * (y - p.mu - b)
    pooled = (correct.sum() + 1) / (correct.size + 2)  # how well b is known: the binomial noise of the task's mean
    var_b = (pooled * (1 - pooled) / n / scale ** 2 + p.tau2) / len(p.mu)
    sd = np.sqrt(k * sigma2 + var_b) * np.ones_like(mean)
    return Posterior(mean, sd, n, float(k))
