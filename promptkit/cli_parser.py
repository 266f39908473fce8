"""The `promptkit` command's arguments: every subcommand, its options and their help (the CLI reference in the
docs is generated from this parser). Parsing only: promptkit.cli runs the command."""

from __future__ import annotations

import argparse

from .analysis.names import AGGREGATES, MODES, PROTOCOLS

DEFAULT_MAX_VARIANTS = 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptkit", description="Rank prompt templates by how well they generalize across tasks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    run.add_argument("--threads", type=_threads, default="auto",
                     help="CPU threads for scoring (default auto: the cores, fewer when other work keeps some busy)")
    run.add_argument("--device", default="auto", help="torch device (auto: cuda if available; under accelerate launch, this process's GPU)")
    run.add_argument("--device-map", default=None,
                     help="spread a model too big for one GPU over this machine's GPUs (transformers' device_map, e.g. auto)")
    run.add_argument("--batch-tokens", default="auto", type=_batch_tokens, help="tokens per forward batch (default auto: sized to free memory, halved on out-of-memory)")
    run.add_argument("--cache", default=None, help="result cache file (default: results.sqlite in the user cache directory)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    run.add_argument("--calibrate", action="store_true", help="also score content-free inputs, for the calibrated mode")
    run.add_argument("--prompt-likelihood", type=int, default=None, metavar="N",
                     help="score the prompts themselves on the first N examples of each multiple-choice task, for the "
                          "label-free choice's prompt-perplexity criterion (default 0: none)")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="let a hub model run the Python code shipped in its repository (off by default)")
    run.add_argument("--search", default=None, choices=["exhaustive", "halving", "racing", "thompson"],
                     help="spend --budget where the ranking is uncertain instead of scoring everything (docs/guides/search.md)")
    run.add_argument("--budget", default=None,
                     help="with --search: a fraction of the exhaustive forward tokens (0.25, 25%%) or a token count (2e6)")
    run.add_argument("--noise", nargs="+", default=None, metavar="SPEC",
                     help="also run every variant under each noise spec: typos:0.05, word_drop:0.1, word_swap:0.1, "
                          "casing:0.1, whitespace:0.1, choices, prompt.typos:0.05 (docs/guides/synthetic-and-noise.md)")
    run.add_argument("--synthetic-model", default=None,
                     help="the model that writes synthetic demonstrations (default: --model); docs/guides/synthetic-and-noise.md")
    run.add_argument("--synthetic-n", type=int, default=16, help="synthetic demonstrations written per task (default 16)")
    run.add_argument("--synthetic-template", default=None, metavar="FILE",
                     help="a Jinja file that asks for one input given `answer` (also instruction, choices, index, task)")
    run.add_argument("--synthetic-filters", default="dedupe,length,copies,consistency",
                     help="comma-separated filters of synthetic demonstrations (default: all: dedupe,length,copies,consistency)")
    _server_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    _analysis_options(run)

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

    rank = sub.add_parser("rank", help="re-rank a finished run with statistics (no model needed)")
    rank.add_argument("run_dir", metavar="RUN_DIR")
    _analysis_options(rank)
    rank.add_argument("--compare", nargs=2, metavar=("A", "B"), help="also compare two variants (paired bootstrap, McNemar)")
    rank.add_argument("--recommend", action="store_true", help="also judge every selection rule and ensemble by nested "
                      "leave-one-task-out on the selection tasks, and say which one to use")
    rank.add_argument("--max-cost", type=int, help="with --recommend: at most this many prompts per example (1: one prompt)")

    rec = sub.add_parser("recommend", help="a prompt for a new task: the run's cross-task prior plus N labelled examples")
    rec.add_argument("run_dir", metavar="RUN_DIR")
    rec.add_argument("--task", help="generated:NAME, bigbench:NAME, a task.json, or a .json/.jsonl/.csv file with input, choices, target "
                                    "(without it: the cross-task rule, as rank --recommend)")
    rec.add_argument("--labelled", type=int, default=None, help="labelled examples to score (default 8; 0: no model calls)")
    rec.add_argument("--unlabelled", type=int, metavar="N", help="instead of labels: score N inputs of the task, "
                     "targets unread, and choose by the label-free criterion the run's selection tasks support")
    rec.add_argument("--ensemble", type=int, default=1, metavar="K", help="with --unlabelled: average the K best "
                     "prompts by the combined score (K calls per example; default 1)")
    rec.add_argument("--candidates", type=int, help="score only the N best variants by the prior (default all)")
    rec.add_argument("--model", help="the model to score with (default: the run's)")
    rec.add_argument("--mode", default="raw", choices=["raw", "per_token", "per_char"], help="scoring mode (default raw)")
    rec.add_argument("--seed", type=int, default=0, help="which examples are the labelled ones (default 0)")
    rec.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")

    report = sub.add_parser("report", help="write a self-contained report.html for a finished run")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", default=None, help="where to write (default RUN_DIR/report.html)")
    _analysis_options(report)

    lint = sub.add_parser("lint", help="check template and suite YAML files")
    lint.add_argument("paths", nargs="+", help="YAML files or directories")

    models = sub.add_parser("models", help="list the built-in model names, their packages and what is cached")
    models.set_defaults(listing="models")
    tasks = sub.add_parser("tasks", help="list the built-in suites and the tasks promptkit generates itself")
    tasks.set_defaults(listing="tasks")
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("promptkit")
    except metadata.PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "(not installed)"


def _threads(value: str):
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of threads >= 1, got {value!r}")
    return int(value)


def _batch_tokens(value: str):
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 16:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of tokens >= 16, got {value!r}")
    return int(value)


def _analysis_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--across", default="models,tasks", choices=["models,tasks", "tasks"], metavar="{models,tasks | tasks}",
                   help="runs with several models: rank over (model, task) cells (default) or over tasks, models pooled")
    p.add_argument("--on-model", default=None, metavar="NAME", help="runs with several models: rank on this model alone")
    p.add_argument("--cross-model", default="mean", choices=["mean", "mean_rank", "worst"],
                   help="runs with several models: the prompt that holds across models maximizes this over models (default mean)")
    p.add_argument("--default-variant", default=None,
                   help="variant id reported as 'the default prompt' next to the chosen one (default: the first variant)")


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mc-scoring", default="loglikelihood", choices=["loglikelihood", "generation"],
                   help="multiple choice: each choice's log-likelihood (default), or a generated answer mapped to a choice")
    g = p.add_argument_group("models behind a server (--model openai:NAME; docs/guides/models.md)")
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
