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
