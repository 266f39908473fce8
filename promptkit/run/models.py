"""Several models in one run: every model checked before any scoring, each loaded, scored and released in turn
(one in memory at a time), and their results combined into one table with a `model` column."""

from __future__ import annotations

import pandas as pd

from ..backends.base import Backend, check_backend, is_backend, load_backend
from ..engine.distributed import Ranks
from ..errors import ModelError, PromptkitError
from ..results.core import Results
from .collect import collect
from .execute import execute
from .options import RunOptions
from .plan import Plan
from .threads import apply as apply_threads
from .work import WorkItem, with_chat


def model_list(model) -> tuple[list, list[str]]:
    """The models of a run (one spec, a loaded backend, or a list of them), duplicates merged with a note."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise PromptkitError("model=[] names no model; pass a model spec, a loaded backend, or a list of them")
    kept, notes, seen = [], [], set()
    for m in models:
        if isinstance(m, str) and not m.strip():
            raise PromptkitError(f"model {m!r} (--model {m!r}) names no model; leave --model out for the default model, or "
                                 "give a spec (`promptkit models` lists the built-in ones)")
        key = id(m) if is_backend(m) else (m or "default")
        if key in seen:
            notes.append(f"model '{label(m)}' was given more than once; it runs once")
            continue
        seen.add(key)
        kept.append(m)
    return kept, notes


def label(model) -> str:
    """How a model is named in the results: its spec, or a loaded backend's name."""
    return model.name if is_backend(model) else (model or "default")


def check_models(models: list, options: RunOptions) -> None:
    """Each model spec checked before anything is scored, so a typo in the third model cannot cost the first two."""
    options.check_models(len(models))
    for m in models:
        if is_backend(m):
            continue
        try:
            check_backend(m, **options.load_options())
        except PromptkitError as exc:
            if label(m) in str(exc):  # the message names the model already
                raise
            raise ModelError(f"model '{label(m)}' cannot be used: {exc}") from None


def score_model(model, work: list[WorkItem], plan: Plan, options: RunOptions, ranks: Ranks, started: float) -> Results:
    """One model through the run: load, apply its chat template, execute, collect; released afterwards unless
    the caller handed in a loaded backend (then it is the caller's to keep)."""
    watch = options.timings
    with watch.stage("model_load"):
        backend: Backend = load_backend(model, **options.load_options())
    apply_threads(options.threads)  # a number by now (evaluate chose it)
    try:
        with watch.stage("render"):
            items = with_chat(work, backend)
        with watch.stage("scoring"):
            done = execute(items, plan, backend, options, ranks)
        with watch.stage("collect"):
            return collect(plan, done, backend, options, ranks, started)
    finally:
        close = getattr(backend, "close", None)
        if close is not None and not is_backend(model):
            close()


def combine(runs: list[Results], labels: list[str], notes: list[str]) -> Results:
    """One Results for several models: rows with a `model` column, the config of each model under `models`,
    engine counts summed. Models whose weights turn out identical are merged with a note; models that saw
    different examples are refused (their scores could not be paired)."""
    kept, names, seen = [], [], {}
    for run, name in zip(runs, labels):
        fingerprint = run.config["model"].get("fingerprint")
        if fingerprint and fingerprint in seen:
            notes.append(f"models '{seen[fingerprint]}' and '{name}' are the same weights; '{name}' was merged into it")
            continue
        seen[fingerprint] = name
        kept.append(run)
        names.append(name)
    if len(kept) == 1:
        kept[0].config["engine"]["notes"] += notes
        return kept[0]
    examples = [set(zip(r.rows["task"], r.rows["example"])) for r in kept]
    if any(e != examples[0] for e in examples[1:]):
        raise PromptkitError("the models saw different examples, so their scores cannot be compared pairwise; run them "
                             "with the same suite, --limit and --seed")
    rows = pd.concat([r.rows.assign(model=n) for r, n in zip(kept, names)], ignore_index=True)
    first = kept[0].config
    engines = [r.config["engine"] for r in kept]
    engine = {k: sum(e[k] for e in engines) for k, v in engines[0].items() if isinstance(v, (int, float)) and k != "batch_tokens"}
    engine.update(notes=list(dict.fromkeys(n for e in engines for n in e["notes"])) + notes, cache=engines[0]["cache"])
    config = {**first, "model": first["model"], "engine": engine,
              "models": [{"label": n, **r.config["model"], "engine": r.config["engine"], "forward_tokens": r.config["forward_tokens"]}
                         for r, n in zip(kept, names)],
              "n_requests": sum(r.config["n_requests"] for r in kept),
              "forward_tokens": sum(r.config["forward_tokens"] for r in kept),
              "wall_seconds": max(r.config["wall_seconds"] for r in kept)}
    return Results(rows, kept[0].tasks, kept[0].variants, config)
