"""Aggregation across tasks: per-task accuracy, ranking by the selection tasks, held-out summary."""

from __future__ import annotations

import pandas as pd


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
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index()


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
