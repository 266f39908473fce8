"""The verdict, the tables and the plots read every aggregate the right way (mean rank: lower is better), and
print no negative zeros; on hand-built runs where the answer is known."""

from __future__ import annotations

import pandas as pd
import pytest

import promptkit as pk
from promptkit.analysis.advice import advise
from promptkit.analysis.names import AGGREGATES, num
from promptkit.results.text import format_analysis

TASKS = ("t1", "t2", "t3", "t4")


def results(acc: dict[str, dict[str, int]], n: int = 10, held: tuple[str, ...] = ()) -> pk.Results:
    """A run where variant v answers the first acc[v][t] of task t's n examples right (two choices, chance 0.5)."""
    rows, tasks = [], {}
    for v, per in acc.items():
        for t, k in per.items():
            split = "held_out" if t in held else "selection"
            tasks[t] = {"split": split, "chance": 0.5, "n_examples": n}
            for i in range(n):
                pick = 0 if i < k else 1
                lp = [0.0, 0.0]
                lp[pick] = 2.0
                rows.append({"variant": v, "family": v.split(".")[0], "task": t, "split": split, "example": f"e{i:03d}",
                             "kind": "choice", "logprobs": lp, "correct": [0], "target": 0, "n_tokens": [1, 1],
                             "n_chars": [1, 1], "prediction": pick, "accuracy": float(pick == 0)})
    variants = {v: {"family": v.split(".")[0], "values": {"k": v}} for v in acc}
    return pk.Results(pd.DataFrame(rows), tasks, variants, {})


def steady(held: tuple[str, ...] = ()) -> pk.Results:
    """a.1 is the best prompt on every task, then b.1, c.1, d.1: whatever the aggregate, a.1 is chosen and is the
    best in hindsight (regret 0), and it beats the median prompt."""
    return results({v: {t: k for t in TASKS} for v, k in (("a.1", 9), ("b.1", 7), ("c.1", 6), ("d.1", 5))}, held=held)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_the_best_prompt_everywhere_generalizes_under_every_aggregate(aggregate):
    a = steady().analyze(protocol="loto", aggregate=aggregate, n_boot=200)
    verdict = a.summary["verdict"]
    assert a.summary["generalized"] is True, verdict
    assert "worse than the median" not in verdict
    assert ("lower is better" if aggregate == "mean_rank" else "higher is better") in verdict


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_the_plot_and_the_protocol_mark_the_same_chosen_prompt(aggregate):
    run = steady(held=("t4",))
    a = run.analyze(protocol="split", aggregate=aggregate, n_boot=50)
    assert a.folds["chosen"].iloc[0] == "a.1" and a.folds["regret"].iloc[0] == 0
    assert a.ranking["variant"].iloc[0] == "a.1"
    from promptkit.results import plots

    fig = plots.selection_vs_held_out(run, aggregate)
    assert fig.axes[0].get_legend_handles_labels()[1] == ["chosen: a.1"]


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_regret_is_positive_when_another_prompt_wins_the_held_out_task(aggregate):
    # a.1 leads on the selection tasks, b.1 on the held-out one: b.1 is the best in hindsight, the regret is > 0
    acc = {"a.1": {"t1": 9, "t2": 9, "t3": 9, "t4": 5}, "b.1": {"t1": 7, "t2": 7, "t3": 7, "t4": 9},
           "c.1": {"t1": 6, "t2": 6, "t3": 6, "t4": 6}}
    a = results(acc, held=("t4",)).analyze(protocol="split", aggregate=aggregate, n_boot=50)
    row = a.folds.iloc[0]
    assert row["chosen"] == "a.1" and row["best"] == "b.1" and row["regret"] > 0


def test_mean_rank_verdict_reads_a_lower_rank_as_better():
    folds = pd.DataFrame([{"regret": 0.0, "chosen_held_out": 2.833, "median_held_out": 3.75}])
    good = advise({"regret_ci": [0.0, 0.5], "aggregate": "mean_rank", "n_variants": 8}, "loto", None, folds)
    assert "worse than the median" not in good["verdict"] and good["generalized"] is True, good["verdict"]
    assert "chosen 2.833, median prompt 3.750" in good["verdict"] and "lower is better" in good["verdict"]
    folds = pd.DataFrame([{"regret": 0.0, "chosen_held_out": 3.75, "median_held_out": 2.833}])
    bad = advise({"regret_ci": [0.0, 0.5], "aggregate": "mean_rank", "n_variants": 8}, "loto", None, folds)
    assert "worse than the median" in bad["verdict"] and bad["generalized"] is None


def test_a_regret_in_mean_ranks_is_judged_on_the_rank_scale():
    # half a rank among 8 prompts is a small regret (0.07 in win-rate terms); 3 ranks is not
    def verdict(regret):
        folds = pd.DataFrame([{"regret": regret, "chosen_held_out": 2.0, "median_held_out": 4.5}])
        return advise({"regret_ci": [0.0, regret + 0.2], "aggregate": "mean_rank", "n_variants": 8}, "loto", None, folds)
    assert verdict(0.3)["generalized"] is True
    assert verdict(3.0)["generalized"] is None


def test_the_mean_rank_table_has_one_mean_rank_column():
    a = steady().analyze(protocol="loto", aggregate="mean_rank", n_boot=50)
    table = format_analysis(a).split("\n\n")[0]
    header = table.splitlines()[1].split()
    assert header.count("mean_rank") == 1, header
    assert "lower is better" in table.splitlines()[0]
    assert list(a.ranking.columns).count("mean_rank") == 1
    from promptkit.results.report import ranking_html

    html = ranking_html(a)
    assert "<th class=''>mean rank</th>" not in html and "<th class=''>mean_rank</th>" in html
    other = steady().analyze(protocol="loto", aggregate="mean_norm", n_boot=50)
    assert "<th class=''>mean rank</th>" in ranking_html(other)


def test_no_negative_zero_is_printed():
    assert num(-0.0) == "0.000" and num(-1e-12) == "0.000" and num(-0.0004) == "0.000"
    assert num(-0.04, 1, sign=True) == "0.0" and num(0.04, 1, sign=True) == "0.0" and num(0.06, 1, sign=True) == "+0.1"
    assert num(-0.0012) == "-0.001" and num(float("nan")) == "nan"
    a = steady().analyze(protocol="loto", aggregate="mean_norm", n_boot=50)
    a.folds["regret"] = -0.0  # what a float subtraction can leave
    text = format_analysis(a)
    assert "-0.000" not in text and "-0.0 " not in text and "t -0.0" not in text


# ---------------------------------------------------------------------------- which rule, and why


def choice_table(acc: dict[str, dict[str, int]], n: int = 10):
    from promptkit.analysis.selection import ChoiceTable

    run = results(acc, n)
    return ChoiceTable.from_rows(run.rows, run.tasks), list(run.tasks)


def test_when_every_rule_ties_the_cheaper_one_is_recommended():
    from promptkit.analysis import selection as sel
    from promptkit.analysis.advice import next_step, why

    # every prompt answers the same examples: any ensemble predicts what top-1 predicts, on every left-out task
    ct, tasks = choice_table({v: {t: 7 for t in TASKS} for v in ("a.1", "b.1", "c.1", "d.1")})
    rec = sel.recommend(ct, tasks)
    assert rec.rule == "top1" and rec.candidate.cost == 1 and rec.basis == "cheaper"
    assert "did better than top1 (1× calls) on none of the selection tasks left out in turn" in why(rec)
    assert (rec.loto.loc[rec.loto["rule"] != "top1", "t_vs_default"] == 0).all()  # tied: 0, never -0.0
    assert "5×" not in next_step(True, rec, "RUN_DIR") and "ensemble" not in next_step(None, rec, "RUN_DIR")


def test_a_constant_difference_on_every_fold_is_clear_not_a_tie():
    from promptkit.analysis import selection as sel

    # a.1 is best on every task; the 4-variant "ensemble5" averages it with three poor prompts and loses 0.4 each time
    ct, tasks = choice_table({v: {t: k for t in TASKS} for v, k in (("a.1", 9), ("b.1", 5), ("c.1", 5), ("d.1", 5))})
    loto = sel.nested_loto(ct, tasks, ["top1"], default="ensemble5")
    assert loto.loc[loto["rule"] == "top1", "t_vs_default"].item() == float("inf")
    assert sel.recommend(ct, tasks).rule == "top1"


def test_an_ensemble_is_named_by_its_real_size_and_its_reason_is_said():
    from promptkit.analysis import selection as sel
    from promptkit.analysis.advice import next_step, why

    # the prompts err on different examples, some with little confidence: three of them averaged still miss three
    # examples that the fourth gets right, so the 4-prompt ensemble beats top-1 and the 3-prompt one on every task
    rows, tasks = [], {}
    for t in TASKS:
        tasks[t] = {"split": "selection", "chance": 0.5}
        for v, right, wrong in (("a.1", range(0, 7), 0.5), ("b.1", range(3, 10), 0.5), ("c.1", range(0, 5), 3.0),
                                ("d.1", range(5, 10), 3.0)):
            for i in range(10):
                lp = [3.0, 0.0] if i in right else [0.0, wrong]
                rows.append({"variant": v, "family": v[0], "task": t, "split": "selection", "example": f"e{i}",
                             "kind": "choice", "logprobs": lp, "correct": [0], "target": 0, "accuracy": float(i in right)})
    ct = sel.ChoiceTable.from_rows(pd.DataFrame(rows), tasks)
    rec = sel.recommend(ct, list(TASKS))
    assert rec.rule == "ensemble5" and rec.candidate.cost == 4 and rec.basis == "default"
    step = next_step(None, rec, "RUN_DIR")
    assert "the 4-prompt ensemble (averaged probabilities)" in step and "(4× calls)" in step
    assert "rule ensemble5: the run has only 4 variants" in step
    assert "so this run agrees" in why(rec) and "ahead of top-1 on 4 and behind it on 0" in why(rec)
    from promptkit.results.text import format_rules

    text = format_rules(pd.DataFrame({"rule": rec.loto["rule"], "cost": rec.loto["cost"]}), rec)
    assert "ensemble5 holds 4" in text and "why: ensemble5 is the default" in text


def test_a_default_kept_without_evidence_says_it_is_the_benchmarks_prior():
    from promptkit.analysis import selection as sel
    from promptkit.analysis.advice import why

    # the ensemble is ahead of top-1 on two left-out tasks and behind on two: this run says nothing either way
    loto = pd.DataFrame([{"rule": "ensemble5", "loto_mean_norm": 0.40, "cost": 5, "t_vs_default": 0.0, "folds_behind": 0,
                          "folds_ahead": 0},
                         {"rule": "top1", "loto_mean_norm": 0.41, "cost": 1, "t_vs_default": 0.4, "folds_behind": 2,
                          "folds_ahead": 2}])
    rec = sel.Recommendation("ensemble5", sel.Candidate(tuple("abcde"), "mean_prob"), loto, "ensemble5", "default")
    text = why(rec)
    assert "the choice is the benchmark's prior, not this run's evidence" in text and "-0.010 mean_norm" in text


def test_the_next_step_never_suggests_the_command_being_run(tmp_path, capsys):
    from promptkit.cli import main

    # a.1 and b.1 are complementary, so the ensemble is recommended and the next step names its command
    rows, tasks = [], {}
    for t in TASKS:
        tasks[t] = {"split": "selection", "chance": 0.5, "n_examples": 10}
        for v, right in (("a.1", range(0, 7)), ("b.1", range(3, 10)), ("c.1", range(0, 5))):
            for i in range(10):
                lp = [3.0, 0.0] if i in right else [0.0, 0.5]
                rows.append({"variant": v, "family": v[0], "task": t, "split": "selection", "example": f"e{i}",
                             "kind": "choice", "logprobs": lp, "correct": [0], "target": 0, "n_tokens": [1, 1],
                             "n_chars": [1, 1], "prediction": int(i not in right), "accuracy": float(i in right)})
    run = pk.Results(pd.DataFrame(rows), tasks, {v: {"family": v[0], "values": {}} for v in ("a.1", "b.1", "c.1")}, {})
    run.save(tmp_path / "run")
    assert main(["rank", str(tmp_path / "run")]) == 0
    plain = capsys.readouterr().out
    assert "next step: use the 'ensemble5' rule" in plain and "promptkit rank RUN_DIR --recommend" in plain
    assert main(["rank", str(tmp_path / "run"), "--recommend"]) == 0
    text = capsys.readouterr().out
    assert "next step: use the 'ensemble5' rule" in text and "--recommend" not in text.split("next step:")[1].split("\n")[0]
    assert "recommended rule: ensemble5" in text
