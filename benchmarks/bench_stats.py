"""Time to first result without a model: statistics and report on a large run, and the model-free commands.

    python benchmarks/bench_stats.py                      # 128 variants × 12 tasks × 24 examples, median of 3/5
    python benchmarks/bench_stats.py --variants 32 --repeats 1   # a quicker look
    python benchmarks/bench_stats.py --baseline ../main           # and main's checkout, interleaved

Builds a run directory synthetically with the library's own pieces and no model: real variants of the built-in
template library (plus one 16-variant family, since the library has 120), synthetic multiple-choice tasks (2–5
choices), one results row per variant × task × example made by the run's row builder (`analysis.metrics.example_row`)
from random but plausible log-likelihoods (each variant has a skill and each task a difficulty, so the ranking has
structure), written by the run-directory writer (`results.rundir.write_run`, the same files `promptkit run` writes).
Then times, as subprocesses (`python -m promptkit` with PYTHONPATH set to the checkout):

    promptkit rank RUN      promptkit report RUN      (median of --repeats; target < 10 s each)
    promptkit --help        promptkit render FAMILY --task TASK    (median of --quick-repeats; targets 0.5 s, 2 s)

and prints one table with the targets and the load average before each command (on a shared machine, read the
figures next to it; --baseline times another checkout in the same loop). `render` reads the built-in suite from the
task cache (a first `promptkit run` fills it); when that fails, it renders on a small local suite instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("selection",) * 8 + ("held_out",) * 4  # of 12 tasks, like the built-in suite's 2:1


def build_run(out: Path, n_variants: int, n_tasks: int, n_examples: int, seed: int = 0) -> dict:
    """A run directory of `n_variants` × `n_tasks` × `n_examples` rows; returns what was written."""
    from promptkit.analysis.metrics import example_row
    from promptkit.paths import builtin_dir
    from promptkit.backends.base import ContinuationScore
    from promptkit.prompts.render import render, sample_of
    from promptkit.prompts.templates import load_templates
    from promptkit.prompts.variants import expand_all
    from promptkit.results.core import Results
    from promptkit.results.rundir import write_run
    from promptkit.run.collect import task_info, variant_info
    from promptkit.tasks.core import Example, Task

    rng = np.random.default_rng(seed)
    words = ["yes", "no", "maybe", "true", "false", "Paris", "Rome", "Berlin", "red", "blue", "north", "south"]
    tasks = []
    for t in range(n_tasks):
        k = 2 + t % 4  # 2 to 5 choices
        pick = lambda i: [words[(i + j) % len(words)] for j in range(k)]
        make = lambda i, tag: Example(f"{tag}{i}", f"Synthetic question {i} of task {t}?", pick(i), int(rng.integers(k)))
        tasks.append(Task(f"synthetic_{t:02d}", [make(i, "") for i in range(n_examples)], f"Answer question set {t}.",
                          SPLITS[t % len(SPLITS)] if n_tasks >= len(SPLITS) else ("held_out" if t % 3 == 2 else "selection"),
                          cluster=f"c{t % 3}", source="synthetic", demos=[make(i, "d") for i in range(8)]))
    variants = expand_all(load_templates([builtin_dir("templates"), extra_family(out.parent)]), n_variants, seed)
    if len(variants) < n_variants:
        raise SystemExit(f"the built-in templates give {len(variants)} variants, fewer than {n_variants}")
    info = variant_info(variants)
    skill = rng.normal(0.0, 0.6, len(variants))  # per variant
    difficulty = rng.normal(0.0, 0.8, n_tasks)  # per task
    rows = []
    for ti, task in enumerate(tasks):
        for vi, v in enumerate(variants):
            if "sample" not in info[v.id]:
                info[v.id]["sample"] = sample_of(task, task.examples[0], render(v, task, task.examples[0], seed))
            for e in task.examples:
                k = len(e.choices)
                chars = [len(c) + 1 for c in e.choices]
                tokens = [1 + c // 4 for c in chars]
                logprobs = -rng.gamma(2.0, 2.0, k) - 0.3 * np.asarray(tokens)
                logprobs[e.target] += skill[vi] - difficulty[ti] + rng.normal(0, 0.5)
                scores = [ContinuationScore(float(lp), n, c, False) for lp, n, c in zip(logprobs, tokens, chars)]
                rows.append({"variant": v.id, "family": v.family.name, "task": task.name, "split": task.split,
                             "example": e.id, **example_row(e, scores)})
    import pandas as pd

    config = {"templates": sorted({v.family.path for v in variants}), "suite": {"name": "synthetic", "path": "<memory>"},
              "model": {"model": "synthetic (no model: random log-likelihoods)", "dtype": "none", "device": "none",
                        "fingerprint": f"synthetic-{seed}"},
              "limit": n_examples, "max_variants": n_variants, "seed": seed, "calibrate": False,
              "mc_scoring": "loglikelihood", "n_variants": len(variants), "n_requests": len(rows), "forward_tokens": 0,
              "processes": 1, "noise": [], "engine": {"notes": [], "batch_tokens": None, "cache": None},
              "wall_seconds": 0.0}
    results = Results(pd.DataFrame(rows), task_info(tasks), info, config)
    start = time.perf_counter()
    write_run(results, out)
    return {"rows": len(rows), "variants": len(variants), "tasks": n_tasks, "write_s": time.perf_counter() - start}


def extra_family(folder: Path) -> Path:
    """One more template family (16 variants): the built-in library has 120, fewer than a 128-variant run needs."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench_extra.yaml"
    path.write_text("name: bench_extra\n"
                    "axes:\n"
                    "  label: ['Question:', 'Q:', 'Input:', 'Text:']\n"
                    "  sep: [\"\\n\", ' ']\n"
                    "  ask: ['Answer:', 'A:']\n"
                    "prompt: '{{ instruction }} {{ label }} {{ input }}{{ sep }}Options: {{ choices | join(\", \") }}{{ sep }}{{ ask }}'\n"
                    "continuation: ' {{ choice }}'\n")
    return path


def small_suite(folder: Path) -> tuple[str, str]:
    """A one-task local suite for `render` when the built-in suite's tasks are not cached."""
    rows = [{"input": f"Is {i} even?", "choices": ["yes", "no"], "target": i % 2} for i in range(20)]
    (folder / "even.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = folder / "suite.yaml"
    suite.write_text("name: small\nlimit: 10\nselection:\n  - {name: even, source: files, path: even.jsonl}\n")
    return str(suite), "even"


def render_argv(out: Path) -> list[str]:
    """The README's `render` example on the built-in suite when its tasks are cached (tried once, untimed: no
    download inside a timing); else the same family on a small local suite."""
    argv = ["render", "qa_labels", "--task", "sports_understanding"]
    proc = subprocess.run([sys.executable, "-m", "promptkit", *argv], capture_output=True, text=True, env=_env(ROOT),
                          timeout=600)
    if proc.returncode == 0:
        return argv
    suite, task = small_suite(out)
    return ["render", "qa_labels", "--suite", suite, "--task", task]


def _env(root: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(root)}


def timed(argv: list[str], repeats: int, roots: list[Path]) -> tuple[list[list[float]], str]:
    """Wall seconds of `python -m promptkit ARGV` as a subprocess, `repeats` times for each checkout in `roots`
    (interleaved, so a change in machine load falls on all of them alike), and the load average before the first."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    times: list[list[float]] = [[] for _ in roots]
    for _ in range(repeats):
        for i, root in enumerate(roots):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "promptkit", *argv], capture_output=True, text=True,
                                  env=_env(root), cwd=root)
            times[i].append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"{root}: promptkit {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return times, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="runs of rank and report (median)")
    parser.add_argument("--quick-repeats", type=int, default=5, help="runs of --help and render (median)")
    parser.add_argument("--baseline", default=None, metavar="CHECKOUT",
                        help="also time another checkout of promptkit (e.g. main's) on the same run, interleaved")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stats"))
    parser.add_argument("--skip-build", action="store_true", help="reuse the run directory --out already holds")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    out = Path(args.out).resolve()
    run = out / "run"
    if not args.skip_build:
        built = build_run(run, args.variants, args.tasks, args.examples)
        print(f"built {run}: {built['variants']} variants × {built['tasks']} tasks × {args.examples} examples = "
              f"{built['rows']} rows (written, with statistics and report, in {built['write_s']:.1f} s)", flush=True)
    roots = [ROOT] + ([Path(args.baseline).resolve()] if args.baseline else [])
    render_args = render_argv(out)
    checks = [("rank RUN", ["rank", str(run)], args.repeats, 10.0),
              ("report RUN", ["report", str(run), "--out", str(out / "report.html")], args.repeats, 10.0),
              ("--help", ["--help"], args.quick_repeats, 0.5),
              (" ".join(render_args[:4]) + (" (local suite)" if len(render_args) > 4 else ""), render_args,
               args.quick_repeats, 2.0)]
    print(f"\nmedian wall seconds of `python -m promptkit COMMAND` ({ROOT}" +
          (f"; baseline {roots[1]}" if args.baseline else "") + ")")
    head = f"{'COMMAND':<42} {'median':>7}" + (f" {'baseline':>9}" if args.baseline else "")
    print(f"{head} {'target':>7}  {'ok':<3} {'runs':<30} load before")
    for label, argv, repeats, target in checks:
        times, load = timed(argv, repeats, roots)
        median = statistics.median(times[0])
        base = f" {statistics.median(times[1]):>9.2f}" if args.baseline else ""
        runs = ", ".join(f"{t:.2f}" for t in times[0])
        print(f"{label:<42} {median:>7.2f}{base} {target:>7.1f}  {'yes' if median < target else 'NO':<3} {runs:<30} {load}",
              flush=True)


if __name__ == "__main__":
    main()
