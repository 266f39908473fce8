"""The end-to-end run: templates × suite × model → Results (and a run directory)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd

from ..engine import distributed
from ..engine import plan as engine
from . import search as searching
from ..backends.hf import HFBackend
from ..engine.cache import ResultCache
from ..errors import PromptkitError
from ..paths import cache_dir
from ..analysis.metrics import CONTENT_FREE_INPUT, choose, example_row
from ..prompts.render import apply_chat, noisy_example, render
from ..results.core import Results
from ..tasks.core import Example, Suite, Task
from ..tasks.suites import load_suite, load_tasks
from ..prompts.templates import TemplateFamily, load_templates
from ..prompts.noise import parse as parse_noise
from ..prompts.variants import Variant, expand_all, with_noise


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
    device_map: str | dict | None = None,
    search: str | None = None,
    budget: str | float | None = None,
    noise: list[str] | None = None,
    synthetic: dict | None = None,
    synthetic_model: str | HFBackend | None = None,
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
    search: spend a budget where the ranking is uncertain instead of scoring every variant on every
        example: "halving", "racing", "thompson" (or "exhaustive"); see promptkit.search. Only the
        selection tasks steer it; the chosen variant is then scored on the held-out tasks.
    budget: with `search`, a fraction of the exhaustive forward tokens (0.25, "25%") or a token count ("2e6").
    device_map: spread one model over several GPUs of this machine (transformers' device_map, e.g. "auto").
    Under `accelerate launch` every process scores its share of the requests on its own device; rank 0
    plans, gathers and writes the run directory (see README, "Several GPUs or machines").
    noise: noise specs ("typos:0.05", "word_drop:0.1", "casing:0.1", "whitespace:0.1", "choices",
        "prompt.typos:0.05", ...): every sampled variant is also run under each, on the same examples
        with the same noise; see Results.robustness() and Results.rank_by().
    synthetic: options of the synthetic demonstrations that variants with `demo_source: synthetic` show
        (promptkit.synthetic.SyntheticConfig fields: n, template, max_new_tokens, min_chars, max_chars,
        near_duplicate, filters); synthetic_model: the model that writes them (default: `model`).
    calibrate: also score each variant on a content-free input ("N/A") with each task's choice sets,
        for the `calibrated` scoring mode (Zhao et al. 2021); once per variant × task × choice set.
    """
    started = time.time()
    if search is not None and search not in searching.STRATEGIES:
        raise PromptkitError(f"unknown search strategy '{search}'; choose one of {', '.join(searching.STRATEGIES)}")
    if budget is not None and search is None:
        raise PromptkitError("a budget needs a search strategy: pass --search halving|racing|thompson (search=...)")
    if search == "exhaustive" and budget is None:
        search = None  # every variant on every example: the plain run
    if noise and (search is not None or calibrate):
        raise PromptkitError("--noise cannot be combined with --search or --calibrate yet: run the noise conditions "
                             "on the variants you want to compare")
    if search is not None and calibrate:
        raise PromptkitError("--calibrate cannot be combined with --search yet: run the search, then a calibrated run "
                             "of the variants it kept")
    ranks = distributed.current(device)  # several only under `accelerate launch` / torchrun
    if ranks.active:
        if device in ("auto", "cuda"):  # each process on its own GPU (or the CPU)
            device = ranks.device or device
        progress = progress and ranks.is_main
        log = log if ranks.is_main else (lambda msg: None)
        if not ranks.is_main:
            out = None  # rank 0 writes the run directory
    if out is not None:
        _check_writable(Path(out))  # before any scoring, so a bad --out cannot cost a run
    families = templates if _is_families(templates) else load_templates(templates)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    tasks = load_tasks(suite, limit, seed)
    families, left_out = fitting_families(families, tasks, builtin=templates is None)
    try:
        specs = list(dict.fromkeys(p.spec for p in map(parse_noise, noise or []) if p is not None))
    except ValueError as exc:
        raise PromptkitError(f"--noise: {exc}") from None
    variants = with_noise(expand_all(families, max_variants, seed), specs)
    notes = left_out + check_demonstrations(variants, tasks)
    for note in notes:
        log(f"warning: {note}")
    metrics = {}
    if any(t.generative for t in tasks):
        from ..analysis.text_metrics import load_metric

        metrics = {t.name: load_metric(t.metric) for t in tasks if t.generative}  # a bad name fails before the model loads
    if search is not None and metrics:
        raise PromptkitError(f"--search works on multiple-choice tasks only for now; tasks {', '.join(metrics)} are generative. "
                             "Run without --search, or search a suite of multiple-choice tasks")
    # render everything before loading the model, so template mistakes surface in seconds
    work = [(v, t, e) for t in tasks for v in variants for e in t.examples]
    requests = [render(v, t, e, seed) for v, t, e in work]
    synthesize = [i for i, (v, _, _) in enumerate(work)
                  if v.values.get("demo_source") == "synthetic" and int(v.values.get("shots", 0) or 0) > 0]
    synth_cfg = synthetic_config(synthetic, seed) if synthesize else None
    if synth_cfg is not None and calibrate:
        raise PromptkitError("--calibrate cannot be combined with synthetic demonstrations yet (the content-free prompts "
                             "would not show them); calibrate a run of the other demonstration sources")
    content_free: dict[tuple, int] = {}
    if calibrate:
        for v, t, e in work:
            key = (v.id, t.name, tuple(e.choices or ()))
            if not e.generative and key not in content_free:
                content_free[key] = len(requests)
                requests.append(render(v, t, Example("content-free", CONTENT_FREE_INPUT, list(e.choices or []), 0), seed))
    backend = model if isinstance(model, HFBackend) else _load_backend(model, progress, dtype=dtype, device=device,
                                                                         batch_tokens=batch_tokens, trust_remote_code=trust_remote_code,
                                                                         device_map=device_map, log=log)
    requests = apply_chat(requests, backend.tokenizer, backend.name)
    store = None
    if cache:
        path = default_cache_path() if cache is True else Path(cache)
        store = ResultCache(path, backend.fingerprint)
    stats = engine.EngineStats(notes=list(notes))
    searched = synthesized = None
    try:
        if synth_cfg is not None:  # demonstrations written by a model, then the prompts that show them
            synthesized = _synthesize(tasks, backend, synth_cfg, synthetic_model, store, stats, progress, ranks, log,
                                      dtype=dtype, device=device, trust_remote_code=trust_remote_code)
            shown = apply_chat([render(*work[i], seed) for i in synthesize], backend.tokenizer, backend.name)
            for i, request in zip(synthesize, shown):
                requests[i] = request
            for k in sorted({int(work[i][0].values.get("shots", 0)) for i in synthesize}):
                for t in tasks:
                    if len(t.synthetic) < k:
                        note = (f"task '{t.name}' has {len(t.synthetic)} synthetic demonstration(s) after filtering; "
                                f"variants with demo_source=synthetic, shots={k} show {len(t.synthetic)}")
                        stats.notes.append(note)
                        log(f"warning: {note}")
        if search is None:
            gen = [i for i, r in enumerate(requests) if r.generative]
            scores: list = [None] * len(requests)
            texts = engine.generate([requests[i] for i in gen], backend, progress=progress, cache=store, stats=stats,
                                    ranks=ranks) if gen else []
            for i, g in zip(gen, texts):
                scores[i] = g
            choice = [i for i, r in enumerate(requests) if not r.generative]
            for i, s in zip(choice, engine.score([requests[i] for i in choice], backend, progress=progress, cache=store,
                                                 stats=stats, ranks=ranks)):
                scores[i] = s
        else:
            score_some = lambda idx: engine.score([requests[i] for i in idx], backend, progress=False, cache=store,
                                                  stats=stats, ranks=ranks)
            kept, scores, searched = _run_search(search, budget, seed, work, requests, variants, tasks, backend,
                                                 score_some, progress)
            work = [work[i] for i in kept]
    finally:
        if store is not None:
            store.close()
            if store.write_error:
                stats.notes.append(store.write_error)
                log(f"warning: {store.write_error}")
    rows = [
        {"variant": v.id, "family": v.family.name, "task": t.name, "split": t.split, "example": e.id,
         **(metrics[t.name].row(e, s.text) if e.generative else example_row(noisy_example(v, t, e, seed), s))}
        for (v, t, e), s in zip(work, scores)
    ]
    if calibrate:
        for row, (v, t, e) in zip(rows, work):
            if not e.generative:
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
        "processes": ranks.world,
        "noise": specs,
        **({"search": searched} if searched is not None else {}),
        **({"synthetic": {**synthesized[1], "counts": {n: st.counts for n, st in synthesized[0].items()},
                          "candidates": [{"task": c.task, "answer": c.answer, "input": c.input, "dropped_by": c.dropped_by}
                                         for st in synthesized[0].values() for c in st.candidates]}}
           if synthesized is not None else {}),
        "engine": {**stats.as_dict(), "notes": stats.notes, "batch_tokens": backend.batch_tokens,
                   "cache": str(store.path) if store is not None else None},
        "wall_seconds": round(time.time() - started, 2),
    }
    # one rendered example per variant (first example of the first task), kept for reports
    samples = {}
    for (v, t, e), request in zip(work, requests):
        samples.setdefault(v.id, sample_of(t, noisy_example(v, t, e, seed), request))
    info = variant_info(variants)
    for vid, sample in samples.items():
        info[vid]["sample"] = sample
    results = Results(pd.DataFrame(rows), task_info(tasks, metrics), info, config)
    if out is not None:
        try:
            results.save(out)
            if synthesized is not None:
                from . import synthetic as synth

                synth.save(synthesized[0], Path(out))
        except OSError as exc:
            kept = "the scores are in the result cache, so rerunning with another --out costs seconds" if store else \
                "the Results object returned here still holds everything"
            raise PromptkitError(f"{out}: could not write the run directory ({exc.strerror or exc}); {kept}") from None
    return results


def synthetic_config(options, seed: int):
    """SyntheticConfig from evaluate()'s `synthetic` argument (None, a dict of its fields, or one)."""
    from .synthetic import SyntheticConfig

    if isinstance(options, SyntheticConfig):
        return options
    fields = set(SyntheticConfig.__dataclass_fields__)
    unknown = set(options or {}) - fields
    if unknown:
        raise PromptkitError(f"synthetic: unknown option(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(fields))}")
    cfg = SyntheticConfig(**{"seed": seed, **(options or {})})
    cfg.filters = tuple(cfg.filters)
    cfg.check()
    return cfg


def _synthesize(tasks, backend, cfg, writer_spec, store, stats, progress, ranks, log, **load):
    """Synthetic demonstrations for every task, written by `writer_spec` (default: the model under test)."""
    from . import synthetic as synth

    writer, writer_cache = None, None
    if writer_spec is not None:
        writer = writer_spec if isinstance(writer_spec, HFBackend) else _load_backend(writer_spec, progress, log=log, **load)
        if store is not None:
            writer_cache = ResultCache(store.path, writer.fingerprint)
    try:
        sets = synth.make(tasks, backend, cfg, cache=store, stats=stats, progress=progress, ranks=ranks,
                          writer=writer, writer_cache=writer_cache)
    finally:
        if writer_cache is not None:
            writer_cache.close()
    kept = sum(len(t.synthetic) for t in tasks)
    log(f"promptkit: {kept} synthetic demonstrations kept of {sum(len(s.candidates) for s in sets.values())} written")
    info = {"n": cfg.n, "template": cfg.template, "filters": list(cfg.filters), "seed": cfg.seed,
            "writer": (writer or backend).name, "min_chars": cfg.min_chars, "max_chars": cfg.max_chars,
            "near_duplicate": cfg.near_duplicate}
    return sets, info


def sample_of(task: Task, example: Example, request) -> dict:
    """One rendered request as reports show it."""
    sample = {"task": task.name, "example": example.id, "prompt": request.prompt,
              "continuations": list(request.continuations), "correct": example.correct_indices()}
    if request.generative:
        sample.update(references=example.references(), stop=list(request.stop), max_new_tokens=request.max_new_tokens)
    return sample


def fitting_families(families: list[TemplateFamily], tasks: list[Task], builtin: bool) -> tuple[list[TemplateFamily], list[str]]:
    """The families that can prompt every task of the suite (by their `kinds`), and notes on what was
    left out. Built-in families that cannot are left out, as are built-in few-shot families when a task
    has no demonstrations held apart; a user's family that cannot is an error (see check_demonstrations)."""
    needed = {"generation" if t.generative else "multiple_choice" for t in tasks}
    fit = [f for f in families if needed <= set(f.kinds)]
    if builtin and fit:
        bare = [t.name for t in tasks if not t.demos]
        few = [f for f in fit if any(v for v in f.axes.get("shots", [0]))]
        if bare and few and len(few) < len(fit):
            return [f for f in fit if f not in few], [
                f"built-in few-shot famil{'ies' if len(few) > 1 else 'y'} {', '.join(f.name for f in few)} left out: "
                f"task(s) {', '.join(bare[:5])} have no examples held apart as demonstrations (every example is "
                "evaluated; lower --limit to keep some apart)"]
        return fit, []
    for f in families:
        if not needed <= set(f.kinds):
            kind = sorted(needed - set(f.kinds))[0]
            names = [t.name for t in tasks if ("generation" if t.generative else "multiple_choice") == kind]
            raise PromptkitError(f"{f.path}: template family '{f.name}' is for {' and '.join(f.kinds)} tasks, but the "
                                 f"suite's tasks {', '.join(names)} are {kind} tasks; leave the family out, or run it on "
                                 "a suite of the kind it declares under `kinds:`")
    return families, []


def check_demonstrations(variants: list[Variant], tasks: list[Task]) -> list[str]:
    """Few-shot variants need demonstrations held apart from the evaluated examples: none at all is an
    error; fewer than asked is a warning (the variants use what there is) recorded with the run."""
    notes = [f"task '{t.name}': {t.dropped_demos} demonstration row(s) left out of the pool (no valid answer: an "
             "unlabelled row, or a label outside the choices)" for t in tasks if t.dropped_demos]
    real = [v for v in variants if v.values.get("demo_source", "real") == "real"]
    for k in sorted({int(v.values.get("shots", 0) or 0) for v in real} - {0}):
        for t in tasks:
            if not t.demos:
                raise PromptkitError(
                    f"variants ask for {k} demonstration(s), but task '{t.name}' has none held apart: all its "
                    f"{len(t.examples)} examples are evaluated. Lower --limit (examples beyond the limit become "
                    "demonstrations), give an hf task a `demo_split:`, or use variants with shots: 0")
            if len(t.demos) < k:
                notes.append(f"task '{t.name}' has {len(t.demos)} demonstration(s) held apart; variants with shots={k} "
                             f"use {len(t.demos)}")
    return notes


def _run_search(strategy, budget, seed, work, requests, variants, tasks, backend, score_some, progress):
    """Run a search strategy over the selection tasks, then score the chosen variant on the held-out
    tasks. Returns the indices of the scored work items, their scores, and what the search did.

    Every request is charged its uncached forward tokens (prompt once, plus each continuation), so
    a warm result cache does not make a strategy look cheaper than it is."""
    import numpy as np

    index = {(v.id, t.name, e.id): i for i, (v, t, e) in enumerate(work)}
    tokens = _request_tokens(requests, backend)
    exhaustive = sum(tokens)
    try:
        total = searching.parse_budget(1.0 if budget is None else budget, exhaustive)
    except ValueError as exc:
        raise PromptkitError(f"--budget: {exc}") from None
    selection = [t for t in tasks if t.split == "selection"]
    held = [t for t in tasks if t.split != "selection"]
    # the chosen variant's held-out scores are paid for out of the budget, set aside first
    reserve = max((sum(tokens[index[(v.id, t.name, e.id)]] for t in held for e in t.examples) for v in variants), default=0)
    if total - reserve <= 0 or not selection:
        raise PromptkitError(f"budget of {total:,} forward tokens leaves nothing for the search ({reserve:,} are set aside "
                             f"to score the chosen variant on the held-out tasks; exhaustive is {exhaustive:,}); "
                             "raise --budget" if selection else "the suite has no selection tasks to search on")
    cells = searching.cell_order([t.name for t in selection], [len(t.examples) for t in selection], seed)
    item = lambda v, c: index[(variants[v].id, selection[cells[c][0]].name, selection[cells[c][0]].examples[cells[c][1]].id)]
    cost = np.array([[tokens[item(v, c)] for c in range(len(cells))] for v in range(len(variants))], dtype=np.int64)
    chance = np.array([selection[t].chance for t, _ in cells], dtype=float)
    scored: dict[int, list] = {}
    from tqdm.auto import tqdm

    with tqdm(total=total - reserve, unit="tok", desc=f"search ({strategy})", disable=not progress, dynamic_ncols=True) as bar:
        def oracle(pairs):
            idx = [item(v, c) for v, c in pairs]
            got = score_some(idx)
            bar.update(sum(tokens[i] for i in idx))
            out = []
            for i, s in zip(idx, got):
                scored[i] = s
                out.append(float(choose(s) in work[i][2].correct_indices()))
            return out

        result = searching.run(strategy, cost, chance, oracle, total - reserve, seed=seed, blocks=len(selection))
    chosen = variants[result.chosen]
    held_idx = [index[(chosen.id, t.name, e.id)] for t in held for e in t.examples]
    if held_idx:
        for i, s in zip(held_idx, score_some(held_idx)):
            scored[i] = s
    kept = sorted(scored)
    info = {
        "strategy": strategy, "seed": seed, "budget_tokens": total, "exhaustive_tokens": exhaustive,
        "used_tokens": result.used + sum(tokens[i] for i in held_idx), "search_tokens": result.used,
        "held_out_tokens": sum(tokens[i] for i in held_idx),
        "chosen": chosen.id, "worst": None if result.worst is None else variants[result.worst].id,
        "alive": [variants[v].id for v in result.alive],
        "cells": {variants[v].id: n for v, n in enumerate(result.n_cells)},
        "estimates": {variants[v].id: m for v, m in enumerate(result.means) if result.n_cells[v]},
        "ranking": [variants[v].id for v in result.ranking() if result.n_cells[v]],
        "history": result.history,
    }
    return kept, [scored[i] for i in kept], info


def _request_tokens(requests, backend) -> list[int]:
    """Forward tokens each request costs without a cache: its prompt once, plus every continuation."""
    prompts = list(dict.fromkeys(r.prompt for r in requests))
    per_prompt = dict(zip(prompts, engine.token_counts(backend, prompts)))
    conts = list(dict.fromkeys(c for r in requests for c in r.continuations))
    per_cont = dict(zip(conts, engine.token_counts(backend, conts)))
    return [per_prompt[r.prompt] + 1 + sum(per_cont[c] for c in r.continuations) for r in requests]


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


def task_info(tasks: list[Task], metrics: dict | None = None) -> dict[str, dict]:
    metrics = metrics or {}
    return {
        t.name: {"split": t.split, "chance": t.chance, "n_examples": len(t.examples), "instruction": t.instruction,
                 "source": t.source, "cluster": t.cluster, "kind": "generation" if t.generative else "multiple_choice",
                 "n_demos": len(t.demos), **({"metric": metrics[t.name].label} if t.name in metrics else {})}
        for t in tasks
    }


def variant_info(variants: list[Variant]) -> dict[str, dict]:
    return {v.id: {"family": v.family.name, "values": v.values, "path": v.family.path} for v in variants}
