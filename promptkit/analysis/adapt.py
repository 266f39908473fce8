"""Adapting the prompt choice to a new task from a few labelled examples: the cross-task evidence is the prior,
the new task's labelled examples are the data (hierarchical normal model, empirical Bayes).

On the chance-normalized scale, variant v on task t scores   s[v, t] = mu[v] + b[t] + e[v, t]:
mu[v] its cross-task mean, b[t] how easy the task is for every prompt, e[v, t] the variant × task interaction
with variance tau2 (the part a new task can change). N labelled examples of the new task give each variant an
observed score y[v] with binomial noise sigma2 / N. The posterior of s[v, new] shrinks y[v] − mu[v] − b toward
0 by tau2 / (tau2 + sigma2 / N): with N = 0 the choice is the cross-task choice (argmax mu), and as N grows it
moves to the variant that is best on the task's own examples.

What the chosen prompt is expected to score is a second question, answered per variant from its own N labelled
answers and its prior mu[v] (spread task_var + tau2 over tasks): the other candidates answered the same N
examples, so they say little more about how hard this task is, and reading them would make the estimate depend on
which candidates were scored."""

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
    """Per variant: the expected normalized score on the new task and its standard deviation (from the variant's own
    labelled answers and its prior alone), and the score the choice maximizes."""

    mean: np.ndarray
    sd: np.ndarray
    n_labelled: int
    shrink: float  # weight on the task's own evidence in the choice, tau2 / (tau2 + sigma2 / N); 0 with N = 0
    choice_score: np.ndarray  # (1 − shrink) · prior mean + shrink · labelled score: what the choice maximizes
    sigma2: float = 0.0  # the noise of one variant's lead over the others on the N labels (paired_noise)
    spread: float = 0.0  # the observed variance of the candidates' leads on the labels (labelled − prior, centred)

    def choice(self) -> int:
        return int(np.argmax(self.choice_score))  # the first variant on ties

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
    level_var = p.tau2 + p.task_var  # how far a task moves a variant from its cross-task mean
    if n == 0:
        sd = np.full_like(p.mu, np.sqrt(level_var))
        return Posterior(p.mu.copy(), sd, 0, 0.0, p.mu.copy())
    correct = np.asarray(correct, dtype=float)
    if correct.shape[0] != len(p.mu):
        raise PromptkitError(f"the labelled scores cover {correct.shape[0]} variants; the prior has {len(p.mu)}")
    y = (correct.mean(axis=1) - chance) / scale
    sigma2 = paired_noise(correct, chance)
    k = p.tau2 / (p.tau2 + sigma2)
    lead = y - p.mu - np.mean(y - p.mu)
    spread = float(lead.var(ddof=1)) if len(lead) > 1 else 0.0
    # each variant's level from its own answers: binomial noise of its accuracy (one success and one failure added)
    smoothed = (correct.sum(axis=1) + 1) / (n + 2)
    own = smoothed * (1 - smoothed) / n / scale ** 2
    w = level_var / (level_var + own)
    return Posterior(p.mu + w * (y - p.mu), np.sqrt(w * own), n, float(k), (1 - k) * p.mu + k * y, float(sigma2), spread)


def weight_reason(p: Prior, post: Posterior, n_tasks: int) -> str:
    """Why the task's own labels weigh what they weigh in the choice, in words and numbers."""
    n = post.n_labelled
    if n == 0:
        return "no labelled examples: the cross-task prior decides"
    tau, noise, spread = np.sqrt(p.tau2), np.sqrt(post.sigma2), np.sqrt(post.spread)
    seen = (f"the spread between prompts on these {n} labels (sd {spread:.3f}) is "
            + ("within" if post.spread <= 2 * post.sigma2 else "beyond") + f" what chance gives (sd {noise:.3f})")
    parts = (f"on the run's {n_tasks} selection tasks the prompts' order changes from task to task by sd {tau:.3f} beyond "
             f"sampling noise, against noise sd {noise:.3f} in one prompt's lead on {n} labels")
    if post.shrink >= 0.05:
        return f"weight {post.shrink:.2f} = {tau:.3f}² / ({tau:.3f}² + {noise:.3f}²): {parts}; {seen}"
    if p.tau2 <= 1.5e-4:  # at the floor: the selection tasks show no task-specific differences at all
        more = "no number of labels will move it much: the run's prompts rank alike on every selection task"
    else:
        more = f"about {int(np.ceil(n * post.sigma2 / p.tau2))} labels would give them half the weight"
    return f"the cross-task prior decides: {parts}; {seen}; {more}"
