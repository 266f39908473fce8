"""The end-to-end run, in phases: options → plan → render → execute → collect (→ the run directory)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..backends.base import Backend, load_backend
from ..engine import distributed
from ..errors import PromptkitError
from ..results.core import Results
from ..results.rundir import check_writable, write_run
from .collect import collect
from .execute import Executed, execute
from .options import RunOptions, options_from
from .plan import make_plan
from .work import render_work, with_chat


def evaluate(templates=None, suite=None, model: str | Backend | None = None, *, limit: int | None = None,
             max_variants: int | None = None, seed: int = 0, dtype: str = "auto", device: str = "auto",
             batch_tokens: int | str = "auto", cache: str | Path | bool | None = True, calibrate: bool = False,
             trust_remote_code: bool = False, device_map: str | dict | None = None, search: str | None = None,
             budget: str | float | None = None, noise: list[str] | None = None, synthetic=None, synthetic_model=None,
             out: str | Path | None = None, report: bool = True, analysis=None, progress: bool = True,
             log: Callable[[str], None] = print) -> Results:
    """Score every variant of `templates` on every task of `suite` with `model` and return Results; with
    `out`, also write the run directory (the same files `promptkit run` writes).

    templates: None (the built-in library), a directory, a YAML file, a list of them, or TemplateFamily objects.
    suite: None (the built-in 'bigbench_mc'), a built-in suite name, a YAML path, or a Suite.
    model: None (Gemma 3 270M from PyPI), a model spec (built-in name, hub id, local directory, .gguf file,
        'hf:ID'), or a loaded Backend to reuse.
    Every other argument is a field of RunOptions (promptkit.RunOptions documents each).
    Under `accelerate launch` every process scores its share of the requests on its own device; rank 0
    plans, gathers and writes the run directory (see README, "Several GPUs or machines").
    """
    started = time.time()
    values = {k: v for k, v in locals().items() if k not in ("templates", "suite", "model", "started")}
    ranks = distributed.current(device)  # several only under `accelerate launch` / torchrun
    options = options_from({**values, "noise": noise or []}).validated().for_rank(ranks)
    if options.out is not None:
        check_writable(Path(options.out))  # before any scoring, so a bad --out cannot cost a run
    plan = make_plan(templates, suite, options)
    for note in plan.notes:
        options.log(f"warning: {note}")
    work = render_work(plan, options.seed, options.calibrate)  # every prompt, before the model loads
    backend = load_backend(model, **options.load_options())
    work = with_chat(work, getattr(backend, "format_chat", None), backend.name)
    done = execute(work, plan, backend, options, ranks)
    results = collect(plan, done, backend, options, ranks, started)
    if options.out is not None:
        save(results, options, done)
    return results


def save(results: Results, options: RunOptions, done: Executed) -> None:
    """Write the run directory; if that fails, say where the scores still are."""
    try:
        write_run(results, options.out, analysis=options.analysis, report=options.report)
    except OSError as exc:
        kept = "the scores are in the result cache, so rerunning with another --out costs seconds" if done.cache_path else \
            "the Results object returned here still holds everything"
        raise PromptkitError(f"{options.out}: could not write the run directory ({exc.strerror or exc}); {kept}") from None
