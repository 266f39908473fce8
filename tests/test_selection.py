"""Selection rules, ensembles, nested leave-one-task-out and few-label adaptation on hand-built score tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptkit.analysis import adapt
from promptkit.analysis import selection as sel
from promptkit.errors import PromptkitError


def rows_from(preds: dict[str, dict[str, list[int]]], n_choices: int = 2, margin: float = 2.0,
              probs: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Tidy rows where choice 0 is always correct and variant v predicts preds[v][task][i] on example i
    (its log-likelihood `margin` above the others), or uses the given per-example log-likelihood lists."""
    rows, tasks = [], {}
    for v, per_task in preds.items():
        for t, picks in per_task.items():
            tasks[t] = {"split": "selection", "chance": 1 / n_choices}
            for i, pick in enumerate(picks):
                lp = list(probs[v][t][i]) if probs else [0.0] * n_choices
                if not probs:
                    lp[pick] = margin
                rows.append({"variant": v, "family": v.split(".")[0], "task": t, "split": "selection",
                             "example": f"e{i:03d}", "kind": "choice", "logprobs": lp, "correct": [0], "target": 0,
                             "n_tokens": [1] * n_choices, "n_chars": [1] * n_choices,
                             "prediction": int(np.argmax(lp)), "accuracy": float(int(np.argmax(lp)) == 0)})
    return pd.DataFrame(rows), tasks


def picks(n_right: int, n: int = 10) -> list[int]:
    return [0] * n_right + [1] * (n - n_right)


def test_single_variant_scores_match_the_rows():
    rows, tasks = rows_from({"a.1": {"t1": picks(8), "t2": picks(3)}, "b.1": {"t1": picks(5), "t2": picks(10)}})
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    assert ct.accuracy(sel.Candidate(("a.1",)), "t1") == 0.8
    assert ct.normalized(sel.Candidate(("b.1",)), "t2") == pytest.approx(1.0)
    assert ct.table(["t1", "t2"]) == pytest.approx(np.array([[0.6, -0.4], [0.0, 1.0]]))


def test_rules_on_a_table_with_known_answers():
    # a: great on t1 and t2, terrible on t3 (best mean); b: steady (best worst case); c: middling everywhere
    rows, tasks = rows_from({
        "a.1": {"t1": picks(10), "t2": picks(10), "t3": picks(0)},
        "b.1": {"t1": picks(8), "t2": picks(8), "t3": picks(7)},
        "c.1": {"t1": picks(9), "t2": picks(6), "t3": picks(5)},
    })
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    s = ["t1", "t2", "t3"]
    assert sel.top1(ct, s).members == ("b.1",)  # means: a 0.333, b 0.533, c 0.333
    assert sel.worst_task(ct, s).members == ("b.1",)
    assert sel.mean_rank(ct, s).members == ("a.1",)  # ranks a: 1,1,3 → 1.67; b: 3,2,1 → 2; c: 2,3,2 → 2.33
    assert sel.ensemble(2)(ct, s).members == ("b.1", "a.1")  # a before c on the tie: variant id order


def test_mean_rank_differs_from_mean_when_one_task_dominates():
    rows, tasks = rows_from({
        "a.1": {"t1": picks(10), "t2": picks(10), "t3": picks(0)},
        "b.1": {"t1": picks(6), "t2": picks(6), "t3": picks(10)},
    })
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    s = ["t1", "t2", "t3"]
    assert sel.top1(ct, s).members == ("b.1",)  # mean 0.467 vs 0.333
    assert sel.mean_rank(ct, s).members == ("a.1",)  # first on two of three tasks


def test_an_ensemble_of_one_equals_its_member():
    rng = np.random.default_rng(0)
    probs = {v: {"t": [list(rng.normal(size=3)) for _ in range(20)]} for v in ("a.1", "b.1")}
    rows, tasks = rows_from({v: {"t": [0] * 20} for v in probs}, n_choices=3, probs=probs)
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    for v in ("a.1", "b.1"):
        single = sel.Candidate((v,))
        for method in ("mean_prob", "vote"):
            one = sel.Candidate((v,), method)
            assert (ct.predictions(one, "t") == ct.predictions(single, "t")).all()
            assert ct.normalized(one, "t") == ct.normalized(single, "t")
    # and an ensemble's predictions are the argmax of the averaged probabilities
    both = sel.Candidate(("a.1", "b.1"), "mean_prob")
    p = np.stack([np.exp(np.array(probs[v]["t"])) / np.exp(np.array(probs[v]["t"])).sum(axis=1, keepdims=True)
                  for v in ("a.1", "b.1")])
    assert (ct.predictions(both, "t") == p.mean(axis=0).argmax(axis=1)).all()


def test_majority_vote_and_its_tie_break():
    # three voters on one 3-way example: two say choice 1, one says 0 → 1; two voters split → higher mean prob
    probs = {"a.1": {"t": [[0.0, 1.0, -5]]}, "b.1": {"t": [[0.0, 1.0, -5]]}, "c.1": {"t": [[3.0, 0.0, -5]]}}
    rows, tasks = rows_from({v: {"t": [0]} for v in probs}, n_choices=3, probs=probs)
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    assert ct.predictions(sel.Candidate(("a.1", "b.1", "c.1"), "vote"), "t").tolist() == [1]
    assert ct.predictions(sel.Candidate(("a.1", "c.1"), "vote"), "t").tolist() == [0]  # c's 0 is surer


def test_shrinkage_prefers_the_steady_variant_over_a_noisy_one_with_the_same_mean():
    rows, tasks = rows_from({
        "a.1": {f"t{i}": picks(10 if i % 2 else 2) for i in range(6)},  # mean acc 0.6, swings
        "b.1": {f"t{i}": picks(6) for i in range(6)},  # 0.6 everywhere
        "c.1": {f"t{i}": picks(3) for i in range(6)},
    })
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    s = [f"t{i}" for i in range(6)]
    assert sel.top1(ct, s).members == ("a.1",)  # exact tie on the mean: variant id order
    assert sel.shrinkage(ct, s).members == ("b.1",)


def test_task_aware_choice_follows_the_most_similar_tasks():
    # a wins on 2-way tasks, b on 5-way tasks; the new task is 5-way
    preds = {"a.1": {}, "b.1": {}}
    features = {}
    for i in range(6):
        two = i < 3
        preds["a.1"][f"t{i}"] = picks(9 if two else 4)
        preds["b.1"][f"t{i}"] = picks(5 if two else 6)
        features[f"t{i}"] = {"n_choices": 2 if two else 5, "yes_no": 1.0 if two else 0.0, "options_in_input": 0.0,
                             "answer_chars": 3 if two else 20, "input_chars": 100}
    preds["a.1"]["new"], preds["b.1"]["new"] = picks(3), picks(7)
    features["new"] = {"n_choices": 5, "yes_no": 0.0, "options_in_input": 0.0, "answer_chars": 25, "input_chars": 90}
    rows, tasks = rows_from(preds)
    ct = sel.ChoiceTable.from_rows(rows, tasks, features=features)
    s = [f"t{i}" for i in range(6)]
    assert sel.top1(ct, s).members == ("a.1",)
    assert sel.task_aware(ct, s, "new").members == ("b.1",)
    assert sel.task_aware(ct, s, None).members == ("a.1",)  # no target: the cross-task choice


def _poisonable():
    rng = np.random.default_rng(3)
    preds = {f"v{j}.x": {f"t{i}": list(rng.integers(0, 2, 12)) for i in range(7)} for j in range(6)}
    return preds


def test_nested_loto_never_reads_held_out_rows():
    preds = _poisonable()
    rows, tasks = rows_from(preds)
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    selection = [f"t{i}" for i in range(5)]
    before = sel.recommend(ct, selection)
    # poison the held-out tasks t5, t6: the worst variant becomes perfect there
    poisoned = {v: dict(per) for v, per in preds.items()}
    for v in poisoned:
        for t in ("t5", "t6"):
            poisoned[v][t] = [1] * 12
    poisoned[before.candidate.members[-1]]["t5"] = [0] * 12
    rows2, tasks2 = rows_from(poisoned)
    after = sel.recommend(sel.ChoiceTable.from_rows(rows2, tasks2), selection)
    assert after.rule == before.rule and after.candidate == before.candidate
    pd.testing.assert_frame_equal(after.loto, before.loto)


def test_nested_loto_scores_are_out_of_sample_and_seeded_deterministic():
    rows, tasks = rows_from(_poisonable())
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    selection = [f"t{i}" for i in range(5)]
    loto = sel.nested_loto(ct, selection, ["top1"])
    expected = np.mean([ct.score(sel.top1(ct, [s for s in selection if s != t]), [t]) for t in selection])
    assert loto.iloc[0]["loto_mean_norm"] == pytest.approx(expected)
    assert sel.recommend(ct, selection).as_dict() == sel.recommend(ct, selection).as_dict()
    with pytest.raises(PromptkitError, match="at least 2 selection tasks"):
        sel.nested_loto(ct, ["t0"])


def test_recommend_keeps_the_default_unless_another_rule_is_clearly_better():
    rows, tasks = rows_from({"a.1": {f"t{i}": picks(8) for i in range(3)}, "b.1": {f"t{i}": picks(4) for i in range(3)}})
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    r = sel.recommend(ct, ["t0", "t1", "t2"])  # the ensemble ties top-1 on every left-out task: the cheaper rule
    assert r.rule == "top1" and r.basis == "cheaper" and r.candidate.members == ("a.1",)
    one = sel.recommend(ct, ["t0", "t1", "t2"], max_cost=1)
    assert one.rule == "top1" and one.candidate.members == ("a.1",)
    assert set(one.loto["rule"]) == {"top1", "mean_rank", "worst", "shrinkage", "task_aware"}  # nothing over the cost
    # the default gives way only to a rule whose paired t statistic over the LOTO folds clears the bar
    rows, tasks = rows_from(_poisonable())
    ct = sel.ChoiceTable.from_rows(rows, tasks)
    selection = [f"t{i}" for i in range(7)]
    loto = sel.nested_loto(ct, selection, default="top1")
    assert loto.loc[loto["rule"] == "top1", "t_vs_default"].item() == 0
    diff = [ct.score(sel.worst_task(ct, [s for s in selection if s != t], t), [t])
            - ct.score(sel.top1(ct, [s for s in selection if s != t], t), [t]) for t in selection]
    expected_t = np.mean(diff) / (np.std(diff, ddof=1) / np.sqrt(len(diff))) if np.std(diff) > 0 else 0.0
    assert loto.loc[loto["rule"] == "worst", "t_vs_default"].item() == pytest.approx(expected_t)
    anything = sel.recommend(ct, selection, max_cost=1, t_needed=-np.inf)
    assert anything.rule == anything.loto.iloc[0]["rule"]  # every rule clears the bar: the best mean wins
    strict = sel.recommend(ct, selection, max_cost=1, t_needed=1e9)
    assert strict.rule == "top1"  # nothing clears an impossible bar: the default stays


# ---------------------------------------------------------------------------- adaptation


def _table():
    rng = np.random.default_rng(1)
    return rng.uniform(0, 0.8, size=(5, 6))


def test_posterior_with_no_labels_is_the_cross_task_choice():
    table = _table()
    p = adapt.prior(table, np.full(6, 24), np.full(6, 0.25))
    post = adapt.posterior(p, None, 0.25)
    assert post.choice() == int(np.argmax(table.mean(axis=1)))
    assert post.shrink == 0.0 and np.allclose(post.mean, table.mean(axis=1))
    lo, hi = post.interval(post.choice(), 0.25)
    assert lo < post.mean[post.choice()] < hi


def test_posterior_with_many_labels_is_the_tasks_own_best():
    table = _table()
    p = adapt.prior(table, np.full(6, 24), np.full(6, 0.5))
    rng = np.random.default_rng(2)
    own = np.array([0.55, 0.6, 0.9, 0.5, 0.52])  # variant 2 is best on the new task, not in the prior
    assert int(np.argmax(table.mean(axis=1))) != 2
    correct = (rng.random((5, 20000)) < own[:, None]).astype(float)
    post = adapt.posterior(p, correct, 0.5)
    assert post.choice() == 2 and post.shrink > 0.98
    few = adapt.posterior(p, correct[:, :2], 0.5)
    assert few.shrink < post.shrink


def test_prior_needs_a_table():
    with pytest.raises(PromptkitError, match="variants × tasks"):
        adapt.prior(np.zeros((0,)), np.array([]), np.array([]))


def test_task_features_read_no_labels():
    from promptkit.tasks.core import Example, Task

    examples = [Example("1", "Is it? yes or no", ["yes", "no"], 0), Example("2", "Pick: red, blue", ["red", "blue"], 1)]
    f = Task("t", examples).features()
    assert f == {"n_choices": 2.0, "yes_no": 0.5, "options_in_input": 1.0, "answer_chars": 3.0,
                 "input_chars": (16 + 15) / 2}
    relabelled = Task("t", [Example(e.id, e.input, e.choices, 1 - e.target) for e in examples]).features()
    assert relabelled == f
