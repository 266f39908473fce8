"""The collect phase: scores → the tidy per-example rows, the run's config and the Results object."""

from __future__ import annotations

import time

import pandas as pd

from ..analysis.metrics import example_row, generated_choice_row
from ..backends.base import Backend
from ..engine.distributed import Ranks
from ..prompts.render import noisy_example, sample_of
from ..prompts.variants import Variant
from ..results.core import Results
from ..tasks.core import Task
from .execute import Executed
from .options import RunOptions
from .plan import Plan
from .work import CONTENT_FREE, PROMPT


def collect(plan: Plan, done: Executed, backend: Backend, options: RunOptions, ranks: Ranks, started: float) -> Results:
    """One row per reported item (variant, task, example and its scores), the config that says how the run
    was made, and one rendered sample per variant for reports."""
    seed = options.seed
    cf = {w.calibration_key: s for w, s in zip(done.work, done.scores) if w.role == CONTENT_FREE}
    prompt = prompt_likelihoods(done)
    rows = []
    for w, s in zip(done.work, done.scores):
        if not w.reported:
            continue
        v, t, e = w.variant, w.task, w.example
        row = {"variant": v.id, "family": v.family.name, "task": t.name, "split": t.split, "example": e.id,
               **score_fields(plan, w, s, seed)}
        if options.calibrate and not e.generative:
            row["cf_logprobs"] = [c.logprob for c in cf[w.calibration_key]]
        if w.key in prompt:  # the prompt's own log-likelihood (nats) over its tokens after the start token
            row["prompt_logprob"], row["prompt_tokens"] = prompt[w.key]
        rows.append(row)
    info = variant_info(plan.variants)
    for w in done.work:
        if w.reported and "sample" not in info[w.variant.id]:
            info[w.variant.id]["sample"] = sample_of(w.task, noisy_example(w.variant, w.task, w.example, seed), w.request)
    config = run_config(plan, done, backend, options, ranks, started)
    return Results(pd.DataFrame(rows), task_info(plan.tasks, plan.metrics), info, config)


def prompt_likelihoods(done: Executed) -> dict[tuple[str, str, str], tuple[float, int]]:
    """Per (variant, task, example) whose prompt was scored: its log-likelihood and token count, the shared
    beginning's (scored once per variant and task, example id "") added to the rest's (run.work.with_prompt_likelihoods)."""
    parts = {(w.variant.id, w.task.name, w.request.example): s[0] for w, s in zip(done.work, done.scores) if w.role == PROMPT}
    out = {}
    for (v, t, e), score in parts.items():
        if e:
            shared = parts.get((v, t, ""))
            out[(v, t, e)] = (score.logprob + (shared.logprob if shared else 0.0),
                              score.n_tokens + (shared.n_tokens if shared else 0))
    return out


def score_fields(plan: Plan, item, score, seed: int) -> dict:
    """The score fields of one row: a generation task's metric, a multiple-choice example's log-likelihoods, or (with
    mc_scoring "generation") its generated answer mapped back to a choice."""
    v, t, e = item.variant, item.task, item.example
    if e.generative:
        return plan.metrics[t.name].row(e, score.text)
    if item.request.generative:
        return generated_choice_row(noisy_example(v, t, e, seed), score.text)
    return example_row(noisy_example(v, t, e, seed), score)


def run_config(plan: Plan, done: Executed, backend: Backend, options: RunOptions, ranks: Ranks, started: float) -> dict:
    """config.json: what was run, on what, and what it cost."""
    stats = done.stats
    return {
        "templates": sorted({f.path for f in plan.families}),
        "suite": {"name": plan.suite.name, "path": plan.suite.path},
        "task_origins": {t.name: t.origin for t in plan.tasks},
        "model": backend.describe(),
        "limit": options.limit if options.limit is not None else plan.suite.limit,
        "max_variants": options.max_variants,
        "seed": options.seed,
        "calibrate": options.calibrate,
        "prompt_likelihood": options.prompt_likelihood if options.search is None else 0,
        "mc_scoring": options.mc_scoring,
        "n_variants": len(plan.variants),
        "n_requests": done.n_requests,
        "forward_tokens": stats.forward_tokens,
        "processes": ranks.world,
        "noise": list(options.noise),
        **({"search": done.search} if done.search is not None else {}),
        **({"synthetic": done.synthetic} if done.synthetic is not None else {}),
        "engine": {**stats.as_dict(), "notes": stats.notes, "batch_tokens": getattr(backend, "batch_tokens", None),
                   "cache": done.cache_path},
        "wall_seconds": round(time.time() - started, 2),
    }


def task_info(tasks: list[Task], metrics: dict | None = None) -> dict[str, dict]:
    metrics = metrics or {}
    return {
        t.name: {"split": t.split, "chance": t.chance, "n_examples": len(t.examples), "instruction": t.instruction,
                 "source": t.source, "origin": t.origin, "cluster": t.cluster, "kind": "generation" if t.generative else "multiple_choice",
                 "n_demos": len(t.demos), "features": {k: round(v, 4) for k, v in t.features().items()},
                 **({"metric": metrics[t.name].label} if t.name in metrics else {})}
        for t in tasks
    }


def variant_info(variants: list[Variant]) -> dict[str, dict]:
    return {v.id: {"family": v.family.name, "values": v.values, "path": v.family.path} for v in variants}
