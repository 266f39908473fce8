"""The execute phase: the work list through the backend contract and the engine (result cache, dedupe,
sharding): synthetic demonstrations first when variants show them, then every request, or a budgeted search."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import Backend, load_backend
from ..engine import cache as result_cache
from ..engine import plan as engine
from ..engine.distributed import Ranks
from .options import RunOptions
from .plan import Plan
from .search import run_search
from .synthetic import config_from, make as make_synthetic
from .work import SYNTHETIC_DEMO, WorkItem, rerender, with_prompt_likelihoods


@dataclass
class Executed:
    """What the backend returned: one score (list of ContinuationScores, or a Generation) per item of `work`
    (a search keeps only the items it scored), and what it cost."""

    work: list[WorkItem]
    scores: list
    stats: engine.EngineStats
    n_requests: int
    cache_path: str | None = None
    search: dict | None = None
    synthetic: dict | None = None
    notes: list[str] = field(default_factory=list)


def open_cache(cache, backend: Backend) -> result_cache.ResultCache | None:
    """The result cache the options name (True: the shared one in the user cache directory), keyed by this backend."""
    if not cache:
        return None
    path = result_cache.default_cache_path() if cache is True else Path(cache)
    return result_cache.ResultCache(path, backend.fingerprint)


def execute(work: list[WorkItem], plan: Plan, backend: Backend, options: RunOptions, ranks: Ranks) -> Executed:
    """Score (or generate) every item, committing to the result cache batch by batch; the cache is closed
    however the run ends, so an interrupted run resumes from what it finished."""
    stats = engine.EngineStats(notes=list(plan.notes))
    store = open_cache(options.cache, backend)
    n_requests, searched, synthetic = len(work), None, None
    try:
        if any(w.role == SYNTHETIC_DEMO for w in work):
            synthetic = synthesize(plan, backend, options, store, stats, ranks)
            work = rerender(work, options.seed, backend, options.mc_scoring)
        if options.search is None:
            work = with_prompt_likelihoods(work, options.prompt_likelihood)
            n_requests = len(work)
            scores = score_all([w.request for w in work], backend, store, stats, options.progress, ranks)
        else:
            score_some = lambda requests: engine.score(requests, backend, progress=False, cache=store, stats=stats, ranks=ranks)
            work, scores, searched = run_search(work, plan, backend, options, score_some)
    finally:
        if store is not None:
            store.close()
            if store.write_error:
                stats.notes.append(store.write_error)
                options.log(f"warning: {store.write_error}")
    return Executed(work, scores, stats, n_requests, str(store.path) if store is not None else None, searched, synthetic)


def score_all(requests: list, backend: Backend, store, stats, progress: bool, ranks: Ranks) -> list:
    """Generations for generative requests and continuation scores for the rest, in request order."""
    scores: list = [None] * len(requests)
    gen = [i for i, r in enumerate(requests) if r.generative]
    if gen:
        texts = engine.generate([requests[i] for i in gen], backend, progress=progress, cache=store, stats=stats, ranks=ranks)
        for i, g in zip(gen, texts):
            scores[i] = g
    choice = [i for i, r in enumerate(requests) if not r.generative]
    for i, s in zip(choice, engine.score([requests[i] for i in choice], backend, progress=progress, cache=store,
                                         stats=stats, ranks=ranks)):
        scores[i] = s
    return scores


def synthesize(plan: Plan, backend: Backend, options: RunOptions, store, stats, ranks: Ranks) -> dict:
    """Synthetic demonstrations for every task, written by `options.synthetic_model` (default: the model
    under test) and attached to the tasks; returns what the run records of them."""
    cfg = config_from(options.synthetic, options.seed)
    writer, writer_cache = None, None
    if options.synthetic_model is not None:
        writer = load_backend(options.synthetic_model, **{**options.load_options(), "batch_tokens": "auto", "device_map": None})
        if store is not None:
            writer_cache = result_cache.ResultCache(store.path, writer.fingerprint)
    try:
        sets = make_synthetic(plan.tasks, backend, cfg, cache=store, stats=stats, progress=options.progress, ranks=ranks,
                              writer=writer, writer_cache=writer_cache)
    finally:
        if writer_cache is not None:
            writer_cache.close()
    kept = sum(len(t.synthetic) for t in plan.tasks)
    options.log(f"promptkit: {kept} synthetic demonstrations kept of {sum(len(s.candidates) for s in sets.values())} written")
    for k in sorted({int(v.values.get("shots", 0)) for v in plan.synthetic_variants}):
        for t in plan.tasks:
            if len(t.synthetic) < k:
                note = (f"task '{t.name}' has {len(t.synthetic)} synthetic demonstration(s) after filtering; "
                        f"variants with demo_source=synthetic, shots={k} show {len(t.synthetic)}")
                stats.notes.append(note)
                options.log(f"warning: {note}")
    return {"n": cfg.n, "template": cfg.template, "filters": list(cfg.filters), "seed": cfg.seed,
            "writer": (writer or backend).name, "min_chars": cfg.min_chars, "max_chars": cfg.max_chars,
            "near_duplicate": cfg.near_duplicate, "counts": {n: s.counts for n, s in sets.items()},
            "candidates": [{"task": c.task, "answer": c.answer, "input": c.input, "dropped_by": c.dropped_by,
                            "id": c.id, "choices": c.choices, "target": c.target}
                           for s in sets.values() for c in s.candidates]}
