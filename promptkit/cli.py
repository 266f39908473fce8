"""The `promptkit` command: argument parsing and text output. Exit codes: 0 success; 1 lint found errors; 2 bad input
(template, suite, model, run directory, arguments; argparse's usage errors too); 130 Ctrl-C, 143 SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .cli_parser import build_parser
from .errors import PromptkitError
from .launch import exit_now
from .results.text import escape_controls, escaped_stdout



def main(argv: list[str] | None = None) -> int:
    _received.clear()
    handlers = ({sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        args = build_parser().parse_args(argv)
        with escaped_stdout():  # names from suites and templates never drive the terminal
            return COMMANDS[args.command](args)
    except PromptkitError as exc:
        print(f"promptkit: error{_rank_tag()}: {escape_controls(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("promptkit: " + ("stopped (SIGTERM)" if isinstance(exc, _Stopped) else "interrupted"), file=sys.stderr)
        return 143 if isinstance(exc, _Stopped) else 130
    finally:  # once signalled, later signals are ignored to the end (finalization would restore SIG_DFL: -2, -15)
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_IGN if _received else handler)


_received: list[int] = []


def console() -> None:
    """The `promptkit` command: main(), then exit at once with its status (see launch.exit_now)."""
    exit_now(main())


def _on_signal(signum, frame):
    """Ctrl-C/SIGTERM unwind as KeyboardInterrupt/_Stopped (cache closed, one line, 130/143); a second is ignored."""
    if not _received:
        _received.append(signum)
        raise _Stopped() if signum == signal.SIGTERM else KeyboardInterrupt()


def _rank_tag() -> str:
    """' (rank 1 of 4)' inside an `accelerate launch` job, so a failing process says which it is."""
    from .launch import launch_env

    rank, world, _ = launch_env()
    return f" (rank {rank} of {world})" if world > 1 else ""


def cmd_run(args) -> int:
    from .engine.cache import resume_hint
    from .results.text import format_run
    from .results.timings import Stopwatch, format_timings
    from .results.ownership import new_run_dir, removed_if_unused
    from .run.evaluate import evaluate

    log = (lambda msg: None) if args.quiet else (lambda msg: print(escape_controls(msg), file=sys.stderr, flush=True))
    cache = False if args.no_cache else (args.cache or True)
    analysis = _analysis_from(args)
    watch = Stopwatch.since_process_start()  # start-up: from the process's start to here (imports, arguments)
    out = Path(args.out) if args.out else new_run_dir(Path("runs"))  # created exclusively: no two runs share one
    try:
        with removed_if_unused(out, fresh=not args.out):
            results = evaluate(
                args.templates, args.suite, _models(args.model), limit=args.limit, max_variants=args.max_variants or None,
                seed=args.seed, threads=args.threads, dtype=args.dtype, device=args.device, batch_tokens=args.batch_tokens,
                out=out, cache=cache, progress=not args.quiet, log=log, calibrate=args.calibrate,
                **({} if args.prompt_likelihood is None else {"prompt_likelihood": args.prompt_likelihood}),
                trust_remote_code=args.trust_remote_code, device_map=args.device_map, search=args.search, budget=args.budget,
                noise=args.noise, synthetic=_synthetic_options(args), synthetic_model=args.synthetic_model,
                report=not args.no_report, analysis=analysis, mc_scoring=args.mc_scoring, base_url=args.base_url,
                api_key_env=args.api_key_env, concurrency=args.concurrency, requests_per_minute=args.requests_per_minute,
                request_timeout=args.request_timeout, model_revision=args.model_revision, timings=watch)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the launcher's, when another process of the job fails)
        stop = isinstance(exc, _Stopped)
        why = ("stopped" + (": another process of this job failed" if _rank_tag() else " (SIGTERM)")) if stop else "interrupted"
        print(f"\npromptkit: {why}{_rank_tag()}. {resume_hint(cache)}", file=sys.stderr)
        return 143 if stop else 130
    except PromptkitError as exc:
        if _rank_tag():  # the launcher stops the other processes; say how to pick up again
            print(f"promptkit: this process failed, so the whole job stops. {resume_hint(cache)}", file=sys.stderr)
        elif getattr(exc, "resumable", False):  # e.g. a model server that kept failing
            print(f"promptkit: error: {exc}\npromptkit: {resume_hint(cache)}", file=sys.stderr)
            return 2
        raise
    if results.config.get("processes", 1) > 1 and not _is_rank_zero():
        return 0  # rank 0 prints and writes the run directory
    if args.quiet:  # otherwise the log already showed them
        for note in results.config["engine"].get("notes", []):
            print(f"promptkit: warning: {note}", file=sys.stderr)
    print(format_run(results, analysis, out, report=not args.no_report))
    print(format_timings(results.config["timings"]))
    return 0


def _models(given: list[str] | None):
    """--model once: that model; several times: the list; never: the default model."""
    return None if not given else given[0] if len(given) == 1 else given


def _analysis_from(args):
    """The statistics options of run, rank and report."""
    from .analysis.analyze import AnalysisOptions

    return AnalysisOptions(protocol=args.protocol, aggregate=args.aggregate, mode=args.mode, folds=args.folds,
                           bootstrap=args.bootstrap, seed=args.analysis_seed, default_variant=args.default_variant,
                           rank_by=args.rank_by, across=args.across, model=args.on_model, cross_model=args.cross_model)


def _synthetic_options(args) -> dict:
    options = {"n": args.synthetic_n, "filters": tuple(f for f in args.synthetic_filters.split(",") if f)}
    if args.synthetic_template:
        from .run.synthetic import read_template

        options["template"] = read_template(args.synthetic_template)
    return options


class _Stopped(KeyboardInterrupt):
    """SIGTERM (from the launcher, or anyone): unwinds like Ctrl-C, so the cache connection closes cleanly."""


def _is_rank_zero() -> bool:
    from .launch import launch_env

    return launch_env()[0] == 0


def cmd_rank(args) -> int:
    from .results.core import Results
    from .results.text import format_analysis, format_robustness, format_rules, format_transfer, ranked_view

    options = _analysis_from(args)
    full = Results.load(args.run_dir)
    if args.protocol == "models":
        print(format_transfer(full.transfer_analysis(options.aggregate, options.mode, options.cross_model,
                                                     options.bootstrap, options.seed)))
        return 0
    results = ranked_view(full, options)
    print(format_analysis(results.analyze(**options.analyze_kwargs()), running="rank --recommend" if args.recommend else None))
    if full.config.get("noise"):
        print()
        print(format_robustness(full))
    if args.recommend:
        a = results.analyze(**options.analyze_kwargs())
        if a.rules.empty:
            raise PromptkitError("--recommend needs at least 2 multiple-choice selection tasks scored on every variant")
        print("\n" + format_rules(a.rules, results.recommend(mode=args.mode, max_cost=args.max_cost)))
    if args.compare:
        import pandas as pd

        table = results.compare(*args.compare, mode=args.mode, seed=args.analysis_seed)
        print(f"\npaired comparison {args.compare[0]} − {args.compare[1]} (accuracy difference):")
        with pd.option_context("display.width", 200):
            print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


def cmd_recommend(args) -> int:
    from .results.core import Results
    from .results.text import format_adaptation, format_rules, format_unlabelled
    from .run import recommend  # noqa: F401  registers the new-task scorer of Results.recommend

    full = Results.load(args.run_dir)
    if args.task is None:
        a = full.analyze(mode=args.mode)
        print(format_rules(a.rules, full.recommend(mode=args.mode)))
        return 0
    log = (lambda msg: None) if args.quiet else (lambda msg: print(escape_controls(msg), file=sys.stderr, flush=True))
    if args.unlabelled is not None and args.labelled is not None:
        raise PromptkitError("--labelled and --unlabelled are two ways to choose: give one")
    labelled = 8 if args.labelled is None else args.labelled
    adapted = full.recommend(args.task, labelled, model=args.model, candidates=args.candidates, mode=args.mode,
                             seed=args.seed, cache=not args.no_cache, progress=not args.quiet, log=log,
                             unlabelled=args.unlabelled, ensemble=args.ensemble)
    print(format_adaptation(adapted) if args.unlabelled is None else format_unlabelled(adapted))
    return 0


def cmd_report(args) -> int:
    from .results.core import Results
    from .results.report import write_report
    from .results.text import ranked_view

    options = _analysis_from(args)
    full = Results.load(args.run_dir)
    results = ranked_view(full, options)
    path = write_report(results, args.out or args.run_dir, results.analyze(**options.analyze_kwargs()), full)
    print(f"wrote {path}")
    return 0


def cmd_render(args) -> int:
    from .prompts.render import apply_chat, render
    from .tasks.suites import load_suite, load_tasks
    from .prompts.templates import load_templates
    from .prompts.variants import expand
    from .results.text import chat_formatter_of, format_render, print_escaped as print  # ESC sequences shown, not obeyed

    families = load_templates(args.templates)
    chosen = []
    for family in families:
        variants = expand(family)
        if args.target == family.name:
            chosen = variants if args.all else variants[:1]
            if not args.all and len(variants) > 1:
                print(f"(family {family.name} has {len(variants)} variants; showing the first, use --all or a variant id)\n")
            break
        chosen = [v for v in variants if v.id == args.target]
        if chosen:
            break
    if not chosen:
        names = ", ".join(f.name for f in families)
        raise PromptkitError(f"no template family or variant '{args.target}'; families: {names}")
    suite = load_suite(args.suite)
    task = load_tasks(suite, limit=args.limit, seed=args.seed, names=[args.task])[0]
    position, example = task.locate(args.example)
    requests = [render(variant, task, example, args.seed) for variant in chosen]
    if args.model and any(r.messages is not None for r in requests):
        requests = apply_chat(requests, chat_formatter_of(args.model), args.model)
    print(format_render(chosen, requests, task, example, position, args.seed))
    return 0


def cmd_lint(args) -> int:
    from .prompts.lint import lint_paths

    messages = lint_paths(args.paths)
    for message in messages:
        print(message)
    errors = sum(m.level == "error" for m in messages)
    warnings = len(messages) - errors
    print(f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def cmd_list(args) -> int:
    from .backends.acquire import builtin_models
    from .results.text import format_models, format_tasks

    print(format_models(builtin_models()) if args.listing == "models" else format_tasks())
    return 0


if __name__ == "__main__":
    sys.exit(main())


COMMANDS = {"run": cmd_run, "render": cmd_render, "rank": cmd_rank, "recommend": cmd_recommend, "report": cmd_report,
            "lint": cmd_lint, "models": cmd_list, "tasks": cmd_list}
