"""Names and values from suites, templates and run directories are shown, never obeyed: HTML in a tampered run
directory is escaped in report.html, `$…$` in a name is plain text in the figures (it crashed the report after all
scoring), and terminal escapes in a task name are shown escaped by `run` and `rank`."""

from __future__ import annotations

import json

from promptkit.cli import main
from promptkit.results.rundir import write_manifest

PAYLOAD = "<script>alert(1)</script>"


def test_a_tampered_run_directory_cannot_put_script_into_the_report(tiny_model, gen_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--templates", str(two_templates), "--suite", str(gen_suite), "--model", tiny_model,
                 "--max-variants", "2", "--out", str(out), "--quiet", "--no-report"]) == 0
    tasks = json.loads((out / "tasks.json").read_text())
    for info in tasks.values():
        info["n_examples"] = PAYLOAD
    variants = json.loads((out / "variants.json").read_text())
    samples = [v["sample"] for v in variants.values() if v.get("sample")]
    assert samples and any("max_new_tokens" in s for s in samples)
    for sample in samples:
        sample["max_new_tokens"] = PAYLOAD
    (out / "tasks.json").write_text(json.dumps(tasks))
    (out / "variants.json").write_text(json.dumps(variants))
    write_manifest(out)  # a careful attacker rewrites the manifest too
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and PAYLOAD not in html


def _suite_with_names(tmp_path, names):
    rows = [{"q": f"Is {i} even?", "opts": ["yes", "no"], "label": i % 2} for i in range(6)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tasks = "".join(f"  - {{name: {json.dumps(n)}, source: files, path: data.jsonl, input: q, choices: opts, "
                    f"target: label}}\n" for n in names)
    suite = tmp_path / "names.yaml"
    suite.write_text(f"name: names\nselection:\n{tasks[:tasks.index(chr(10)) + 1]}held_out:\n"
                     f"{tasks[tasks.index(chr(10)) + 1:]}")
    return suite


def test_dollar_signs_in_task_and_family_names_make_a_report(tiny_model, two_templates, tmp_path):
    suite = _suite_with_names(tmp_path, ["cost $\\frac", "price $x^$", "plain"])
    templates = tmp_path / "t"
    templates.mkdir()
    for f in two_templates.glob("*.yaml"):
        text = f.read_text()
        (templates / f.name).write_text(text.replace("name: plain", "name: 'pl$ain$'", 1))
    out = tmp_path / "run"
    assert main(["run", "--templates", str(templates), "--suite", str(suite), "--model", tiny_model,
                 "--max-variants", "3", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").is_file() and (out / "manifest.json").is_file()
    assert "cost $\\frac" in (out / "report.html").read_text()


def test_terminal_escapes_in_task_names_are_shown_escaped_by_run_and_rank(tiny_model, two_templates, tmp_path,
                                                                          capsys):
    suite = _suite_with_names(tmp_path, ["clear\x1b[2Jscreen", "bell\x07task", "plain"])
    out = tmp_path / "run"
    assert main(["run", "--templates", str(two_templates), "--suite", str(suite), "--model", tiny_model,
                 "--max-variants", "2", "--out", str(out), "--no-report"]) == 0
    assert main(["rank", str(out)]) == 0
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\x1b[2J" not in stream and "\x07" not in stream
    assert "clear\\x1b[2Jscreen" in captured.out
