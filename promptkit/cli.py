"""The `promptkit` command: argument parsing and text output. Exit codes: 0 success; 1 lint found errors; 2 bad input
(template, suite, model, run directory, arguments; argparse's usage errors too); 130 Ctrl-C, 143 SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .errors import PromptkitError
from .launch import exit_now
from .results.text import escape_controls, escaped_stdout

DEFAULT_MAX_VARIANTS = 16


def main(argv: list[str] | None = None) -> int:
    _received.clear()
    handlers = ({sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        args = build_parser().parse_args(argv)
        with escaped_stdout():  # names from suites and templates never drive the terminal
            return args.func(args)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptkit", description="Rank prompt templates by how well they generalize across tasks.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="score template variants on a suite and print the ranking")
    _common(run)
    run.add_argument("--model", action="append", default=None,
                     help="built-in name, hub id, local model dir, .gguf file, or openai:NAME for a model behind an "
                          "OpenAI-compatible server (default: Gemma 3 270M from PyPI); "
                          "repeat it to run several models and see whether prompts transfer between them")
    run.add_argument("--limit", type=int, default=None, help="examples per task (default: the suite's `limit`)")
    run.add_argument("--max-variants", type=int, default=DEFAULT_MAX_VARIANTS,
                     help=f"seeded sample of at most N variants, spread over families (default {DEFAULT_MAX_VARIANTS}; 0 = all)")
    run.add_argument("--seed", type=int, default=0, help="seed for variant and example sampling (default 0)")
    run.add_argument("--out", default=None, help="run directory to write (default runs/<timestamp>)")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "bf16-mixed"],
                     help="auto: bf16-mixed (bfloat16 matrix products, float32 elsewhere) on CPUs with bf16 instructions, else float32; bfloat16 on GPUs")
    run.add_argument("--device", default="auto", help="torch device (auto: cuda if available; under accelerate launch, this process's GPU)")
    run.add_argument("--device-map", default=None,
                     help="spread a model too big for one GPU over this machine's GPUs (transformers' device_map, e.g. auto)")
    run.add_argument("--batch-tokens", default="auto", type=_batch_tokens, help="tokens per forward batch (default auto: sized to free memory, halved on out-of-memory)")
    run.add_argument("--cache", default=None, help="result cache file (default: results.sqlite in the user cache directory)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    run.add_argument("--calibrate", action="store_true", help="also score content-free inputs, for the calibrated mode")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="let a hub model run the Python code shipped in its repository (off by default)")
    run.add_argument("--search", default=None, choices=["exhaustive", "halving", "racing", "thompson"],
                     help="spend --budget where the ranking is uncertain instead of scoring everything (see README)")
    run.add_argument("--budget", default=None,
                     help="with --search: a fraction of the exhaustive forward tokens (0.25, 25%%) or a token count (2e6)")
    run.add_argument("--noise", nargs="+", default=None, metavar="SPEC",
                     help="also run every variant under each noise spec: typos:0.05, word_drop:0.1, word_swap:0.1, "
                          "casing:0.1, whitespace:0.1, choices, prompt.typos:0.05 (see README)")
    run.add_argument("--synthetic-model", default=None,
                     help="the model that writes synthetic demonstrations (default: --model); see README")
    run.add_argument("--synthetic-n", type=int, default=16, help="synthetic demonstrations written per task (default 16)")
    run.add_argument("--synthetic-template", default=None, metavar="FILE",
                     help="a Jinja file that asks for one input given `answer` (also instruction, choices, index, task)")
    run.add_argument("--synthetic-filters", default="dedupe,length,copies,consistency",
                     help="comma-separated filters of synthetic demonstrations (default: all: dedupe,length,copies,consistency)")
    _server_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    _analysis_options(run)
    run.set_defaults(func=cmd_run)

    render = sub.add_parser("render", help="print the exact text a variant shows the model for one example")
    render.add_argument("target", metavar="FAMILY_OR_VARIANT", help="a family name (its first variant) or a variant id")
    _common(render)
    render.add_argument("--task", required=True, help="task name in the suite")
    render.add_argument("--example", default="#0",
                        help="#N for the N-th example the run evaluates (from #0), or an example id (default #0)")
    render.add_argument("--all", action="store_true", help="with a family name: render every variant")
    render.add_argument("--limit", type=int, default=None,
                        help="examples per task, as in the run (default: the suite's `limit`); the rest are the demonstrations")
    render.add_argument("--seed", type=int, default=0, help="seed of the run (example sample, demonstrations; default 0)")
    render.add_argument("--model", default=None,
                        help="apply this model's chat template to chat variants (default: show the chat turns)")
    render.set_defaults(func=cmd_render)

    rank = sub.add_parser("rank", help="re-rank a finished run with statistics (no model needed)")
    rank.add_argument("run_dir", metavar="RUN_DIR")
    _analysis_options(rank)
    rank.add_argument("--compare", nargs=2, metavar=("A", "B"), help="also compare two variants (paired bootstrap, McNemar)")
    rank.add_argument("--recommend", action="store_true", help="also judge every selection rule and ensemble by nested "
                      "leave-one-task-out on the selection tasks, and say which one to use")
    rank.add_argument("--max-cost", type=int, help="with --recommend: at most this many prompts per example (1: one prompt)")
    rank.set_defaults(func=cmd_rank)

    rec = sub.add_parser("recommend", help="a prompt for a new task: the run's cross-task prior plus N labelled examples")
    rec.add_argument("run_dir", metavar="RUN_DIR")
    rec.add_argument("--task", help="generated:NAME, bigbench:NAME, a task.json, or a .json/.jsonl/.csv file with input, choices, target "
                                    "(without it: the cross-task rule, as rank --recommend)")
    rec.add_argument("--labelled", type=int, default=8, help="labelled examples to score (default 8; 0: no model calls)")
    rec.add_argument("--candidates", type=int, help="score only the N best variants by the prior (default all)")
    rec.add_argument("--model", help="the model to score with (default: the run's)")
    rec.add_argument("--mode", default="raw", choices=["raw", "per_token", "per_char"], help="scoring mode (default raw)")
    rec.add_argument("--seed", type=int, default=0, help="which examples are the labelled ones (default 0)")
    rec.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_recommend)

    report = sub.add_parser("report", help="write a self-contained report.html for a finished run")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", default=None, help="where to write (default RUN_DIR/report.html)")
    _analysis_options(report)
    report.set_defaults(func=cmd_report)

    lint = sub.add_parser("lint", help="check template and suite YAML files")
    lint.add_argument("paths", nargs="+", help="YAML files or directories")
    lint.set_defaults(func=cmd_lint)

    models = sub.add_parser("models", help="list the built-in model names, their packages and what is cached")
    models.set_defaults(func=cmd_list, listing="models")
    tasks = sub.add_parser("tasks", help="list the built-in suites and the tasks promptkit generates itself")
    tasks.set_defaults(func=cmd_list, listing="tasks")
    return parser


def _batch_tokens(value: str):
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 16:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of tokens >= 16, got {value!r}")
    return int(value)


def _analysis_options(p: argparse.ArgumentParser) -> None:
    from .analysis.names import AGGREGATES, MODES, PROTOCOLS

    p.add_argument("--protocol", default="split", choices=[*PROTOCOLS, "models"],
                   help="selection/held-out protocol (default split: the suite's own; models: the suite's split and, for "
                        "a run with several models, a prompt chosen on one model scored on another)")
    p.add_argument("--aggregate", default="mean_norm", choices=AGGREGATES, help="aggregate across tasks (default mean_norm)")
    p.add_argument("--mode", default="raw", choices=MODES, help="scoring mode (default raw log-likelihood)")
    p.add_argument("--folds", type=int, default=5, help="k for --protocol kfold (default 5)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--analysis-seed", type=int, default=0, help="seed of the bootstrap and of k-fold splits (default 0)")
    p.add_argument("--rank-by", default="clean", metavar="HOW",
                   help="for runs with --noise: rank by the clean, noisy (mean over noise specs) or combined score, "
                        "or by one noise spec (default clean)")
    p.add_argument("--across", default="models,tasks", choices=["models,tasks", "tasks"],
                   help="runs with several models: rank over (model, task) cells (default) or over tasks, models pooled")
    p.add_argument("--on-model", default=None, metavar="NAME", help="runs with several models: rank on this model alone")
    p.add_argument("--cross-model", default="mean", choices=["mean", "mean_rank", "worst"],
                   help="runs with several models: the prompt that holds across models maximizes this over models (default mean)")
    p.add_argument("--default-variant", default=None,
                   help="variant id reported as 'the default prompt' next to the chosen one (default: the first variant)")


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mc-scoring", default="loglikelihood", choices=["loglikelihood", "generation"],
                   help="multiple choice: each choice's log-likelihood (default), or a generated answer mapped to a choice")
    g = p.add_argument_group("models behind a server (--model openai:NAME; see README)")
    g.add_argument("--base-url", help="the server's base URL, e.g. http://127.0.0.1:8000/v1 (default $PROMPTKIT_BASE_URL)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                   help="the environment variable that holds the API key (default OPENAI_API_KEY; the key is never recorded)")
    g.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    g.add_argument("--requests-per-minute", type=float, default=None, help="request rate limit (default: none)")
    g.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request before it is retried (default 60)")
    g.add_argument("--model-revision", help="the revision you mean (a remote name can change weights); kept in the cache key")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", nargs="+", default=None, help="template dirs or YAML files (default: built-in library)")
    p.add_argument("--suite", default=None, help="built-in suite name or YAML path (default: offline_mc; `promptkit tasks` lists them)")


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
                seed=args.seed, dtype=args.dtype, device=args.device, batch_tokens=args.batch_tokens, out=out,
                cache=cache, progress=not args.quiet, log=log, calibrate=args.calibrate,
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
    from .results.text import format_adaptation, format_rules
    from .run import recommend  # noqa: F401  registers the new-task scorer of Results.recommend

    full = Results.load(args.run_dir)
    if args.task is None:
        a = full.analyze(mode=args.mode)
        print(format_rules(a.rules, full.recommend(mode=args.mode)))
        return 0
    log = (lambda msg: None) if args.quiet else (lambda msg: print(escape_controls(msg), file=sys.stderr, flush=True))
    adapted = full.recommend(args.task, args.labelled, model=args.model, candidates=args.candidates, mode=args.mode,
                             seed=args.seed, cache=not args.no_cache, progress=not args.quiet, log=log)
    print(format_adaptation(adapted))
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
