"""Inputs that used to be served stale, accepted wrongly or crash late: each fails with a clear message
naming the file, field or row, or is handled completely."""

from __future__ import annotations

import json
import os

import pytest


import promptkit as pk
from promptkit.errors import SuiteError
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
    assert "capitals.jsonl, row 0" in message and "'capitals'" in message and "`input:`" in message
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
