"""The benchmark scripts' own plumbing (their figures live in benchmarks/README, not in tests)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_engine  # noqa: E402


def test_a_failed_repetition_is_named_and_the_benchmark_goes_on(tmp_path, capsys):
    """lm-eval at batch 8 on `long` was killed for memory and took the whole benchmark with it, losing the pairs
    already measured; now the failure is named and the benchmark goes on."""
    args = argparse.Namespace(max_load=100.0, max_wait=0, out=str(tmp_path), dtype="float32")
    missing = tmp_path / "requests-absent.json"
    assert bench_engine.run_child(args, "lmeval", "long", missing, "no-model", "8", "pair1") is None
    assert "long: lmeval (lm-eval batch 8) failed, exit 1; left out" in capsys.readouterr().out


def test_the_peak_fraction_is_given_for_the_first_call_and_for_the_fastest():
    """The peak is the best of 10 products; the run's fraction is given for its first call (the one timed against
    lm-eval) and for the fastest of its calls in the same process, each against that process's peak."""
    params = {"total": 1_000_000, "embedding": 0, "hidden": 10, "vocab": 100}
    requests = [{"prompt": "p", "continuations": ["a", "b"]}]

    def pk(times, peak):
        return {"times": times, "peak": peak, "peaks": [peak * 0.9, peak], "load": 0.1, "params": params, "forward_tokens": 500, "projected_rows": 0,
                "projected_tokens": 0, "attention_flops": 0, "logprobs": [-1.0, -2.0], "peak_rss_mb": 1.0}

    lm = {"times": [40.0], "load": 0.1, "forward_tokens": 900, "logprobs": [-1.0, -2.5], "peak_rss_mb": 2.0}
    pairs = [{"promptkit": pk([10.0, 8.0, 9.0], 1e8), "lmeval": lm}, {"promptkit": pk([20.0, 16.0, 19.0], 1e8), "lmeval": lm}]
    row = bench_engine.summarize("few", requests, pairs, 0.5, "8")
    flops = 2 * 1_000_000 * 500
    assert row["speedup"] == (40 / 10 + 40 / 20) / 2  # the first calls are paired with lm-eval
    assert abs(row["peak_fraction"] - (flops / 10 / 1e8 + flops / 20 / 1e8) / 2) < 1e-12
    assert abs(row["peak_fraction_best"] - (flops / 8 / 1e8 + flops / 16 / 1e8) / 2) < 1e-12
    assert row["same_argmax"] == 1.0
    assert row["peaks_gflops"] == [[0.09, 0.1], [0.09, 0.1]]


def test_the_workloads_are_generated_tasks_unless_bigbench_is_asked_for(monkeypatch):
    """BIG-bench is no longer on the package index: every workload defaults to tasks promptkit generates itself, and
    `--bigbench` gives back the BIG-bench lists (the suites are built, nothing is loaded)."""
    from promptkit.tasks.sources.generated import generators

    gens = generators()
    default = bench_engine.workloads(bench_engine.parse_args([]).bigbench)
    assert set(default) == {"zero", "few", "plain", "long", "many"}
    for _, _, names in default.values():
        assert names and set(names) <= set(gens), set(names) - set(gens)
        assert all(gens[n].kind == "multiple_choice" for n in names)
        assert {t.source for t in bench_engine.make_suite(names).tasks} == {"generated"}
    big = bench_engine.workloads(bench_engine.parse_args(["--bigbench"]).bigbench)
    assert [big[w][2] for w in ("zero", "few", "plain", "long", "many")] == [
        bench_engine.BIGBENCH_TASKS, bench_engine.BIGBENCH_TASKS, bench_engine.BIGBENCH_PLAIN_TASKS,
        bench_engine.BIGBENCH_LONG_TASKS, bench_engine.BIGBENCH_MANY_TASKS]
    assert {t.source for t in bench_engine.make_suite(big["long"][2], bigbench=True).tasks} == {"bigbench"}
    seen = []
    monkeypatch.setattr(bench_engine, "load_tasks", lambda names, n, seed=0, bigbench=False: seen.append((names, bigbench)) or [])
    bench_engine.build_requests("many", 4, 2, bigbench=True)
    bench_engine.build_requests("many", 4, 2)
    assert seen == [(bench_engine.BIGBENCH_MANY_TASKS, True), (bench_engine.MANY_TASKS, False)]
