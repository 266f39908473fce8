"""A prompt for a new task: the run's cross-task evidence as the prior, N labelled examples of the new task
as the data (promptkit.analysis.adapt), and what it cost in model calls."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import adapt, unlabelled
from ..analysis.advice import choice_table
from ..analysis.selection import Candidate, fit_prior
from ..errors import PromptkitError, SuiteError
from ..paths import builtin_dir
from ..prompts.safe_read import MAX_DATA_BYTES, open_regular
from ..prompts.templates import read_yaml
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
    shrink: float  # weight on the task's own evidence in the choice
    calls: dict  # prompts scored, continuation requests, forward tokens, cache hits
    table: pd.DataFrame  # per candidate: prior mean, labelled accuracy, choice score, posterior mean and sd
    weight_reason: str = ""  # why the weight is what it is, in words and numbers

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
                "weight_reason": self.weight_reason, "calls": self.calls}


INPUT_COLUMNS = ("input", "question", "text", "prompt", "query", "sentence")
TARGET_COLUMNS = ("target", "answer", "label", "gold")
CHOICE_COLUMNS = ("choices", "options")
ONE_CHOICE = re.compile(r"^(?:choice|option|opt|ans)?[ _-]?([a-j]|[0-9]{1,2})$", re.IGNORECASE)  # A..J, choice_1, option_b


def new_task_suite(task):
    """A one-task suite from what a suite's task entry accepts: 'generated:NAME', 'bigbench:NAME', a mapping with
    `source:`, a YAML file holding such a mapping (its `path:` relative to that file), a BIG-bench task.json, or a
    .json/.jsonl/.csv data file whose columns are mapped as a suite task maps them: input (input, question, text,
    ...), choices (a list column such as `choices`, or one column per choice such as A, B, C, D) and target (target,
    answer or label: a choice's index or text). Errors name the user's file."""
    if not isinstance(task, (str, Path)) or str(task).partition(":")[0] in SOURCES:
        with named_errors(Path.cwd() / "--task"):  # the caller named the task: its data may be anywhere
            return suite_from_dict({"name": "recommend", "selection": [task], "held_out": [], "allow_outside_data": True},
                                   Path.cwd() / "--task")
    path = Path(task).expanduser()
    if not path.is_file():
        raise PromptkitError(f"--task {task}: not a file, and not a task like 'generated:NAME' or 'bigbench:NAME'; give a "
                             "generated task (`promptkit tasks` lists them), a BIG-bench task name, a task.json, a YAML "
                             "file with one suite task's mapping, or a .json/.jsonl/.csv file with input, choices and "
                             "target columns")
    path = path.resolve()
    outside = True  # a data file the user named (it is in its own folder anyway)
    if path.suffix in (".yaml", ".yml"):  # a task file reads data from its own folder, unless it says otherwise
        entry, outside = task_file(path)
    elif path.suffix == ".json" and _looks_bigbench(path):
        entry = {"source": "bigbench", "path": str(path)}
    else:
        entry = {"source": "files", "path": str(path), **_mapping(path)}
    entry.setdefault("name", path.parent.name if path.name == "task.json" else path.stem)
    with named_errors(path):
        return suite_from_dict({"name": "recommend", "selection": [entry], "held_out": [],
                                "allow_outside_data": outside}, path)


@contextmanager
def named_errors(path: Path):
    """Errors about the one-task suite name the user's file (or --task), not a suite entry they never wrote."""
    try:
        yield
    except SuiteError as exc:
        name = "--task" if path.name == "--task" else str(path)
        raise SuiteError(str(exc).replace(f"{path}: selection[0]", name)) from None


def task_file(path: Path) -> tuple[dict, bool]:
    try:
        data, _ = read_yaml(path)
    except PromptkitError as exc:
        raise SuiteError(str(exc)) from None
    if not isinstance(data, dict) or "selection" in data or "held_out" in data:
        raise SuiteError(f"{path}: --task takes one task's mapping, as one entry of a suite's `selection:` list (source, "
                         "path, input, choices, target, ...), not a suite or a list")
    data = dict(data)
    return data, bool(data.pop("allow_outside_data", False))


def _mapping(path: Path) -> dict:
    """input/choices/target for a data file, from the names of its columns (read from its first row)."""
    columns, first, field = _first_row(path)
    lower = {c.lower(): c for c in columns}
    pick = lambda names: next((lower[n] for n in names if n in lower), None)  # noqa: E731
    mapping = {"input": pick(INPUT_COLUMNS), "target": pick(TARGET_COLUMNS)}
    several = sorted((c for c in columns if ONE_CHOICE.match(c) and c not in mapping.values()),
                     key=lambda c: (len(ONE_CHOICE.match(c).group(1)), ONE_CHOICE.match(c).group(1).lower()))
    single = pick(CHOICE_COLUMNS)
    mapping["choices"] = single or (several if len(several) >= 2 else None)
    missing = [k for k, v in mapping.items() if not v]
    if missing:
        raise SuiteError(f"{path}: cannot tell which column is the {' and the '.join(missing)}; its columns are "
                         f"{', '.join(columns) or '(none)'}. Name them input, choices (a list, text separated by '|', or "
                         "one column per choice: A, B, C, ...) and target (a choice's index or text), or give --task a "
                         "YAML file with the mapping, as a suite task has it (source: files, path:, input:, choices:, target:)")
    cell = first.get(single) if single else None
    if path.suffix.lower() == ".csv" and isinstance(cell, str) and cell.strip().startswith("[") and cell.strip().endswith("]"):
        raise SuiteError(f"{path}: column '{single}' holds a list written as text ({cell.strip()[:60]}); a CSV cell is one "
                         "string, so write the choices separated by '|' (Paris|Rome), one column per choice (A, B, C, "
                         "...), or use a .jsonl file where the choices are a list")
    return {**mapping, **({"field": field} if field else {})}


def _first_row(path: Path) -> tuple[list[str], dict, str | None]:
    """The column names and first row of a CSV, JSON Lines or JSON file (a list of objects, or an object holding
    one: then its key, the suite task's `field:`)."""
    field = None
    try:
        with open_regular(path, MAX_DATA_BYTES, "data file", SuiteError) as f:
            head = f.read(1 << 20).decode("utf-8", errors="replace")
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(io.StringIO(head))
                row = next(reader, None) or {}
                return list(reader.fieldnames or []), row, None
            if path.suffix.lower() == ".json":
                data = json.loads(head + f.read().decode("utf-8", errors="replace"))
                if isinstance(data, dict):
                    field = next((k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
                    data = data[field] if field else []
                row = data[0] if isinstance(data, list) and data else {}
            else:
                row = json.loads(next((line for line in head.splitlines() if line.strip()), "{}"))
    except (ValueError, csv.Error) as exc:
        raise SuiteError(f"{path}: could not read its first row: {exc}") from None
    if not isinstance(row, dict):
        raise SuiteError(f"{path}: each row must be an object with named columns (a JSON list of objects, or one object a line)")
    return list(row), row, field


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
                       seed: int = 0, cache=True, progress: bool = True, log: Callable[[str], None] = print,
                       unlabelled: int | None = None, ensemble: int = 1) -> Adaptation | UnlabelledChoice:
    """Score the run's variants (or the `candidates` best by the prior) on `n` labelled examples of `task` and
    combine that with the cross-task prior from the run's selection tasks. n = 0 scores nothing and returns the
    cross-task choice. The model defaults to the run's; the result cache makes a rerun free. With `unlabelled`:
    that many inputs, their targets unread (recommend_unlabelled)."""
    if unlabelled is not None:
        return recommend_unlabelled(results, task, unlabelled, model=model, candidates=candidates, mode=mode, seed=seed,
                                    cache=cache, progress=progress, log=log, ensemble=ensemble)
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
    sub = adapt.Prior(prior.mu[keep], prior.tau2, prior.task_var, prior.grand)
    if n == 0:
        with named_errors(Path(suite.path)):
            chance = _chance_of(suite, seed)
        return _adaptation(name, ids, None, adapt.posterior(sub, None, chance), sub, chance, {"prompts": 0}, len(selection))
    nct, calls = _scored(results, suite, name, ids, n, seed, model, mode, cache, progress, log,
                         "adaptation chooses among multiple-choice prompts")
    correct = nct.correct_by_variant(name)[[nct.variants.index(v) for v in ids]]
    chance = nct.chance[name]
    post = adapt.posterior(sub, correct, chance)
    return _adaptation(name, ids, correct, post, sub, chance, calls, len(selection))


def _chance_of(suite, seed: int) -> float:
    return load_tasks(suite, None, seed)[0].chance


def _adaptation(name, ids, correct, post: adapt.Posterior, prior: adapt.Prior, chance: float, calls: dict,
                n_tasks: int) -> Adaptation:
    i = post.choice()
    table = pd.DataFrame({"variant": ids, "prior_mean_norm": prior.mu,
                          "labelled_accuracy": correct.mean(axis=1) if correct is not None else np.nan,
                          "choice_score": post.choice_score, "posterior_mean_norm": post.mean, "posterior_sd": post.sd})
    table = table.sort_values(["choice_score", "variant"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return Adaptation(name, post.n_labelled, ids[i], float(post.mean[i]), post.interval(i, chance), chance,
                      ids[int(np.argmax(prior.mu))], post.shrink, calls, table, adapt.weight_reason(prior, post, n_tasks))


@dataclass
class UnlabelledChoice:
    """The prompt recommended for a new task from N of its inputs, unlabelled: the label-free criterion and its
    weight against the cross-task prior (learned on the run's selection tasks), the candidates' criteria, the cost."""

    task: str
    n_unlabelled: int
    candidate: Candidate
    weighting: str  # 'prior', 'mi alone', 'prior + 1×agreement', ...
    reason: str  # why that weighting, in words and numbers
    cross_task_variant: str
    calls: dict
    table: pd.DataFrame  # per candidate: prior mean, every criterion, the choice score
    loto: pd.DataFrame  # every weighting on the selection tasks left out in turn
    criteria: tuple[str, ...] = unlabelled.CRITERIA  # the criteria weighed (perplexity where the run has it)

    @property
    def variant(self) -> str:
        return self.candidate.name

    def as_dict(self) -> dict:
        return {"task": self.task, "n_unlabelled": self.n_unlabelled, "choice": self.candidate.name,
                "members": list(self.candidate.members), "method": self.candidate.method, "weighting": self.weighting,
                "reason": self.reason, "cross_task_variant": self.cross_task_variant, "calls": self.calls}


def recommend_unlabelled(results, task, n: int = 16, *, model=None, candidates: int | None = None, mode: str = "raw",
                         seed: int = 0, cache=True, progress: bool = True, log: Callable[[str], None] = print,
                         ensemble: int = 1) -> UnlabelledChoice:
    """Score the run's variants (or the `candidates` best by the prior) on `n` inputs of `task`, read only their
    choice probabilities (never the targets), and choose by the label-free weighting the run's selection tasks
    support; `ensemble` > 1 averages the top k by that score."""
    if n < 1:
        raise PromptkitError(f"unlabelled inputs must be 1 or more (got {n})")
    view = results.ranked()
    ct = choice_table(view.rows, view.tasks, mode)
    selection = [t for t in (ct.tasks if ct else []) if view.tasks[t]["split"] == "selection"] or (ct.tasks if ct else [])
    if len(selection) < 2:
        raise PromptkitError("this run has fewer than 2 multiple-choice selection tasks scored on every variant; the "
                             "label-free choice learns how far to trust each criterion on them")
    mu = ct.table(selection).mean(axis=1)
    order = np.lexsort((np.arange(len(ct.variants)), -mu))
    keep = order if not candidates else order[: max(2, int(candidates))]
    ids = [ct.variants[i] for i in keep]
    learned = unlabelled.learn(ct, selection, n, seed)
    suite = new_task_suite(task)
    name = suite.tasks[0].name
    nct, calls = _scored(results, suite, name, ids, n, seed, model, mode, cache, progress, log,
                         "the label-free choice reads choice probabilities",
                         prompt_likelihood=n if "perplexity" in learned.criteria else 0)
    rows = [nct.variants.index(v) for v in ids]
    probs = nct.probs[name][rows]  # the targets are never read
    ll = nct.prompt_ll.get(name)
    cand, table = unlabelled.choose(probs, mu[keep], ids, learned, ensemble, None if ll is None else ll[rows])
    return UnlabelledChoice(name, probs.shape[1], cand, learned.name, learned.reason(), ct.variants[int(order[0])],
                            calls, table, learned.loto, learned.criteria)


def _scored(results, suite, name: str, ids: list[str], n: int, seed: int, model, mode: str, cache, progress, log,
            why: str, prompt_likelihood: int = 0):
    """The candidates `ids` scored on `n` examples of the new task (and, on the first `prompt_likelihood` of them, their
    prompts themselves): its ChoiceTable (errors name the user's file) and the model calls it cost."""
    with named_errors(Path(suite.path)):
        new = evaluate(_templates(results.config), suite, _model(results, model), limit=n, seed=seed, variants=ids,
                       cache=cache, progress=progress, log=log, report=False, prompt_likelihood=prompt_likelihood)
    nct = choice_table(new.rows, new.tasks, mode)
    if nct is None or name not in nct.tasks:
        raise PromptkitError(f"task '{name}' gave no multiple-choice scores; {why}")
    eng = new.config.get("engine", {})
    calls = {"prompts": int(new.config.get("n_requests", 0)), "continuations": int(eng.get("unique", 0)),
             "from_cache": int(eng.get("cache_hits", 0)), "forward_tokens": int(new.config.get("forward_tokens", 0))}
    return nct, calls
