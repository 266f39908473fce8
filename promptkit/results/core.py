"""Results: the tidy per-example table plus what is needed to rank, save and reload a run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis import ranking as _ranking
from ..errors import PromptkitError

ROWS_FILE = "results.jsonl"


@dataclass
class Results:
    """Scores of every variant on every example of every task, with the run's context."""

    rows: pd.DataFrame
    tasks: dict[str, dict]  # name -> {split, chance, n_examples, instruction, source}
    variants: dict[str, dict]  # id -> {family, values}
    config: dict = field(default_factory=dict)

    _analysis: object = field(default=None, repr=False, compare=False)
    _clean: object = field(default=None, repr=False, compare=False)

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

        return analyze(self.ranked(), protocol, aggregate, mode, n_boot, seed, k, default_variant=default_variant)

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
        from ..run.synthetic import comparison

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

        return collapse(self, how)

    def chance(self) -> dict:
        table = self.ranking()
        return _ranking.chance_row(self.tasks, list(table.columns))

    def __repr__(self) -> str:
        return (f"Results({len(self.variants)} variants × {len(self.tasks)} tasks, {len(self.rows)} rows, "
                f"model={self.config.get('model', {}).get('model', '?')})")

    # ------------------------------------------------------------------ persistence

    def save(self, out: str | Path) -> Path:
        """Write the run directory: config, versions, per-example rows, ranking (CSV and JSON), held-out summary."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", self.config)
        _write_json(out / "tasks.json", self.tasks)
        _write_json(out / "variants.json", self.variants)
        _write_json(out / "versions.json", package_versions())
        tmp = out / (ROWS_FILE + ".tmp")
        self.rows.to_json(tmp, orient="records", lines=True)
        tmp.replace(out / ROWS_FILE)
        table = self.ranking()
        table.to_csv(out / "ranking.csv", index=False)
        _write_json(out / "ranking.json", json.loads(table.to_json(orient="records")))
        _write_json(out / "held_out.json", self.held_out_summary())
        return out

    @classmethod
    def load(cls, run_dir: str | Path) -> "Results":
        run_dir = Path(run_dir)
        try:
            rows = pd.read_json(run_dir / ROWS_FILE, orient="records", lines=True, dtype={"example": str})
            tasks = json.loads((run_dir / "tasks.json").read_text())
            variants = json.loads((run_dir / "variants.json").read_text())
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise PromptkitError(f"{run_dir}: not a readable promptkit run directory ({exc})") from None
        return cls(rows, tasks, variants, config)


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable, allow_nan=True))
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def package_versions() -> dict:
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("promptkit", "torch", "transformers", "datasets", "jinja2", "pandas", "gguf", "accelerate", "evaluate"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
