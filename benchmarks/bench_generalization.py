"""Generalization benchmark: does a prompt chosen on some tasks do well on tasks it never saw?

    python benchmarks/bench_generalization.py                    # the full benchmark (hours the first time)
    python benchmarks/bench_generalization.py --partitions 10    # a quicker look once the scores are cached

A pool of multiple-choice tasks is scored once, exhaustively, with 32 variants of the built-in template library
on 24 examples per task with the default model, and the prompts themselves on the first 8 (prompt perplexity): by default the 40 tasks promptkit generates itself
(benchmarks/offline_pool.yaml, no download), with --bigbench 40 BIG-bench tasks (benchmarks/generalization_pool.yaml,
where BIG-bench can be had). The scoring is a normal `promptkit run` in the run's default dtype (bf16-mixed on a
CPU with bfloat16 instructions, else float32: bfloat16 without them is emulated and many times slower); its scores
land in the result cache, so an interrupted run resumes and a rerun of this script costs seconds; on a busy machine,
score halves of the pool first with `OMP_NUM_THREADS=1 promptkit run --suite HALF --max-variants 32 --limit 24
--prompt-likelihood 8` in two processes (the same requests, so this script then finds them all in the cache). Then, with no model calls, the pool is split many times into selection and
held-out tasks: `--partitions` uniformly random splits and as many stratified by task type (yes/no,
options listed in the input, 2-3 way, 4-5 way, many-way: each type split in half). For every split, each
selection rule of promptkit.analysis.selection chooses on the selection tasks only and is scored on the
held-out tasks (mean_norm: chance-normalized accuracy, averaged over tasks); "recommended" is the rule
that nested leave-one-task-out prefers on that split's selection tasks (what `promptkit rank
--recommend` does). References: the median variant and the best single variant in hindsight (the one
variant that is best on that split's held-out tasks).

Few labelled examples ("adapted, N=k"): on each held-out task, k examples are drawn as labelled, every
variant is scored on them, and the hierarchical prior from the selection tasks is updated
(promptkit.analysis.adapt; what `promptkit recommend --labelled k` does); the choice is scored on the
task's other examples. On those same examples: the cross-task choice, the task's best on the k labelled
examples without the prior, and the hindsight-best single variant (fixed across the held-out tasks).

Unlabelled inputs ("unlabelled N=n"): on each held-out task, n inputs are drawn and their labels never read;
each label-free criterion of promptkit.analysis.unlabelled (mutual information, agreement with the ensemble,
calibrated confidence, prompt perplexity: read from the inputs whose prompts were scored, which the choice reads
first) chooses alone, and the weighting of prior and criterion that the split's selection tasks
support (each left out in turn with n inputs; the default unless another is clearly better) chooses one prompt or
the top 3 averaged (what `promptkit recommend
--unlabelled n` does). Scored on all of the task's examples, as the rules are; the cost adds n × variants calls.

Printed and written to benchmarks/results/generalization.json: per rule, the mean held-out mean_norm
with a 95% interval over partitions (bootstrap of the mean), its ratio to the hindsight-best single
variant (95% interval, partitions resampled), and the share of partitions where it beats the median variant
(Wilson 95% interval). The intervals treat partitions as independent draws; they share tasks, so read
them as the spread over splits of this pool, not as a sampling interval over all tasks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import promptkit as pk
from promptkit.analysis import adapt
from promptkit.analysis import selection as sel
from promptkit.analysis import unlabelled as ul
from promptkit.tasks.suites import load_suite, load_tasks

POOL = Path(__file__).with_name("offline_pool.yaml")  # generated tasks: no download
BIGBENCH_POOL = Path(__file__).with_name("generalization_pool.yaml")  # 40 BIG-bench tasks, where BIG-bench can be had


def task_type(f: dict) -> str:
    if f["yes_no"] >= 0.5:
        return "yes/no"
    if f["options_in_input"] >= 0.5:
        return "options in input"
    return "2-3 way" if f["n_choices"] < 3.5 else "4-5 way" if f["n_choices"] < 5.5 else "many-way"


def partitions(tasks: list[str], types: dict[str, str], n: int, stratified: bool, seed: int) -> list[tuple[list, list]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if stratified:
            selection = []
            for kind in sorted(set(types.values())):
                members = [t for t in tasks if types[t] == kind]
                rng.shuffle(members)
                take = len(members) // 2 + (rng.random() < 0.5 if len(members) % 2 else 0)
                selection += members[:take]
        else:
            order = list(tasks)
            rng.shuffle(order)
            selection = order[: len(tasks) // 2]
        out.append((sorted(selection), sorted(t for t in tasks if t not in selection)))
    return out


def norm(acc: np.ndarray | float, chance: float):
    return (acc - chance) / (1 - chance)


def adapted(ct: sel.ChoiceTable, selection: list[str], held: list[str], k: int, rng: np.random.Generator) -> dict:
    """Few-label adaptation on every held-out task; all scores on each task's unlabelled examples."""
    prior = sel.fit_prior(ct, selection)
    cross = int(np.argmax(prior.mu))
    per = {"adapted": [], "own_best": [], "cross_task": [], "rest": []}
    for t in held:
        n = ct.n_examples(t)
        idx = rng.permutation(n)
        labelled, rest = idx[:k], idx[k:]
        lab = ct.correct_by_variant(t, labelled)
        post = adapt.posterior(prior, lab, ct.chance[t])
        scores = norm(ct.correct_by_variant(t, rest).mean(axis=1), ct.chance[t])
        per["adapted"].append(scores[post.choice()])
        per["own_best"].append(scores[int(np.argmax(lab.mean(axis=1)))])
        per["cross_task"].append(scores[cross])
        per["rest"].append(scores)
    rest = np.mean(per.pop("rest"), axis=0)  # per variant, mean over held-out tasks, same examples
    out = {key: float(np.mean(v)) for key, v in per.items()}
    out["best_single"] = float(rest.max())
    out["median"] = float(np.median(rest))
    return out


def label_free(ct: sel.ChoiceTable, selection: list[str], held: list[str], n: int, rng: np.random.Generator) -> dict:
    """The choice from n unlabelled inputs of each held-out task (promptkit.analysis.unlabelled; what `promptkit
    recommend --unlabelled n` does): each criterion alone, the prior alone, and the weighting learned on the
    selection tasks (one prompt, and the top 3 averaged). Scored on all of the task's examples: no label was read."""
    learned = ul.learn(ct, selection, n, seed=int(rng.integers(1 << 30)), also=held)
    mu = ct.table(selection).mean(axis=1)
    per: dict[str, list] = {}
    for t in held:
        crit = ul.task_criteria(ct, t, ul.inputs_of(ct, t, n, seed=int(rng.integers(1 << 30))))
        scores = ct.single(t)
        for c in crit:
            per.setdefault(f"{c} alone", []).append(scores[ul.pick(crit[c])[0]])
        combined = ul.combined(mu, crit, learned.criterion, learned.weight)
        per.setdefault("learned", []).append(scores[ul.pick(combined)[0]])
        top3 = sel.Candidate(tuple(ct.variants[i] for i in ul.pick(combined, 3)), "mean_prob")
        per.setdefault("learned, top-3 ensemble", []).append(ct.normalized(top3, t))
    out = {key: float(np.mean(v)) for key, v in per.items()}
    out["weighting"] = learned.name
    return out


COST = {"perplexity": "1x + {p}×variants prompt likelihoods", "learned": "1x + {n}×variants calls (+ as many prompt "
        "likelihoods where perplexity is weighed)", "learned, top-3 ensemble": "3x + {n}×variants calls (+ as many "
        "prompt likelihoods where perplexity is weighed)"}


def run_partition(ct: sel.ChoiceTable, selection: list[str], held: list[str], labelled: list[int], seed: int,
                  unlabelled: list[int] = ()) -> dict:
    singles = ct.table(held).mean(axis=1)
    row = {"best_single": float(singles.max()), "median": float(np.median(singles)), "rules": {}, "adapted": {},
           "unlabelled": {}}
    for name in sel.RULES:
        row["rules"][name] = held_out_score(ct, name, selection, held)
    rec = sel.recommend(ct, selection)
    row["recommended_rule"] = rec.rule
    row["rules"]["recommended"] = row["rules"][rec.rule]
    for k in labelled:
        row["adapted"][k] = adapted(ct, selection, held, k, np.random.default_rng([seed, k]))
    for n in unlabelled:
        row["unlabelled"][n] = label_free(ct, selection, held, n, np.random.default_rng([seed, n, 1]))
    return row


def held_out_score(ct, name, selection, held) -> float:
    return sel.held_out_score(ct, name, selection, held)[0]


def interval(values: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    reps = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def summarize(rows: list[dict], labelled: list[int], unlabelled: list[int] = (), prompts: int = 0) -> list[dict]:
    rng = np.random.default_rng(0)
    best = np.array([r["best_single"] for r in rows])
    median = np.array([r["median"] for r in rows])
    lines = []

    def line(name, values, best_ref, median_ref, cost=""):
        values = np.asarray(values)
        beats = int((values > median_ref + 1e-12).sum())
        idx = rng.integers(0, len(values), (2000, len(values)))
        ratios = values[idx].mean(axis=1) / best_ref[idx].mean(axis=1)
        lines.append({"rule": name, "cost": cost, "mean": float(values.mean()), "ci": interval(values, rng),
                      "ratio_to_best": float(values.mean() / best_ref.mean()),
                      "ratio_ci": (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))),
                      "beats_median": beats / len(values), "beats_median_ci": wilson(beats, len(values))})

    for name in [*sel.RULES, "recommended"]:
        cost = {"ensemble3": "3x", "vote3": "3x", "ensemble5": "5x", "vote5": "5x"}.get(name, "1x")
        line(name, [r["rules"][name] for r in rows], best, median, cost if name != "recommended" else "1-5x")
    line("median variant", median, best, median, "1x")
    line("best single variant in hindsight", best, best, median, "1x")
    for k in labelled:
        a = [r["adapted"][k] for r in rows]
        b, m = np.array([x["best_single"] for x in a]), np.array([x["median"] for x in a])
        for key, label in (("adapted", f"adapted, N={k} labelled (prior + labels)"),
                           ("own_best", f"task's own best on N={k} labelled (no prior)"),
                           ("cross_task", f"cross-task choice (top1), same {24 - k} examples")):
            line(label, [x[key] for x in a], b, m, "1x" if key == "cross_task" else f"1x + {k}×variants calls")
        line(f"hindsight-best single, same {24 - k} examples", b, b, m, "1x")
    for n in unlabelled:
        for key in (*(f"{c} alone" for c in ul.CRITERIA), "learned", "learned, top-3 ensemble"):
            if key not in rows[0]["unlabelled"][n]:
                continue  # perplexity: a pool scored without prompt likelihoods
            label = f"unlabelled N={n}: " + ("prior + criterion, as recommend --unlabelled weighs them" if key == "learned"
                                             else f"{ul.NAMES[key[:-6]]} alone" if key.endswith(" alone") else key)
            cost = COST.get(key.removesuffix(" alone"), "1x + {n}×variants calls").format(n=n, p=min(n, prompts))
            line(label, [r["unlabelled"][n][key] for r in rows], best, median, cost)
    return lines


def task_table(ct: sel.ChoiceTable, types: dict[str, str]) -> list[dict]:
    """Per task: its type, chance, and the accuracy of the mean, best and worst of the variants, and their spread
    (what chose the built-in suite's tasks: prompts must matter, and the best prompt must beat chance)."""
    out = []
    for t in ct.tasks:
        acc = ct.correct_by_variant(t).mean(axis=1)
        out.append({"task": t, "type": types[t], "chance": round(ct.chance[t], 3), "mean": round(float(acc.mean()), 3),
                    "best": round(float(acc.max()), 3), "worst": round(float(acc.min()), 3),
                    "sd": round(float(acc.std()), 3)})
    return sorted(out, key=lambda r: (r["type"], -(r["best"] - r["chance"])))


def score_pool(run_dir: Path, suite: str, variants: int, limit: int, dtype: str, prompts: int) -> pk.Results:
    if (run_dir / "results.jsonl").exists():
        return pk.load(run_dir)
    return pk.evaluate(None, suite, None, max_variants=variants, limit=limit, seed=0, dtype=dtype, out=run_dir,
                       report=False, prompt_likelihood=prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="the pool's run directory (default benchmarks/results/POOL_run; "
                        "scored and written there if missing; resumable from the cache)")
    parser.add_argument("--suite", default=None, help="the task pool (a suite; its split is ignored; default: "
                        "benchmarks/offline_pool.yaml, the generated tasks)")
    parser.add_argument("--bigbench", action="store_true", help="the pool of 40 BIG-bench tasks "
                        "(benchmarks/generalization_pool.yaml; needs BIG-bench: PROMPTKIT_BIGBENCH, the cache or the Hub)")
    parser.add_argument("--variants", type=int, default=32)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--dtype", default="auto", help="model dtype of the pool's scoring (default: the run's own, bf16-mixed on a CPU with "
                        "bfloat16 instructions, else float32; bfloat16 without them is emulated and many times slower)")
    parser.add_argument("--partitions", type=int, default=50, help="random partitions (and as many stratified)")
    parser.add_argument("--labelled", default="4,8", help="labelled examples per held-out task for adaptation")
    parser.add_argument("--unlabelled", default="8,16,24", help="unlabelled inputs per held-out task for the label-free choice")
    parser.add_argument("--prompt-likelihood", type=int, default=8, help="inputs per task whose prompts are scored "
                        "themselves, for prompt perplexity (default 8: each costs more than its choices; the label-free "
                        "choice reads these inputs first)")
    parser.add_argument("--mode", default="raw", help="scoring mode (raw, per_token, per_char)")
    parser.add_argument("--out", default="benchmarks/results/generalization.json")
    args = parser.parse_args()
    if args.suite is None:
        args.suite = str(BIGBENCH_POOL if args.bigbench else POOL)
    elif args.bigbench:
        parser.error("--bigbench and --suite name two pools; give one")
    args.run = args.run or f"benchmarks/results/{Path(args.suite).stem}_run"
    labelled = [int(x) for x in args.labelled.split(",") if x]
    unlabelled = [int(x) for x in args.unlabelled.split(",") if x]

    started = time.perf_counter()
    results = score_pool(Path(args.run), args.suite, args.variants, args.limit, args.dtype, args.prompt_likelihood)
    suite = load_suite(args.suite)
    features = {t.name: t.features() for t in load_tasks(suite, args.limit, 0)}
    ct = sel.ChoiceTable.from_rows(results.rows, results.tasks, args.mode, features=features)
    types = {t: task_type(ct.features[t]) for t in ct.tasks}
    print(f"{len(ct.tasks)} tasks, {len(ct.variants)} variants; task types: "
          + ", ".join(f"{k} {list(types.values()).count(k)}" for k in sorted(set(types.values()))))
    report_tasks = task_table(ct, types)
    print("| task | type | chance | mean of variants | best | worst | sd |\n|---|---|---|---|---|---|---|")
    for r in report_tasks:
        print(f"| {r['task']} | {r['type']} | {r['chance']:.2f} | {r['mean']:.2f} | {r['best']:.2f} | {r['worst']:.2f} | {r['sd']:.2f} |")
    report = {"per_task": report_tasks, "tasks": len(ct.tasks), "variants": len(ct.variants), "mode": args.mode, "types": types,
              "model": results.config.get("model", {})}
    for stratified in (False, True):
        parts = partitions(ct.tasks, types, args.partitions, stratified, seed=1 if stratified else 0)
        rows = [run_partition(ct, s, h, labelled, seed=i, unlabelled=unlabelled) for i, (s, h) in enumerate(parts)]
        title = "stratified by task type" if stratified else "uniformly random"
        summary = summarize(rows, labelled, unlabelled, int(results.config.get("prompt_likelihood") or 0))
        chosen = {r["recommended_rule"] for r in rows}
        weightings = {n: [r["unlabelled"][n]["weighting"] for r in rows] for n in unlabelled}
        report[title] = {"partitions": len(rows), "summary": summary,
                         "recommended_rules": {c: sum(r["recommended_rule"] == c for r in rows) for c in sorted(chosen)},
                         "unlabelled_weightings": {n: {w: ws.count(w) for w in sorted(set(ws))} for n, ws in weightings.items()}}
        print(f"\n{len(rows)} partitions, {title} ({len(parts[0][0])} selection / {len(parts[0][1])} held-out tasks); "
              f"recommended rule per partition: {report[title]['recommended_rules']}; label-free weighting learned per "
              f"partition: {report[title]['unlabelled_weightings']}")
        print("| rule | cost | held-out mean_norm [95% CI] | ratio to hindsight-best [95% CI] | beats median [95% CI] |")
        print("|---|---|---|---|---|")
        for r in summary:
            print(f"| {r['rule']} | {r['cost']} | {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
                  f"{r['ratio_to_best']:.0%} [{r['ratio_ci'][0]:.0%}, {r['ratio_ci'][1]:.0%}] | {r['beats_median']:.0%} "
                  f"[{r['beats_median_ci'][0]:.0%}, {r['beats_median_ci'][1]:.0%}] |")
    report["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
