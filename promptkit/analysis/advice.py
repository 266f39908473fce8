"""What a run says about generalization, in plain words: did the chosen prompt hold up on tasks it was not
chosen on (the regret CI), which selection rule nested leave-one-task-out prefers, and what to do next."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import PromptkitError
from . import selection as sel

WIDE = 0.1  # a regret CI reaching past this (mean_norm) is called wide
SMALL = 0.05  # a regret (mean_norm) at most this large counts as generalizing, when its CI includes 0


def rules_table(ct: sel.ChoiceTable, ranking_tasks: list[str], held_out: list[str]) -> tuple[sel.Recommendation, pd.DataFrame]:
    """Every rule beside the others: what it chooses on the ranking tasks (a variant, or an ensemble with its
    cost k×), its nested-LOTO score on the ranking tasks (out of sample), its in-sample score there, and
    its score on the held-out tasks (never used to choose). The recommendation reads only the ranking tasks."""
    rec = sel.recommend(ct, ranking_tasks)
    rows = []
    for r in rec.loto.to_dict("records"):
        chosen = sel.rule(r["rule"])(ct, ranking_tasks, None)
        row = {"rule": r["rule"], "choice": chosen.name if r["rule"] != "task_aware" else "(per task)",
               "cost": chosen.cost, "loto_mean_norm": r["loto_mean_norm"],
               "selection_mean_norm": ct.score(chosen, ranking_tasks)}
        if held_out:
            row["held_out_mean_norm"] = sel.held_out_score(ct, r["rule"], ranking_tasks, held_out)[0]
        row["t_vs_default"] = r["t_vs_default"]
        rows.append(row)
    return rec, pd.DataFrame(rows)


def choice_table(rows: pd.DataFrame, tasks: dict, mode: str) -> sel.ChoiceTable | None:
    """The run's multiple-choice scores as a ChoiceTable, or None when they cannot be combined (a search
    scored variants on different examples, or no task has choices)."""
    try:
        ct = sel.ChoiceTable.from_rows(rows, tasks, mode)
    except PromptkitError:
        return None
    return ct if ct.tasks else None


def advise(summary: dict, protocol: str, rec: sel.Recommendation | None, folds: pd.DataFrame | None = None,
           run_hint: str = "RUN_DIR") -> dict:
    """verdict (generalized: True, False, or None when not measured or too uncertain), a sentence saying why, and
    the next step. Generalized means: the regret CI includes 0, the regret itself is small (at most SMALL mean_norm)
    and the chosen prompt does at least as well as the median prompt held out. A regret CI that excludes 0 means it
    did not; anything between is inconclusive, and the sentence gives the numbers."""
    ci = summary.get("regret_ci")
    out: dict = {"generalized": None}
    if ci is None or protocol == "none":
        out["verdict"] = ("not measured: no task was held out from the choice (add held_out tasks, or use "
                          "--protocol loto)")
    else:
        lo, hi = float(ci[0]), float(ci[1])
        where = "the held-out tasks" if protocol == "split" else f"the {protocol} folds' held-out tasks"
        regret = float(folds["regret"].mean()) if folds is not None and len(folds) else float(summary.get("mean_regret", 0))
        chosen = float(folds["chosen_held_out"].mean()) if folds is not None and len(folds) else float("nan")
        median = float(folds["median_held_out"].mean()) if folds is not None and "median_held_out" in folds else float("nan")
        numbers = (f"chosen {chosen:.3f}, median prompt {median:.3f}, regret {regret:.3f} [{lo:.3f}, {hi:.3f}]"
                   if chosen == chosen else f"regret {regret:.3f} [{lo:.3f}, {hi:.3f}]")
        if lo > 0:
            out["generalized"] = False
            out["verdict"] = (f"did not generalize: on {where} the chosen prompt is measurably worse than the best "
                              f"prompt in hindsight (the regret CI excludes 0; {numbers})")
        elif regret <= SMALL and not chosen < median:
            out["generalized"] = True
            out["verdict"] = (f"generalized: on {where} the chosen prompt is within the noise of the best prompt in "
                              f"hindsight ({numbers})" + (f"; the CI is wide (regret up to {hi:.3f} is plausible): more "
                                                          "held-out tasks or examples would say more" if hi > WIDE else ""))
        else:
            out["verdict"] = (f"inconclusive: on {where} the chosen prompt gives up {regret:.3f} to the best prompt in "
                              f"hindsight" + (" and does worse than the median prompt" if chosen < median else "")
                              + f", but the regret CI includes 0 ({numbers}): more held-out tasks or examples would tell")
    out["next_step"] = next_step(out["generalized"], rec, run_hint)
    if rec is not None:
        out["recommendation"] = rec.as_dict()
    return out


def next_step(generalized: bool | None, rec: sel.Recommendation | None, run_hint: str) -> str:
    adapt = (f"for a task of your own, label a few examples and let the run adapt: promptkit recommend {run_hint} "
             "--task TASK --labelled 8")
    if rec is not None and rec.rule != "top1":
        loto = dict(zip(rec.loto["rule"], rec.loto["loto_mean_norm"]))
        t_top1 = dict(zip(rec.loto["rule"], rec.loto["t_vs_default"])).get("top1", np.nan)
        gain = loto[rec.rule] - loto.get("top1", np.nan)
        what = (f"the ensemble {rec.candidate.name} ({rec.candidate.cost}× calls)" if rec.candidate.method != "single"
                else f"{rec.candidate.name}" if rec.rule != "task_aware" else "a per-task choice")
        t = -t_top1 if rec.rule == rec.default else np.nan  # t_vs_default is against the default rule
        text = (f"use the '{rec.rule}' rule: it picks {what}; on selection tasks left out of the choice it scores "
                f"{gain:+.3f} mean_norm against the top-1 choice" + (f" (paired t {t:+.1f})" if t == t else "")
                + ("; on 40 BIG-bench tasks no one tuned on, the 5-prompt ensemble held up better than top-1 (see "
                   "benchmarks/README)" if rec.rule == "ensemble5" and gain < 0 else "")
                + f" (promptkit rank {run_hint} --recommend)")
        return text + (". Or, " + adapt if generalized is not True else "")
    if generalized is True:
        return "keep the chosen prompt; " + adapt.replace("for a task of your own", "to tune it to one task")
    if rec is not None or generalized is False:
        return adapt
    return "hold tasks out of the choice to measure generalization (a held_out list, or --protocol loto)"
