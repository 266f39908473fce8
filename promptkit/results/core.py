"""Results: the tidy per-example table plus what is needed to rank, save and reload a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis import ranking as _ranking
from ..errors import PromptkitError
from .rundir import read_tables, write_run


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

    def plot(self, kind: str = "heatmap"):
        """A matplotlib Figure: heatmap, cd (critical difference), sensitivity, selection_vs_held_out, axes."""
        from . import plots

        view = self.ranked()
        makers = {"heatmap": lambda: plots.heatmap(view), "cd": lambda: plots.cd_diagram(self.summary_analysis()),
                  "sensitivity": lambda: plots.sensitivity(view),
                  "selection_vs_held_out": lambda: plots.selection_vs_held_out(view),
                  "axes": lambda: plots.axis_effects(self.summary_analysis())}
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
        """What the ranking and statistics see: the run itself, or for a run with noise conditions its
        clean copies (use rank_by() for another criterion)."""
        if not self.config.get("noise") or "ranked_by" in self.config:
            return self
        if self._clean is None:
            self._clean = self.rank_by("clean")
        return self._clean

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
