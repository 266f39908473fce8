"""Results: the tidy per-example table plus what is needed to rank, save and reload a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis import ranking as _ranking
from ..errors import PromptkitError
from .rundir import read_tables, write_run


# Scoring a new task (Results.recommend(task=...)) is the run layer's work: promptkit.run registers its scorer here
# when it is imported (promptkit.load and promptkit.evaluate import it), so results/ never imports run/.
TASK_SCORER: list = []


@dataclass
class Results:
    """Scores of every variant on every example of every task, with the run's context."""

    rows: pd.DataFrame
    tasks: dict[str, dict]  # name -> {split, chance, n_examples, instruction, source}
    variants: dict[str, dict]  # id -> {family, values}
    config: dict = field(default_factory=dict)

    _analysis: object = field(default=None, repr=False, compare=False)
    _clean: object = field(default=None, repr=False, compare=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)  # analyses and rank_by views, computed once

    def to_pandas(self) -> pd.DataFrame:
        """One tidy row per variant × task × example."""
        return self.rows.copy()

    def by_task(self, metric: str = "accuracy", normalized: bool = False) -> pd.DataFrame:
        """Variant × task mean scores; `normalized` maps chance to 0 and perfect to 1 on every task."""
        table = _ranking.by_task(self.ranked().rows, metric)
        if normalized:
            chance = pd.Series({t: self.tasks[t]["chance"] for t in table.columns})
            table = (table - chance) / (1 - chance)
        return table

    def aggregates(self, mode: str = "raw", tasks: list[str] | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Every aggregate (mean_norm, mean, mean_rank, win_rate, worst) per variant with bootstrap CIs
        over examples and over tasks."""
        from ..analysis.analyze import aggregate_table

        return aggregate_table(self.ranked(), mode, tasks, n_boot, seed)

    def ranking(self, metric: str = "accuracy") -> pd.DataFrame:
        """Variants ranked by mean `metric` over the selection tasks, with held-out and per-task columns."""
        if metric not in self.rows.columns:
            raise PromptkitError(f"unknown metric '{metric}'; available: accuracy, accuracy_norm")
        return _ranking.rank(self.ranked().rows, self.tasks, metric)

    def best(self, k: int = 1) -> pd.DataFrame:
        """The top `k` rows of the ranking."""
        return self.ranking().head(k)

    def held_out_summary(self, metric: str = "accuracy") -> dict:
        return _ranking.held_out_summary(self.ranking(metric))

    def analyze(self, protocol: str = "split", aggregate: str = "mean_norm", mode: str = "raw",
                n_boot: int = 1000, seed: int = 0, k: int = 5, default_variant: str | None = None):
        """The statistics layer on this run: ranking with bootstrap CIs and Friedman/Nemenyi ties,
        the held-out protocol report, sensitivity, axis effects, family CPS and scoring modes."""
        from ..analysis.analyze import analyze

        key = ("analyze", protocol, aggregate, mode, n_boot, seed, k, default_variant)
        if key not in self._memo:
            self._memo[key] = analyze(self.ranked(), protocol, aggregate, mode, n_boot, seed, k, default_variant=default_variant)
        return self._memo[key]

    def summary_analysis(self):
        """The default analysis (suite split, mean_norm, raw scores), computed once and kept."""
        if self._analysis is None:
            self._analysis = self.analyze(n_boot=500)
        return self._analysis

    def recommend(self, task=None, n: int = 8, *, model=None, candidates: int | None = None, mode: str = "raw",
                  seed: int = 0, cache=True, progress: bool = True, log=print, max_cost: int | None = None,
                  unlabelled: int | None = None, ensemble: int = 1):
        """A prompt for tasks this run did not choose on.

        With no `task`: the selection rule (top-1, mean rank, worst task, shrinkage, task-aware, or a top-k
        ensemble by averaged probabilities or majority vote) and what it chooses: the 5-prompt ensemble (within
        `max_cost` calls per example: the 3-prompt one, or top-1 at 1), unless another rule beats it clearly out
        of sample (nested leave-one-task-out on the selection tasks alone, paired t >= 3; held-out rows are never
        read). Returns promptkit.analysis.selection.Recommendation. With `task` ('bigbench:NAME', a task.json, or a .json/.jsonl/.csv file with input,
        choices and target): score the variants (or the `candidates` best by the prior) on `n` labelled examples
        of it with the run's model (or `model`), and combine that with the cross-task prior — n = 0 gives the
        cross-task choice, more labels move toward the task's own best. Returns an Adaptation: the variant, its
        expected score with an interval, and the model calls it cost. With `unlabelled` = N instead: score N of the
        task's inputs and choose from their answers alone, the targets unread, by the label-free criterion (mutual
        information, ensemble agreement, calibrated confidence, and prompt perplexity where the run scored its prompts'
        own likelihoods) and weight against the prior that the run's selection tasks support; `ensemble` = k averages
        the top k. Returns promptkit.run.recommend.UnlabelledChoice."""
        if task is None:
            from ..analysis.advice import choice_table
            from ..analysis.selection import recommend

            view = self.ranked()
            ct = choice_table(view.rows, view.tasks, mode)
            selection = [t for t in (ct.tasks if ct else []) if view.tasks[t]["split"] == "selection"]
            if len(selection) < 2:
                raise PromptkitError("recommending a selection rule needs at least 2 multiple-choice selection tasks "
                                     "scored on every variant")
            return recommend(ct, selection, max_cost=max_cost)
        if not TASK_SCORER:
            raise PromptkitError("scoring a new task is the run layer's work: import promptkit.run (promptkit.load and "
                                 "promptkit.evaluate do) before Results.recommend(task=...)")
        return TASK_SCORER[0](self, task, n, model=model, candidates=candidates, mode=mode, seed=seed, cache=cache,
                       progress=progress, log=log, unlabelled=unlabelled, ensemble=ensemble)

    def plot(self, kind: str = "heatmap"):
        """A matplotlib Figure: heatmap, cd (critical difference), sensitivity, selection_vs_held_out, axes, and for
        a run with several models transfer (chosen-on × scored-on regret)."""
        from . import plots

        view = self.ranked()
        makers = {"heatmap": lambda: plots.heatmap(view), "cd": lambda: plots.cd_diagram(self.summary_analysis()),
                  "sensitivity": lambda: plots.sensitivity(view),
                  "selection_vs_held_out": lambda: plots.selection_vs_held_out(view),
                  "axes": lambda: plots.axis_effects(self.summary_analysis()),
                  "transfer": lambda: plots.transfer_heatmap(self.transfer_analysis(n_boot=200))}
        if kind not in makers:
            raise PromptkitError(f"unknown plot '{kind}'; use one of {', '.join(makers)}")
        return makers[kind]()

    def _repr_html_(self) -> str:
        from .report import notebook_html

        return notebook_html(self)

    def compare(self, a: str, b: str, mode: str = "raw", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Paired comparison of two variants on the same examples (paired bootstrap and McNemar per task)."""
        from ..analysis.metrics import with_mode
        from ..analysis.stats import Scores, compare

        return compare(Scores.from_rows(with_mode(self.ranked().rows, mode), self.tasks), a, b, n_boot, seed)

    def robustness(self) -> pd.DataFrame:
        """Each variant's score clean and under every noise spec of the run, and the drop (runs with noise)."""
        from ..analysis.robustness import robustness

        return robustness(self)

    def robustness_summary(self, split: str = "selection") -> pd.DataFrame:
        """Per variant: clean and mean noisy score, mean and worst drop (and which noise), rank clean vs noisy."""
        from ..analysis.robustness import summary

        return summary(self, split)

    def demo_sources(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Per prompt: score with no, real and synthetic demonstrations, and synthetic − none / − real with
        paired-bootstrap CIs (runs whose variants have a `demo_source` axis)."""
        from ..analysis.demo_sources import comparison

        return comparison(self, n_boot, seed)

    def synthetic_demos(self) -> pd.DataFrame:
        """Every synthetic demonstration the run wrote: task, answer, input, and the filter that dropped it."""
        info = self.config.get("synthetic")
        if not info:
            raise PromptkitError("this run wrote no synthetic demonstrations (no variant has demo_source: synthetic)")
        return pd.DataFrame(info["candidates"])

    def ranked(self) -> "Results":
        """What the ranking and statistics see: the run itself; for a run with noise conditions its clean
        copies (use rank_by() for another criterion); for a run with several models, every (model, task)
        pair as one task (use across() or for_model() for another view)."""
        if self.models and "across" not in self.config:
            return self.across("models,tasks")
        if not self.config.get("noise") or "ranked_by" in self.config:
            return self
        if self._clean is None:
            self._clean = self.rank_by("clean")
        return self._clean

    @property
    def models(self) -> list[str]:
        """The models of a run with several (in run order); empty for a run with one."""
        return [m["label"] for m in self.config.get("models", [])] if "model" in self.rows.columns else []

    def for_model(self, name: str) -> "Results":
        """This run as if only model `name` had been run: its rows, its config."""
        if name not in self.models:
            raise PromptkitError(f"no model '{name}' in this run; its models are {', '.join(self.models) or 'one, unnamed'}")
        if ("model", name) not in self._memo:
            info = next(m for m in self.config["models"] if m["label"] == name)
            rows = self.rows[self.rows["model"] == name].drop(columns=["model"]).reset_index(drop=True)
            config = {k: v for k, v in self.config.items() if k != "models"}
            config.update(model={k: v for k, v in info.items() if k not in ("label", "engine", "forward_tokens")},
                          engine=info["engine"], forward_tokens=info["forward_tokens"])
            self._memo[("model", name)] = Results(rows, self.tasks, self.variants, config)
        return self._memo[("model", name)]

    def across(self, how: str = "models,tasks") -> "Results":
        """A run with several models seen as one: "models,tasks" makes every (model, task) pair a task of its own
        (named MODEL::TASK, split as the task's), "tasks" pools each task's examples over the models."""
        from ..analysis.transfer import SEP

        if how not in ("models,tasks", "tasks"):
            raise PromptkitError(f"--across {how}: use models,tasks (every model × task a cell) or tasks (models pooled)")
        if not self.models:
            return self
        if ("across", how) not in self._memo:
            rows = self.rows
            if how == "models,tasks":
                cells = rows["model"].astype(str) + SEP + rows["task"].astype(str)
                tasks = {f"{m}{SEP}{t}": info for m in self.models for t, info in self.tasks.items()}
                rows = rows.assign(task=cells)
            else:
                rows = rows.assign(example=rows["model"].astype(str) + ":" + rows["example"].astype(str))
                tasks = {t: {**info, "n_examples": info["n_examples"] * len(self.models)} for t, info in self.tasks.items()}
            self._memo[("across", how)] = Results(rows.drop(columns=["model"]), tasks, self.variants,
                                                  {**self.config, "across": how})
        return self._memo[("across", how)]

    def view(self, rank_by: str = "clean", across: str = "models,tasks", model: str | None = None) -> "Results":
        """What a ranking or report should show: one model of a run with several (`model`), or all of them
        `across` models and tasks; a run with noise conditions ranked by `rank_by`."""
        if model is not None:
            return self.for_model(model).view(rank_by)
        if self.models:
            return self.across(across)
        return self.rank_by(rank_by) if self.config.get("noise") else self

    def transfer_analysis(self, aggregate: str = "mean_norm", mode: str = "raw", how: str = "mean", n_boot: int = 1000,
                          seed: int = 0):
        """The transfer protocol (a run with several models): promptkit.analysis.transfer.Transfer."""
        from ..analysis.metrics import with_mode
        from ..analysis.transfer import transfer

        key = ("transfer", aggregate, mode, how, n_boot, seed)
        if key not in self._memo:
            self._memo[key] = transfer(with_mode(self.rows, mode), self.tasks, self.variants, self.models, aggregate, how,
                                       n_boot, seed)
        return self._memo[key]

    def transfer(self, aggregate: str = "mean_norm", mode: str = "raw", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Choose a prompt on one model's selection tasks, score it on another's held-out tasks: one row per
        (chosen_on, scored_on) pair, "all but B" rows for leave-one-model-out, regret vs B's own best with CIs."""
        return self.transfer_analysis(aggregate, mode, n_boot=n_boot, seed=seed).matrix

    def rank_by(self, how: str = "clean") -> "Results":
        """These results with one row per variant × example, scored clean, noisy (mean over noise specs),
        combined, or under one noise spec; rank, analyze and report them like any run."""
        from ..analysis.robustness import collapse

        if ("rank_by", how) not in self._memo:
            self._memo[("rank_by", how)] = collapse(self, how)
        return self._memo[("rank_by", how)]

    def chance(self) -> dict:
        table = self.ranking()
        return _ranking.chance_row(self.tasks, list(table.columns))

    def __repr__(self) -> str:
        return (f"Results({len(self.variants)} variants × {len(self.tasks)} tasks, {len(self.rows)} rows, "
                f"model={self.config.get('model', {}).get('model', '?')})")

    # ------------------------------------------------------------------ persistence

    def save(self, out: str | Path, analysis=None, report: bool = True) -> Path:
        """Write the run directory, the same files `promptkit run` writes: config, versions, per-example rows,
        rankings, held-out summary, the statistics (`analysis`: AnalysisOptions or a dict of its fields) and
        report.html (unless `report` is False)."""
        return write_run(self, out, analysis=analysis, report=report)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Results":
        """A run directory written by `save`, `evaluate(out=...)` or `promptkit run` (this version or an earlier one)."""
        return cls(*read_tables(run_dir))
