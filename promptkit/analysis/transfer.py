"""Does a prompt transfer across models? For a run with several models: choose on model A's selection tasks
and score on model B's held-out tasks (the A→B regret matrix, and leave-one-model-out), rank agreement
between models (Kendall τ), whether each axis's best value agrees, and the prompt that holds across models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from ..errors import PromptkitError
from . import ranking as rk
from .stats import Scores, percentile_ci

SEP = "::"  # a (model, task) cell is named MODEL::TASK
CROSS = ("mean", "mean_rank", "worst")


@dataclass
class Transfer:
    """Everything the transfer protocol says about a run with several models."""

    models: list[str]
    matrix: pd.DataFrame  # one row per (chosen on, scored on): chosen variant, held-out score, best, regret, CI
    tau: pd.DataFrame  # one row per model pair: Kendall τ of the variant rankings, with CI
    axes: pd.DataFrame  # per axis: the best value on each model, and whether they agree
    cross: pd.DataFrame  # the cross-model prompt on each model: its score, the model's own best, the cost
    chosen: str  # the prompt that holds across models
    how: str  # cross-model aggregate: mean, mean_rank or worst
    aggregate: str


def cell(model: str, task: str) -> str:
    return f"{model}{SEP}{task}"


def cell_scores(rows: pd.DataFrame, tasks: dict[str, dict], models: list[str], metric: str = "accuracy") -> Scores:
    """Per-example matrices for every (model, task) cell."""
    cells = rows.assign(task=rows["model"].astype(str) + SEP + rows["task"].astype(str))
    info = {cell(m, t): tasks[t] for m in models for t in tasks}
    return Scores.from_rows(cells, info, metric, tasks=list(info))


def transfer(rows: pd.DataFrame, tasks: dict[str, dict], variants: dict[str, dict], models: list[str],
             aggregate: str = rk.DEFAULT_AGGREGATE, how: str = "mean", n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> Transfer:
    """The transfer protocol on tidy rows with a `model` column (scores already in the wanted mode)."""
    if len(models) < 2:
        raise PromptkitError("the transfer protocol needs a run with at least two models (promptkit run --model A --model B)")
    if how not in CROSS:
        raise PromptkitError(f"unknown cross-model aggregate '{how}'; use one of {', '.join(CROSS)}")
    rk.aggregate_fn(aggregate)
    scores = cell_scores(rows, tasks, models)
    sel = {m: [scores.tasks.index(cell(m, t)) for t in tasks if tasks[t]["split"] == "selection"] for m in models}
    held = {m: [scores.tasks.index(cell(m, t)) for t in tasks if tasks[t]["split"] == "held_out"] for m in models}
    if not all(sel.values()) or not all(held.values()):
        raise PromptkitError("the transfer protocol needs selection and held-out tasks (the suite's split)")
    plans = [(a, b, sel[a], held[b]) for a in models for b in models]
    plans += [(f"all but {b}", b, [i for m in models if m != b for i in sel[m]], held[b]) for b in models]
    return Transfer(models, _matrix(scores, plans, aggregate, n_boot, seed, level), _tau(scores, models, tasks, aggregate,
                    n_boot, seed, level), _axes(scores, models, tasks, variants, aggregate),
                    *_cross(scores, models, sel, held, aggregate, how), how, aggregate)


def _matrix(scores: Scores, plans, aggregate: str, n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """Choose on one set of cells, score on another; regret against the hindsight-best on the target, with a
    bootstrap CI over examples (the choice is redone in every replicate, so selection noise is in it)."""
    table, chance, variants = scores.table(), scores.chance, scores.variants
    rng = np.random.default_rng(seed)
    replicates = [scores.resampled_table(rng) for _ in range(n_boot)]
    out = []
    for source, target, s, h in plans:
        row = rk.choose_and_score(table, chance, variants, s, h, aggregate)
        regrets = np.array([rk.choose_and_score(t, chance, variants, s, h, aggregate)["regret"] for t in replicates])
        lo, hi = percentile_ci(regrets, level) if n_boot else (np.nan, np.nan)
        out.append({"chosen_on": source, "scored_on": target, "chosen": row["chosen"], "held_out": row["chosen_held_out"],
                    "best": row["best"], "best_held_out": row["best_held_out"], "regret": row["regret"],
                    "regret_ci_low": float(lo), "regret_ci_high": float(hi)})
    return pd.DataFrame(out)


def _per_model(table: np.ndarray, chance: np.ndarray, columns: list[int], aggregate: str) -> np.ndarray:
    """Each variant's aggregate over some cells, oriented so that higher is better."""
    return rk.oriented(aggregate, rk.aggregate_fn(aggregate)(table[:, columns], chance[columns]))


def _tau(scores: Scores, models: list[str], tasks: dict, aggregate: str, n_boot: int, seed: int, level: float) -> pd.DataFrame:
    """Kendall τ between the variant rankings of every pair of models (all tasks), with a bootstrap CI."""
    cols = {m: [scores.tasks.index(cell(m, t)) for t in tasks] for m in models}
    rng = np.random.default_rng(seed + 1)
    replicates = [scores.resampled_table(rng) for _ in range(n_boot)]
    out = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            tau = lambda t: kendalltau(_per_model(t, scores.chance, cols[a], aggregate),
                                       _per_model(t, scores.chance, cols[b], aggregate)).statistic
            reps = np.array([tau(t) for t in replicates], dtype=float)
            reps = reps[~np.isnan(reps)]
            lo, hi = percentile_ci(reps, level) if len(reps) else (np.nan, np.nan)
            out.append({"model_a": a, "model_b": b, "kendall_tau": float(tau(scores.table())),
                        "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(out)


def _axes(scores: Scores, models: list[str], tasks: dict, variants: dict, aggregate: str) -> pd.DataFrame:
    """Per template axis with more than one value: the value whose variants score best on each model
    (mean of the variants' aggregates over all tasks) and whether every model agrees."""
    table = scores.table()
    per = {m: dict(zip(scores.variants, _per_model(table, scores.chance, [scores.tasks.index(cell(m, t)) for t in tasks],
                                                   aggregate))) for m in models}
    values: dict[tuple[str, str], dict[str, list[str]]] = {}
    for vid in scores.variants:
        info = variants.get(vid, {})
        for axis, value in info.get("values", {}).items():
            values.setdefault((info.get("family", ""), axis), {}).setdefault(repr(value), []).append(vid)
    out = []
    for (family, axis), groups in sorted(values.items()):
        if len(groups) < 2:
            continue
        best = {m: max(groups, key=lambda v: np.mean([per[m][x] for x in groups[v]])) for m in models}
        out.append({"family": family, "axis": axis, **{f"best_on_{m}": best[m] for m in models},
                    "agrees": len(set(best.values())) == 1})
    return pd.DataFrame(out)


def _cross(scores: Scores, models: list[str], sel: dict, held: dict, aggregate: str, how: str) -> tuple[pd.DataFrame, str]:
    """The prompt that maximizes a cross-model aggregate of the models' selection scores, and what it gives up
    on each model against that model's own best (on the selection and the held-out tasks)."""
    table, chance, variants = scores.table(), scores.chance, scores.variants
    on_sel = np.column_stack([_per_model(table, chance, sel[m], aggregate) for m in models])
    if how == "mean":
        value = on_sel.mean(axis=1)
    elif how == "worst":
        value = on_sel.min(axis=1)
    else:  # mean rank over models (rank 1 = best), negated so that higher is better
        value = -np.column_stack([(-on_sel[:, j]).argsort().argsort() + 1 for j in range(len(models))]).mean(axis=1)
    chosen = int(np.argmax(value))
    raw = lambda cols: rk.aggregate_fn(aggregate)(table[:, cols], chance[cols])
    sign = 1 if rk.HIGHER_IS_BETTER[aggregate] else -1
    out = []
    for j, m in enumerate(models):
        s, h = raw(sel[m]), raw(held[m])
        own = int(np.argmax(sign * s))
        out.append({"model": m, "cross_model_prompt": variants[chosen], "selection": float(s[chosen]),
                    "held_out": float(h[chosen]), "own_best": variants[own], "own_best_selection": float(s[own]),
                    "own_best_held_out": float(h[own]), "cost_selection": float(sign * (s[own] - s[chosen])),
                    "cost_held_out": float(sign * (h[own] - h[chosen]))})
    return pd.DataFrame(out), variants[chosen]
