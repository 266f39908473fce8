"""Does a faster dtype change the answers? Runs the built-in default suite (or --suite; --bigbench for the built-in
BIG-bench suite, bigbench_mc; templates and other `promptkit run` arguments after --) once per dtype, each alone in
its own process with a result cache of its own (nothing comes from an earlier run), then compares every run with the
first (the reference, float32 by default) example by example.

    python benchmarks/bench_dtype.py --dtypes float32,bf16-mixed,bfloat16 --out /tmp/dtype
    python benchmarks/bench_dtype.py --bigbench --out /tmp/dtype-bigbench
    python benchmarks/bench_dtype.py --compare /tmp/dtype/float32 /tmp/dtype/bf16-mixed   # two finished runs

Prints, per dtype: the run's wall time and scoring time (from its config.json), the share of evaluated items whose
predicted choice is the reference's, the largest and median change of a continuation's log-likelihood, Kendall's tau
between the two rankings of variants (selection mean), and whether the chosen (top) variant is the same. The rule
for choosing the CPU default: a dtype may become the CPU default only if >= 99% of predictions agree and the chosen variant is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(dtype: str, out: Path, extra: list[str]) -> float:
    """One promptkit run in its own process, with a fresh result cache; returns its wall time."""
    out.mkdir(parents=True, exist_ok=True)
    cache = out.parent / f"{out.name}.sqlite"
    for stale in (cache, Path(f"{cache}-wal"), Path(f"{cache}-shm")):
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "promptkit", "run", "--dtype", dtype, "--out", str(out), "--cache", str(cache),
                    "--quiet", *extra], check=True, timeout=3600)
    return time.monotonic() - started


def _rows(folder: Path):
    import promptkit as pk

    df = pk.load(folder).to_pandas()
    return df[df["kind"] == "choice"].set_index(["variant", "task", "example"]).sort_index()


def _kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def compare(reference: Path, other: Path) -> dict:
    """Agreement of `other` with `reference`, item by item and in the ranking."""
    ref, oth = _rows(reference), _rows(other)
    both = ref.index.intersection(oth.index)
    ref, oth = ref.loc[both], oth.loc[both]
    same = float((ref["prediction"].to_numpy() == oth["prediction"].to_numpy()).mean())
    deltas = np.concatenate([np.abs(np.asarray(a, float) - np.asarray(b, float))
                             for a, b in zip(ref["logprobs"], oth["logprobs"])])
    rank_ref = json.loads((reference / "ranking.json").read_text())
    rank_oth = json.loads((other / "ranking.json").read_text())
    key = "selection_mean"
    score_ref = {r["variant"]: r[key] for r in rank_ref}
    score_oth = {r["variant"]: r[key] for r in rank_oth}
    variants = sorted(set(score_ref) & set(score_oth))
    cfg_ref = json.loads((reference / "config.json").read_text())
    cfg_oth = json.loads((other / "config.json").read_text())
    return {"items": len(both), "same_prediction": same, "max_abs_delta": float(deltas.max()),
            "median_abs_delta": float(np.median(deltas)),
            "kendall_tau": _kendall_tau([score_ref[v] for v in variants], [score_oth[v] for v in variants]),
            "chosen": (rank_ref[0]["variant"], rank_oth[0]["variant"]),
            "scoring_s": (cfg_ref["timings"]["scoring"], cfg_oth["timings"]["scoring"]),
            "total_s": (cfg_ref["timings"]["total"], cfg_oth["timings"]["total"])}


def report(name: str, c: dict) -> str:
    ref_top, top = c["chosen"]
    chosen = "same" if ref_top == top else f"{top} (reference: {ref_top})"
    return (f"| {name} | {c['total_s'][1]:.0f} s (ref {c['total_s'][0]:.0f} s) | {c['scoring_s'][1]:.0f} s "
            f"({c['scoring_s'][0] / c['scoring_s'][1]:.2f}x) | {100 * c['same_prediction']:.2f}% of {c['items']} | "
            f"{c['max_abs_delta']:.3g} / {c['median_abs_delta']:.2g} | {c['kendall_tau']:.3f} | {chosen} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,bf16-mixed", help="comma-separated; the first is the reference")
    parser.add_argument("--out", default="/tmp/promptkit-dtype", help="folder for the runs and their caches")
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "OTHER"), help="compare two finished runs only")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--suite", default=None, help="built-in suite name or YAML path (default: the built-in default)")
    which.add_argument("--bigbench", action="store_true", help="the built-in BIG-bench suite, bigbench_mc")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `promptkit run` arguments")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, 1-min load {os.getloadavg()[0]:.2f}")
    print("| dtype | wall (reference) | scoring (speed-up) | same prediction | max / median abs. delta log-lik | "
          "Kendall tau | chosen variant |\n|---|---|---|---|---|---|---|")
    if args.compare:
        print(report(Path(args.compare[1]).name, compare(Path(args.compare[0]), Path(args.compare[1]))))
        return
    dtypes = args.dtypes.split(",")
    suite = "bigbench_mc" if args.bigbench else args.suite
    extra = (["--suite", suite] if suite else []) + [a for a in args.extra if a != "--"]
    out = Path(args.out)
    for dtype in dtypes:
        print(f"{dtype}: {run(dtype, out / dtype, extra):.0f} s (load before: see config.json timings)", flush=True)
    for dtype in dtypes[1:]:
        print(report(dtype, compare(out / dtypes[0], out / dtype)))


if __name__ == "__main__":
    main()
