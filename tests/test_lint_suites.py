"""`promptkit lint` checks a suite as `run` loads it (fields, then every task's data mapped onto examples), without
a model, and puts each message at the line it concerns; an unused axis is flagged at its own line."""

from __future__ import annotations

import pytest

from promptkit.cli import main
from promptkit.prompts.lint import lint_paths


@pytest.fixture()
def data(tmp_path):
    (tmp_path / "data.csv").write_text("input,choices,target\nHi?,a|b,0\nHo?,a|b,1\n")
    return tmp_path


def lint(path, capsys):
    code = main(["lint", str(path)])
    return code, capsys.readouterr().out


def test_a_wrong_column_name_is_an_error_at_its_line(data, capsys):
    suite = data / "suite.yaml"
    suite.write_text("name: s\nselection:\n  - name: t\n    source: files\n    path: data.csv\n    input: question\n"
                     "    choices: choices\n    target: target\n")
    code, text = lint(suite, capsys)
    assert code == 1 and "0 error(s)" not in text
    assert f"{suite}:6: error: " in text and "column 'question' (mapped to `input`) is missing" in text
    assert "the row has columns: input, choices, target" in text


def test_a_missing_data_file_is_an_error_at_its_entry(data, capsys):
    suite = data / "suite.yaml"
    suite.write_text("name: s\nselection:\n  - {name: ok, source: files, path: data.csv, input: input, choices: choices, "
                     "target: target}\nheld_out:\n  - {name: gone, source: files, path: nope.csv, input: input, "
                     "choices: choices, target: target}\n")
    code, text = lint(suite, capsys)
    assert code == 1 and f"{suite}:5: error: data file {data / 'nope.csv'} does not exist" in text
    assert "1 error(s)" in text


def test_every_bad_entry_is_reported_not_only_the_first(data, capsys):
    suite = data / "suite.yaml"
    suite.write_text("name: s\nselection:\n  - generated:no_such_generator\n  - {name: t, source: files, path: data.csv, "
                     "input: input, choices: options, target: target}\n  - {name: t, source: files, path: data.csv, "
                     "input: input, choices: choices, target: target}\n")
    code, text = lint(suite, capsys)
    assert code == 1
    assert f"{suite}:3: error: unknown generated task 'no_such_generator'" in text
    assert f"{suite}:4: error: " in text and "column 'options' (mapped to `choices`) is missing" in text
    assert f"{suite}:5: error: task 't' is already listed at {suite}: selection[1]" in text and "3 error(s)" in text


def test_bad_targets_and_single_choices_are_found_in_the_data(data, capsys):
    (data / "odd.jsonl").write_text('{"q": "x", "opts": ["a", "b"], "gold": 5}\n{"q": "y", "opts": ["a"], "gold": 0}\n')
    suite = data / "suite.yaml"
    suite.write_text("name: s\nselection:\n  - {name: odd, source: files, path: odd.jsonl, input: q, choices: opts, "
                     "target: gold}\n")
    code, text = lint(suite, capsys)
    assert code == 1 and f"{suite}:3: error: " in text
    assert "odd.jsonl, row 1: task 'odd': target 5 is outside the 2 choices" in text


def test_a_good_suite_and_the_builtin_suites_are_clean(data, capsys):
    suite = data / "suite.yaml"
    suite.write_text("name: s\nselection:\n  - {name: t, source: files, path: data.csv, input: input, choices: choices, "
                     "target: target}\n  - generated:capital_city\n")
    code, text = lint(suite, capsys)
    assert code == 0 and "0 error(s), 0 warning(s)" in text


def test_a_file_that_is_neither_is_said_to_be_neither(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("name: x\ntasks: [a, b]\n")
    (message,) = lint_paths([path])
    assert message.level == "error" and "nor a suite (needs `selection:`)" in message.message


def test_an_unused_axis_is_flagged_at_its_own_line(tmp_path):
    path = tmp_path / "fam.yaml"
    path.write_text("name: fam\naxes:\n  used: [a, b]\n  sep: [':', ' -']\n  unused: [x, y]\n"
                    "prompt: '{{ used }}{{ sep }} {{ input }}'\ncontinuation: ' {{ choice }}'\n")
    (message,) = lint_paths([path])
    assert message.level == "warning" and "axis 'unused'" in message.message and message.line == 5
