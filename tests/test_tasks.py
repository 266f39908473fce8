import json

import pytest

import promptkit as pk
from promptkit.tasks.sources import bigbench
from promptkit.tasks.suites import load_suite, load_task, load_tasks

from conftest import write_bigbench_task


def test_builtin_suite_is_large_split_and_disjoint():
    suite = pk.load_suite()
    assert suite.name == "offline_mc"  # the default needs no download: every task is generated
    assert len(suite.tasks) >= 18
    assert suite.selection and suite.held_out
    assert not {t.name for t in suite.selection} & {t.name for t in suite.held_out}
    assert all(t.source == "generated" for t in suite.tasks)
    gen = pk.load_suite("offline_gen")
    assert len(gen.tasks) >= 8 and all(t.source == "generated" for t in gen.tasks)
    for name in ("bigbench_mc", "bigbench_gen"):  # still built in, for users who have BIG-bench
        assert all(t.source == "bigbench" for t in pk.load_suite(name).tasks)


def test_toy_suite_loads_all_three_sources(toy_suite):
    suite = pk.load_suite(toy_suite)
    tasks = {t.name: t for t in load_tasks(suite)}
    assert set(tasks) == {"even", "capitals", "even2"}
    even = tasks["even"]
    assert even.instruction == "Answer the question."
    assert even.examples[0] == pk.Example("0", "Is 0 even?", ["yes", "no"], 0, {})
    assert even.examples[1].target == 1
    assert even.chance == pytest.approx(0.5)
    capitals = tasks["capitals"]
    assert [e.id for e in capitals.examples] == ["c0", "c1", "c2", "c3", "c4"]
    assert capitals.examples[4].choices == ["Paris", "Rome", "Berlin"] and capitals.examples[4].target == 1
    assert capitals.chance == pytest.approx(1 / 3)
    assert tasks["even2"].split == "held_out" and tasks["even2"].cluster == "parity"


def test_limit_is_a_seeded_sample_keeping_original_ids(toy_suite):
    suite = pk.load_suite(toy_suite)
    a = load_task(suite.task("even"), limit=3, seed=0)
    b = load_task(suite.task("even"), limit=3, seed=0)
    assert [e.id for e in a.examples] == [e.id for e in b.examples]
    assert len(a.examples) == 3
    assert all(e.input == f"Is {e.id} even?" for e in a.examples)


def test_bigbench_multi_correct_and_generative_examples(tmp_path):
    data = {"task_prefix": "  Pick.  ", "examples": [
        {"input": "a", "target_scores": {"x": 1, "y": 1, "z": 0}},
        {"input": "b", "target": ["ref one", "ref two"]},
    ]}
    task = bigbench.task_from_json(data, "mixed", "mixed.json")
    assert task.instruction == "Pick."
    assert task.examples[0].target == 0 and task.examples[0].correct_indices() == [0, 1]
    assert task.examples[1].choices is None and task.examples[1].target == ["ref one", "ref two"]


def test_csv_source_with_jinja_mapping_and_text_target(tmp_path):
    (tmp_path / "d.csv").write_text("question,a,b,answer\nWhich is red?,apple,sky,apple\nWhich is blue?,apple,sky,sky\n")
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "selection:\n  - {name: colors, source: files, path: d.csv, input: '{{ question }} (pick one)', choices: [a, b], target: answer}\n"
    )
    task = load_tasks(pk.load_suite(suite_file))[0]
    assert task.examples[0].input == "Which is red? (pick one)"
    assert [e.target for e in task.examples] == [0, 1]


def _suite(tmp_path, task_line, data=None, name="data.jsonl"):
    if data is not None:
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in data))
    path = tmp_path / "s.yaml"
    path.write_text(f"selection:\n  - {task_line}\n")
    return path


def test_missing_column_names_file_row_and_column(tmp_path):
    path = _suite(tmp_path, "{name: t, source: files, path: data.jsonl, input: question, choices: opts, target: label}",
                  [{"question": "q", "opts": ["a", "b"], "label": 0}, {"question": "q2", "label": 1}])
    with pytest.raises(pk.SuiteError) as err:
        load_tasks(pk.load_suite(path))
    message = str(err.value)
    assert "data.jsonl, row 2" in message and "'opts'" in message and "choices" in message


def test_target_out_of_range_is_reported(tmp_path):
    path = _suite(tmp_path, "{name: t, source: files, path: data.jsonl, input: q, choices: o, target: y}",
                  [{"q": "q", "o": ["a", "b"], "y": 5}])
    with pytest.raises(pk.SuiteError, match=r"data.jsonl, row 1: task 't': target 5 is outside the 2 choices"):
        load_tasks(pk.load_suite(path))


def test_target_text_not_among_choices(tmp_path):
    path = _suite(tmp_path, "{name: t, source: files, path: data.jsonl, input: q, choices: o, target: y}",
                  [{"q": "q", "o": ["a", "b"], "y": "c"}])
    with pytest.raises(pk.SuiteError, match="neither a choice index nor one of the choices"):
        load_tasks(pk.load_suite(path))


def test_duplicate_ids_are_rejected(tmp_path):
    path = _suite(tmp_path, "{name: t, source: files, path: data.jsonl, input: q, choices: o, target: y, id: k}",
                  [{"q": "q", "o": ["a", "b"], "y": 0, "k": "same"}, {"q": "r", "o": ["a", "b"], "y": 1, "k": "same"}])
    with pytest.raises(pk.SuiteError, match="two examples with id 'same'"):
        load_tasks(pk.load_suite(path))


def test_missing_data_file(tmp_path):
    path = _suite(tmp_path, "{name: t, source: files, path: nope.jsonl, input: q, choices: o, target: y}")
    with pytest.raises(pk.SuiteError, match="nope.jsonl does not exist"):
        load_tasks(pk.load_suite(path))


def test_non_utf8_data_file(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"q,o,y\n\xff\xfe,a|b,0\n")
    path = _suite(tmp_path, "{name: t, source: files, path: bad.csv, input: q, choices: o, target: y}")
    with pytest.raises(pk.SuiteError, match="not valid UTF-8"):
        load_tasks(pk.load_suite(path))


@pytest.mark.parametrize(
    "text, message",
    [
        ("selection: []\n", "at least one task"),
        ("selection:\n  - bigbench:a\nheld_out:\n  - bigbench:a\n", "already listed"),
        ("selection:\n  - {source: nope}\n", "`source` must be one of"),
        ("selection:\n  - {source: files, path: x.csv}\n", "map the data's columns"),
        ("selection:\n  - {source: bigbench, task: a, colour: red}\n", "unknown field"),
        ("selection:\n  - bigbench:a\nlimt: 3\n", "unknown field"),
        ("selection: [bigbench:a\n", "YAML syntax error"),
    ],
)
def test_malformed_suites(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(pk.SuiteError, match=message):
        pk.load_suite(path)


def test_unknown_builtin_suite_lists_builtins():
    with pytest.raises(pk.SuiteError, match="built-ins: .*bigbench_mc"):
        pk.load_suite("no_such_suite")


def test_unknown_bigbench_task_suggests_close_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "bigbench").mkdir(parents=True)
    (tmp_path / "cache" / "bigbench" / "index.json").write_text(json.dumps(["sports_understanding", "navigate"]))
    with pytest.raises(pk.SuiteError, match="Did you mean: sports_understanding"):
        bigbench.ensure_cached(["sports_understandin"])


def test_bigbench_extraction_from_a_tarball(tmp_path, monkeypatch):
    """The real extraction path, on a small sdist-shaped tarball the test builds."""
    import tarfile

    root = tmp_path / "bigbench-1.0.0" / "bigbench" / "benchmark_tasks"
    write_bigbench_task(root / "toy" / "task.json", "toy", 3)
    write_bigbench_task(root / "fam" / "sub_a" / "task.json", "sub_a", 2)
    sdist = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "bigbench-1.0.0", arcname="bigbench-1.0.0")
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PROMPTKIT_BIGBENCH", raising=False)  # it would win over the older variable
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_SDIST", str(sdist))
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("selection:\n  - bigbench:toy\nheld_out:\n  - bigbench:fam/sub_a\n")
    tasks = load_tasks(pk.load_suite(suite_file))
    assert [len(t.examples) for t in tasks] == [3, 2]
    assert (tmp_path / "cache" / "bigbench" / "tasks" / "fam__sub_a.json").is_file()
    assert json.loads((tmp_path / "cache" / "bigbench" / "index.json").read_text()) == ["fam/sub_a", "toy"]
    with pytest.raises(pk.SuiteError, match="unknown BIG-bench task 'tyo'.*Did you mean: toy"):
        bigbench.ensure_cached(["tyo"])


def test_hf_source_loads_through_datasets(tmp_path):
    """The `hf` source's real code path (datasets.load_dataset on an id), given a local dataset folder."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"question": f"q{i}", "answer": bool(i % 2)} for i in range(4)]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        f"selection:\n  - name: yesno\n    source: hf\n    dataset: {folder}\n    split: test\n"
        "    input: '{{ question }}?'\n    choices: [\"{{ 'no' }}\", \"{{ 'yes' }}\"]\n    target: '{{ answer | int }}'\n"
    )
    task = load_tasks(pk.load_suite(suite_file))[0]
    assert [e.target for e in task.examples] == [0, 1, 0, 1]
    assert task.examples[0].input == "q0?" and task.examples[0].choices == ["no", "yes"]


def test_hf_source_unknown_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("selection:\n  - {name: x, source: hf, dataset: no-such-org/no-such-set, split: test, input: a, choices: b, target: c}\n")
    with pytest.raises(pk.SuiteError, match="could not load dataset no-such-org/no-such-set"):
        load_tasks(pk.load_suite(suite_file))


def test_a_data_error_names_the_first_row_at_fault_counted_from_one(tmp_path):
    """Rows were counted from 0, and a later row with a missing target was named before an earlier row whose
    target was outside the choices."""
    rows = [{"q": "a", "opts": ["x", "y"], "label": 0}, {"q": "b", "opts": ["x", "y"], "label": 0},
            {"q": "c", "opts": ["x", "y"], "label": 5}, {"q": "d", "opts": ["x", "y"]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nselection:\n  - {name: t, source: files, path: d.jsonl, input: q, choices: opts, target: label}\n")
    with pytest.raises(pk.SuiteError, match=r"d\.jsonl, row 3: task 't': target 5 is outside the 2 choices"):
        load_tasks(load_suite(suite))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:2] + rows[3:]))
    with pytest.raises(pk.SuiteError, match=r"d\.jsonl, row 3: task 't': column 'label' \(mapped to `target`\) is empty"):
        load_tasks(load_suite(suite))


def test_a_csv_cell_holding_a_list_of_choices_is_a_list(tmp_path):
    (tmp_path / "d.csv").write_text('q,opts,label\nCapital of France?,"[""Paris"", ""Rome""]",0\n'
                                    "Capital of Italy?,\"['Paris', 'Rome']\",Rome\nBoth?,a|b,1\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nselection:\n  - {name: t, source: files, path: d.csv, input: q, choices: opts, target: label}\n")
    [task] = load_tasks(load_suite(suite))
    assert [e.choices for e in task.examples] == [["Paris", "Rome"], ["Paris", "Rome"], ["a", "b"]]
    assert [e.target for e in task.examples] == [0, 1, 1]
