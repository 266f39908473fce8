"""The end-to-end run, in phases: options → plan → render → execute → collect (→ the run directory)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..backends.base import Backend
from ..engine import distributed
from ..errors import PromptkitError
from ..results.core import Results
from ..results.rundir import claimed, write_run
from .models import check_models, combine, label, model_list, score_model
from .options import PROMPT_LIKELIHOOD, RunOptions, options_from
from .threads import choose as choose_threads
from .plan import make_plan
from .work import render_work


def evaluate(templates=None, suite=None, model: str | Backend | list | None = None, *, limit: int | None = None,
             max_variants: int | None = None, seed: int = 0, variants: list[str] | None = None,
             threads: int | str = "auto", dtype: str = "auto", device: str = "auto", batch_tokens: int | str = "auto",
             cache: str | Path | bool | None = True, calibrate: bool = False, prompt_likelihood: int = PROMPT_LIKELIHOOD,
             trust_remote_code: bool = False,
             device_map: str | dict | None = None, search: str | None = None,
             budget: str | float | None = None, noise: list[str] | None = None, synthetic=None, synthetic_model=None,
             mc_scoring: str = "loglikelihood", base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
             concurrency: int = 4, requests_per_minute: float | None = None, request_timeout: float = 60.0,
             model_revision: str | None = None, out: str | Path | None = None, report: bool = True, analysis=None, progress: bool = True,
             log: Callable[[str], None] = print, timings=None) -> Results:
    """Score every variant of `templates` on every task of `suite` with `model` and return Results; with
    `out`, also write the run directory (the same files `promptkit run` writes).

    templates: None (the built-in library), a directory, a YAML file, a list of them, or TemplateFamily objects.
    suite: None (the built-in 'offline_mc'), a built-in suite name, a YAML path, or a Suite.
    model: None (Gemma 3 270M from PyPI), a model spec (built-in name, hub id, local directory, .gguf file,
        'hf:ID', 'openai:NAME' with base_url for a model behind a server), a loaded Backend to reuse, or a list of them: each model is loaded, scored and released in turn,
        and the rows get a `model` column (see Results.transfer for how prompts carry over between models).
    Every other argument is a field of RunOptions (promptkit.RunOptions documents each).
    Under `accelerate launch` every process scores its share of the requests on its own device; rank 0
    plans, gathers and writes the run directory (docs/guides/distributed.md).
    """
    started = time.time()
    values = {k: v for k, v in locals().items() if k not in ("templates", "suite", "model", "started")}
    ranks = distributed.current(device)  # several only under `accelerate launch` / torchrun
    options = options_from({**values, "noise": noise or []}).validated().for_rank(ranks)
    n_threads, note = choose_threads(options.threads)
    options = replace(options, threads=n_threads)
    if note:
        options.log(note)
    watch = options.timings  # seconds per stage, into config.json
    with claimed(options.out):  # checked before any scoring; removed again if the run fails before writing it
        with watch.stage("task_load"):
            plan = make_plan(templates, suite, options)
        models, notes = model_list(model)
        for note in plan.notes + notes:
            options.log(f"warning: {note}")
        with watch.stage("render"):  # every prompt, once, before any model loads
            work = render_work(plan, options.seed, options.calibrate, options.mc_scoring)
        with watch.stage("model_load"):
            check_models(models, options)  # every model, before the first is scored
        runs = [score_model(m, work, plan, options, ranks, started) for m in models]  # one model in memory at a time
        results = combine(runs, [label(m) for m in models], notes)
        if options.out is not None:
            save(results, options)  # adds the timings, statistics and report included
        else:
            results.config["timings"] = watch.as_dict()
    return results


def save(results: Results, options: RunOptions) -> None:
    """Write the run directory; if that fails, say where the scores still are."""
    try:
        write_run(results, options.out, analysis=options.analysis, report=options.report, log=options.log,
                  timings=options.timings)
    except OSError as exc:
        kept = "the scores are in the result cache, so rerunning with another --out costs seconds" if options.cache else \
            "the Results object returned here still holds everything"
        raise PromptkitError(f"{options.out}: could not write the run directory ({exc.strerror or exc}); {kept}") from None
