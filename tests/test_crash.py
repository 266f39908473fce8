"""Crash safety: runs killed at random moments, two runs sharing one cache, and Ctrl-C.

After every interruption the next run computes only what is missing, and the final results equal
an uninterrupted run's, with no duplicate or missing rows."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import promptkit as pk
from promptkit.engine.cache import count_rows

KILLS = int(os.environ.get("PROMPTKIT_TEST_KILLS", "8"))
KEY = ["variant", "task", "example"]
GATED = Path(__file__).with_name("gated_backend.py")  # `promptkit` with a backend that holds the run at a known point


def _argv(templates, suite, model, cache, out) -> list[str]:
    return [sys.executable, "-m", "promptkit", "run", "--templates", str(templates), "--suite", str(suite), "--model", model,
            "--cache", str(cache), "--out", str(out), "--batch-tokens", "48", "--max-variants", "0", "--quiet", "--no-report",
            "--dtype", "float32"]  # float32: results must not depend on how requests were batched (bf16-mixed: ~1e-5)


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_json(out / "results.jsonl", orient="records", lines=True, dtype={"example": str})


def _cached(db: Path) -> int:
    return count_rows(db) if db.exists() else 0


def _same(got: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert not got.duplicated(KEY).any(), "duplicate rows"
    assert len(got) == len(reference), "missing rows"
    merged = got.merge(reference, on=KEY, suffixes=("", "_ref"))
    assert len(merged) == len(reference)
    assert (merged["prediction"] == merged["prediction_ref"]).all()
    for x, y in zip(merged["logprobs"], merged["logprobs_ref"]):
        assert x == pytest.approx(y, abs=1e-5)


@pytest.fixture()
def templates(two_templates):
    """The two small families plus one with 24 variants, so that scoring lasts long enough to be interrupted."""
    (two_templates / "many.yaml").write_text(
        "name: many\naxes:\n  label: ['Q:', 'Question:', 'Input:', 'Text:']\n  sep: [' ', '\\n', ' | ']\n"
        "  end: ['Answer:', 'A:']\nprompt: '{{ label }} {{ input }}{{ sep }}{{ end }}'\ncontinuation: ' {{ choice }}'\n")
    return two_templates


@pytest.fixture()
def reference(tiny_model, toy_suite, templates):
    return pk.evaluate(templates, toy_suite, tiny_model, cache=False, batch_tokens=48, progress=False,
                       dtype="float32").to_pandas()


def test_random_sigkills_then_resume_equal_an_uninterrupted_run(tiny_model, toy_suite, templates, tmp_path, reference):
    db, out = tmp_path / "cache.sqlite", tmp_path / "run"
    argv = _argv(templates, toy_suite, tiny_model, db, out)
    # how long one full run takes here, to spread the kills over it
    start = time.perf_counter()
    timing = subprocess.run(_argv(templates, toy_suite, tiny_model, tmp_path / "t.sqlite", tmp_path / "t"),
                            capture_output=True, text=True, timeout=300)
    assert timing.returncode == 0, timing.stderr[-2000:]
    full = time.perf_counter() - start
    total = _cached(tmp_path / "t.sqlite")
    rng = random.Random(1234)
    killed, rounds, counts = 0, 0, []
    for k in range(KILLS):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if k % 2:  # at a random moment: start-up, scoring, or writing the run directory
            time.sleep(rng.uniform(0.2, full))
        else:  # mid-scoring: once the cache has grown past a random point
            target = rng.randint(_cached(db) + 1, max(_cached(db) + 1, total - 1))
            deadline = time.time() + 120
            while proc.poll() is None and _cached(db) < target and time.time() < deadline:
                time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        counts.append(_cached(db))
        assert counts[-1] >= (counts[-2] if len(counts) > 1 else 0), f"the cache lost rows: {counts}"
        if (out / "results.jsonl").exists():  # this round got to the end: check it, then start a new one
            _same(_rows(out), reference)
            rounds += 1
            shutil.rmtree(out)
            for f in tmp_path.glob("cache.sqlite*"):
                f.unlink()
            counts.append(0)
    assert killed >= KILLS // 2
    final = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    _same(_rows(out), reference)
    print(f"kills survived: {killed} of {KILLS} attempts ({rounds} rounds finished before the kill); cache rows: {counts}")


def test_two_runs_sharing_one_cache_at_once(tiny_model, toy_suite, templates, tmp_path, reference):
    db = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen(_argv(templates, toy_suite, tiny_model, db, tmp_path / f"run{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    for i in range(2):
        _same(_rows(tmp_path / f"run{i}"), reference)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0]
    unique = {(r.variant, r.task, r.example) for r in reference.itertuples()}
    assert stored >= len(unique)  # every continuation of every request is there (no lost writes)
    again = pk.evaluate(templates, toy_suite, tiny_model, cache=db, batch_tokens=48, progress=False, dtype="float32")
    assert again.config["engine"]["computed"] == 0


def test_ctrl_c_keeps_what_was_computed_and_says_how_to_resume(tiny_model, toy_suite, templates, tmp_path, reference):
    """SIGINT arrives while the run is held (tests/gated_backend.py) right after its first batch reached the
    cache, so the run is still going and has something to keep, however slow or fast the machine is."""
    db, out, gate = tmp_path / "cache.sqlite", tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    argv = [sys.executable, str(GATED), *_argv(templates, toy_suite, f"gated:{tiny_model}", db, out)[3:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PROMPTKIT_TEST_GATE": str(gate)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (gate / "ready").exists():
        time.sleep(0.02)
    if not (gate / "ready").exists():
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"the run never reached its first committed batch (exit status {proc.returncode}): {err[-2000:]}")
    held = _cached(db)
    assert held > 0  # the first batch is committed, and the run waits at the gate
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Run the same command again to resume" in err and str(db) in err
    assert "Traceback" not in err
    kept = _cached(db)
    assert kept == held  # what was committed stays
    (gate / "go").touch()  # the same command again, with the gate open
    final = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"({kept} from the cache)" in final.stdout
    _same(_rows(out), reference)


def test_opening_a_new_cache_while_another_process_holds_its_lock_waits_instead_of_failing(tmp_path):
    """Switching a new file to WAL ignores SQLite's busy handler: the second of two runs creating one cache
    at once used to fail at once with 'database is locked'. It now retries, within its timeout."""
    import sqlite3
    import threading

    from promptkit.engine.cache import ResultCache
    from promptkit.errors import PromptkitError

    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a write lock on a new file still in rollback-journal mode (no foreign table:
    # a file holding tables that are not promptkit's is refused as not a result cache)
    with pytest.raises(PromptkitError, match="database is locked"):
        ResultCache(path, "fp", timeout_s=0.3)  # bounded: gives up after its timeout
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    cache = ResultCache(path, "fp", timeout_s=20)
    assert time.monotonic() - started >= 0.4
    cache.put_many([("k", -1.0, 1, 1, True)])
    assert cache.get_many(["k"]) == {"k": (-1.0, 1, 1, True)}
    cache.close()
    other.close()
