"""Inputs that used to be served stale, accepted wrongly or crash late: each fails with a clear message
naming the file, field or row, or is handled completely."""

from __future__ import annotations

import json
import os


import promptkit as pk
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
