"""The statistical report of a finished run: ranking with CIs and ties, protocol, sensitivity, modes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from . import ranking as rk
from . import unlabelled
from .advice import advise, choice_table, rules_table
from ..errors import PromptkitError
from .metrics import available_modes, modes_as_variants, with_mode
from .sensitivity import axis_effects, task_sensitivity
from .stats import Friedman, Scores, bootstrap, friedman, percentile_ci


NO_HELD_OUT = ("the suite has no held_out tasks, so the statistics use leave-one-task-out (protocol loto): each "
               "task is held out in turn while the prompt is chosen on the others")
ONE_TASK = ("the suite has one task and no held_out tasks, so no prompt can be checked on a task it was not chosen "
            "on (protocol none); add tasks, or a `held_out:` list, to measure how prompts generalize")


MIN_BOOTSTRAP = 20


def _flag(name: str) -> str:
    return {"seed": "analysis-seed", "model": "on-model"}.get(name, name.replace("_", "-"))


@dataclass(frozen=True)
class AnalysisOptions:
    """How a run is analysed: the selection/held-out protocol, the aggregate across tasks, the scoring mode,
    k for k-fold, bootstrap replicates and seed, the variant reported as the default prompt, and (for runs
    with noise conditions) what the ranking ranks by: clean, noisy, combined or one noise spec; for runs with
    several models, how they are seen together (`across`), or one of them alone (`model`), and the cross-model
    aggregate of the transfer protocol (`cross_model`)."""

    protocol: str = "split"
    aggregate: str = rk.DEFAULT_AGGREGATE
    mode: str = "raw"
    folds: int = 5
    bootstrap: int = 1000
    seed: int = 0
    default_variant: str | None = None
    rank_by: str = "clean"
    across: str = "models,tasks"  # runs with several models: every (model, task) a cell, or "tasks" (models pooled)
    model: str | None = None  # runs with several models: rank on this one alone
    cross_model: str = "mean"  # the prompt that holds across models maximizes the mean, mean_rank or worst model

    @classmethod
    def from_dict(cls, values: dict | None) -> "AnalysisOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise PromptkitError(f"unknown analysis option(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
        return cls(**(values or {}))

    def __post_init__(self) -> None:
        """Every field checked when the options are made, so a wrong value stops a run before any scoring (it failed
        after all scoring, losing it with --no-cache), and `rank`/`report` say the same."""
        from .names import AGGREGATES, MODES, PROTOCOLS

        for name, allowed in (("protocol", (*PROTOCOLS, "models")), ("aggregate", AGGREGATES), ("mode", MODES),
                              ("rank_by", None), ("across", ("models,tasks", "tasks")),
                              ("cross_model", ("mean", "mean_rank", "worst"))):
            value = getattr(self, name)
            if not isinstance(value, str) or (allowed is not None and value not in allowed):
                choices = f"one of {', '.join(allowed)}" if allowed else "a string"
                raise PromptkitError(f"--{_flag(name)} ({name}=) must be {choices}, not {value!r}")
        for name, least in (("folds", 2), ("bootstrap", MIN_BOOTSTRAP), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                why = " (fewer replicates give intervals too coarse to read; 1000 is the default)" if name == "bootstrap" else ""
                raise PromptkitError(f"--{_flag(name)} ({name}=) must be a whole number >= {least}, not {value!r}{why}")

    def analyze_kwargs(self) -> dict:
        """The keyword arguments of analyze() / Results.analyze()."""
        protocol = "split" if self.protocol == "models" else self.protocol  # models: the split, plus transfer
        return {"protocol": protocol, "aggregate": self.aggregate, "mode": self.mode, "n_boot": self.bootstrap,
                "seed": self.seed, "k": self.folds, "default_variant": self.default_variant}


@dataclass
class Analysis:
    aggregate: str
    mode: str
    protocol: str
    ranking: pd.DataFrame  # variants on the ranking tasks, with CIs and the tie group
    friedman: Friedman | None
    folds: pd.DataFrame
    summary: dict
    sensitivity: pd.DataFrame
    axes: pd.DataFrame
    families: pd.DataFrame
    modes: pd.DataFrame
    ranking_tasks: list[str] = field(default_factory=list)
    rules: pd.DataFrame = field(default_factory=pd.DataFrame)  # selection rules and ensembles, judged out of sample
    transductive: pd.DataFrame = field(default_factory=pd.DataFrame)  # per held-out task: the label-free choice

    def tied_with_best(self) -> list[str]:
        return self.ranking.loc[self.ranking["tied_with_best"], "variant"].tolist()


def analyze(results, protocol: str = "split", aggregate: str = rk.DEFAULT_AGGREGATE, mode: str = "raw",
            n_boot: int = 1000, seed: int = 0, k: int = 5, level: float = 0.95,
            default_variant: str | None = None) -> Analysis:
    """Everything the statistics layer says about a run, computed from its stored per-example rows."""
    rk.aggregate_fn(aggregate)
    rows = with_mode(results.rows, mode)
    tasks = results.tasks
    scores = Scores.from_rows(rows, tasks)
    note = None
    if protocol == "split" and not any(tasks[t]["split"] == "held_out" for t in tasks):
        protocol, note = ("loto", NO_HELD_OUT) if len(tasks) >= 2 else ("none", ONE_TASK)
    ranking_tasks = [t for t in tasks if tasks[t]["split"] == "selection"]
    if protocol != "split" or not any(tasks[t]["split"] == "held_out" for t in tasks):
        ranking_tasks = list(tasks)  # other protocols rotate every task through both sides
    held_tasks = [t for t in tasks if t not in ranking_tasks]
    if default_variant is not None and default_variant not in results.variants:
        raise PromptkitError(f"--default-variant {default_variant} is not in this run; pick one from ranking.csv")
    default_variant = default_variant or next(iter(results.variants))

    table = _ranking_table(scores, ranking_tasks, held_tasks, aggregate, n_boot, seed, level, results.variants)
    fr = None
    if len(ranking_tasks) >= 2 and len(scores.variants) >= 2:
        fr = friedman(scores.subset(ranking_tasks).frame())
        if aggregate != "mean_rank":  # ranked by mean rank, the aggregate column already is the Friedman mean rank
            table["mean_rank"] = table["variant"].map(fr.mean_ranks)
        tied = set(fr.tied_with_best())
        table["tied_with_best"] = table["variant"].isin(tied)
    else:
        table["tied_with_best"] = table["rank"] == 1
    if protocol == "none":  # one task and nothing held out: no prompt can be chosen on other tasks
        per_fold = pd.DataFrame(columns=["fold", "held_out_tasks", "chosen", "chosen_held_out", "regret"])
        summary = {"aggregate": aggregate, "folds": 0, "level": level, "default_variant": default_variant}
    else:
        folds = rk.make_folds(protocol, tasks, k=k, seed=seed)
        per_fold, summary = rk.evaluate_protocol(scores, folds, aggregate, default_variant, n_boot, seed, level)
    if note:
        summary["note"] = note
    advice, rules, trans = _advice(results, ranking_tasks, summary, protocol, mode, per_fold)
    summary.update(advice)
    overall = pd.Series(rk.agg_mean_norm(scores.table(), scores.chance), index=scores.variants)
    return Analysis(
        aggregate=aggregate, mode=mode, protocol=protocol, ranking=table, friedman=fr, folds=per_fold,
        summary=summary, sensitivity=task_sensitivity(scores), axes=axis_effects(overall, results.variants),
        families=rk.family_scores(scores.frame(), {v: i["family"] for v, i in results.variants.items()}),
        modes=_modes_table(results.rows, tasks, ranking_tasks, aggregate), ranking_tasks=ranking_tasks, rules=rules,
        transductive=trans,
    )


def _advice(results, ranking_tasks: list[str], summary: dict, protocol: str, mode: str,
            folds: pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The verdict on generalization, the rule nested LOTO recommends on the ranking tasks (every rule and
    ensemble beside the others, with its cost), the next step, the prompt to use (the recommended rule's choice), and
    per held-out task the label-free (transductive) choice from its inputs alone."""
    ct = choice_table(results.rows, results.tasks, mode)
    usable = [t for t in ranking_tasks if ct is not None and t in ct.tasks]
    rec, rules = None, pd.DataFrame(columns=["rule", "choice", "cost", "loto_mean_norm", "selection_mean_norm"])
    trans = pd.DataFrame()
    if len(usable) >= 2:
        held = [t for t in ct.tasks if t not in ranking_tasks]
        rec, rules = rules_table(ct, usable, held)
        learned, trans = unlabelled.transductive(ct, usable, held, rec.candidate if rec.rule != "task_aware" else None)
    out = advise(summary, protocol, rec, folds)
    if rec is not None:
        out["use"] = use_this(rec, rules)
    if len(trans):
        out["transductive"] = {"weighting": learned.name, "reason": learned.reason(), "criteria": list(learned.criteria),
                               "tasks": [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()}
                                         for r in trans.to_dict("records")]}  # no NaN in analysis.json
    return out, rules, trans


def use_this(rec, rules: pd.DataFrame) -> dict:
    """The run's headline: the prompt (or ensemble) of the rule that nested LOTO and the benchmark support."""
    from .advice import rule_label, why

    row = rules.set_index("rule").loc[rec.rule] if rec.rule in set(rules["rule"]) else None
    held = float(row["held_out_mean_norm"]) if row is not None and "held_out_mean_norm" in row else None
    return {"rule": rec.rule, "choice": rec.candidate.name if rec.rule != "task_aware" else "(per task)",
            "label": rule_label(rec.rule, rec.candidate), "cost": rec.candidate.cost, "held_out_mean_norm": held,
            "why": why(rec)}


def _ranking_table(scores: Scores, ranking_tasks, held_tasks, aggregate, n_boot, seed, level, variants) -> pd.DataFrame:
    fn = rk.aggregate_fn(aggregate)
    sel = scores.subset(ranking_tasks)
    estimate = fn(sel.table(), sel.chance)
    ex_lo, ex_hi = percentile_ci(bootstrap(sel, fn, "examples", n_boot, seed), level)
    task_lo, task_hi = percentile_ci(bootstrap(sel, fn, "tasks", n_boot, seed), level)
    table = pd.DataFrame({"variant": scores.variants, "family": [variants[v]["family"] for v in scores.variants],
                          aggregate: estimate, "ci_examples_low": ex_lo, "ci_examples_high": ex_hi,
                          "ci_tasks_low": task_lo, "ci_tasks_high": task_hi})
    if held_tasks:
        held = scores.subset(held_tasks)
        table[f"held_out_{aggregate}"] = fn(held.table(), held.chance)
    order = np.lexsort((table["variant"].to_numpy(), -rk.oriented(aggregate, estimate)))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def _modes_table(rows: pd.DataFrame, tasks: dict, ranking_tasks: list[str], aggregate: str) -> pd.DataFrame:
    """Each scoring mode ranked like a variant: its best variant and mean score on the ranking tasks."""
    fn = rk.aggregate_fn(aggregate)
    both = modes_as_variants(rows, available_modes(rows))
    scores = Scores.from_rows(both, tasks, tasks=ranking_tasks)
    values = pd.Series(fn(scores.table(), scores.chance), index=scores.variants)
    out = []
    for mode in available_modes(rows):
        mine = values[[v for v in values.index if v.endswith("@" + mode)]]
        best = mine.idxmax() if rk.HIGHER_IS_BETTER[aggregate] else mine.idxmin()
        out.append({"mode": mode, "aggregate": aggregate, "mean_over_variants": float(mine.mean()),
                    "best_variant": best.rsplit("@", 1)[0], "best": float(mine[best])})
    return pd.DataFrame(out)


def aggregate_table(results, mode: str = "raw", tasks: list[str] | None = None, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every aggregate for every variant, each with a bootstrap CI over examples and one over tasks.

    Long format: variant, aggregate, estimate, ci_examples_low/high, ci_tasks_low/high, higher_is_better.
    """
    rows = with_mode(results.rows, mode)
    scores = Scores.from_rows(rows, results.tasks)
    scores = scores.subset(tasks) if tasks else scores
    out = []
    for name, fn in rk.AGGREGATES.items():
        est = fn(scores.table(), scores.chance)
        ex_lo, ex_hi = percentile_ci(bootstrap(scores, fn, "examples", n_boot, seed), level)
        t_lo, t_hi = percentile_ci(bootstrap(scores, fn, "tasks", n_boot, seed), level)
        for i, v in enumerate(scores.variants):
            out.append({"variant": v, "aggregate": name, "estimate": float(est[i]),
                        "ci_examples_low": float(ex_lo[i]), "ci_examples_high": float(ex_hi[i]),
                        "ci_tasks_low": float(t_lo[i]), "ci_tasks_high": float(t_hi[i]),
                        "higher_is_better": rk.HIGHER_IS_BETTER[name]})
    return pd.DataFrame(out)
