"""Where BIG-bench tasks come from: (a) a local copy (checkout, task folder or sdist tarball), (b) the task
cache, (c) the Hub's parquet copy through `datasets` (here a local folder with that copy's layout and
schema), (d) the package index. The order, the origin each task records, and the one error when no way
has a task. Nothing here reaches the network: the Hub is offline and the index is a missing file:// folder."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import promptkit as pk
from conftest import write_bigbench_task
from promptkit.errors import SuiteError
from promptkit.tasks.sources import bigbench, bigbench_hub
from promptkit.tasks.suites import load_tasks


@pytest.fixture()
def no_sources(tmp_path, monkeypatch) -> Path:
    """An empty cache, no local copy, the Hub offline, an index that does not exist; returns the cache."""
    # imported before HF_HUB_OFFLINE is set: huggingface_hub reads it once, and later tests need it unset
    import datasets  # noqa: F401
    for var in ("PROMPTKIT_BIGBENCH", "PROMPTKIT_BIGBENCH_SDIST", "PROMPTKIT_BIGBENCH_HUB",
                "PROMPTKIT_BIGBENCH_HUB_REVISION", "PROMPTKIT_BIGBENCH_HUB_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())
    return tmp_path / "cache"


def _checkout(tmp_path: Path) -> Path:
    """A BIG-bench git checkout: a whole task (3 examples) and a task with a subtask (2 examples)."""
    tasks = tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks"
    write_bigbench_task(tasks / "toy" / "task.json", "toy", 3)
    write_bigbench_task(tasks / "fam" / "sub_a" / "task.json", "sub_a", 2)
    return tmp_path / "BIG-bench"


def _sdist(tmp_path: Path) -> Path:
    """bigbench-1.0.0.tar.gz laid out like the real one, with the checkout's tasks."""
    checkout = _checkout(tmp_path / "src")
    sdist = tmp_path / bigbench.SDIST
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(checkout / "bigbench", arcname="bigbench-1.0.0/bigbench")
    return sdist


def _hub_rows(n: int, generative: bool = False) -> list[dict]:
    """Rows in the Hub copy's schema: BIG-bench's formatted input ("Q: ...", one "  choice: X" line per
    choice, "A:"), the reference answers, the choices and their scores."""
    if generative:
        return [{"idx": i, "inputs": f"{i} plus one is", "targets": [str(i + 1)],
                 "multiple_choice_targets": [], "multiple_choice_scores": []} for i in range(n)]
    return [{"idx": i, "inputs": f"Q: Is {i} even?\n  choice: no\n  choice: yes\nA:",
             "targets": ["yes" if i % 2 == 0 else "no"], "multiple_choice_targets": ["yes", "no"],
             "multiple_choice_scores": [int(i % 2 == 0), int(i % 2 == 1)]} for i in range(n)]


def _hub_copy(tmp_path: Path, layout: str = "split-folders") -> Path:
    """A local dataset folder like the Hub copy: one folder per config, holding either one folder per split
    (`toy/train/0000.parquet`, the layout of tasksource/bigbench's parquet export) or split-named files
    (`toy/train-00000-of-00001.parquet`, the layout of `push_to_hub`)."""
    import pandas as pd

    root = tmp_path / "hub-copy"
    configs = {"toy": {"train": _hub_rows(4), "validation": _hub_rows(2)},
               "plus_one": {"train": _hub_rows(3, generative=True)}}
    for config, splits in configs.items():
        for split, rows in splits.items():
            file = (root / config / split / "0000.parquet" if layout == "split-folders"
                    else root / config / f"{split}-00000-of-00001.parquet")
            file.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_parquet(file)
    return root


def _suite(tmp_path: Path, *names: str) -> pk.Suite:
    path = tmp_path / "s.yaml"
    path.write_text("selection:\n" + "".join(f"  - bigbench:{n}\n" for n in names))
    return pk.load_suite(path)


# ---------------------------------------------------------------------------- (a) a local copy


@pytest.mark.parametrize("inside", ["", "bigbench/benchmark_tasks"])
def test_a_checkout_or_its_task_folder_is_read_in_place(no_sources, tmp_path, monkeypatch, inside):
    checkout = _checkout(tmp_path)
    monkeypatch.setenv("PROMPTKIT_BIGBENCH", str(checkout / inside))
    tasks = load_tasks(_suite(tmp_path, "toy", "fam/sub_a"))
    assert [len(t.examples) for t in tasks] == [3, 2]
    assert {t.origin for t in tasks} == {f"bigbench checkout {checkout.resolve()}"}
    assert not (no_sources / "bigbench" / "tasks" / "toy.json").exists()  # read where it is, not copied


@pytest.mark.parametrize("var", ["PROMPTKIT_BIGBENCH", "PROMPTKIT_BIGBENCH_SDIST"])
def test_an_sdist_is_extracted_once_and_its_origin_recorded(no_sources, tmp_path, monkeypatch, capfd, var):
    sdist = _sdist(tmp_path)
    monkeypatch.setenv(var, str(sdist))
    found = bigbench.ensure_cached(["toy", "fam/sub_a"])
    origin = f"bigbench sdist {sdist.resolve()}"
    assert {f.origin for f in found.values()} == {origin}
    assert found["fam/sub_a"].path == no_sources / "bigbench" / "tasks" / "fam__sub_a.json"
    assert (no_sources / "bigbench" / "tasks" / "fam__sub_a.origin").read_text() == origin
    assert "extracting 2 BIG-bench task file(s)" in capfd.readouterr().err
    task = load_tasks(_suite(tmp_path, "toy"))[0]  # the second time, no pass over the archive
    assert task.origin == origin and len(task.examples) == 3
    assert "extracting" not in capfd.readouterr().err


def test_a_local_copy_wins_over_the_cache(no_sources, tmp_path, monkeypatch):
    write_bigbench_task(no_sources / "bigbench" / "tasks" / "toy.json", "toy", 5)
    (no_sources / "bigbench" / "tasks" / "toy.origin").write_text("hub somewhere (config toy, split train)")
    checkout = _checkout(tmp_path)
    monkeypatch.setenv("PROMPTKIT_BIGBENCH", str(checkout))
    task = load_tasks(_suite(tmp_path, "toy"))[0]
    assert len(task.examples) == 3 and task.origin == f"bigbench checkout {checkout.resolve()}"
    monkeypatch.delenv("PROMPTKIT_BIGBENCH")  # without the local copy, the cached task, saying where it came from
    task = load_tasks(_suite(tmp_path, "toy"))[0]
    cached = no_sources / "bigbench" / "tasks" / "toy.json"
    assert len(task.examples) == 5
    assert task.origin == f"bigbench cache {cached} (from hub somewhere (config toy, split train))"


def test_a_local_copy_that_is_not_there_falls_through_and_says_so(no_sources, tmp_path, monkeypatch, capfd):
    write_bigbench_task(no_sources / "bigbench" / "tasks" / "toy.json", "toy", 4)  # no .origin: an older cache
    monkeypatch.setenv("PROMPTKIT_BIGBENCH", str(tmp_path / "no-such-checkout"))
    task = load_tasks(_suite(tmp_path, "toy"))[0]
    assert len(task.examples) == 4 and task.origin.endswith("(from an earlier run; source not recorded)")
    assert f"PROMPTKIT_BIGBENCH={tmp_path / 'no-such-checkout'} does not exist" in capfd.readouterr().err


def test_a_path_task_records_its_file(tmp_path):
    file = write_bigbench_task(tmp_path / "even" / "task.json", "even", 4)
    (tmp_path / "s.yaml").write_text("selection:\n  - {name: even, source: bigbench, path: even/task.json}\n")
    assert load_tasks(pk.load_suite(tmp_path / "s.yaml"))[0].origin == str(file)


# ---------------------------------------------------------------------------- (c) the Hub


@pytest.mark.parametrize("layout", ["split-folders", "split-files"])
def test_the_hub_copy_is_converted_cached_and_needed_once(no_sources, tmp_path, monkeypatch, layout):
    hub = _hub_copy(tmp_path, layout)
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_HUB", str(hub))
    mc, gen = load_tasks(_suite(tmp_path, "toy", "plus_one"))
    assert mc.origin == f"hub {hub} (config toy, split train+validation)"
    assert gen.origin == f"hub {hub} (config plus_one, split train)"
    assert len(mc.examples) + len(mc.demos) == 6
    first = next(e for e in mc.examples + mc.demos if e.input.startswith("Is 0 "))
    assert first.input == "Is 0 even?"  # BIG-bench's "Q:", choice lines and "A:" are taken off
    assert first.choices == ["yes", "no"] and first.target == 0
    assert sorted(e.target for e in gen.examples + gen.demos) == [["1"], ["2"], ["3"]]
    cached = json.loads((no_sources / "bigbench" / "tasks" / "toy.json").read_text())
    assert cached["examples"][0] == {"input": "Is 0 even?", "target_scores": {"yes": 1, "no": 0}, "target": ["yes"]}
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_HUB", str(tmp_path / "gone"))  # the second run needs no Hub
    monkeypatch.setattr(bigbench, "_WRITTEN", set())  # a new process
    again = load_tasks(_suite(tmp_path, "toy"))[0]
    assert again.origin == (f"bigbench cache {no_sources / 'bigbench' / 'tasks' / 'toy.json'} "
                            f"(from hub {hub} (config toy, split train+validation))")
    assert [e.input for e in again.examples] == [e.input for e in mc.examples]


def test_a_hub_row_becomes_a_task_json_example():
    mc = {"inputs": "Q: Pick one.\n  choice: b\n  choice: a\nA:", "targets": ["a"],
          "multiple_choice_targets": ["a", "b"], "multiple_choice_scores": [1, 0]}
    assert bigbench_hub.hub_example(mc) == {"input": "Pick one.", "target_scores": {"a": 1, "b": 0}, "target": ["a"]}
    own_prefix = {**mc, "inputs": "Sentence: Pick one.\nAnswer:"}  # a task's own prefixes are kept
    assert bigbench_hub.hub_example(own_prefix)["input"] == "Sentence: Pick one.\nAnswer:"
    assert bigbench_hub.hub_example({"inputs": "Q: x\nA:", "targets": [" "], "multiple_choice_targets": []}) is None


def test_a_hub_that_does_not_answer_in_time_stops_the_hub_step(no_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_HUB", str(_hub_copy(tmp_path)))
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_HUB_TIMEOUT", "0")
    with pytest.raises(SuiteError) as err:
        bigbench.ensure_cached(["toy", "plus_one"])
    assert "(c) Hub: " in str(err.value) and "no answer within 0 s" in str(err.value)
    assert "toy, plus_one:" not in str(err.value)  # one reason for both, said once


# ---------------------------------------------------------------------------- no way has it


def test_when_no_way_has_a_task_one_error_names_it_and_every_way(no_sources, tmp_path):
    with pytest.raises(SuiteError) as err:
        load_tasks(_suite(tmp_path, "navigate", "fam/sub_b"))  # the check that runs before any model loads
    message = str(err.value)
    assert message.startswith("BIG-bench task(s) not available: fam/sub_b, navigate.")
    assert "(a) local copy: PROMPTKIT_BIGBENCH is not set" in message
    assert f"(b) cache: not in {no_sources / 'bigbench' / 'tasks'}" in message
    assert "(c) Hub: fam/sub_b: tasksource/bigbench: has no config for the subtask fam/sub_b" in message
    assert "navigate: tasksource/bigbench: HF_HUB_OFFLINE is set" in message
    assert f"(d) package index: could not download {bigbench.SDIST} from {(tmp_path / 'no-index').as_uri()}" in message
    assert "set PROMPTKIT_BIGBENCH to a BIG-bench checkout" in message and "unset HF_HUB_OFFLINE" in message


def test_a_local_copy_without_the_task_says_so_in_the_error(no_sources, tmp_path, monkeypatch):
    checkout = _checkout(tmp_path)
    monkeypatch.setenv("PROMPTKIT_BIGBENCH", str(checkout))
    with pytest.raises(SuiteError, match=r"\(a\) local copy: .*benchmark_tasks has no navigate/task.json"):
        bigbench.ensure_cached(["toy", "navigate"])
