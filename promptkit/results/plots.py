"""Plots of a run, each returned as a matplotlib Figure (nothing is shown or saved here)."""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..analysis import ranking as rk


def _plain_text(make):
    """Every label of the figure is plain text: a task, family or variant name with `$…$` in it was read as
    mathtext and failed the report after all scoring ("ParseFatalException"). The rc setting holds only while
    the figure is made, so a notebook's own matplotlib settings are left alone."""
    @functools.wraps(make)
    def made(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return make(*args, **kwargs)
    return made


def _short(task: str, width: int = 18) -> str:
    name = task.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def _text_inches(labels, fontsize: float) -> float:
    """About how long the longest label is on the page, in inches."""
    return max((len(str(x)) for x in labels), default=0) * fontsize * 0.62 / 72


@_plain_text
def heatmap(results, normalized: bool = False, max_variants: int = 40) -> Figure:
    """Variant × task accuracy, variants in ranking order; held-out tasks marked with *. The figure is sized to its
    labels (variant ids on the left, task names turned 60° below), so that the cells always keep some room."""
    order = results.ranking()["variant"].tolist()[:max_variants]
    table = results.by_task(normalized=normalized).loc[order]
    tasks = [t for t in results.tasks if t in table.columns]
    table = table[tasks]
    below = 0.87 * _text_inches([_short(t) + "*" for t in tasks], 8)  # sin 60°
    width = _text_inches(order, 7) + 0.55 * max(len(tasks), 2) + 1.6  # labels, cells, colorbar
    height = below + 0.28 * max(len(order), 3) + 0.9  # labels, rows, title
    fig = Figure(figsize=(max(width, 5.0), max(height, 2.5)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(table.to_numpy(), aspect="auto", cmap="viridis", vmin=-1 if normalized else 0, vmax=1)
    ax.set_xticks(range(len(tasks)), [_short(t) + ("*" if results.tasks[t]["split"] == "held_out" else "") for t in tasks],
                  rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    if table.size <= 600:
        for (i, j), v in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
    held = [j for j, t in enumerate(tasks) if results.tasks[t]["split"] == "held_out"]
    if held and held[0] > 0:
        ax.axvline(held[0] - 0.5, color="white", lw=3)  # selection tasks | held-out tasks
    fig.colorbar(im, ax=ax, label="accuracy (chance-normalized)" if normalized else "accuracy")
    ax.set_title("Accuracy by variant and task (* = held out)", fontsize=10)
    return fig


@_plain_text
def cd_diagram(analysis) -> Figure:
    """Critical-difference diagram: mean rank of each variant (1 = best) and the Nemenyi CD from the best."""
    fr = analysis.friedman
    fig = Figure(figsize=(8, 1.2 + 0.22 * (len(fr.mean_ranks) if fr is not None else 1)), layout="constrained")
    ax = fig.add_subplot()
    if fr is None:
        ax.text(0.5, 0.5, "needs at least 2 tasks and 2 variants", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ranks = fr.mean_ranks.sort_values()
    tied = set(fr.tied_with_best())
    y = np.arange(len(ranks))
    colors = ["tab:blue" if v in tied else "tab:gray" for v in ranks.index]
    ax.scatter(ranks.to_numpy(), y, c=colors, zorder=3)
    ax.set_yticks(y, ranks.index, fontsize=7)
    ax.invert_yaxis()
    best = ranks.iloc[0]
    ax.axvspan(best, best + fr.critical_difference, color="tab:blue", alpha=0.12,
               label=f"within CD = {fr.critical_difference:.2f} of the best (tied)")
    ax.set_xlabel("mean rank across tasks (1 = best)")
    ax.set_title(f"Friedman p = {fr.p_value:.2g}; Nemenyi critical difference at alpha {fr.alpha}", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


@_plain_text
def sensitivity(results) -> Figure:
    """Per task: the spread of variant scores (box) with every variant as a dot, and chance as a tick."""
    table = results.by_task()
    tasks = [t for t in results.tasks if t in table.columns]
    fig = Figure(figsize=(1.5 + 0.6 * len(tasks), 4), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot([table[t].to_numpy() for t in tasks], positions=range(len(tasks)), widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for j, t in enumerate(tasks):
        ax.scatter(j + rng.uniform(-0.15, 0.15, len(table)), table[t], s=10, alpha=0.6, color="tab:blue", zorder=3)
        ax.plot([j - 0.3, j + 0.3], [results.tasks[t]["chance"]] * 2, color="tab:red", lw=1.5)
    ax.set_xticks(range(len(tasks)), [_short(t) for t in tasks], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("accuracy of each variant")
    ax.set_title("Prompt sensitivity per task (red: chance)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


@_plain_text
def selection_vs_held_out(results, aggregate: str = rk.DEFAULT_AGGREGATE) -> Figure:
    """Does the selection score predict the held-out score? One dot per variant, the chosen one marked."""
    from scipy.stats import spearmanr

    from ..analysis.stats import Scores

    tasks = results.tasks
    sel = [t for t in tasks if tasks[t]["split"] == "selection"]
    held = [t for t in tasks if tasks[t]["split"] == "held_out"]
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if not sel or not held:
        ax.text(0.5, 0.5, "the suite has no held-out tasks", ha="center", va="center")
        ax.set_axis_off()
        return fig
    scores = Scores.from_rows(results.rows, tasks)
    fn = rk.aggregate_fn(aggregate)
    s_sel, s_held = scores.subset(sel), scores.subset(held)
    x, y = fn(s_sel.table(), s_sel.chance), fn(s_held.table(), s_held.chance)
    ax.scatter(x, y, s=18, alpha=0.7)
    chosen = int(np.argmax(rk.oriented(aggregate, x)))
    ax.scatter([x[chosen]], [y[chosen]], s=80, facecolors="none", edgecolors="tab:red", label=f"chosen: {scores.variants[chosen]}")
    varied = len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0
    rho = spearmanr(x, y).statistic if varied else float("nan")
    ax.set_xlabel(f"selection tasks ({aggregate})")
    ax.set_ylabel(f"held-out tasks ({aggregate})")
    ax.set_title(f"Selection vs held-out, Spearman rho = {rho:.2f}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


@_plain_text
def axis_effects(analysis, top: int = 15) -> Figure:
    """Share of each family's variance explained by each axis (eta squared)."""
    table = analysis.axes.head(top)
    fig = Figure(figsize=(7, 1 + 0.3 * max(len(table), 1)), layout="constrained")
    ax = fig.add_subplot()
    if table.empty:
        ax.text(0.5, 0.5, "no axis varies within a family in this run", ha="center", va="center")
        ax.set_axis_off()
        return fig
    labels = [f"{f} · {a}" for f, a in zip(table["family"], table["axis"])]
    ax.barh(range(len(table)), table["eta_sq"], color="tab:purple")
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("variance explained within the family (eta squared)")
    ax.set_title("Which prompt axis matters most", fontsize=10)
    return fig


@_plain_text
def transfer_heatmap(transfer) -> Figure:
    """Chosen-on × scored-on regret (held out): how much a prompt chosen on one model gives up on another."""
    m = transfer.matrix
    models = transfer.models
    rows = models + [f"all but {b}" for b in models]
    grid = np.full((len(rows), len(models)), np.nan)
    for r in m.to_dict("records"):
        grid[rows.index(r["chosen_on"]), models.index(r["scored_on"])] = r["regret"]
    fig = Figure(figsize=(2.5 + 1.2 * len(models), 1.0 + 0.45 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=0)
    ax.set_xticks(range(len(models)), [_short(x) for x in models], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [_short(x, 26) for x in rows], fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > np.nanmax(grid) / 2 else "black")
    ax.set_xlabel("scored on (held-out tasks)")
    ax.set_ylabel("chosen on (selection tasks)")
    fig.colorbar(im, ax=ax, label=f"regret ({transfer.aggregate})")
    ax.set_title("Does the prompt transfer? Regret vs each model's own best", fontsize=10)
    return fig
