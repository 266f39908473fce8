"""Uncertainty and significance: per-example score matrices, bootstrap CIs, paired tests, Friedman/Nemenyi."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..errors import PromptkitError


@dataclass
class Scores:
    """Per-example scores as one (variants × examples) matrix per task: what bootstraps resample."""

    variants: list[str]
    tasks: list[str]
    matrices: dict[str, np.ndarray]
    chance: np.ndarray  # per task, aligned with `tasks`

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, tasks_info: dict[str, dict], metric: str = "accuracy",
                  tasks: list[str] | None = None) -> "Scores":
        present = set(rows["task"])  # once: inside the comprehension it was rebuilt for every task
        tasks = [t for t in (tasks or list(tasks_info)) if t in present]
        variants = sorted(rows["variant"].unique())
        matrices = {}
        for task in tasks:
            wide = rows[rows["task"] == task].pivot_table(index="variant", columns="example", values=metric, aggfunc="mean")
            wide = wide.reindex(variants)
            if wide.isna().any().any():
                missing = wide.index[wide.isna().any(axis=1)].tolist()
                raise PromptkitError(f"task '{task}': variants {missing[:3]} lack scores on some examples; "
                                     "paired statistics need every variant scored on the same examples")
            matrices[task] = wide.to_numpy(dtype=float)
        chance = np.array([tasks_info[t]["chance"] for t in tasks], dtype=float)
        return cls(variants, tasks, matrices, chance)

    def subset(self, tasks: list[str]) -> "Scores":
        index = [self.tasks.index(t) for t in tasks]
        return Scores(self.variants, list(tasks), {t: self.matrices[t] for t in tasks}, self.chance[index])

    def table(self) -> np.ndarray:
        """variants × tasks mean scores."""
        return np.column_stack([self.matrices[t].mean(axis=1) for t in self.tasks])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.table(), index=self.variants, columns=self.tasks)

    def resampled_table(self, rng: np.random.Generator) -> np.ndarray:
        """One bootstrap replicate: examples resampled with replacement within each task (paired across variants)."""
        cols = []
        for task in self.tasks:
            m = self.matrices[task]
            idx = rng.integers(0, m.shape[1], m.shape[1])
            cols.append(m[:, idx].mean(axis=1))
        return np.column_stack(cols)


# ---------------------------------------------------------------------------- bootstrap


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    return np.quantile(samples, alpha, axis=0), np.quantile(samples, 1 - alpha, axis=0)


def bootstrap(scores: Scores, statistic, by: str = "examples", n: int = 1000, seed: int = 0) -> np.ndarray:
    """Replicates of `statistic(table, chance)` (a per-variant vector) under resampling.

    by="examples": examples resampled within each task; by="tasks": tasks resampled.
    """
    if by not in ("examples", "tasks"):
        raise PromptkitError(f"bootstrap over '{by}': use 'examples' or 'tasks'")
    rng = np.random.default_rng(seed)
    base = scores.table()
    out = []
    for _ in range(n):
        if by == "examples":
            out.append(statistic(scores.resampled_table(rng), scores.chance))
        else:
            idx = rng.integers(0, len(scores.tasks), len(scores.tasks))
            out.append(statistic(base[:, idx], scores.chance[idx]))
    return np.array(out)


# ---------------------------------------------------------------------------- paired comparison


def compare(scores: Scores, a: str, b: str, n: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Paired comparison of variants a and b on the same examples: per task and over all tasks.

    Columns: diff (a − b), paired-bootstrap CI and p-value, and McNemar's exact test
    (on discordant correct/incorrect pairs; only meaningful for 0/1 scores).
    """
    for v in (a, b):
        if v not in scores.variants:
            raise PromptkitError(f"unknown variant '{v}'; the run has: {', '.join(scores.variants[:5])}…")
    ia, ib = scores.variants.index(a), scores.variants.index(b)
    rng = np.random.default_rng(seed)
    rows, replicate_means = [], np.zeros(n)
    for task in scores.tasks:
        d = scores.matrices[task][ia] - scores.matrices[task][ib]
        idx = rng.integers(0, len(d), (n, len(d)))
        boot = d[idx].mean(axis=1)
        replicate_means += boot / len(scores.tasks)
        lo, hi = percentile_ci(boot, level)
        xa, xb = scores.matrices[task][ia], scores.matrices[task][ib]
        n01 = int(np.sum((xa == 1) & (xb == 0)))
        n10 = int(np.sum((xa == 0) & (xb == 1)))
        mcnemar = float(_st.binomtest(min(n01, n10), n01 + n10, 0.5).pvalue) if n01 + n10 else 1.0
        rows.append({"task": task, "diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
                     "p_bootstrap": _boot_p(boot), "a_only": n01, "b_only": n10, "p_mcnemar": mcnemar})
    total = float(np.mean([r["diff"] for r in rows]))
    lo, hi = percentile_ci(replicate_means, level)
    rows.append({"task": "(mean over tasks)", "diff": total, "ci_low": float(lo), "ci_high": float(hi),
                 "p_bootstrap": _boot_p(replicate_means), "a_only": sum(r["a_only"] for r in rows),
                 "b_only": sum(r["b_only"] for r in rows), "p_mcnemar": float("nan")})
    return pd.DataFrame(rows)


def _boot_p(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value for 'the mean difference is zero'."""
    below, above = float(np.mean(samples <= 0)), float(np.mean(samples >= 0))
    return min(1.0, 2 * min(below, above))


# ---------------------------------------------------------------------------- Friedman / Nemenyi


@dataclass
class Friedman:
    statistic: float
    p_value: float
    mean_ranks: pd.Series  # 1 = best
    critical_difference: float
    alpha: float
    n_tasks: int

    def tied_with_best(self) -> list[str]:
        """Variants whose mean rank is within the Nemenyi critical difference of the best one."""
        best = self.mean_ranks.min()
        return self.mean_ranks[self.mean_ranks - best <= self.critical_difference].index.tolist()


def friedman(table: pd.DataFrame, alpha: float = 0.05) -> Friedman:
    """Friedman test over tasks (blocks) and variants (treatments), with Nemenyi's critical difference.

    `table` is variants × tasks, higher is better. Ties get average ranks, and the statistic
    carries the usual tie correction (as scipy.stats.friedmanchisquare).
    """
    k, n = table.shape
    if k < 2 or n < 2:
        raise PromptkitError(f"the Friedman test needs at least 2 variants and 2 tasks (got {k} and {n})")
    values = table.to_numpy(dtype=float)
    ranks = np.column_stack([_st.rankdata(-values[:, j]) for j in range(n)])  # 1 = best on that task
    sums = ranks.sum(axis=1)
    chi2 = 12.0 / (n * k * (k + 1)) * np.sum(sums ** 2) - 3.0 * n * (k + 1)
    ties = sum(np.sum(c ** 3 - c) for c in (np.unique(values[:, j], return_counts=True)[1] for j in range(n)))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    chi2 = chi2 / correction if correction > 0 else 0.0
    p_value = float(_st.chi2.sf(chi2, k - 1)) if correction > 0 else 1.0
    q = _st.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2) if k > 1 else 0.0
    cd = float(q * np.sqrt(k * (k + 1) / (6.0 * n)))
    return Friedman(float(chi2), p_value, pd.Series(ranks.mean(axis=1), index=table.index), cd, alpha, n)
