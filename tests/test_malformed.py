"""Table-driven: malformed templates, suites, data, caches, models and run directories. Each must
end in exactly one actionable message (what, where, how to fix), exit code 2, no traceback, and
nothing already computed may be lost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import promptkit as pk
import promptkit.cli as cli

GOOD_TEMPLATE = "name: plain\naxes:\n  label: ['Q:', 'Question:']\nprompt: '{{ label }} {{ input }} Answer:'\ncontinuation: ' {{ choice }}'\n"


def _setup(tmp: Path) -> dict:
    """A small valid project: one template file, a JSONL task, a bigbench-format task and a suite."""
    (tmp / "t").mkdir()
    (tmp / "t" / "plain.yaml").write_text(GOOD_TEMPLATE)
    rows = [{"q": f"Capital {i}?", "opts": ["Paris", "Rome"], "label": i % 2, "uid": f"c{i}"} for i in range(4)]
    (tmp / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp / "even.json").write_text(json.dumps({"examples": [
        {"input": f"Is {i} even?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2)}} for i in range(4)]}))
    _suite(tmp, "{name: caps, source: files, path: caps.jsonl, input: q, choices: opts, target: label, id: uid}")
    return {"templates": tmp / "t", "suite": tmp / "suite.yaml"}


def _suite(tmp: Path, selection: str, held_out: str = "{name: even, source: bigbench, path: even.json}") -> None:
    (tmp / "suite.yaml").write_text(f"name: s\nselection:\n  - {selection}\nheld_out:\n  - {held_out}\n")


def _rows(tmp: Path, rows) -> None:
    (tmp / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def _template(tmp: Path, text: str, name: str = "plain.yaml") -> None:
    (tmp / "t" / name).write_text(text) if isinstance(text, str) else (tmp / "t" / name).write_bytes(text)


ROW = {"q": "Capital?", "opts": ["Paris", "Rome"], "label": 0, "uid": "c0"}

# (case id, how to break the project, extra CLI arguments, regexes the one message must match)
CASES = [
    # ---- template files
    ("yaml-syntax", lambda t: _template(t, "name: plain\nprompt: [unclosed\n"), [], [r"plain\.yaml:\d+", "YAML syntax error"]),
    ("template-not-a-mapping", lambda t: _template(t, "- just\n- a list\n"), [], [r"plain\.yaml", "must be a YAML mapping"]),
    ("template-empty-file", lambda t: _template(t, ""), [], [r"plain\.yaml", "must be a YAML mapping"]),
    ("template-missing-prompt", lambda t: _template(t, "name: plain\n"), [], [r"plain\.yaml", "missing required field.*prompt"]),
    ("template-unknown-field", lambda t: _template(t, GOOD_TEMPLATE + "promtp: x\n"), [], ["unknown field.*promtp", "allowed"]),
    ("template-bad-name", lambda t: _template(t, GOOD_TEMPLATE.replace("name: plain", "name: my plain")), [], ["`name` must be"]),
    ("axis-no-values", lambda t: _template(t, "name: plain\naxes:\n  label: []\nprompt: '{{ label }}'\n"), [],
     [r"plain\.yaml", "axis 'label' must be a non-empty list"]),
    ("axis-null", lambda t: _template(t, "name: plain\naxes:\n  label:\nprompt: '{{ label }}'\n"), [], ["axis 'label' must be a non-empty list"]),
    ("axis-nested-value", lambda t: _template(t, "name: plain\naxes:\n  label: [{a: 1}]\nprompt: '{{ label }}'\n"), [], ["non-scalar value"]),
    ("axis-duplicate-value", lambda t: _template(t, "name: plain\naxes:\n  label: [Q, Q]\nprompt: '{{ label }}'\n"), [], ["same value twice"]),
    ("axis-shadows-field", lambda t: _template(t, "name: plain\naxes:\n  input: [a, b]\nprompt: '{{ input }}'\n"), [], ["shadows a canonical field"]),
    ("jinja-syntax", lambda t: _template(t, "name: plain\nprompt: '{{ input }'\n"), [], [r"plain\.yaml:\d+", "Jinja syntax error"]),
    ("undefined-variable", lambda t: _template(t, "name: plain\nprompt: '{{ inptu }}'\n"), [], ["undefined variable", "inptu", "Available names"]),
    ("template-not-utf8", lambda t: _template(t, b"name: plain\nprompt: '\xff\xfe {{ input }}'\n"), [], [r"plain\.yaml", "not valid UTF-8"]),
    ("family-name-collision", lambda t: _template(t, GOOD_TEMPLATE, "copy.yaml"), [], ["name 'plain' is also used by", "unique"]),
    ("templates-path-missing", lambda t: None, ["--templates", "nowhere/"], ["nowhere", "no such template file or directory"]),
    ("hostile-template", lambda t: _template(t, "name: plain\nprompt: \"{{ ''.__class__ }}\"\n"), [], [r"plain\.yaml", "not allowed"]),
    # ---- suites
    ("suite-yaml-syntax", lambda t: (t / "suite.yaml").write_text("name: s\nselection: [\n"), [], [r"suite\.yaml", "YAML"]),
    ("suite-not-a-mapping", lambda t: (t / "suite.yaml").write_text("- a\n"), [], [r"suite\.yaml", "must be a YAML mapping"]),
    ("suite-no-selection", lambda t: (t / "suite.yaml").write_text("name: s\nheld_out: []\n"), [], ["`selection:` must list at least one task"]),
    ("suite-overlap", lambda t: _suite(t, "{name: even, source: bigbench, path: even.json}"), [], ["even", "appear once"]),
    ("suite-unknown-source", lambda t: _suite(t, "{name: caps, source: ftp, path: caps.jsonl}"), [], ["`source` must be one of"]),
    ("suite-unknown-task-field", lambda t: _suite(t, "{name: caps, source: files, path: caps.jsonl, inptu: q}"), [], ["unknown field.*inptu"]),
    ("suite-bad-limit", lambda t: (t / "suite.yaml").write_text((t / "suite.yaml").read_text() + "limit: -3\n"), [], ["`limit` must be a positive integer"]),
    ("suite-missing-file", lambda t: None, ["--suite", "no_such_suite.yaml"], ["no_such_suite", "no such suite file"]),
    ("data-file-missing", lambda t: (t / "caps.jsonl").unlink(), [], ["caps.jsonl"]),
    # ---- data rows
    ("empty-task", lambda t: (t / "caps.jsonl").write_text(""), [], ["caps", "is empty", "at least one example"]),
    ("missing-choices-column", lambda t: _rows(t, [{k: v for k, v in ROW.items() if k != "opts"}]), [], ["column 'opts'", "missing", "row 1"]),
    ("target-out-of-range", lambda t: _rows(t, [{**ROW, "label": 7}]), [], ["target", "7", "row 1"]),
    ("target-not-a-choice", lambda t: _rows(t, [{**ROW, "label": "Madrid"}]), [], ["Madrid"]),
    ("duplicate-ids", lambda t: _rows(t, [ROW, ROW]), [], ["two examples with id 'c0'"]),
    ("null-input", lambda t: _rows(t, [{**ROW, "q": None}]), [], ["column 'q'", "is empty", "row 1"]),
    ("nan-target", lambda t: (t / "caps.jsonl").write_text(json.dumps(ROW).replace('"label": 0', '"label": NaN')), [],
     ["column 'label'", "is empty"]),
    ("one-choice", lambda t: _rows(t, [{**ROW, "opts": ["Paris"], "label": 0}]), [], ["1 choice", "at least 2"]),
    ("null-choice", lambda t: _rows(t, [{**ROW, "opts": ["Paris", None]}]), [], ["row 1", "choice 1 is empty"]),
    ("data-not-utf8", lambda t: (t / "caps.jsonl").write_bytes(b'{"q": "\xff\xfe", "opts": ["a", "b"], "label": 0, "uid": "x"}'),
     [], ["caps.jsonl", "UTF-8"]),
    ("data-bad-json-line", lambda t: (t / "caps.jsonl").write_text(json.dumps(ROW) + "\n{not json\n"), [], ["caps.jsonl"]),
    ("bigbench-no-examples", lambda t: (t / "even.json").write_text(json.dumps({"examples": []})), [], ["even", "no examples"]),
    ("bigbench-not-json", lambda t: (t / "even.json").write_text("{{{"), [], ["even.json"]),
    # ---- model, cache, run directory
    ("model-path-missing", lambda t: None, ["--model", "/no/such/model-dir"], ["/no/such/model-dir", "does not exist", "pass an existing directory"]),
    ("corrupt-cache", lambda t: (t / "c.sqlite").write_bytes(b"garbage" * 200), ["--cache", "{tmp}/c.sqlite"],
     ["c.sqlite", "cannot be used", "--no-cache"]),
    ("cache-dir-is-a-file", lambda t: (t / "afile").write_text("x"), ["--cache", "{tmp}/afile/results.sqlite"],
     ["afile", "cannot be used", "--cache PATH"]),
    ("cache-dir-read-only", lambda t: None, ["--cache", "/proc/promptkit/results.sqlite"], ["/proc/promptkit", "cannot be used"]),
    ("out-is-a-file", lambda t: (t / "out").write_text("x"), ["--out", "{tmp}/out/run"], ["out/run", "cannot write the run directory", "--out"]),
    ("out-read-only", lambda t: None, ["--out", "/proc/promptkit-run"], ["/proc/promptkit-run", "cannot write"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gets_one_actionable_message(case, tmp_path, tiny_model, capsys, monkeypatch):
    name, breakage, extra, patterns = case
    monkeypatch.chdir(tmp_path)
    files = _setup(tmp_path)
    breakage(tmp_path)
    argv = ["run", "--templates", str(files["templates"]), "--suite", str(files["suite"]), "--model", tiny_model,
            "--quiet", "--no-report", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache.sqlite")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]  # later options win
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptkit: error: "), err
    for pattern in patterns:
        assert __import__("re").search(pattern, err), f"{name}: {pattern!r} not in {err!r}"


def test_the_table_is_big_enough():
    assert len(CASES) >= 30


def test_a_cache_that_fills_up_mid_run_loses_nothing(tiny_model, toy_suite, two_templates, tmp_path, monkeypatch):
    """Writes fail after the first batch (disk full): the run still finishes with every score,
    says what happened, and the scores written before the failure are reused by the next run."""
    from promptkit.engine.cache import ResultCache

    reference = pk.evaluate(two_templates, toy_suite, tiny_model, cache=False, batch_tokens=48, progress=False).to_pandas()
    real_put, calls = ResultCache.put_many, []

    def put_then_fill(self, items, table="loglikelihood"):
        calls.append(len(items))
        if len(calls) > 1:
            self.db.execute("PRAGMA max_page_count = 1")  # the database can no longer grow: SQLITE_FULL
        return real_put(self, items, table)

    monkeypatch.setattr(ResultCache, "put_many", put_then_fill)
    db = tmp_path / "full.sqlite"
    messages = []
    res = pk.evaluate(two_templates, toy_suite, tiny_model, cache=db, batch_tokens=48, progress=False,
                      out=tmp_path / "run", log=messages.append)
    assert len(calls) > 2
    got = res.to_pandas()
    assert got["prediction"].tolist() == reference["prediction"].tolist()
    note = " ".join(res.config["engine"]["notes"])
    assert "stopped accepting writes" in note and "full" in note and any("warning" in m for m in messages)
    assert (tmp_path / "run" / "results.jsonl").exists()
    with sqlite3.connect(db) as con:
        kept = con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0]
    assert 0 < kept < res.config["engine"]["unique"]  # some batches were saved before the disk "filled up"
    monkeypatch.setattr(ResultCache, "put_many", real_put)
    again = pk.evaluate(two_templates, toy_suite, tiny_model, cache=db, batch_tokens=48, progress=False)
    assert again.config["engine"]["cache_hits"] == kept
    assert again.config["engine"]["computed"] == again.config["engine"]["unique"] - kept
    assert again.to_pandas()["prediction"].tolist() == reference["prediction"].tolist()
