"""Aggregation across tasks, selection/held-out protocols, and the ranking of variants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import PromptkitError
from .names import DEFAULT_AGGREGATE, PROTOCOLS
from .stats import Scores, percentile_ci


def by_task(rows: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Variant × task table of mean per-example `metric`."""
    return rows.pivot_table(index="variant", columns="task", values=metric, aggfunc="mean")


def rank(rows: pd.DataFrame, tasks: dict[str, dict], metric: str = "accuracy") -> pd.DataFrame:
    """Rank variants by their mean score over the selection tasks (held-out tasks never influence it).

    `tasks` maps task name -> {"split": "selection" | "held_out", ...}. Ties keep variant-id order.
    """
    table = by_task(rows, metric)
    selection = [t for t, info in tasks.items() if info["split"] == "selection" and t in table]
    held_out = [t for t, info in tasks.items() if info["split"] == "held_out" and t in table]
    out = pd.DataFrame(index=table.index)
    out["family"] = rows.groupby("variant")["family"].first()
    out["selection_mean"] = table[selection].mean(axis=1) if selection else float("nan")
    out["held_out_mean"] = table[held_out].mean(axis=1) if held_out else float("nan")
    for task in selection + held_out:
        out[task] = table[task]
    out = out.sort_values(["selection_mean", "variant"], ascending=[False, True], kind="stable") if selection else out
    out = out.reset_index()
    out.insert(0, "rank", range(1, len(out) + 1))
    return out


def chance_row(tasks: dict[str, dict], columns: list[str]) -> dict:
    """Chance-level accuracy of each task, laid out like a ranking row."""
    sel = [info["chance"] for info in tasks.values() if info["split"] == "selection"]
    held = [info["chance"] for info in tasks.values() if info["split"] == "held_out"]
    row = {c: tasks[c]["chance"] for c in columns if c in tasks}
    row["selection_mean"] = sum(sel) / len(sel) if sel else float("nan")
    row["held_out_mean"] = sum(held) / len(held) if held else float("nan")
    return row


def held_out_summary(ranking: pd.DataFrame) -> dict:
    """Held-out score of the variant chosen on the selection tasks, the median variant, and the best in hindsight."""
    scored = ranking.dropna(subset=["held_out_mean"])
    if scored.empty:
        return {}
    chosen = scored.iloc[0]
    best = scored.sort_values(["held_out_mean", "variant"], ascending=[False, True], kind="stable").iloc[0]
    median = float(scored["held_out_mean"].median())
    return {
        "chosen_variant": chosen["variant"],
        "chosen_selection_mean": float(chosen["selection_mean"]),
        "chosen_held_out": float(chosen["held_out_mean"]),
        "median_variant_held_out": median,
        "best_variant_in_hindsight": best["variant"],
        "best_held_out": float(best["held_out_mean"]),
        "regret": float(best["held_out_mean"] - chosen["held_out_mean"]),
        "n_variants": int(len(scored)),
    }


# ---------------------------------------------------------------------------- aggregates
# Each takes a variants × tasks array of per-task scores and the tasks' chance levels, and
# returns one value per variant. `HIGHER_IS_BETTER` says which way each one points.


def normalized(table: np.ndarray, chance: np.ndarray) -> np.ndarray:
    """(score − chance) / (1 − chance): 0 is chance, 1 is perfect, on every task alike."""
    return (table - chance) / np.where(chance < 1, 1 - chance, 1.0)


def agg_mean(table, chance):
    return table.mean(axis=1)


def agg_mean_norm(table, chance):
    return normalized(table, chance).mean(axis=1)


def agg_mean_rank(table, chance):
    """Mean over tasks of the variant's rank on that task (1 = best; ties share the average rank)."""
    return np.column_stack([rankdata(-table[:, j]) for j in range(table.shape[1])]).mean(axis=1)


def agg_win_rate(table, chance):
    """Share of (task, other variant) pairs the variant beats, ties counting half (HELM's win rate)."""
    k = table.shape[0]
    if k < 2:
        return np.full(k, 0.5)
    ranks = np.column_stack([rankdata(table[:, j]) for j in range(table.shape[1])])  # ascending, averaged
    return ((ranks - 1) / (k - 1)).mean(axis=1)


def agg_worst(table, chance):
    """The variant's worst chance-normalized score over tasks."""
    return normalized(table, chance).min(axis=1)


AGGREGATES = {"mean_norm": agg_mean_norm, "mean": agg_mean, "mean_rank": agg_mean_rank,
              "win_rate": agg_win_rate, "worst": agg_worst}
HIGHER_IS_BETTER = {"mean_norm": True, "mean": True, "mean_rank": False, "win_rate": True, "worst": True}


def aggregate_fn(name: str):
    if name not in AGGREGATES:
        raise PromptkitError(f"unknown aggregate '{name}'; use one of {', '.join(AGGREGATES)}")
    return AGGREGATES[name]


def oriented(name: str, values: np.ndarray) -> np.ndarray:
    """Values flipped where needed so that higher is always better."""
    return values if HIGHER_IS_BETTER[name] else -values


def family_scores(table: pd.DataFrame, families: dict[str, str]) -> pd.DataFrame:
    """Per template family: MaxP, AvgP and CPS = MaxP·(1 − (MaxP − AvgP)) (Mizrahi et al. 2024).

    Computed per task over the family's variants, then averaged over tasks.
    """
    out = []
    for family in sorted(set(families[v] for v in table.index)):
        members = table.loc[[v for v in table.index if families[v] == family]]
        maxp, avgp = members.max(axis=0), members.mean(axis=0)
        cps = maxp * (1 - (maxp - avgp))
        out.append({"family": family, "variants": len(members), "maxp": float(maxp.mean()),
                    "avgp": float(avgp.mean()), "cps": float(cps.mean())})
    return pd.DataFrame(out).sort_values("cps", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Fold:
    name: str
    selection: list[str]
    held_out: list[str]




def make_folds(protocol: str, tasks: dict[str, dict], k: int = 5, seed: int = 0) -> list[Fold]:
    """Selection/held-out task splits: the suite's own split, k-fold over tasks, leave-one-task-out,
    or cluster hold-out (each `cluster:` tag held out in turn)."""
    names = list(tasks)
    if protocol == "split":
        sel = [t for t in names if tasks[t]["split"] == "selection"]
        held = [t for t in names if tasks[t]["split"] == "held_out"]
        if not held:
            raise PromptkitError("the suite has no held_out tasks; use --protocol loto, kfold or cluster")
        return [Fold("split", sel, held)]
    if len(names) < 2:
        raise PromptkitError(f"protocol '{protocol}' needs at least 2 tasks")
    if protocol == "loto":
        return [Fold(t, [s for s in names if s != t], [t]) for t in names]
    if protocol == "kfold":
        if not 2 <= k <= len(names):
            raise PromptkitError(f"k-fold needs 2 <= k <= number of tasks ({len(names)}); got k={k}")
        order = list(names)
        np.random.default_rng(seed).shuffle(order)
        groups = [order[i::k] for i in range(k)]
        return [Fold(f"fold{i + 1}", [t for t in names if t not in g], sorted(g)) for i, g in enumerate(groups)]
    if protocol == "cluster":
        clusters = sorted({str(info.get("cluster")) for info in tasks.values() if info.get("cluster")})
        untagged = [t for t in names if not tasks[t].get("cluster")]
        if len(clusters) < 2 or untagged:
            raise PromptkitError(
                "cluster hold-out needs a `cluster:` tag on every task of the suite and at least 2 clusters"
                + (f"; untagged: {', '.join(untagged[:5])}" if untagged else "")
            )
        return [Fold(c, [t for t in names if str(tasks[t]["cluster"]) != c],
                     [t for t in names if str(tasks[t]["cluster"]) == c]) for c in clusters]
    raise PromptkitError(f"unknown protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}")


def choose_and_score(table: np.ndarray, chance: np.ndarray, variants: list[str], sel: list[int], held: list[int],
                     aggregate: str, default: int | None = None) -> dict:
    """Choose the best variant on the selection tasks; score everyone on the held-out tasks."""
    fn = aggregate_fn(aggregate)
    sel_scores = oriented(aggregate, fn(table[:, sel], chance[sel]))
    held_raw = fn(table[:, held], chance[held])
    held_scores = oriented(aggregate, held_raw)
    chosen = int(np.argmax(sel_scores))  # first variant (sorted ids) on ties
    best = int(np.argmax(held_scores))
    sign = 1 if HIGHER_IS_BETTER[aggregate] else -1
    row = {"chosen": variants[chosen], "chosen_held_out": float(held_raw[chosen]),
           "median_held_out": float(np.median(held_raw)), "best": variants[best],
           "best_held_out": float(held_raw[best]),
           "regret": float(sign * (held_raw[best] - held_raw[chosen]))}
    if default is not None:
        row["default_held_out"] = float(held_raw[default])
    return row


def evaluate_protocol(scores: Scores, folds: list[Fold], aggregate: str = DEFAULT_AGGREGATE,
                      default_variant: str | None = None, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """Per fold: chosen variant, its held-out score, the median, default and hindsight-best variants, regret.

    The CI of a single fold resamples examples within every task (choice included, so the
    selection noise is in it); over several folds, the CI of the mean regret resamples folds.
    """
    table, chance, variants = scores.table(), scores.chance, scores.variants
    default = variants.index(default_variant) if default_variant in variants else None
    index = {t: i for i, t in enumerate(scores.tasks)}
    rows = []
    for fold in folds:
        sel, held = [index[t] for t in fold.selection], [index[t] for t in fold.held_out]
        rows.append({"fold": fold.name, "held_out_tasks": ", ".join(fold.held_out),
                     **choose_and_score(table, chance, variants, sel, held, aggregate, default)})
    per_fold = pd.DataFrame(rows)
    rng = np.random.default_rng(seed)
    summary = {"aggregate": aggregate, "folds": len(folds), "level": level,
               "default_variant": default_variant if default is not None else None,
               "mean_regret": float(per_fold["regret"].mean()),
               "mean_chosen_held_out": float(per_fold["chosen_held_out"].mean())}
    if len(folds) == 1:
        sel = [index[t] for t in folds[0].selection]
        held = [index[t] for t in folds[0].held_out]
        reps = [choose_and_score(scores.resampled_table(rng), chance, variants, sel, held, aggregate)
                for _ in range(n_boot)]
        chosen_lo, chosen_hi = percentile_ci(np.array([r["chosen_held_out"] for r in reps]), level)
        regret_lo, regret_hi = percentile_ci(np.array([r["regret"] for r in reps]), level)
        summary.update(chosen_ci=[float(chosen_lo), float(chosen_hi)], regret_ci=[float(regret_lo), float(regret_hi)],
                       ci_by="examples")
    else:
        regrets = per_fold["regret"].to_numpy()
        reps = regrets[rng.integers(0, len(regrets), (n_boot, len(regrets)))].mean(axis=1)
        lo, hi = percentile_ci(reps, level)
        chosen = per_fold["chosen_held_out"].to_numpy()
        creps = chosen[rng.integers(0, len(chosen), (n_boot, len(chosen)))].mean(axis=1)
        clo, chi = percentile_ci(creps, level)
        summary.update(regret_ci=[float(lo), float(hi)], chosen_ci=[float(clo), float(chi)], ci_by="folds")
    return per_fold, summary
