"""What scoring the prompts' own likelihoods (`promptkit run --prompt-likelihood N`, for the prompt-perplexity
criterion of the label-free choice) adds to a run, against the same run without them.

    python benchmarks/bench_prompt_likelihood.py                      # the default suite, 8 examples, 8 variants
    python benchmarks/bench_prompt_likelihood.py --limit 12 --reps 3

Each repetition is one `promptkit run` in its own process with no result cache, on the default suite and model; the
two settings alternate (A B, then B A, ...), and the ratio is taken per pair: median [range]. Run nothing else while
it runs. Prints seconds per run, scored requests, forward tokens and the ratio with / without.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(args, n: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "promptkit", "run", "--limit", str(args.limit), "--max-variants", str(args.variants),
           "--no-cache", "--no-report", "--quiet", "--prompt-likelihood", str(n), "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=3600)
    wall = time.perf_counter() - started
    config = json.loads((out / "config.json").read_text())
    return {"wall": wall, "scoring": config["timings"].get("scoring", float("nan")), "requests": config["n_requests"],
            "forward_tokens": config["forward_tokens"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8, help="N of --prompt-likelihood in the measured setting")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rows = {0: [], args.prompts: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.reps):
            order = (0, args.prompts) if r % 2 == 0 else (args.prompts, 0)
            for n in order:
                rows[n].append(one(args, n, Path(tmp) / f"run{r}_{n}"))
    base, with_ = rows[0], rows[args.prompts]
    ratios = sorted(w["scoring"] / b["scoring"] for b, w in zip(base, with_))
    med = ratios[len(ratios) // 2]
    print(f"default suite, --limit {args.limit}, --max-variants {args.variants}, {args.reps} pairs, no result cache")
    print("| setting | scoring s (each run) | scored requests | forward tokens |\n|---|---|---|---|")
    for n, label in ((0, "without prompt likelihoods (baseline)"), (args.prompts, f"--prompt-likelihood {args.prompts}")):
        r = rows[n]
        each = ", ".join(f"{x['scoring']:.1f}" for x in r)
        print(f"| {label} | {each} | {r[0]['requests']:,} | {r[0]['forward_tokens']:,} |")
    print(f"\nscoring time with / without: {med:.2f}× median [{ratios[0]:.2f}–{ratios[-1]:.2f}]")


if __name__ == "__main__":
    main()
