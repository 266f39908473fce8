"""`promptkit recommend --task`: the task is read as a suite task is (list column, one column per choice, a YAML
mapping), errors name the user's file, and the expected score and the weight of the labels are explained."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptkit.analysis import adapt
from promptkit.errors import PromptkitError
from promptkit.run.recommend import new_task_suite
from promptkit.tasks.suites import load_tasks

CAPITALS = [("France", "Paris", "Rome", "Berlin", 0), ("Italy", "Paris", "Rome", "Berlin", 1),
            ("Germany", "Paris", "Rome", "Berlin", 2), ("Spain", "Madrid", "Lisbon", "Oslo", 0)]


def examples(task):
    return load_tasks(new_task_suite(str(task)), None, 0)[0].examples


# ---------------------------------------------------------------------------- what --task reads


def test_a_csv_with_one_column_per_choice(tmp_path):
    path = tmp_path / "capitals.csv"
    path.write_text("question,A,B,C,answer\n" + "".join(f"Capital of {c}?,{a},{b},{d},{t}\n" for c, a, b, d, t in CAPITALS))
    got = examples(path)
    assert [e.choices for e in got[:1]] == [["Paris", "Rome", "Berlin"]] and [e.target for e in got] == [0, 1, 2, 0]
    assert got[0].input == "Capital of France?"


def test_a_jsonl_with_a_list_column_and_a_target_given_as_text(tmp_path):
    path = tmp_path / "capitals.jsonl"
    path.write_text("\n".join(json.dumps({"input": f"Capital of {c}?", "choices": [a, b, d], "target": [a, b, d][t]})
                              for c, a, b, d, t in CAPITALS))
    got = examples(path)
    assert got[1].choices == ["Paris", "Rome", "Berlin"] and [e.target for e in got] == [0, 1, 2, 0]


def test_a_csv_with_choices_separated_by_bars(tmp_path):
    path = tmp_path / "capitals.csv"
    path.write_text("input,choices,target\n" + "".join(f"Capital of {c}?,{a}|{b}|{d},{t}\n" for c, a, b, d, t in CAPITALS))
    assert examples(path)[2].choices == ["Paris", "Rome", "Berlin"]


def test_a_list_written_into_a_csv_cell_is_explained_not_read_as_one_choice(tmp_path):
    path = tmp_path / "capitals.csv"
    path.write_text('input,choices,target\nCapital of France?,"[""Paris"", ""Rome""]",0\n')
    with pytest.raises(PromptkitError) as info:
        examples(path)
    text = str(info.value)
    assert text.startswith(str(path.resolve())) and "holds a list written as text" in text and "1 choice" not in text
    assert "recommend.yaml" not in text


def test_a_yaml_task_mapping_as_a_suite_task_has_it(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "caps.csv").write_text(
        "q,w,x,y,gold\n" + "".join(f"Capital of {c}?,{a},{b},{d},{t}\n" for c, a, b, d, t in CAPITALS))
    task = tmp_path / "caps.yaml"
    task.write_text("source: files\npath: data/caps.csv\ninput: q\nchoices: [w, x, y]\ntarget: gold\ninstruction: Name it.\n")
    got = load_tasks(new_task_suite(str(task)), None, 0)[0]
    assert got.name == "caps" and got.examples[0].choices == ["Paris", "Rome", "Berlin"] and got.instruction == "Name it."


def test_errors_name_the_users_file_never_a_suite_they_did_not_write(tmp_path):
    task = tmp_path / "caps.yaml"
    task.write_text("source: files\npath: caps.csv\ninput: q\nchoices: [w, x]\ntarget: gold\ncolour: blue\n")
    with pytest.raises(PromptkitError) as info:
        new_task_suite(str(task))
    assert str(info.value).startswith(f"{task.resolve()}: unknown field(s) colour") and "selection[0]" not in str(info.value)
    path = tmp_path / "odd.csv"
    path.write_text("prompt_text,first,second,correct\nHi?,a,b,0\n")
    with pytest.raises(PromptkitError) as info:
        new_task_suite(str(path))
    text = str(info.value)
    assert text.startswith(str(path.resolve())) and "cannot tell which column is the input" in text
    assert "prompt_text, first, second, correct" in text and "recommend.yaml" not in text
    bad = tmp_path / "bad.csv"  # a data error found while loading: the file, not a suite entry
    bad.write_text("input,A,B,target\nHi?,a,b,7\n")
    with pytest.raises(PromptkitError) as info:
        from promptkit.run.recommend import named_errors
        from pathlib import Path

        suite = new_task_suite(str(bad))
        with named_errors(Path(suite.path)):
            load_tasks(suite, None, 0)
    assert str(bad.resolve()) in str(info.value) and "selection[0]" not in str(info.value)


def test_a_data_file_outside_the_working_folder_is_read(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere" / "capitals.csv"
    path.parent.mkdir()
    path.write_text("input,choices,target\n" + "".join(f"Capital of {c}?,{a}|{b}|{d},{t}\n" for c, a, b, d, t in CAPITALS))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert len(examples(path)) == 4


# ---------------------------------------------------------------------------- the numbers and their reasons


def _prior():
    rng = np.random.default_rng(3)
    table = rng.uniform(0.1, 0.7, size=(6, 5))
    return adapt.prior(table, np.full(5, 30), np.full(5, 0.25))


def test_the_expected_score_of_a_prompt_does_not_depend_on_the_other_candidates():
    p = _prior()
    rng = np.random.default_rng(0)
    correct = (rng.random((6, 8)) < 0.7).astype(float)
    everyone = adapt.posterior(p, correct, 0.25)
    order = np.argsort(-p.mu)
    top = order[:3]
    some = adapt.posterior(adapt.Prior(p.mu[top], p.tau2, p.task_var, p.grand), correct[top], 0.25)
    for j, i in enumerate(top):
        assert some.mean[j] == pytest.approx(everyone.mean[i]) and some.sd[j] == pytest.approx(everyone.sd[i])
    assert everyone.choice() == int(np.argmax((1 - everyone.shrink) * p.mu + everyone.shrink
                                              * ((correct.mean(axis=1) - 0.25) / 0.75)))


def test_more_labels_narrow_the_interval_and_no_labels_give_the_prior():
    p = _prior()
    rng = np.random.default_rng(1)
    correct = (rng.random((6, 64)) < 0.6).astype(float)
    few, many = adapt.posterior(p, correct[:, :8], 0.25), adapt.posterior(p, correct, 0.25)
    assert (many.sd < few.sd).all()
    none = adapt.posterior(p, None, 0.25)
    assert np.allclose(none.mean, p.mu) and none.shrink == 0 and none.choice() == int(np.argmax(p.mu))


def test_a_zero_weight_says_why():
    flat = adapt.Prior(np.array([0.5, 0.45, 0.4]), 1e-4, 0.02, 0.45)  # prompts rank alike on every selection task
    correct = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]], dtype=float)
    post = adapt.posterior(flat, correct, 0.5)
    assert post.shrink < 0.01
    reason = adapt.weight_reason(flat, post, 12)
    assert reason.startswith("the cross-task prior decides: on the run's 12 selection tasks")
    assert "what chance gives" in reason and "rank alike on every selection task" in reason
    steep = adapt.Prior(flat.mu, 0.04, 0.02, 0.45)
    reason = adapt.weight_reason(steep, adapt.posterior(steep, correct, 0.5), 12)
    assert reason.startswith("weight 0.") and "0.200²" in reason
    assert adapt.weight_reason(flat, adapt.posterior(flat, None, 0.5), 12).startswith("no labelled examples")


def test_a_task_file_reads_data_from_its_own_folder_unless_it_says_so(tmp_path):
    (tmp_path / "data.csv").write_text("input,choices,target\nHi?,a|b,0\nHo?,a|b,1\n")
    (tmp_path / "tasks").mkdir()
    task = tmp_path / "tasks" / "t.yaml"
    task.write_text("source: files\npath: ../data.csv\ninput: input\nchoices: choices\ntarget: target\n")
    with pytest.raises(PromptkitError) as info:
        new_task_suite(str(task))
    assert str(info.value).startswith(str(task.resolve())) and "allow_outside_data: true" in str(info.value)
    task.write_text("allow_outside_data: true\n" + task.read_text())
    assert len(load_tasks(new_task_suite(str(task)), None, 0)[0].examples) == 2


def test_recommend_on_a_csv_explains_its_numbers(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    from promptkit.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "4", "--max-variants", "4", "--out", str(out), "--quiet"]) == 0
    path = tmp_path / "capitals.csv"
    path.write_text("question,A,B,C,answer\n" + "".join(f"Capital of {c}?,{a},{b},{d},{t}\n" for c, a, b, d, t in CAPITALS * 2))
    capsys.readouterr()
    tables = {}
    for extra in ([], ["--candidates", "2"]):
        assert main(["recommend", str(out), "--task", str(path), "--labelled", "6", "--quiet", *extra]) == 0
        text = capsys.readouterr().out
        assert "task capitals: 6 labelled example(s)" in text and "weight on the task's own evidence in the choice" in text
        assert "so the same whichever candidates were scored" in text and "choice_score" in text
        lines = text.split("posterior_sd\n", 1)[1].strip().splitlines()
        tables[len(extra)] = {line.split()[0]: line.split()[-2:] for line in lines}
    for variant, numbers in tables[2].items():  # the same prompt on the same labels: the same estimate
        assert tables[0][variant] == numbers
