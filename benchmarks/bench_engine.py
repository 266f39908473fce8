"""Scoring-engine benchmark: promptkit vs lm-evaluation-harness 0.4.x's HF backend, same requests, same model.

    python benchmarks/bench_engine.py                         # full size: 50 examples per task, 3 paired reps
    python benchmarks/bench_engine.py --examples 8 --reps 3   # the quick look

Needs the `bench` extra (pip install -e ".[bench]"). Workloads (`--workloads`, comma list), on tasks promptkit
generates itself (no download; `--bigbench` for the BIG-bench lists instead, where BIG-bench can be had):
  zero   4 built-in zero-shot variants x 4 tasks: yes/no, 3-way, 4-way, 4-way
  few    the same with 3 demonstrations shared by every example of a variant x task
  plain  lm-eval's own plain format (`Question: ...\nAnswer:`, each choice a continuation) on 4 tasks whose
         choices are words and phrases: many multi-token continuations
  long   plain format, 3-shot, on 2 tasks whose input is a 50-row table (280-380 tokens): prompts of 1,100-1,500
         tokens (BIG-bench's: 300+ token inputs, prompts of 1,000-2,000)
  many   plain format on tasks with 12-26 choices
The engines run interleaved: each repetition of each engine is its own subprocess (so each peak RSS is its own),
promptkit and lm-eval alternate (A B, then B A), and before every repetition the script waits (at most
--max-wait s) for the 1-minute load average to fall to --max-load; a repetition that starts above it is flagged
and left out of the medians. The ratio is taken per pair (lm-eval time / promptkit time) and reported as the
median with its range. `--lmeval-batch 8,16,32,auto` first runs lm-eval once at each batch size (on the
workloads in --sweep-on) and takes the fastest as the baseline. Also printed: forward tokens, tokens/s,
promptkit's achieved FLOP/s against this machine's float32 matmul FLOP/s (the best of 10 products of 2,048², measured
in the same process before and right after each repetition, since the machine's speed drifts; the higher is kept;
median over pairs), the largest |difference| in log-likelihood, argmax agreement, and peak RSS. The peak fraction is
given twice: for promptkit's first call (peak_fraction, the call timed against lm-eval) and for the fastest of its
--efficiency-reps calls in the same process (peak_fraction_best: a best time against a best-of-10 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# generated tasks (promptkit/tasks/sources/generated): no download
TASKS = ["same_continent", "compare_product", "capital_of_country", "plural_of_noun"]  # yes/no, 3-, 4-, 4-way
PLAIN_TASKS = ["number_in_words", "emoji_name", "country_of_city", "rhymes_with"]  # multi-token phrases
LONG_TASKS = ["capital_lookup", "atomic_number_lookup"]  # a 30-row table, then a question: 180-240 token inputs
MANY_TASKS = ["letter_after", "month_after", "family_relation"]  # 26, 12, 12 choices
# BIG-bench (--bigbench): where PROMPTKIT_BIGBENCH, the task cache or the Hub has it
BIGBENCH_TASKS = ["sports_understanding", "unit_conversion/unit_identification", "movie_recommendation", "phrase_relatedness"]
BIGBENCH_PLAIN_TASKS = ["emoji_movie", "movie_recommendation", "riddle_sense", "ruin_names"]
BIGBENCH_LONG_TASKS = ["logic_grid_puzzle", "timedial", "causal_judgment", "gre_reading_comprehension"]
BIGBENCH_MANY_TASKS = ["reasoning_about_colored_objects", "color/rgb", "language_identification", "implicit_relations"]


def workloads(bigbench: bool = False) -> dict[str, tuple[str, int, list[str]]]:
    """Each workload's (format, shots, task names): generated tasks, or BIG-bench's with `bigbench`."""
    zero, plain, long, many = ((BIGBENCH_TASKS, BIGBENCH_PLAIN_TASKS, BIGBENCH_LONG_TASKS, BIGBENCH_MANY_TASKS)
                               if bigbench else (TASKS, PLAIN_TASKS, LONG_TASKS, MANY_TASKS))
    return {"zero": ("variants", 0, zero), "few": ("variants", 3, zero), "plain": ("plain", 0, plain),
            "long": ("plain", 3, long), "many": ("plain", 0, many)}


WORKLOADS = workloads()


def make_suite(names: list[str], bigbench: bool = False):
    """A suite of `names` from the generated tasks, or from BIG-bench with `bigbench`."""
    from promptkit.tasks.suites import suite_from_dict

    source = "bigbench" if bigbench else "generated"
    return suite_from_dict({"name": "bench", "selection": [f"{source}:{t}" for t in names]}, Path("bench.yaml"))


def load_tasks(names: list[str], n: int, seed: int = 0, bigbench: bool = False):
    from promptkit.tasks.suites import load_tasks as load

    return load(make_suite(names, bigbench), limit=n, seed=seed)


def build_requests(workload: str, n_variants: int, n_examples: int, seed: int = 0, bigbench: bool = False) -> list[dict]:
    """Rendered requests: one per (variant x) task x example, with the workload's shared demonstrations."""
    import promptkit as pk

    kind, shots, names = workloads(bigbench)[workload]
    if kind == "plain" and not shots:  # one format instead of n_variants: as many requests per task as the variant workloads
        n_examples *= n_variants
    requests = []
    for task in load_tasks(names, n_examples + shots, seed, bigbench):
        demos, evaluated = task.examples[:shots], task.examples[shots:shots + n_examples]
        if kind == "plain":  # lm-eval's default multiple-choice format, choices as continuations
            prefix = "".join(f"Question: {d.input}\nAnswer: {d.choices[d.target]}\n\n" for d in demos)
            for e in evaluated:
                requests.append({"prompt": f"{prefix}Question: {e.input}\nAnswer:", "continuations": [" " + c for c in e.choices],
                                 "target": e.target, "id": f"plain/{task.name}/{e.id}"})
            continue
        for v in [pk.expand(f)[0] for f in pk.load_templates()][:n_variants]:
            prefix = ""
            for d in demos:
                r = pk.render(v, task, d)
                prefix += r.prompt + r.continuations[d.target] + "\n\n"
            for e in evaluated:
                r = pk.render(v, task, e)
                requests.append({"prompt": prefix + r.prompt, "continuations": list(r.continuations),
                                 "target": e.target, "id": f"{v.id}/{task.name}/{e.id}"})
    return requests


def pairs_of(requests):
    return [(r["prompt"], c) for r in requests for c in r["continuations"]]


def run_promptkit(model_dir: str, requests, reps: int, dtype: str = "float32") -> dict:
    from promptkit.backends.hf import HFBackend

    backend = HFBackend(model_dir, dtype=dtype, device="cpu")
    backend.load_weights(), backend.tokenizer  # the backend loads both lazily; loading is not part of the timing
    pairs = pairs_of(requests)
    times, scores = [], None
    for _ in range(reps):
        backend.forward_tokens, backend.attention_keys, backend.projected_rows = 0, [0, 0], 0
        start = time.perf_counter()
        scores = backend.loglikelihood(pairs)
        times.append(time.perf_counter() - start)
    projected = sum(s.n_tokens for s in scores)
    # FLOPs count the projection once per position projected (one for all the choices a prompt's last position
    # predicts), not once per target token: the work done, not the work avoided
    return {"times": times, "forward_tokens": backend.forward_tokens, "projected_tokens": projected,
            "projected_rows": backend.projected_rows,
            "attention_flops": _attention_flops(backend.model.config, backend.attention_keys),
            "logprobs": [s.logprob for s in scores], "params": _param_counts(backend.model)}


def run_lmeval(model_dir: str, requests, reps: int, batch_size: int | str) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model_dir, dtype="float32", device="cpu", batch_size=batch_size)
    instances = [Instance("loglikelihood", {}, (p, c), i) for i, (p, c) in enumerate(pairs_of(requests))]
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = lm.loglikelihood(instances, disable_tqdm=True)
        times.append(time.perf_counter() - start)
    # lm-eval feeds every (context + continuation) except the last token, once per distinct
    # sequence, and once per context for one-token continuations (its logits cache)
    seen, tokens = set(), 0
    for p, c in pairs_of(requests):
        ctx, cont = lm._encode_pair(p, c)
        key = tuple(ctx + cont[:-1]) if len(cont) == 1 else tuple(ctx + cont)
        if key not in seen:
            seen.add(key)
            tokens += len(ctx) + len(cont) - 1
    return {"times": times, "forward_tokens": tokens, "logprobs": [ll for ll, _ in out]}


def _param_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return {"total": total, "embedding": emb.numel(), "hidden": emb.shape[1], "vocab": head.shape[0]}


def _attention_flops(config, keys: list[int]) -> int:
    """QK^T and attention-times-V: 2 multiply-adds per head dimension per key, in every layer
    (sliding-window layers see at most the window; `keys` holds both sums)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return sum(4 * heads * head_dim * (keys[1] if t == "sliding_attention" else keys[0]) for t in types)


def matmul_peak(dtype: str = "float32", n: int = 2048, reps: int = 10) -> float:
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def child(args) -> None:
    requests = json.loads(Path(args.requests).read_text())
    if args.engine == "promptkit":
        # the machine's speed drifts (up to 25% within an hour here): the peak this repetition is measured against is
        # taken in the same process, before and right after it, and the higher of the two is kept
        before = matmul_peak()
        result = run_promptkit(args.model_dir, requests, args.reps, args.dtype)
        result["peaks"] = [before, matmul_peak()]
        result["peak"] = max(result["peaks"])
    else:
        batch = args.lmeval_batch if args.lmeval_batch == "auto" else int(args.lmeval_batch)
        result = run_lmeval(args.model_dir, requests, args.reps, batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))


def wait_idle(max_load: float, max_wait: float) -> float:
    """Wait (bounded) for the 1-minute load average to fall to `max_load`; the load when the wait ended."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def run_child(args, engine: str, workload: str, req_file: Path, model_dir: str, batch: str, tag: str) -> dict | None:
    """One repetition of one engine in its own subprocess, after waiting for an idle machine; its result stays in
    result-<workload>-<engine>-<tag>.json. None (said on stdout) when the process failed, e.g. killed for memory:
    the other repetitions and workloads go on."""
    load = wait_idle(args.max_load, args.max_wait)
    res_file = Path(args.out) / f"result-{workload}-{engine}-{tag}.json"
    reps = str(args.efficiency_reps) if engine == "promptkit" else "1"
    cmd = [sys.executable, __file__, "--engine", engine, "--requests", str(req_file), "--result", str(res_file),
           "--model-dir", model_dir, "--reps", reps, "--lmeval-batch", batch, "--dtype", args.dtype]
    try:
        subprocess.run(cmd, check=True, timeout=6 * 3600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        why = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else \
            f"exit {exc.returncode}" + (" (killed: out of memory?)" if exc.returncode == -9 else "")
        print(f"  {workload}: {engine} (lm-eval batch {batch}) failed, {why}; left out", flush=True)
        return None
    result = json.loads(res_file.read_text())
    result["load"] = load
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3, help="paired repetitions (each engine once per pair)")
    parser.add_argument("--workloads", default="zero,few,plain,long,many", help=f"comma list of {','.join(WORKLOADS)}")
    parser.add_argument("--lmeval-batch", default="8,16,32,auto", help="lm-eval batch sizes to try; the fastest is the baseline")
    parser.add_argument("--sweep-on", default="all", help="workloads on which to try every lm-eval batch size "
                        "(others use the fastest found so far)")
    parser.add_argument("--max-load", type=float, default=0.5, help="1-minute load average a repetition may start at")
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for that load before flagging")
    parser.add_argument("--dtype", default="float32", help="promptkit's dtype (lm-eval stays float32): float32 or "
                        "bf16-mixed; the peak fraction is always against the float32 matmul peak")
    parser.add_argument("--efficiency-reps", type=int, default=3, help="promptkit's calls per repetition (one process): "
                        "the first is the one paired with lm-eval's; the fastest gives peak_fraction_best")
    parser.add_argument("--bigbench", action="store_true", help="BIG-bench task lists instead of generated tasks "
                        "(BIG-bench from PROMPTKIT_BIGBENCH, the task cache or the Hub)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.engine:
        return child(args)

    from promptkit.backends.hf import resolve_model

    model_dir, _ = resolve_model(None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wait_idle(args.max_load, args.max_wait)
    peak = matmul_peak()
    print(f"model {model_dir}; measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s; torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}", flush=True)
    batches = args.lmeval_batch.split(",")
    best_batch, rows = batches[0], []
    for workload in args.workloads.split(","):
        requests = build_requests(workload, args.variants, args.examples, bigbench=args.bigbench)
        req_file = out / f"requests-{workload}.json"
        req_file.write_text(json.dumps(requests))
        if len(batches) > 1 and (args.sweep_on == "all" or workload in args.sweep_on.split(",")):
            sweep = {b: run_child(args, "lmeval", workload, req_file, model_dir, b, f"batch{b}") for b in batches}
            for b, r in sweep.items():
                if r:
                    print(f"  {workload}: lm-eval batch {b}: {r['times'][0]:.1f} s (load {r['load']:.2f})", flush=True)
            if not any(sweep.values()):
                continue
            best_batch = min((b for b in batches if sweep[b]), key=lambda b: sweep[b]["times"][0])
        pairs = []
        for rep in range(args.reps):
            order = ("promptkit", "lmeval") if rep % 2 == 0 else ("lmeval", "promptkit")
            got = {e: run_child(args, e, workload, req_file, model_dir, best_batch, f"pair{rep + 1}") for e in order}
            if not all(got.values()):
                continue
            pairs.append(got)
            print(f"  {workload} pair {rep + 1}: promptkit {got['promptkit']['times'][0]:.1f} s (load {got['promptkit']['load']:.2f}), "
                  f"lm-eval {got['lmeval']['times'][0]:.1f} s (load {got['lmeval']['load']:.2f})", flush=True)
        if pairs:
            rows.append(summarize(workload, requests, pairs, args.max_load, best_batch))
            (out / "summary.json").write_text(json.dumps(rows, indent=2))  # kept as each workload ends
    print()
    header = ["workload", "requests", "continuations", "promptkit_s", "lmeval_s", "speedup", "speedup_min", "speedup_max",
              "pairs_ok", "lmeval_batch", "promptkit_tokens", "lmeval_tokens", "promptkit_tok_s", "lmeval_tok_s",
              "promptkit_gflops", "peak_fraction", "peak_fraction_best", "max_abs_dll", "same_argmax", "promptkit_rss_mb", "lmeval_rss_mb"]
    print(" ".join(f"{h:>14}" for h in header))
    for row in rows:
        print(" ".join(f"{row[h]:>14.4g}" if isinstance(row[h], float) else f"{row[h]:>14}" for h in header))
    print(f"\npromptkit in {args.dtype}; baseline: lm-evaluation-harness {_version('lm_eval')} HFLM at its fastest batch "
          f"size of {args.lmeval_batch}, same model, float32; {args.reps} interleaved pairs per workload, each repetition its own process started at "
          f"1-minute load <= {args.max_load} (pairs_ok: pairs that did); speedup = median over pairs of lm-eval time / "
          "promptkit time, with its range")


def summarize(workload: str, requests: list[dict], pairs: list[dict], max_load: float, batch: str) -> dict:
    ok = [p for p in pairs if max(p["promptkit"]["load"], p["lmeval"]["load"]) <= max_load] or pairs
    pk_, lm = pairs[-1]["promptkit"], pairs[-1]["lmeval"]
    diffs = [abs(a - b) for a, b in zip(pk_["logprobs"], lm["logprobs"])]
    same, k = 0, 0
    for r in requests:
        n = len(r["continuations"])
        a, b = pk_["logprobs"][k:k + n], lm["logprobs"][k:k + n]
        same += max(range(n), key=a.__getitem__) == max(range(n), key=b.__getitem__)
        k += n
    p = pk_["params"]
    # model FLOPs actually needed (padding not counted): weights, vocabulary projection, attention
    flops = (2 * (p["total"] - p["embedding"]) * pk_["forward_tokens"] + 2 * p["hidden"] * p["vocab"] * pk_["projected_rows"]
             + pk_["attention_flops"])
    # before 2026-12-03 the projection was counted once per target token; kept in the JSON to compare old figures
    per_target = flops + 2 * p["hidden"] * p["vocab"] * (pk_["projected_tokens"] - pk_["projected_rows"])
    ratios = [q["lmeval"]["times"][0] / q["promptkit"]["times"][0] for q in ok]
    fractions = [flops / q["promptkit"]["times"][0] / q["promptkit"]["peak"] for q in ok]
    # the peak is a best of 10 products: measured against it like for like, the fastest call of the process
    best = [flops / min(q["promptkit"]["times"]) / q["promptkit"]["peak"] for q in ok]
    t_pk = statistics.median(q["promptkit"]["times"][0] for q in ok)
    t_lm = statistics.median(q["lmeval"]["times"][0] for q in ok)
    return {"workload": workload, "requests": len(requests), "continuations": len(pk_["logprobs"]),
            "promptkit_s": t_pk, "lmeval_s": t_lm, "speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "pairs_ok": f"{len(ok) if ok is not pairs else 0}/{len(pairs)}", "lmeval_batch": batch,
            "promptkit_tokens": pk_["forward_tokens"], "lmeval_tokens": lm["forward_tokens"],
            "promptkit_tok_s": pk_["forward_tokens"] / t_pk, "lmeval_tok_s": lm["forward_tokens"] / t_lm,
            "promptkit_gflops": flops / t_pk / 1e9, "peak_fraction": statistics.median(fractions),
            "peak_fraction_best": statistics.median(best), "promptkit_times": [q["promptkit"]["times"] for q in pairs],
            "peak_fraction_per_target": statistics.median(per_target / q["promptkit"]["times"][0] / q["promptkit"]["peak"] for q in ok),
            "max_abs_dll": max(diffs), "same_argmax": same / len(requests),
            "promptkit_rss_mb": pk_["peak_rss_mb"], "lmeval_rss_mb": lm["peak_rss_mb"],
            "loads": [[q["promptkit"]["load"], q["lmeval"]["load"]] for q in pairs],
            "peaks_gflops": [[g / 1e9 for g in q["promptkit"]["peaks"]] for q in pairs]}


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
