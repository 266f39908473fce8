"""Inputs that used to be served stale, accepted wrongly or crash late: each fails with a clear message
naming the file, field or row, or is handled completely."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import promptkit as pk
from promptkit.errors import PromptkitError, SuiteError
from promptkit.tasks.suites import load_task


def test_rewritten_data_file_with_the_same_mtime_is_read_again(toy_suite):
    data = toy_suite.parent / "capitals.jsonl"
    suite = pk.load_suite(toy_suite)
    first = load_task(suite.task("capitals"))
    assert first.examples[0].input == "Capital number 0?"
    stat = os.stat(data)
    rows = [{"q": f"Capital letter {i}?", "opts": ["Paris", "Rome", "Berlin"], "label": i % 3, "uid": f"c{i}"} for i in range(5)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(data).st_mtime_ns == stat.st_mtime_ns and os.stat(data).st_size == stat.st_size
    again = load_task(pk.load_suite(toy_suite).task("capitals"))
    assert [e.input for e in again.examples] == [f"Capital letter {i}?" for i in range(5)]


@pytest.mark.parametrize("value", ["-1", "two", "true", "0", "2.5"])
def test_suite_limit_must_be_a_positive_integer(toy_suite, value):
    text = toy_suite.read_text().replace("limit: 10", f"limit: {value}")
    toy_suite.write_text(text)
    with pytest.raises(SuiteError, match=r"suite\.yaml.*`limit`.*positive integer"):
        pk.load_suite(toy_suite)


@pytest.mark.parametrize("value", ["-1", "two", "true", "0"])
def test_task_limit_must_be_a_positive_integer(toy_suite, value):
    text = toy_suite.read_text().replace("path: even/task.json}", f"path: even/task.json, limit: {value}}}")
    toy_suite.write_text(text)
    with pytest.raises(SuiteError, match=r"suite\.yaml: selection\[0\].*`limit`.*positive integer"):
        pk.load_suite(toy_suite)


def test_mapping_expression_with_a_type_error_names_task_field_and_row(toy_suite):
    text = toy_suite.read_text().replace("input: q,", "input: '{{ q + 1 }}',")
    toy_suite.write_text(text)
    with pytest.raises(SuiteError) as info:
        load_task(pk.load_suite(toy_suite).task("capitals"))
    message = str(info.value)
    assert "capitals.jsonl, row 1" in message and "'capitals'" in message and "`input:`" in message
    assert "TypeError" not in message or "fix" in message.lower()


@pytest.mark.parametrize("score", ['"1"', '"yes"', "null", "NaN", "Infinity", "true"])
def test_bigbench_target_scores_must_be_numbers(tmp_path, score):
    path = tmp_path / "task.json"
    path.write_text('{"examples": [{"input": "a", "target_scores": {"x": 1, "y": 0}},'
                    f' {{"input": "b", "target_scores": {{"x": 0, "y": {score}}}}}]}}')
    suite = tmp_path / "s.yaml"
    suite.write_text("selection:\n  - {name: t, source: bigbench, path: task.json}\n")
    with pytest.raises(SuiteError, match=r"task\.json: task 't', example 1: `target_scores` gives choice 'y'"):
        load_task(pk.load_suite(suite).task("t"))


def test_a_suite_without_held_out_tasks_runs_and_writes_with_leave_one_task_out(tiny_model, toy_suite, two_templates,
                                                                                tmp_path, capsys):
    from promptkit.cli import main
    from promptkit.results.rundir import ANALYSIS_FILES, REPORT_FILE, TABLE_FILES

    text = toy_suite.read_text()
    toy_suite.write_text(text[:text.index("held_out:")])
    out = tmp_path / "run"
    code = main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "3", "--max-variants", "3", "--out", str(out), "--quiet", "--bootstrap", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in (*TABLE_FILES, *ANALYSIS_FILES, REPORT_FILE):
        assert (out / name).is_file(), name
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["protocol"] == "loto" and "no held_out tasks" in analysis["summary"]["note"]
    assert analysis["summary"]["folds"] == 2
    assert "leave-one-task-out" in captured.out and "protocol loto (2 folds" in captured.out
    assert main(["rank", str(out), "--bootstrap", "50"]) == 0
    assert "protocol loto (2 folds" in capsys.readouterr().out


def test_a_one_task_suite_without_held_out_tasks_still_writes_its_run(tiny_model, toy_suite, two_templates, tmp_path,
                                                                      capsys):
    from promptkit.cli import main

    toy_suite.write_text("selection:\n  - {name: even, source: bigbench, path: even/task.json}\n")
    out = tmp_path / "run"
    code = main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "3", "--max-variants", "2", "--out", str(out), "--quiet", "--bootstrap", "50"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "results.jsonl").is_file() and (out / "analysis.json").is_file()
    assert json.loads((out / "analysis.json").read_text())["protocol"] == "none"
    assert "one task" in captured.out
    assert main(["rank", str(out), "--bootstrap", "50"]) == 0


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _journal_mode(path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


def test_an_unrelated_sqlite_database_is_refused_and_left_untouched(tmp_path):
    from promptkit.engine.cache import ResultCache

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'ada')")
    before = path.read_bytes()
    with pytest.raises(PromptkitError) as info:
        ResultCache(path, "fp")
    message = str(info.value)
    assert str(path) in message and "not a promptkit result cache" in message and "users" in message
    assert "--cache" in message and "--no-cache" in message
    assert path.read_bytes() == before and _tables(path) == {"users"} and _journal_mode(path) == "delete"
    # a table that shares a name with promptkit's but not its columns is foreign too
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE loglikelihood (x TEXT)")
    with pytest.raises(PromptkitError, match="not a promptkit result cache"):
        ResultCache(path, "fp")
    assert _journal_mode(path) == "delete"


def test_a_new_cache_is_marked_and_an_unmarked_older_cache_is_still_accepted(tmp_path):
    from promptkit.engine import cache as rc

    new = tmp_path / "new.sqlite"
    store = rc.ResultCache(new, "fp")
    store.put_many([("k", -1.0, 2, 3, True)])
    store.close()
    with sqlite3.connect(new) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == rc.APPLICATION_ID
    assert rc.ResultCache(new, "fp").get_many(["k"]) == {"k": (-1.0, 2, 3, True)}
    old = tmp_path / "old.sqlite"  # made by an earlier version: promptkit's exact tables, no marker
    with sqlite3.connect(old) as db:
        db.executescript(rc.SCHEMA)
        db.execute("INSERT INTO loglikelihood VALUES ('fp', 'k', -2.0, 1, 1, 0)")
    assert rc.ResultCache(old, "fp").get_many(["k"]) == {"k": (-2.0, 1, 1, False)}
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()  # an empty file is a new cache
    rc.ResultCache(empty, "fp").close()
    assert _tables(empty) == {"loglikelihood", "generation"}


def test_a_cache_with_corrupted_pages_is_a_clear_error(tmp_path):
    from promptkit.engine.cache import ResultCache

    path = tmp_path / "results.sqlite"
    store = ResultCache(path, "fp")
    store.put_many([(f"key{i:06d}", -1.0, 2, 3, False) for i in range(5000)])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = DELETE")  # fold the WAL into the file
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page:6 * page] = b"\xa5" * (3 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(PromptkitError) as info:
        ResultCache(path, "fp")
    message = str(info.value)
    assert str(path) in message and "malformed" in message
    assert "delete" in message and "--cache" in message and "--no-cache" in message


def test_run_with_a_foreign_cache_exits_2_with_one_message(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    from promptkit.cli import main

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    code = main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "2", "--max-variants", "1", "--out", str(tmp_path / "run"), "--quiet", "--cache", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "not a promptkit result cache" in err and "Traceback" not in err
    assert _tables(path) == {"users"}


def _start(tiny_model, toy_suite, templates, tmp_path, batch_tokens="auto"):
    argv = [sys.executable, "-m", "promptkit", "run", "--templates", str(templates), "--suite", str(toy_suite),
            "--model", tiny_model, "--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "run"),
            "--max-variants", "0", "--batch-tokens", str(batch_tokens), "--quiet", "--no-report"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_until(proc, ready, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal could be sent"


def _importing(proc) -> bool:
    """The process is importing its libraries (numpy is mapped), long before any scoring."""
    try:
        return "numpy" in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps")
@pytest.mark.parametrize("signals, code, words", [
    ([signal.SIGINT], 130, "interrupted"),
    ([signal.SIGINT, signal.SIGINT], 130, "interrupted"),
    ([signal.SIGTERM], 143, "SIGTERM"),
])
def test_a_signal_while_the_run_is_starting_is_one_line_and_130_or_143(tiny_model, toy_suite, two_templates, tmp_path,
                                                                       signals, code, words):
    proc = _start(tiny_model, toy_suite, two_templates, tmp_path)
    _wait_until(proc, lambda: _importing(proc))
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert words in _one_line(err)


def test_sigterm_during_scoring_keeps_the_cache_and_exits_143(tiny_model, toy_suite, two_templates, tmp_path):
    from promptkit.engine.cache import count_rows

    (two_templates / "many.yaml").write_text(
        "name: many\naxes:\n  label: ['Q:', 'Question:', 'Input:', 'Text:']\n  sep: [' ', '\\n', ' | ']\n"
        "  end: ['Answer:', 'A:']\nprompt: '{{ label }} {{ input }}{{ sep }}{{ end }}'\ncontinuation: ' {{ choice }}'\n")
    db = tmp_path / "cache.sqlite"
    proc = _start(tiny_model, toy_suite, two_templates, tmp_path, batch_tokens=48)
    _wait_until(proc, lambda: db.exists() and count_rows(db) > 0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = _one_line(err)
    assert "stopped (SIGTERM)" in line and str(db) in line and "Run the same command again to resume" in line
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert count_rows(db) > 0
