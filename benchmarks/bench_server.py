"""The same multiple-choice workload through (a) the in-process HF backend and (b) a llama.cpp server
(llama-cpp-python's `python -m llama_cpp.server`, the same Gemma 3 270M Q4_K_M GGUF) at several concurrencies:
wall time, requests/s and argmax agreement with (a). Prints a table (markdown) and the 1-minute load average.

    python benchmarks/bench_server.py                     # 4 short built-in tasks x 2 examples
    python benchmarks/bench_server.py --limit 4 --concurrency 1 2 4 8

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
from promptkit.tasks.suites import load_suite  # noqa: E402

TASKS = ("phrase_relatedness", "sports_understanding", "entailed_polarity", "analytic_entailment")
FAMILY = "name: short\nprompt: \"Q: {{ input }}\\nA:\"\ncontinuation: ' {{ choice }}'\n"
QUIET = {"progress": False, "log": lambda msg: None, "cache": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=2, help="examples per task (default 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    suite = load_suite(None)
    suite = replace(suite, tasks=[t for t in suite.tasks if t.name in TASKS])
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
