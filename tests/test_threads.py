"""--threads: the user's number, or the cores, fewer when the load average shows other work on them (one line)."""

from __future__ import annotations

import pytest
import torch

import promptkit as pk
from promptkit.cli import main
from promptkit.run import threads


@pytest.mark.parametrize("load, expected, says", [(0.1, 2, False), (0.6, 1, True), (1.4, 1, True), (7.0, 1, True)])
def test_auto_uses_the_free_cores_and_says_so_when_fewer(load, expected, says):
    n, note = threads.choose("auto", cores=2, load=load, running=1)
    assert n == expected and (note is not None) == says
    if says:
        assert note.startswith("1 of 2 cores are busy with other work") and "--threads N" in note


def test_a_number_is_used_as_given():
    assert threads.choose(3, cores=2, load=5.0) == (3, None)
    assert threads.choose("auto", cores=8, load=2.2, running=5)[0] == 6


def test_work_that_just_ended_does_not_count():
    """The install before a first run left the load average at 1.1 on an idle machine, and the run scored on one
    of its two cores (seen in a fresh clone, 2026-12-07): nothing runnable right now means the cores are free."""
    assert threads.choose("auto", cores=2, load=1.1, running=0) == (2, None)
    assert threads.choose("auto", cores=2, load=0.0, running=1) == (2, None)  # a moment's spike alone does not count
    assert threads.running_now() is None or threads.running_now() >= 0


def test_a_run_scores_on_the_threads_asked_for(tiny_model, toy_suite, two_templates):
    before = torch.get_num_threads()
    try:
        pk.evaluate(str(two_templates), str(toy_suite), tiny_model, max_variants=2, threads=1, progress=False,
                    log=lambda m: None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bad_thread_counts_are_refused(toy_suite, two_templates, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--suite", str(toy_suite), "--threads", "0"])
    assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err
    with pytest.raises(pk.PromptkitError, match=r"--threads \(threads=\) must be 'auto' or a whole number >= 1"):
        pk.evaluate(str(two_templates), str(toy_suite), "/nonexistent", threads=0, progress=False)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("promptkit ")


def test_the_help_shows_the_across_choices_once(capsys):
    with pytest.raises(SystemExit):
        main(["rank", "--help"])
    out = capsys.readouterr().out
    assert "{models,tasks,tasks}" not in out and "--across {models,tasks | tasks}" in out
