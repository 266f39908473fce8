"""Scoring-engine benchmark: promptkit vs lm-evaluation-harness 0.4.x's HF backend, same requests, same model.

    python benchmarks/bench_engine.py                      # full size: 4 variants x 4 tasks x 50 examples, 3 reps
    python benchmarks/bench_engine.py --examples 10 --reps 1   # a quick look

Needs the `bench` extra (pip install -e ".[bench]"). Each engine runs in its own subprocess
(so each peak RSS is its own), on the same rendered (prompt, continuation) pairs:
(a) zero-shot variants, (b) 3-shot variants whose demonstrations are shared by every
example of a variant x task. Prints wall time (median of reps) and the ratio, forward tokens,
tokens/s, promptkit's achieved FLOP/s against this machine's measured matmul FLOP/s, the
largest |difference| in log-likelihood, argmax agreement, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TASKS = ["sports_understanding", "unit_conversion/unit_identification", "movie_recommendation", "phrase_relatedness"]


def build_requests(n_variants: int, n_examples: int, shots: int, seed: int = 0) -> list[dict]:
    """Rendered requests: one per variant x task x example, with `shots` shared demonstrations."""
    import promptkit as pk
    from promptkit.tasks.suites import load_task

    families = pk.load_templates()
    variants = [pk.expand(f)[0] for f in families][:n_variants]
    suite = pk.load_suite()
    specs = [suite.task(t) for t in TASKS]
    requests = []
    for spec in specs:
        task = load_task(spec, limit=n_examples + shots, seed=seed)
        demos, evaluated = task.examples[:shots], task.examples[shots:shots + n_examples]
        for v in variants:
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


def run_promptkit(model_dir: str, requests, reps: int) -> dict:
    from promptkit.backends.hf import HFBackend

    backend = HFBackend(model_dir, dtype="float32", device="cpu")
    pairs = pairs_of(requests)
    times, scores = [], None
    for _ in range(reps):
        backend.forward_tokens, backend.attention_keys = 0, [0, 0]
        start = time.perf_counter()
        scores = backend.loglikelihood(pairs)
        times.append(time.perf_counter() - start)
    projected = sum(s.n_tokens for s in scores)
    return {"times": times, "forward_tokens": backend.forward_tokens, "projected_tokens": projected,
            "attention_flops": _attention_flops(backend.model.config, backend.attention_keys),
            "logprobs": [s.logprob for s in scores], "params": _param_counts(backend.model)}


def run_lmeval(model_dir: str, requests, reps: int, batch_size: int) -> dict:
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
        result = run_promptkit(args.model_dir, requests, args.reps)
    else:
        result = run_lmeval(args.model_dir, requests, args.reps, args.lmeval_batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workloads", default="zero,few", help="comma list of zero,few")
    parser.add_argument("--lmeval-batch", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        return child(args)

    from promptkit.backends.hf import resolve_model

    model_dir, _ = resolve_model(None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peak = matmul_peak()
    print(f"model {model_dir}; measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for workload in args.workloads.split(","):
        shots = 3 if workload == "few" else 0
        requests = build_requests(args.variants, args.examples, shots)
        req_file = out / f"requests-{workload}.json"
        req_file.write_text(json.dumps(requests))
        results = {}
        for engine in ("promptkit", "lmeval"):
            res_file = out / f"result-{workload}-{engine}.json"
            cmd = [sys.executable, __file__, "--engine", engine, "--requests", str(req_file), "--result", str(res_file),
                   "--model-dir", model_dir, "--reps", str(args.reps), "--lmeval-batch", str(args.lmeval_batch)]
            subprocess.run(cmd, check=True, timeout=6 * 3600)
            results[engine] = json.loads(res_file.read_text())
        pk_, lm = results["promptkit"], results["lmeval"]
        diffs = [abs(a - b) for a, b in zip(pk_["logprobs"], lm["logprobs"])]
        same, k = 0, 0
        for r in requests:
            n = len(r["continuations"])
            a, b = pk_["logprobs"][k:k + n], lm["logprobs"][k:k + n]
            same += max(range(n), key=a.__getitem__) == max(range(n), key=b.__getitem__)
            k += n
        p = pk_["params"]
        # model FLOPs actually needed (padding not counted): weights, vocabulary projection, attention
        flops = (2 * (p["total"] - p["embedding"]) * pk_["forward_tokens"] + 2 * p["hidden"] * p["vocab"] * pk_["projected_tokens"]
                 + pk_["attention_flops"])
        t_pk, t_lm = statistics.median(pk_["times"]), statistics.median(lm["times"])
        rows.append({"workload": workload, "requests": len(requests), "continuations": len(pk_["logprobs"]),
                     "promptkit_s": t_pk, "lmeval_s": t_lm, "speedup": t_lm / t_pk,
                     "promptkit_tokens": pk_["forward_tokens"], "lmeval_tokens": lm["forward_tokens"],
                     "promptkit_tok_s": pk_["forward_tokens"] / t_pk, "lmeval_tok_s": lm["forward_tokens"] / t_lm,
                     "promptkit_gflops": flops / t_pk / 1e9, "peak_fraction": flops / t_pk / peak,
                     "max_abs_dll": max(diffs), "same_argmax": same / len(requests),
                     "promptkit_rss_mb": pk_["peak_rss_mb"], "lmeval_rss_mb": lm["peak_rss_mb"],
                     "reps": args.reps})
    print()
    header = ["workload", "requests", "promptkit_s", "lmeval_s", "speedup", "promptkit_tokens", "lmeval_tokens",
              "promptkit_tok_s", "lmeval_tok_s", "promptkit_gflops", "peak_fraction", "max_abs_dll", "same_argmax",
              "promptkit_rss_mb", "lmeval_rss_mb"]
    print(" ".join(f"{h:>16}" for h in header))
    for row in rows:
        print(" ".join(f"{row[h]:>16.4g}" if isinstance(row[h], float) else f"{row[h]:>16}" for h in header))
    print(f"\nbaseline: lm-evaluation-harness {_version('lm_eval')} HFLM (batch size {args.lmeval_batch}), same model, float32, "
          f"median of {args.reps} reps; speedup = lm-eval time / promptkit time")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
