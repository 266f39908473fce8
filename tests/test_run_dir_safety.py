"""A run directory never costs the user a file: `--out` at a folder of theirs, links planted in it, two runs at
once, and files read back from a tampered run directory (regular files of the run's own names only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import promptkit as pk
from promptkit.cli import main
from promptkit.errors import PromptkitError
from promptkit.results.ownership import LOCK_FILE, MANIFEST_FILE, new_run_dir


def run(templates, suite, model, out, **kw):
    return pk.evaluate(str(templates), str(suite), model, max_variants=2, out=out, progress=False,
                       log=lambda m: None, **kw)


@pytest.fixture()
def earlier_run(tiny_model, toy_suite, two_templates, tmp_path) -> Path:
    out = tmp_path / "run"
    run(two_templates, toy_suite, tiny_model, out, report=False)
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- --out at a folder of the user's


def test_a_folder_of_the_users_files_is_refused_before_scoring_and_left_as_it_was(tiny_model, toy_suite, two_templates,
                                                                                 tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "synthetic").mkdir(parents=True)
    (out / "synthetic" / "data.txt").write_text("my data")
    (out / "config.json").write_text('{"mine": true}')
    before = snapshot(out)
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--max-variants", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds files no promptkit run wrote" in err and "config.json" in err and "synthetic" in err
    assert snapshot(out) == before and sorted(os.listdir(out)) == ["config.json", "synthetic"]
    with pytest.raises(PromptkitError, match="holds files no promptkit run wrote"):
        run(two_templates, toy_suite, tiny_model, out)
    assert snapshot(out) == before


def test_results_save_refuses_a_folder_of_the_users_files(earlier_run, tmp_path):
    results = pk.load(earlier_run)
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(PromptkitError, match="notes.txt"):
        results.save(out)
    assert os.listdir(out) == ["notes.txt"]


def test_an_earlier_run_is_replaced_and_nothing_else_is_touched(earlier_run, tiny_model, toy_suite, two_templates):
    (earlier_run / "notes.txt").write_text("my notes on this run")
    (earlier_run / "plots").mkdir()
    (earlier_run / "plots" / "fig.png").write_bytes(b"\x89PNG mine")
    manifest = json.loads((earlier_run / MANIFEST_FILE).read_text())
    assert manifest["complete"] is True and "config.json" in manifest["owned"]
    run(two_templates, toy_suite, tiny_model, earlier_run, seed=7)
    assert (earlier_run / "notes.txt").read_text() == "my notes on this run"
    assert (earlier_run / "plots" / "fig.png").read_bytes() == b"\x89PNG mine"
    assert json.loads((earlier_run / "config.json").read_text())["seed"] == 7
    assert (earlier_run / "report.html").is_file()
    pk.load(earlier_run)  # the manifest covers the new run's files, the user's files do not disturb it


def test_a_file_the_earlier_run_did_not_write_is_refused(earlier_run, tiny_model, toy_suite, two_templates):
    (earlier_run / "transfer.csv").write_text("my own table")  # a name a run with several models writes
    with pytest.raises(PromptkitError, match="transfer.csv: is not a file of the earlier run"):
        run(two_templates, toy_suite, tiny_model, earlier_run)
    assert (earlier_run / "transfer.csv").read_text() == "my own table"


def test_out_at_the_root_folder_is_refused(tiny_model, toy_suite, two_templates):
    """As root, --out / wrote 15 files into /; now a folder that holds no run is refused before anything is written."""
    before = set(os.listdir("/"))
    with pytest.raises(PromptkitError, match="holds files no promptkit run wrote"):
        run(two_templates, toy_suite, tiny_model, Path("/"))
    assert set(os.listdir("/")) == before


# ---------------------------------------------------------------------------- links planted in --out


@pytest.mark.parametrize("name", [".promptkit-write-test", "manifest.json.tmp", "config.json.tmp", "results.jsonl.tmp"])
def test_a_link_at_a_temporary_name_is_never_written_through(earlier_run, tiny_model, toy_suite, two_templates,
                                                              tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (earlier_run / name).symlink_to(victim)
    run(two_templates, toy_suite, tiny_model, earlier_run)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("name", ["config.json", "results.jsonl", "report.html", "synthetic", MANIFEST_FILE])
def test_a_link_at_a_run_file_is_refused_before_scoring(earlier_run, tiny_model, toy_suite, two_templates, tmp_path,
                                                         name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    target = victim if name == "synthetic" else victim / "data.txt"
    if os.path.lexists(earlier_run / name):
        os.unlink(earlier_run / name)
    (earlier_run / name).symlink_to(target)
    with pytest.raises(PromptkitError, match="link"):
        run(two_templates, toy_suite, tiny_model, earlier_run)
    assert (victim / "data.txt").read_text() == "precious" and os.listdir(victim) == ["data.txt"]


# ---------------------------------------------------------------------------- two runs at once


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    folders = [new_run_dir(tmp_path / "runs") for _ in range(5)]
    assert len(set(folders)) == 5 and all(f.is_dir() and not os.listdir(f) for f in folders)
    assert folders[1].name == folders[0].name + "-2" or folders[1].name[:19] != folders[0].name[:19]


def test_a_second_run_into_a_folder_being_written_is_refused(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from promptkit.results.ownership import locked\n"
         "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PromptkitError, match=rf"another promptkit run \(process {holder.pid}\) is writing"):
            run(two_templates, toy_suite, tiny_model, out)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    run(two_templates, toy_suite, tiny_model, out, report=False)  # the lock dies with its process
    assert not (out / LOCK_FILE).exists()
    pk.load(out)


def test_a_failed_run_leaves_no_empty_default_folder(tiny_model, toy_suite, two_templates, tmp_path, monkeypatch,
                                                     capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--templates", str(two_templates), "--suite", str(tmp_path / "no-such-suite.yaml"), "--model",
                 tiny_model, "--quiet"]) == 2
    assert "no-such-suite" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


# ---------------------------------------------------------------------------- reading a tampered run directory


@pytest.mark.timeout(60)
def test_results_as_a_fifo_is_refused_not_waited_on(earlier_run):
    os.unlink(earlier_run / "results.jsonl")
    os.mkfifo(earlier_run / "results.jsonl")
    started = time.monotonic()
    with pytest.raises(PromptkitError, match="results.jsonl"):
        pk.load(earlier_run)
    assert time.monotonic() - started < 10


@pytest.mark.timeout(60)
def test_results_as_a_link_to_dev_zero_is_refused(earlier_run):
    os.unlink(earlier_run / "results.jsonl")
    os.symlink("/dev/zero", earlier_run / "results.jsonl")
    with pytest.raises(PromptkitError, match="results.jsonl"):
        pk.load(earlier_run)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["/proc/self/pagemap", "../../etc/passwd", "synthetic/../../x"])
def test_a_manifest_naming_a_file_outside_the_run_is_refused(earlier_run, name):
    manifest = json.loads((earlier_run / MANIFEST_FILE).read_text())
    manifest["files"][name] = "0" * 64
    (earlier_run / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PromptkitError, match="not a file of a run directory"):
        pk.load(earlier_run)


@pytest.mark.timeout(60)
def test_a_manifest_that_is_a_fifo_does_not_hang_the_next_run(earlier_run, tiny_model, toy_suite, two_templates):
    os.unlink(earlier_run / MANIFEST_FILE)
    os.mkfifo(earlier_run / MANIFEST_FILE)
    with pytest.raises(PromptkitError, match="manifest"):
        run(two_templates, toy_suite, tiny_model, earlier_run)


@pytest.mark.timeout(60)
def test_a_synthetic_template_that_is_a_fifo_is_refused(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    fifo = tmp_path / "template.j2"
    os.mkfifo(fifo)
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--synthetic-template", str(fifo), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "FIFO" in capsys.readouterr().err
