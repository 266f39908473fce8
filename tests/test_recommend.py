"""Recommending a prompt: the verdict and next step of every run, `rank --recommend`, and adapting to a new task
from N labelled examples (`promptkit recommend`, Results.recommend) on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_bigbench_task

import promptkit as pk
from promptkit.cli import main
from promptkit.errors import PromptkitError


@pytest.fixture()
def run_dir(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "4", "--max-variants", "4", "--out", str(out), "--quiet"]) == 0
    return out


def test_every_run_says_whether_the_choice_generalized_and_what_next(run_dir, capsys):
    analysis = json.loads((run_dir / "analysis.json").read_text())["summary"]
    assert analysis["generalized"] in (True, False, None)
    assert analysis["verdict"].startswith(("generalized", "did not generalize", "inconclusive"))
    assert "promptkit" in analysis["next_step"]
    assert analysis["recommendation"]["rule"] in analysis["next_step"] or "recommend" in analysis["next_step"]
    rules = (run_dir / "selection_rules.csv").read_text().splitlines()
    assert rules[0].startswith("rule,choice,cost,loto_mean_norm,selection_mean_norm,held_out_mean_norm")
    assert len(rules) == 1 + 9 and any(r.startswith("vote3,vote(") and ",3," in r for r in rules)
    html = (run_dir / "report.html").read_text()
    assert "Did the chosen prompt generalize?" in html and analysis["verdict"].split(":")[0] in html
    assert main(["rank", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "generalization: " + analysis["verdict"] in text and "next step: " in text


def test_rank_recommend_prints_rules_and_the_pick(run_dir, capsys):
    assert main(["rank", str(run_dir), "--recommend"]) == 0
    text = capsys.readouterr().out
    assert "selection rules and prompt ensembles" in text and "recommended rule:" in text
    rec = pk.load(run_dir).recommend()
    assert f"recommended rule: {rec.rule}" in text
    assert main(["recommend", str(run_dir)]) == 0  # no --task: the same recommendation
    assert f"recommended rule: {rec.rule}" in capsys.readouterr().out


def test_recommend_rule_ignores_held_out_rows(run_dir):
    res = pk.load(run_dir)
    before = res.recommend()
    rows = res.rows.copy()
    held = rows["split"] == "held_out"
    rows.loc[held, "logprobs"] = rows.loc[held, "logprobs"].map(lambda lp: list(np.random.default_rng(0).normal(size=len(lp))))
    poisoned = pk.Results(rows, res.tasks, res.variants, res.config)
    after = poisoned.recommend()
    assert after.rule == before.rule and after.candidate == before.candidate
    assert after.loto.equals(before.loto)


def test_recommend_adapts_to_a_new_task_through_the_cli(run_dir, tmp_path, tiny_model, capsys):
    task = write_bigbench_task(tmp_path / "newtask" / "task.json", "newtask", 12)
    code = main(["recommend", str(run_dir), "--task", str(task), "--labelled", "4", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "task newtask: 4 labelled example(s)" in text and "recommended prompt: " in text
    assert "expected accuracy" in text and "prompts scored" in text
    res = pk.load(run_dir)
    a = res.recommend(task=str(task), n=4, progress=False, log=lambda m: None)
    assert a.n_labelled == 4 and a.variant in res.variants
    assert a.calls["prompts"] == 4 * len(res.variants) and a.calls["from_cache"] > 0  # the CLI's scores were cached
    lo, hi = a.interval_accuracy
    assert lo <= a.expected_accuracy <= hi
    assert set(a.table["variant"]) == set(res.variants)
    # N = 0: no model calls, the cross-task choice
    zero = res.recommend(task=str(task), n=0)
    assert zero.calls == {"prompts": 0} and zero.variant == zero.cross_task_variant
    assert zero.variant == res.recommend(task=str(task), n=0, candidates=1).variant
    # only the best candidates by the prior are scored
    two = res.recommend(task=str(task), n=4, candidates=2, progress=False, log=lambda m: None)
    assert len(two.table) == 2 and two.calls["prompts"] == 8


def test_recommend_errors_are_clear(run_dir, tmp_path):
    res = pk.load(run_dir)
    with pytest.raises(PromptkitError, match="not a file, and not a task like 'generated:NAME' or 'bigbench:NAME'"):
        res.recommend(task=str(tmp_path / "missing.json"), n=2)
    with pytest.raises(PromptkitError, match="labelled examples must be 0 or more"):
        res.recommend(task="bigbench:snarks", n=-1)
    assert main(["recommend", str(run_dir), "--task", str(tmp_path / "nope.csv")]) == 2


def test_variants_option_keeps_only_named_ids(tiny_model, toy_suite, two_templates):
    full = pk.evaluate(two_templates, toy_suite, tiny_model, limit=2, progress=False, log=lambda m: None)
    keep = sorted(full.variants)[:2]
    part = pk.evaluate(two_templates, toy_suite, tiny_model, limit=2, variants=keep, progress=False, log=lambda m: None)
    assert sorted(part.variants) == keep
    with pytest.raises(PromptkitError, match="variants= names 1 id"):
        pk.evaluate(two_templates, toy_suite, tiny_model, limit=2, variants=["plain.nope"], progress=False)


def test_the_verdict_needs_a_small_regret_not_only_a_ci_that_touches_zero():
    import pandas as pd

    from promptkit.analysis.advice import advise

    def verdict(lo, hi, regret, chosen, median):
        folds = pd.DataFrame([{"regret": regret, "chosen_held_out": chosen, "median_held_out": median}])
        return advise({"regret_ci": [lo, hi]}, "split", None, folds)

    good = verdict(0.0, 0.08, 0.02, 0.30, 0.20)
    assert good["generalized"] is True and good["verdict"].startswith("generalized") and "wide" not in good["verdict"]
    assert "wide" in verdict(0.0, 0.3, 0.02, 0.30, 0.20)["verdict"]
    bad = verdict(0.04, 0.25, 0.14, 0.15, 0.15)
    assert bad["generalized"] is False and "excludes 0" in bad["verdict"] and "promptkit recommend" in bad["next_step"]
    unsure = verdict(0.0, 0.6, 0.38, -0.07, 0.05)
    assert unsure["generalized"] is None and unsure["verdict"].startswith("inconclusive")
    assert "worse than the median prompt" in unsure["verdict"]
    none = advise({}, "none", None)
    assert none["generalized"] is None and none["verdict"].startswith("not measured")
