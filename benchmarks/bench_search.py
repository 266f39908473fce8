"""Budgeted search benchmark: how close do halving, racing and Thompson sampling get to the
exhaustive ranking on a fraction of its compute?

    python benchmarks/bench_search.py                        # 64 variants, built-in default suite, default model
    python benchmarks/bench_search.py --variants 16 --seeds 3   # a quicker look
    python benchmarks/bench_search.py --bigbench                # the built-in BIG-bench suite (bigbench_mc)

One exhaustive run (every variant on every example; its scores land in the result cache, so a
rerun of this script costs seconds) gives the reference. Each strategy is then replayed against
that run's score table with the pipeline's own token costs and budget rules, for every budget and
seed (a seed changes the search's example order and draws over the same variants): that is
exactly what `promptkit run --search` computes, minus re-scoring what the cache
already holds (`--check` runs one replay through the pipeline to confirm it). Prints, per strategy and
budget over the seeds: forward tokens used, how often the chosen variant is in the exhaustive
top 3, its exhaustive score minus the best's, how often that is inside the best's 95% CI,
Kendall's tau of the exhaustive top 10 in the strategy's ranking, and the chosen variant's
held-out score.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

import promptkit as pk
from promptkit.run import search
from promptkit.backends.hf import HFBackend
from promptkit.prompts.render import render
from promptkit.tasks.suites import load_tasks
from promptkit.prompts.variants import expand_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="0.10,0.25,0.50")
    parser.add_argument("--strategies", default="halving,racing,thompson")
    parser.add_argument("--out", default="benchmarks/results/search")
    parser.add_argument("--cache", default=None, help="result cache file (default: the shared one)")
    parser.add_argument("--check", action="store_true", help="also run one replay through the pipeline and compare")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--suite", default=None, help="built-in suite name or YAML path (default: the built-in default)")
    which.add_argument("--bigbench", action="store_true", help="the built-in BIG-bench suite, bigbench_mc")
    args = parser.parse_args()
    suite_spec = "bigbench_mc" if args.bigbench else args.suite
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    backend = HFBackend(None, dtype="float32", device="cpu")
    start = time.perf_counter()
    cache = args.cache or True
    full = pk.evaluate(None, suite_spec, backend, max_variants=args.variants, seed=0, out=out / "exhaustive", cache=cache)
    exhaustive_s = time.perf_counter() - start
    # the pipeline's own variant order (ties in a strategy break by it)
    vobjs = {v.id: v for v in expand_all(pk.load_templates(), args.variants, 0)}
    variants = list(vobjs)
    assert set(variants) == set(full.variants)
    rows = full.to_pandas()
    tasks = full.tasks
    selection = [t for t in tasks if tasks[t]["split"] == "selection"]
    held_out = [t for t in tasks if tasks[t]["split"] == "held_out"]

    # the exhaustive reference: mean_norm over the selection tasks, its bootstrap CI, held-out mean_norm
    agg = full.aggregates(tasks=selection, n_boot=1000)
    agg = agg[agg["aggregate"] == "mean_norm"].set_index("variant")
    score = agg["estimate"].to_dict()
    order = sorted(variants, key=lambda v: -score[v])
    best = order[0]
    best_low = agg.loc[best, "ci_examples_low"]
    norm = full.by_task(normalized=True)
    held = norm[held_out].mean(axis=1).to_dict() if held_out else {v: float("nan") for v in variants}

    # token costs exactly as the pipeline charges them
    suite = pk.load_suite(suite_spec)
    task_objs = {t.name: t for t in load_tasks(suite, None, 0)}
    keys, requests = [], []
    for t in tasks:
        for e in task_objs[t].examples:
            for v in variants:
                keys.append((v, t, e.id))
                requests.append(render(vobjs[v], task_objs[t], e))
    tokens = dict(zip(keys, search.request_tokens(requests, backend)))
    exhaustive_tokens = sum(tokens.values())
    reserve = max(sum(tokens[(v, t, e.id)] for t in held_out for e in task_objs[t].examples) for v in variants) if held_out else 0
    correct = {(r.variant, r.task, str(r.example)): r.accuracy for r in rows.itertuples()}

    table = []
    for strategy in args.strategies.split(","):
        for fraction in map(float, args.budgets.split(",")):
            runs = []
            for seed in range(args.seeds):
                cells = search.cell_order(selection, [len(task_objs[t].examples) for t in selection], seed)
                cell_keys = [(selection[t], task_objs[selection[t]].examples[e].id) for t, e in cells]
                cost = np.array([[tokens[(v, t, e)] for t, e in cell_keys] for v in variants])
                chance = np.array([tasks[t]["chance"] for t, _ in cell_keys])
                oracle = lambda pairs: [correct[(variants[v], *cell_keys[c])] for v, c in pairs]
                budget = int(fraction * exhaustive_tokens) - reserve
                res = search.run(strategy, cost, chance, oracle, budget, seed=seed, blocks=len(selection))
                chosen = variants[res.chosen]
                ranked = [variants[v] for v in res.ranking()]
                top10 = order[:10]
                tau = sps.kendalltau(range(len(top10)), [ranked.index(v) for v in top10]).statistic
                runs.append({"seed": seed, "chosen": chosen, "used": res.used + reserve, "top3": chosen in order[:3],
                             "gap": score[chosen] - score[best], "in_ci": score[chosen] >= best_low, "tau": tau,
                             "held_out": held[chosen]})
                if args.check and seed == 0 and fraction == 0.25:
                    via = pk.evaluate(None, suite_spec, backend, max_variants=args.variants, seed=seed, progress=False,
                                      search=strategy, budget=fraction, cache=cache)
                    assert via.config["search"]["chosen"] == chosen, (strategy, via.config["search"]["chosen"], chosen)
            table.append({"strategy": strategy, "budget": fraction,
                          "tokens_used": statistics.median(r["used"] for r in runs) / exhaustive_tokens,
                          "top3": f"{sum(r['top3'] for r in runs)}/{len(runs)}",
                          "gap_mean": statistics.mean(r["gap"] for r in runs), "gap_worst": min(r["gap"] for r in runs),
                          "in_best_ci": f"{sum(r['in_ci'] for r in runs)}/{len(runs)}",
                          "tau_top10": statistics.mean(r["tau"] for r in runs),
                          "held_out_chosen": statistics.mean(r["held_out"] for r in runs), "runs": runs})

    print(f"\nexhaustive: {len(variants)} variants × {len(tasks)} tasks ({len(selection)} selection), "
          f"{exhaustive_tokens:,} forward tokens, {exhaustive_s:.0f} s (less when the cache already held it)")
    print(f"exhaustive best {best}: mean_norm {score[best]:.3f} (95% CI over examples from {best_low:.3f}); "
          f"held-out {held[best]:.3f}; best held-out in hindsight {max(held.values()):.3f}; "
          f"median variant held-out {statistics.median(held.values()):.3f}")
    header = ["strategy", "budget", "tokens_used", "top3", "gap_mean", "gap_worst", "in_best_ci", "tau_top10", "held_out_chosen"]
    print(" ".join(f"{h:>15}" for h in header))
    for row in table:
        print(" ".join(f"{row[h]:>15.3f}" if isinstance(row[h], float) else f"{row[h]:>15}" for h in header))
    print("\ntokens_used: median share of exhaustive forward tokens (search + the chosen variant's held-out tasks); "
          "top3: chosen in the exhaustive top 3; gap: exhaustive mean_norm of the chosen minus the best's; "
          "in_best_ci: chosen's score inside the best's 95% CI; tau_top10: Kendall tau of the exhaustive top 10 "
          "in the strategy's ranking; held_out_chosen: held-out mean_norm of the chosen variant")
    (out / "summary.json").write_text(json.dumps(table, indent=2, default=str))


if __name__ == "__main__":
    main()
