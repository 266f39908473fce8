"""Every option is checked before any model loads: a wrong value is one clear line naming the option, never a
traceback and never a failure after all the scoring is done (with --no-cache that lost everything)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import promptkit as pk
from promptkit.cli import main

NO_MODEL = "/nonexistent/model-that-would-fail-to-load"  # the option's error must come first


@pytest.mark.parametrize("args, expected", [
    (["--bootstrap", "0"], "--bootstrap (bootstrap=) must be a whole number >= 20, not 0"),
    (["--bootstrap", "-1"], "--bootstrap (bootstrap=) must be a whole number >= 20, not -1"),
    (["--analysis-seed", "-1"], "--analysis-seed (seed=) must be a whole number >= 0, not -1"),
    (["--folds", "1"], "--folds (folds=) must be a whole number >= 2"),
    (["--limit", "-1"], "--limit (limit=) must be a whole number >= 1, not -1"),
    (["--limit", "0"], "--limit (limit=) must be a whole number >= 1, not 0"),
    (["--seed", "-1"], "--seed (seed=) must be a whole number >= 0"),
    (["--request-timeout", "inf"], "--request-timeout (request_timeout=) must be a finite number > 0, not inf"),
    (["--request-timeout", "nan"], "--request-timeout (request_timeout=) must be a finite number > 0, not nan"),
    (["--base-url", "http://[::1"], "--base-url (base_url=) 'http://[::1' is not a valid URL"),
    (["--base-url", "localhost:8000"], "is not an http(s) URL with a host"),
    (["--cache", "/dev/zero"], "result cache /dev/zero: is not a regular file"),
    (["--model", ""], "model '' (--model '') names no model"),
])
def test_a_wrong_option_is_refused_before_any_model_loads(args, expected, toy_suite, two_templates, tmp_path, capsys):
    model = [] if "--model" in args else ["--model", NO_MODEL]
    cache = [] if "--cache" in args else ["--no-cache"]
    code = main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), *model, *cache,
                 "--out", str(tmp_path / "out"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "Traceback" not in err and NO_MODEL not in err
    assert not (tmp_path / "out").exists()  # nothing created for a run that never started


def test_the_cache_option_never_makes_a_journal_next_to_a_device(toy_suite, two_templates, tmp_path, capsys):
    main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", NO_MODEL,
          "--cache", "/dev/zero", "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert not os.path.exists("/dev/zero-journal") and "delete" not in err


@pytest.mark.parametrize("kind", ["a file", "cannot be created"])
def test_an_unusable_promptkit_cache_folder_is_one_clear_line(kind, two_templates, tmp_path, monkeypatch, capsys):
    if kind == "a file":
        root = tmp_path / "cache"
        root.write_text("not a folder")
    else:  # no one, root included, can make a folder in /proc
        root = Path("/proc/promptkit-cache")
    monkeypatch.setenv("PROMPTKIT_CACHE", str(root))
    suite = tmp_path / "generated.yaml"  # generated tasks keep their rows in the cache folder
    suite.write_text("name: g\nselection:\n  - generated:capital_check\n  - generated:share_border\n")
    code = main(["run", "--templates", str(two_templates), "--suite", str(suite), "--model", NO_MODEL, "--quiet",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "PROMPTKIT_CACHE" in err and "Traceback" not in err


def test_rank_refuses_a_wrong_analysis_option_too(tmp_path, capsys):
    old_run = Path(__file__).parent / "data" / "run_v0_1"
    assert main(["rank", str(old_run), "--bootstrap", "0"]) == 2
    assert "--bootstrap (bootstrap=) must be a whole number >= 20" in capsys.readouterr().err


def test_the_library_checks_the_same(toy_suite, two_templates):
    with pytest.raises(pk.PromptkitError, match="limit"):
        pk.evaluate(str(two_templates), str(toy_suite), NO_MODEL, limit=-1, progress=False)
    with pytest.raises(pk.PromptkitError, match="bootstrap"):
        pk.evaluate(str(two_templates), str(toy_suite), NO_MODEL, analysis={"bootstrap": 0}, progress=False)
