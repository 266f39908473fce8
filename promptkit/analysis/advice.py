"""What a run says about generalization, in plain words: did the chosen prompt hold up on tasks it was not
chosen on (the regret CI), which selection rule nested leave-one-task-out prefers, and what to do next."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import PromptkitError
from . import ranking as rk
from .names import num
from . import selection as sel

WIDE = 0.1  # a regret CI reaching past this (mean_norm) is called wide
SMALL = 0.05  # a regret (mean_norm) at most this large counts as generalizing, when its CI includes 0


def regret_scale(aggregate: str, n_variants: int | None) -> float:
    """How many units of `aggregate` make one unit of SMALL and WIDE: a mean rank over k variants spans k − 1
    ranks where the other aggregates span about 1 (win rate is (k − mean rank) / (k − 1))."""
    return float(max((n_variants or 2) - 1, 1)) if aggregate == "mean_rank" else 1.0


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
        agg = summary.get("aggregate", rk.DEFAULT_AGGREGATE)
        higher = rk.HIGHER_IS_BETTER.get(agg, True)
        scale = regret_scale(agg, summary.get("n_variants"))
        lo, hi = float(ci[0]), float(ci[1])
        where = "the held-out tasks" if protocol == "split" else f"the {protocol} folds' held-out tasks"
        regret = float(folds["regret"].mean()) if folds is not None and len(folds) else float(summary.get("mean_regret", 0))
        chosen = float(folds["chosen_held_out"].mean()) if folds is not None and len(folds) else float("nan")
        median = float(folds["median_held_out"].mean()) if folds is not None and "median_held_out" in folds else float("nan")
        worse = (chosen < median) if higher else (chosen > median)  # False when either is unknown
        direction = "higher" if higher else "lower"
        interval = f"regret {num(regret)} [{num(lo)}, {num(hi)}]"
        numbers = (f"{agg}, {direction} is better: chosen {num(chosen)}, median prompt {num(median)}, {interval}"
                   if chosen == chosen else f"{agg}: {interval}")
        gives = num(regret) + (" in mean rank" if agg == "mean_rank" else "")
        if lo > 0:
            out["generalized"] = False
            out["verdict"] = (f"did not generalize: on {where} the chosen prompt is measurably worse than the best "
                              f"prompt in hindsight (the regret CI excludes 0; {numbers})")
        elif regret <= SMALL * scale and not worse:
            out["generalized"] = True
            wide = (f"; the CI is wide (regret up to {num(hi)} is plausible): more held-out tasks or examples would "
                    "say more") if hi > WIDE * scale else ""
            out["verdict"] = (f"generalized: on {where} the chosen prompt is within the noise of the best prompt in "
                              f"hindsight ({numbers})" + wide)
        else:
            out["verdict"] = (f"inconclusive: on {where} the chosen prompt gives up {gives} to the best prompt in "
                              f"hindsight" + (" and does worse than the median prompt" if worse else "")
                              + f", but the regret CI includes 0 ({numbers}): more held-out tasks or examples would tell")
    out["next_step"] = next_step(out["generalized"], rec, run_hint)
    if rules_command(run_hint) in out["next_step"]:
        out["next_command"] = rules_command(run_hint)  # a view that shows it (rank --recommend) leaves it out
    if rec is not None:
        out["recommendation"] = rec.as_dict()
    return out


def rules_command(run_hint: str) -> str:
    """The command that shows every selection rule beside the others."""
    return f"promptkit rank {run_hint} --recommend"


def rule_label(name: str, candidate: sel.Candidate) -> str:
    """A rule's pick in words; an ensemble is named by how many prompts it really holds."""
    if name == "task_aware":
        return "a per-task choice"
    if candidate.method == "single":
        return candidate.name
    kind = "ensemble (averaged probabilities)" if candidate.method == "mean_prob" else "majority vote"
    short = (f" (rule {name}: the run has only {candidate.cost} variants)"
             if candidate.cost < sel.RULE_COST.get(name, candidate.cost) else "")
    return f"the {candidate.cost}-prompt {kind} {candidate.name}{short}"


def why(rec: sel.Recommendation) -> str:
    """Why the recommendation is that rule: this run's evidence, or the benchmark's prior, in words."""
    by_rule = rec.loto.set_index("rule")
    folds = "the selection tasks left out in turn"
    if rec.basis == "clear":
        return (f"it beats the default rule {rec.default} clearly on {folds} (paired t "
                f"{num(by_rule.loc[rec.rule, 't_vs_default'], 1, sign=True)}, at least {sel.T_NEEDED:g} needed)")
    if rec.basis == "cheaper":
        return (f"the default {rec.default} ({int(by_rule.loc[rec.default, 'cost'])}× calls) did better than {rec.rule} "
                f"({int(by_rule.loc[rec.rule, 'cost'])}× calls) on none of {folds}, so the cheaper rule is kept")
    if rec.candidate.cost == 1 or "top1" not in by_rule.index or rec.rule == "top1":
        return f"the default at {rec.candidate.cost}× calls; no rule beats it clearly on {folds}"
    top = by_rule.loc["top1"]
    agrees = top["folds_behind"] > 0 and (top["folds_ahead"] == 0 or top["t_vs_default"] <= -2)
    return (f"{rec.rule} is the default: the prompt ensemble held up best on 40 BIG-bench tasks no one tuned on "
            f"(benchmarks/README); on {folds} it is ahead of top-1 on {int(top['folds_behind'])} and behind it on "
            f"{int(top['folds_ahead'])} of them ({num(by_rule.loc[rec.rule, 'loto_mean_norm'] - top['loto_mean_norm'], sign=True)} "
            "mean_norm), " + ("so this run agrees" if agrees else
                              "no clear evidence either way: the choice is the benchmark's prior, not this run's evidence"))


def next_step(generalized: bool | None, rec: sel.Recommendation | None, run_hint: str) -> str:
    adapt = (f"for a task of your own, label a few examples and let the run adapt: promptkit recommend {run_hint} "
             "--task TASK --labelled 8")
    if rec is not None and rec.rule != "top1":
        loto = dict(zip(rec.loto["rule"], rec.loto["loto_mean_norm"]))
        t_top1 = dict(zip(rec.loto["rule"], rec.loto["t_vs_default"])).get("top1", np.nan)
        gain = loto[rec.rule] - loto.get("top1", np.nan)
        cost = f" ({rec.candidate.cost}× calls)" if rec.candidate.cost > 1 else ""
        t = -t_top1 if rec.rule == rec.default else np.nan  # t_vs_default is against the default rule
        text = (f"use the '{rec.rule}' rule: it picks {rule_label(rec.rule, rec.candidate)}{cost}; on selection tasks "
                f"left out of the choice it scores {num(gain, sign=True)} mean_norm against the top-1 choice"
                + (f" (paired t {num(t, 1, sign=True)})" if t == t else "")
                + f"; why this rule: {why(rec)} ({rules_command(run_hint)})")
        return text + (". Or, " + adapt if generalized is not True else "")
    if generalized is True:
        return "keep the chosen prompt; " + adapt.replace("for a task of your own", "to tune it to one task")
    if rec is not None or generalized is False:
        return adapt
    return "hold tasks out of the choice to measure generalization (a held_out list, or --protocol loto)"
