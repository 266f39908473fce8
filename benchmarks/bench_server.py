"""The same multiple-choice workload through (a) the in-process HF backend and (b) a llama.cpp server
(llama-cpp-python's `python -m llama_cpp.server`, the same Gemma 3 270M Q4_K_M GGUF) at several concurrencies:
wall time, requests/s and argmax agreement with (a). Prints a table (markdown) and the 1-minute load average.

    python benchmarks/bench_server.py                     # 4 short generated tasks x 2 examples
    python benchmarks/bench_server.py --limit 4 --concurrency 1 2 4 8
    python benchmarks/bench_server.py --bigbench          # 4 short BIG-bench tasks of bigbench_mc instead
    python benchmarks/bench_server.py --suite offline_mc  # every task of a suite (built-in name or YAML path)

Each server run starts from a fresh server (no prefix left from the previous run) and no result cache."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llama_server import llama_server  # noqa: E402  (the test helper: start on a free port, wait, stop by PID)

from promptkit.backends.acquire import default_gguf  # noqa: E402
from promptkit.run.evaluate import evaluate  # noqa: E402
from promptkit.tasks.core import Suite  # noqa: E402
from promptkit.tasks.suites import load_suite, suite_from_dict  # noqa: E402

TASKS = ("capital_check", "leap_year", "compare_product", "capital_of_country")  # generated: yes/no, yes/no, 3-, 4-way
BIGBENCH_TASKS = ("phrase_relatedness", "sports_understanding", "entailed_polarity", "analytic_entailment")
FAMILY = "name: short\nprompt: \"Q: {{ input }}\\nA:\"\ncontinuation: ' {{ choice }}'\n"
QUIET = {"progress": False, "log": lambda msg: None, "cache": False}


def make_suite(bigbench: bool = False, spec: str | None = None) -> Suite:
    """The generated TASKS; with `bigbench` the BIGBENCH_TASKS of the built-in bigbench_mc suite; with `spec` that suite."""
    if spec:
        return load_suite(spec)
    if not bigbench:
        return suite_from_dict({"name": "bench_server", "selection": [f"generated:{t}" for t in TASKS]}, Path("bench.yaml"))
    suite = load_suite("bigbench_mc")
    return replace(suite, tasks=[t for t in suite.tasks if t.name in BIGBENCH_TASKS])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=2, help="examples per task (default 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--suite", default=None, help="built-in suite name or YAML path: all its tasks instead of the 4 "
                       "generated ones")
    which.add_argument("--bigbench", action="store_true", help="4 BIG-bench tasks of the built-in bigbench_mc suite "
                       "(BIG-bench from PROMPTKIT_BIGBENCH, the task cache or the Hub)")
    args = ap.parse_args()
    suite = make_suite(args.bigbench, args.suite)
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    (work / "short.yaml").write_text(FAMILY)
    templates = str(work / "short.yaml")
    rows = []
    load = os.getloadavg()[0]
    started = time.perf_counter()
    local = evaluate(templates, suite, None, limit=args.limit, **QUIET)
    hf_s = time.perf_counter() - started
    n = int(sum(len(c) for c in local.rows["logprobs"]))
    rows.append(("in-process HF (float32, dequantized)", "-", hf_s, n, 1.0, load))
    for c in args.concurrency:
        with llama_server(default_gguf(lambda m: None), "gemma-3-270m", work / f"server-{c}.log") as server:
            load = os.getloadavg()[0]
            started = time.perf_counter()
            remote = evaluate(templates, suite, "openai:gemma-3-270m", limit=args.limit, base_url=server.url,
                              concurrency=c, **QUIET)
            wall = time.perf_counter() - started
        both = remote.rows.merge(local.rows, on=["variant", "task", "example"], suffixes=("_s", "_h"))
        same = float((both["prediction_s"] == both["prediction_h"]).mean())
        requests = remote.config["model"]["client"]["requests"]
        rows.append((f"llama.cpp server (Q4_K_M), concurrency {c}", str(requests), wall, n, same, load))
    print(f"\n{len(local.rows)} examples, {n} (prompt, continuation) pairs; {os.cpu_count()} CPUs\n")
    print("| engine | HTTP requests | wall s | pairs/s | same argmax as HF | load avg (1 min) at start |")
    print("|---|---|---|---|---|---|")
    for name, req, wall, pairs, same, load in rows:
        print(f"| {name} | {req} | {wall:.1f} | {pairs / wall:.2f} | {same:.0%} | {load:.2f} |")


if __name__ == "__main__":
    main()
