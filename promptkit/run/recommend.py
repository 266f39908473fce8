"""A prompt for a new task: the run's cross-task evidence as the prior, N labelled examples of the new task
as the data (promptkit.analysis.adapt), and what it cost in model calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import adapt
from ..analysis.advice import choice_table
from ..analysis.selection import fit_prior
from ..errors import PromptkitError
from ..paths import builtin_dir
from ..tasks.core import SOURCES
from ..tasks.suites import load_tasks, suite_from_dict
from .evaluate import evaluate


@dataclass
class Adaptation:
    """The prompt recommended for one new task, its expected score with an interval, and the evidence."""

    task: str
    n_labelled: int
    variant: str
    expected_norm: float  # chance-normalized accuracy expected on the task's unseen examples
    interval_norm: tuple[float, float]
    chance: float
    cross_task_variant: str  # the choice with no labels (N = 0)
    shrink: float  # weight on the task's own evidence
    calls: dict  # prompts scored, continuation requests, forward tokens, cache hits
    table: pd.DataFrame  # per candidate: prior mean, labelled accuracy, posterior mean and sd

    @property
    def expected_accuracy(self) -> float:
        return self.chance + (1 - self.chance) * self.expected_norm

    @property
    def interval_accuracy(self) -> tuple[float, float]:
        return tuple(self.chance + (1 - self.chance) * x for x in self.interval_norm)  # type: ignore[return-value]

    def as_dict(self) -> dict:
        return {"task": self.task, "n_labelled": self.n_labelled, "variant": self.variant,
                "expected_mean_norm": self.expected_norm, "interval_mean_norm": list(self.interval_norm),
                "expected_accuracy": self.expected_accuracy, "interval_accuracy": list(self.interval_accuracy),
                "chance": self.chance, "cross_task_variant": self.cross_task_variant, "shrink": self.shrink,
                "calls": self.calls}


def new_task_suite(task):
    """A one-task suite from what a suite's task entry accepts ('generated:NAME', 'bigbench:NAME', or a mapping with
    `source:`), or
    from a file: a BIG-bench task.json, or a .json/.jsonl/.csv file whose rows have `input`, `choices` and `target`
    (the index of the right choice)."""
    if isinstance(task, (str, Path)) and str(task).partition(":")[0] not in SOURCES:
        path = Path(task).expanduser()
        if not path.is_file():
            raise PromptkitError(f"--task {task}: not a file, and not a task like 'generated:NAME' or 'bigbench:NAME'; give a "
                                 "generated task (`promptkit tasks` lists them), a BIG-bench task name, a task.json, or a "
                                 ".json/.jsonl/.csv file with input, choices and target columns")
        path = path.resolve()
        if path.suffix == ".json" and _looks_bigbench(path):
            entry = {"source": "bigbench", "path": str(path)}
        else:
            entry = {"source": "files", "path": str(path), "input": "input", "choices": "choices", "target": "target"}
        entry["name"] = path.parent.name if path.name == "task.json" else path.stem
        task = entry
    # the user named the file on the command line: it may be anywhere
    return suite_from_dict({"name": "recommend", "selection": [task], "held_out": [], "allow_outside_data": True},
                           Path.cwd() / "recommend.yaml")


def _looks_bigbench(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            return '"examples"' in f.read(65536)
    except (OSError, UnicodeDecodeError):
        return False


def _templates(config: dict):
    paths = config.get("templates") or []
    library = builtin_dir("templates").resolve()
    if paths and all(Path(p).resolve().parent == library for p in paths):
        return None  # the built-in library: its families are filtered per task the same way as in a run
    return paths or None


def _model(results, model):
    if model is not None:
        return model
    if results.models:
        raise PromptkitError(f"this run has several models ({', '.join(results.models)}); pass model=... (--model) to say "
                             "which one to adapt on, and on_model=... (--on-model) for its prior")
    spec = results.config.get("model", {}).get("model")
    return spec


def recommend_for_task(results, task, n: int = 8, *, model=None, candidates: int | None = None, mode: str = "raw",
                       seed: int = 0, cache=True, progress: bool = True, log: Callable[[str], None] = print) -> Adaptation:
    """Score the run's variants (or the `candidates` best by the prior) on `n` labelled examples of `task` and
    combine that with the cross-task prior from the run's selection tasks. n = 0 scores nothing and returns the
    cross-task choice. The model defaults to the run's; the result cache makes a rerun free."""
    if n < 0:
        raise PromptkitError(f"labelled examples must be 0 or more (got {n})")
    view = results.ranked()
    ct = choice_table(view.rows, view.tasks, mode)
    selection = [t for t in (ct.tasks if ct else []) if view.tasks[t]["split"] == "selection"] or (ct.tasks if ct else [])
    if not selection:
        raise PromptkitError("this run has no multiple-choice selection tasks scored on every variant; adaptation needs "
                             "the run's cross-task scores as its prior")
    prior = fit_prior(ct, selection)
    order = np.lexsort((np.arange(len(ct.variants)), -prior.mu))
    keep = order if not candidates else order[: max(1, int(candidates))]
    ids = [ct.variants[i] for i in keep]
    suite = new_task_suite(task)
    name = suite.tasks[0].name
    if n == 0:
        post = adapt.posterior(adapt.Prior(prior.mu[keep], prior.tau2, prior.task_var, prior.grand), None, 0.5)
        return _adaptation(name, ids, prior.mu[keep], None, post, _chance_of(suite, seed), {"prompts": 0})
    new = evaluate(_templates(results.config), suite, _model(results, model), limit=n, seed=seed, variants=ids,
                   cache=cache, progress=progress, log=log, report=False)
    nct = choice_table(new.rows, new.tasks, mode)
    if nct is None or name not in nct.tasks:
        raise PromptkitError(f"task '{name}' gave no multiple-choice scores; adaptation chooses among multiple-choice prompts")
    correct = nct.correct_by_variant(name)[[nct.variants.index(v) for v in ids]]
    chance = nct.chance[name]
    sub = adapt.Prior(prior.mu[keep], prior.tau2, prior.task_var, prior.grand)
    post = adapt.posterior(sub, correct, chance)
    eng = new.config.get("engine", {})
    calls = {"prompts": int(new.config.get("n_requests", 0)), "continuations": int(eng.get("unique", 0)),
             "from_cache": int(eng.get("cache_hits", 0)), "forward_tokens": int(new.config.get("forward_tokens", 0))}
    return _adaptation(name, ids, prior.mu[keep], correct, post, chance, calls)


def _chance_of(suite, seed: int) -> float:
    return load_tasks(suite, None, seed)[0].chance


def _adaptation(name, ids, mu, correct, post: adapt.Posterior, chance: float, calls: dict) -> Adaptation:
    i = post.choice()
    table = pd.DataFrame({"variant": ids, "prior_mean_norm": mu,
                          "labelled_accuracy": correct.mean(axis=1) if correct is not None else np.nan,
                          "posterior_mean_norm": post.mean, "posterior_sd": post.sd})
    table = table.sort_values(["posterior_mean_norm", "variant"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return Adaptation(name, post.n_labelled, ids[i], float(post.mean[i]), post.interval(i, chance), chance,
                      ids[int(np.argmax(mu))], post.shrink, calls, table)
