"""Prompt sensitivity: how much scores move across variants, per task, per example, and per axis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import Scores


def task_sensitivity(scores: Scores) -> pd.DataFrame:
    """Per task: spread (max − min) and standard deviation of the variants' scores, and the
    ProSA-style instance sensitivity (mean absolute disagreement over variant pairs, per example,
    averaged over the task's examples)."""
    rows = []
    table = scores.table()
    for j, task in enumerate(scores.tasks):
        col = table[:, j]
        rows.append({"task": task, "chance": float(scores.chance[j]), "mean": float(col.mean()),
                     "min": float(col.min()), "max": float(col.max()), "spread": float(col.max() - col.min()),
                     "std": float(col.std(ddof=1)) if len(col) > 1 else 0.0,
                     "instance_sensitivity": float(instance_sensitivity(scores.matrices[task]).mean())})
    return pd.DataFrame(rows).sort_values("spread", ascending=False, kind="stable").reset_index(drop=True)


def instance_sensitivity(matrix: np.ndarray) -> np.ndarray:
    """For each example (column): mean |s_i − s_j| over all pairs of variants i < j."""
    k = matrix.shape[0]
    if k < 2:
        return np.zeros(matrix.shape[1])
    ordered = np.sort(matrix, axis=0)
    weights = 2 * np.arange(1, k + 1) - k - 1  # sum_{i<j} |x_i − x_j| = sum_r x_(r)·(2r − k − 1)
    return (weights[:, None] * ordered).sum(axis=0) / (k * (k - 1) / 2)


def axis_effects(overall: pd.Series, variants: dict[str, dict]) -> pd.DataFrame:
    """Main effect of each axis within each family: the share of the family's variance in
    `overall` (a per-variant score) explained by the axis value (eta squared), the value means,
    and the best value. Sorted by eta squared."""
    rows = []
    frame = pd.DataFrame([{"variant": v, "family": info["family"], "score": overall[v], **{
        f"axis:{k}": repr(val) for k, val in info["values"].items()}} for v, info in variants.items() if v in overall.index])
    for family, group in frame.groupby("family"):
        total = float(((group["score"] - group["score"].mean()) ** 2).sum())
        for col in [c for c in group.columns if c.startswith("axis:")]:
            if group[col].isna().any() or group[col].nunique() < 2:
                continue
            means = group.groupby(col)["score"].agg(["mean", "size"])
            between = float((means["size"] * (means["mean"] - group["score"].mean()) ** 2).sum())
            rows.append({"family": family, "axis": col.removeprefix("axis:"), "variants": len(group),
                         "eta_sq": between / total if total > 0 else 0.0,
                         "effect_range": float(means["mean"].max() - means["mean"].min()),
                         "best_value": means["mean"].idxmax(),
                         "value_means": {k: round(float(v), 4) for k, v in means["mean"].items()}})
    if not rows:
        return pd.DataFrame(columns=["family", "axis", "variants", "eta_sq", "effect_range", "best_value", "value_means"])
    return pd.DataFrame(rows).sort_values("eta_sq", ascending=False, kind="stable").reset_index(drop=True)
