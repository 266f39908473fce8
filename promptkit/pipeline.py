"""The end-to-end run: templates × suite × model → Results (and a run directory)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd

from . import engine
from .backends.hf import HFBackend
from .cache import ResultCache
from .errors import PromptkitError
from .paths import cache_dir
from .metrics import CONTENT_FREE_INPUT, example_row
from .render import render
from .results import Results
from .tasks import Example, Suite, Task, load_suite, load_tasks
from .templates import TemplateFamily, load_templates
from .variants import Variant, expand_all


def evaluate(
    templates=None,
    suite: str | Path | Suite | None = None,
    model: str | HFBackend | None = None,
    *,
    limit: int | None = None,
    max_variants: int | None = None,
    seed: int = 0,
    dtype: str = "auto",
    device: str = "auto",
    batch_tokens: int | str = "auto",
    cache: str | Path | bool | None = True,
    calibrate: bool = False,
    trust_remote_code: bool = False,
    out: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Results:
    """Score every variant of `templates` on every task of `suite` with `model` and return Results.

    templates: None (built-in library), a directory, a YAML file, a list of them, or TemplateFamily objects.
    suite: None (built-in 'bigbench_mc'), a built-in suite name, a YAML path, or a Suite.
    model: None (Gemma 3 270M from PyPI), a hub id, a local directory, a .gguf file, or an HFBackend to reuse.
    cache: True (the shared cache in the user cache directory), a SQLite path, or False/None for none.
        Results are keyed by the model's fingerprint, so a cache never serves one model's scores for another.
    trust_remote_code: let a hub model run the Python code in its repository (off unless you pass True).
    calibrate: also score each variant on a content-free input ("N/A") with each task's choice sets,
        for the `calibrated` scoring mode (Zhao et al. 2021); once per variant × task × choice set.
    """
    started = time.time()
    if out is not None:
        _check_writable(Path(out))  # before any scoring, so a bad --out cannot cost a run
    families = templates if _is_families(templates) else load_templates(templates)
    variants = expand_all(families, max_variants, seed)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    tasks = load_tasks(suite, limit, seed)
    # render everything before loading the model, so template mistakes surface in seconds
    work = [(v, t, e) for t in tasks for v in variants for e in t.examples]
    requests = [render(v, t, e) for v, t, e in work]
    content_free: dict[tuple, int] = {}
    if calibrate:
        for v, t, e in work:
            key = (v.id, t.name, tuple(e.choices or ()))
            if key not in content_free:
                content_free[key] = len(requests)
                requests.append(render(v, t, Example("content-free", CONTENT_FREE_INPUT, list(e.choices or []), 0)))
    backend = model if isinstance(model, HFBackend) else _load_backend(model, progress, dtype=dtype, device=device,
                                                                         batch_tokens=batch_tokens, trust_remote_code=trust_remote_code, log=log)
    store = None
    if cache:
        path = default_cache_path() if cache is True else Path(cache)
        store = ResultCache(path, backend.fingerprint)
    stats = engine.EngineStats()
    try:
        scores = engine.score(requests, backend, progress=progress, cache=store, stats=stats)
    finally:
        if store is not None:
            store.close()
            if store.write_error:
                stats.notes.append(store.write_error)
                log(f"warning: {store.write_error}")
    rows = [
        {"variant": v.id, "family": v.family.name, "task": t.name, "split": t.split, "example": e.id, **example_row(e, s)}
        for (v, t, e), s in zip(work, scores)
    ]
    if calibrate:
        for row, (v, t, e) in zip(rows, work):
            row["cf_logprobs"] = [s.logprob for s in scores[content_free[(v.id, t.name, tuple(e.choices or ()))]]]
    config = {
        "templates": sorted({f.path for f in families}),
        "suite": {"name": suite.name, "path": suite.path},
        "model": backend.describe(),
        "limit": limit if limit is not None else suite.limit,
        "max_variants": max_variants,
        "seed": seed,
        "calibrate": calibrate,
        "n_variants": len(variants),
        "n_requests": len(requests),
        "forward_tokens": stats.forward_tokens,
        "engine": {**stats.as_dict(), "notes": stats.notes, "batch_tokens": backend.batch_tokens,
                   "cache": str(store.path) if store is not None else None},
        "wall_seconds": round(time.time() - started, 2),
    }
    # one rendered example per variant (first example of the first task), kept for reports
    samples = {}
    for (v, t, e), request in zip(work, requests):
        samples.setdefault(v.id, {"task": t.name, "example": e.id, "prompt": request.prompt,
                                  "continuations": list(request.continuations), "correct": e.correct_indices()})
    info = variant_info(variants)
    for vid, sample in samples.items():
        info[vid]["sample"] = sample
    results = Results(pd.DataFrame(rows), task_info(tasks), info, config)
    if out is not None:
        try:
            results.save(out)
        except OSError as exc:
            kept = "the scores are in the result cache, so rerunning with another --out costs seconds" if store else \
                "the Results object returned here still holds everything"
            raise PromptkitError(f"{out}: could not write the run directory ({exc.strerror or exc}); {kept}") from None
    return results


def _load_backend(model, progress: bool, **kwargs) -> HFBackend:
    """The model, with transformers' own loading bars only when progress is wanted."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        return HFBackend(model, **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".promptkit-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PromptkitError(f"{out}: cannot write the run directory here ({exc.strerror or exc}); "
                             "pick another with --out DIR") from None


def default_cache_path() -> Path:
    return cache_dir("results") / "results.sqlite"


def _is_families(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, TemplateFamily) for v in value)


def task_info(tasks: list[Task]) -> dict[str, dict]:
    return {
        t.name: {"split": t.split, "chance": t.chance, "n_examples": len(t.examples), "instruction": t.instruction,
                 "source": t.source, "cluster": t.cluster}
        for t in tasks
    }


def variant_info(variants: list[Variant]) -> dict[str, dict]:
    return {v.id: {"family": v.family.name, "values": v.values, "path": v.family.path} for v in variants}
