"""A suite reads local data from its own folder: a shared suite naming ~/.aws/credentials (or a link to it) would
put the file's lines into prompts, results.jsonl and report.html, and send them to a hosted model. Reading
elsewhere takes `allow_outside_data: true` in the suite."""

from __future__ import annotations

import json

import pytest

from promptkit.errors import SuiteError
from promptkit.tasks.suites import load_suite, load_tasks

ROWS = "\n".join(json.dumps({"q": f"secret line {i}", "a": "x"}) for i in range(3))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(ROWS)
    monkeypatch.setenv("HOME", str(home))
    return home


def suite(folder, path, allow=None):
    folder.mkdir(parents=True, exist_ok=True)
    extra = "" if allow is None else f"allow_outside_data: {allow}\n"
    (folder / "suite.yaml").write_text(f"name: s\n{extra}selection:\n"
                                       f"  - {{name: t, source: files, path: '{path}', input: q, target: a}}\n")
    return folder / "suite.yaml"


@pytest.mark.parametrize("path", ["~/.aws/credentials", "../home/.aws/credentials", "ABSOLUTE"])
def test_data_outside_the_suites_folder_is_refused_with_the_way_to_allow_it(home, tmp_path, path):
    path = str(home / ".aws" / "credentials") if path == "ABSOLUTE" else path
    with pytest.raises(SuiteError, match=r"suite.yaml: selection\[0\]: .*credentials\)? is outside the suite's folder"
                                         r".*allow_outside_data: true"):
        load_suite(suite(tmp_path / "shared", path))


def test_a_link_inside_the_folder_to_a_file_outside_is_refused(home, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "data.jsonl").symlink_to(home / ".aws" / "credentials")
    with pytest.raises(SuiteError, match="outside the suite's folder"):
        load_suite(suite(folder, "data.jsonl"))


def test_the_suite_may_say_it_means_it(home, tmp_path):
    (home / "elsewhere.jsonl").write_text(ROWS)
    loaded = load_suite(suite(tmp_path / "shared", "~/elsewhere.jsonl", allow="true"))
    [task] = load_tasks(loaded)
    assert [e.input for e in task.examples][:1] == ["secret line 0"]
    with pytest.raises(SuiteError, match="allow_outside_data:` must be true or false"):
        load_suite(suite(tmp_path / "other", "data.jsonl", allow="'yes'"))


def test_data_in_the_suites_folder_and_below_loads(tmp_path):
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "t.jsonl").write_text(ROWS)
    [task] = load_tasks(load_suite(suite(folder, "data/t.jsonl")))
    assert len(task.examples) == 3
