"""The statistics layer, checked against independent computations and hand-worked examples."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

import promptkit as pk
from promptkit.analysis import ranking as rk
from promptkit.analysis.metrics import mode_scores, with_mode
from promptkit.analysis.sensitivity import axis_effects, instance_sensitivity, task_sensitivity
from promptkit.analysis.stats import Scores, bootstrap, compare, friedman, percentile_ci


def scores_from_table(values, chance=None, names=None):
    """A Scores object with one 'example' per task holding the given per-task score."""
    values = np.asarray(values, dtype=float)
    names = names or [f"t{j}" for j in range(values.shape[1])]
    variants = [f"v{i}" for i in range(values.shape[0])]
    chance = np.zeros(values.shape[1]) if chance is None else np.asarray(chance, dtype=float)
    return Scores(variants, names, {t: values[:, [j]] for j, t in enumerate(names)}, chance)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_friedman_matches_scipy_including_ties(seed):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.integers(0, 5, size=(5, 8)) / 4)  # coarse values: many ties
    ours = friedman(table)
    ref = st.friedmanchisquare(*[table.iloc[i].to_numpy() for i in range(5)])
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_nemenyi_critical_difference_matches_demsar_table():
    # Demšar (2006), Table 5(a): q_0.05 for k=4 classifiers is 2.569; CD = q*sqrt(k(k+1)/(6N))
    table = pd.DataFrame(np.random.default_rng(0).random((4, 10)))
    assert friedman(table).critical_difference == pytest.approx(2.569 * np.sqrt(4 * 5 / 60), abs=2e-3)


def test_tied_with_best_uses_the_critical_difference():
    table = pd.DataFrame([[0.9] * 20, [0.89] * 10 + [0.91] * 10, [0.1] * 20], index=["a", "b", "c"])
    result = friedman(table)
    assert set(result.tied_with_best()) == {"a", "b"}


def test_aggregates_on_hand_worked_table():
    table = np.array([[0.9, 0.1], [0.5, 0.2], [0.5, 0.3]])
    chance = np.array([0.5, 0.0])
    assert rk.agg_win_rate(table, chance) == pytest.approx([0.5, 0.375, 0.625])
    assert rk.agg_mean_rank(table, chance) == pytest.approx([2.0, 2.25, 1.75])
    assert rk.agg_mean_norm(table, chance) == pytest.approx([(0.8 + 0.1) / 2, (0.0 + 0.2) / 2, (0.0 + 0.3) / 2])
    assert rk.agg_worst(table, chance) == pytest.approx([0.1, 0.0, 0.0])
    assert rk.agg_mean(table, chance) == pytest.approx([0.5, 0.35, 0.4])


def test_cps_on_hand_worked_example():
    table = pd.DataFrame({"t0": [0.8, 0.6, 0.5], "t1": [0.4, 0.4, 0.9]}, index=["a1", "a2", "b1"])
    fam = rk.family_scores(table, {"a1": "a", "a2": "a", "b1": "b"}).set_index("family")
    # family a: t0 MaxP .8 AvgP .7 CPS .72; t1 MaxP .4 AvgP .4 CPS .4 -> means .6, .55, .56
    assert fam.loc["a", "maxp"] == pytest.approx(0.6)
    assert fam.loc["a", "avgp"] == pytest.approx(0.55)
    assert fam.loc["a", "cps"] == pytest.approx(0.56)
    assert fam.loc["b", "cps"] == pytest.approx(0.7)  # one variant: CPS = MaxP = AvgP


def test_loto_regret_on_a_constructed_table():
    s = scores_from_table([[0.9, 0.9, 0.1], [0.5, 0.5, 0.9], [0.2, 0.2, 0.2]])
    tasks = {t: {"split": "selection", "chance": 0.0} for t in s.tasks}
    per_fold, summary = rk.evaluate_protocol(s, rk.make_folds("loto", tasks), "mean_norm", n_boot=200)
    assert per_fold["chosen"].tolist() == ["v1", "v1", "v0"]
    assert per_fold["best"].tolist() == ["v0", "v0", "v1"]
    assert per_fold["regret"].tolist() == pytest.approx([0.4, 0.4, 0.8])
    assert summary["mean_regret"] == pytest.approx(1.6 / 3)
    assert summary["regret_ci"][0] <= summary["mean_regret"] <= summary["regret_ci"][1]


def test_mean_rank_protocol_regret_points_the_right_way():
    s = scores_from_table([[0.9, 0.9, 0.1], [0.5, 0.5, 0.9], [0.2, 0.2, 0.2]])
    tasks = {t: {"split": "selection", "chance": 0.0} for t in s.tasks}
    per_fold, _ = rk.evaluate_protocol(s, rk.make_folds("loto", tasks), "mean_rank", n_boot=50)
    assert (per_fold["regret"] >= 0).all()
    assert per_fold["chosen_held_out"].iloc[2] == 3.0  # v0 is last on t2


def test_folds_cover_every_task_once():
    tasks = {f"t{i}": {"split": "selection", "chance": 0.5, "cluster": "abc"[i % 3]} for i in range(7)}
    for protocol in ("kfold", "loto", "cluster"):
        folds = rk.make_folds(protocol, tasks, k=3, seed=1)
        held = sorted(t for f in folds for t in f.held_out)
        assert held == sorted(tasks)
        for f in folds:
            assert not set(f.selection) & set(f.held_out)
    assert len(rk.make_folds("cluster", tasks)) == 3
    del tasks["t0"]["cluster"]
    with pytest.raises(pk.PromptkitError, match="untagged: t0"):
        rk.make_folds("cluster", tasks)
    with pytest.raises(pk.PromptkitError, match="no held_out tasks"):
        rk.make_folds("split", tasks)


def _coverage(simulate, truth, reps=300):
    hits = 0
    for r in range(reps):
        s = simulate(np.random.default_rng(1000 + r))
        lo, hi = percentile_ci(bootstrap(s, rk.agg_mean, by=simulate.by, n=300, seed=r))
        hits += lo[0] <= truth <= hi[0]
    return hits / reps


def test_example_bootstrap_ci_coverage_near_95_percent():
    def simulate(rng):
        return Scores(["v"], ["t"], {"t": (rng.random((1, 120)) < 0.6).astype(float)}, np.array([0.0]))
    simulate.by = "examples"
    assert 0.90 <= _coverage(simulate, 0.6) <= 0.98


def test_task_bootstrap_ci_coverage_near_95_percent():
    def simulate(rng):
        values = rng.normal(0.5, 0.1, size=40)
        return scores_from_table(values[None, :])
    simulate.by = "tasks"
    assert 0.89 <= _coverage(simulate, 0.5) <= 0.98


def test_paired_comparison_mcnemar_matches_scipy():
    a = np.array([1] * 10 + [0] * 2 + [1] * 8)
    b = np.array([0] * 10 + [1] * 2 + [1] * 8)
    s = Scores(["a", "b"], ["t"], {"t": np.vstack([a, b]).astype(float)}, np.array([0.5]))
    table = compare(s, "a", "b", n=2000).set_index("task")
    assert table.loc["t", "diff"] == pytest.approx(0.4)
    assert table.loc["t", "a_only"] == 10 and table.loc["t", "b_only"] == 2
    assert table.loc["t", "p_mcnemar"] == pytest.approx(st.binomtest(2, 12, 0.5).pvalue)
    assert table.loc["t", "ci_low"] > 0 and table.loc["t", "p_bootstrap"] < 0.05


def test_instance_and_task_sensitivity():
    m = np.array([[1, 0], [0, 0], [1, 1]], dtype=float)
    assert instance_sensitivity(m) == pytest.approx([2 / 3, 2 / 3])
    s = Scores(["a", "b", "c"], ["t"], {"t": m}, np.array([0.5]))
    row = task_sensitivity(s).iloc[0]
    assert row["spread"] == pytest.approx(1.0) and row["instance_sensitivity"] == pytest.approx(2 / 3)
    assert row["std"] == pytest.approx(np.std([0.5, 0.0, 1.0], ddof=1))


def test_axis_effects_find_the_axis_that_matters():
    variants, overall = {}, {}
    for i, (x, y) in enumerate([(x, y) for x in ("a", "b") for y in ("p", "q", "r")]):
        variants[f"v{i}"] = {"family": "f", "values": {"x": x, "y": y}}
        overall[f"v{i}"] = 0.8 if x == "a" else 0.2
    effects = axis_effects(pd.Series(overall), variants).set_index("axis")
    assert effects.loc["x", "eta_sq"] == pytest.approx(1.0)
    assert effects.loc["y", "eta_sq"] == pytest.approx(0.0)
    assert effects.loc["x", "best_value"] == "'a'"


def test_calibration_on_a_hand_built_case():
    row = {"logprobs": [-1.0, -2.0], "cf_logprobs": [-0.1, -3.0], "n_tokens": [1, 2], "n_chars": [2, 8]}
    cal = mode_scores(row, "calibrated")
    cf = np.array([-0.1, -3.0]) - np.logaddexp(-0.1, -3.0)
    assert cal == pytest.approx(np.array([-1.0, -2.0]) - cf)
    assert int(np.argmax(cal)) == 1 and int(np.argmax(mode_scores(row, "raw"))) == 0
    assert mode_scores(row, "per_token") == pytest.approx([-1.0, -1.0])
    assert mode_scores(row, "per_char") == pytest.approx([-0.5, -0.25])
    rows = pd.DataFrame([{**row, "target": 1, "correct": [1], "prediction": 0, "accuracy": 0.0}])
    assert with_mode(rows, "calibrated")["accuracy"].tolist() == [1.0]
    with pytest.raises(pk.PromptkitError, match="--calibrate"):
        with_mode(rows.drop(columns=["cf_logprobs"]), "calibrated")


def test_analysis_of_a_real_run(tiny_model, toy_suite, two_templates, tmp_path):
    res = pk.evaluate(two_templates, toy_suite, tiny_model, calibrate=True, progress=False)
    df = res.to_pandas()
    assert df["cf_logprobs"].map(len).eq(df["logprobs"].map(len)).all()
    # content-free requests: one per variant x task x distinct choice set (toy tasks have one set each)
    assert res.config["n_requests"] == len(df) + 6 * 3
    a = res.analyze(n_boot=200)
    top = a.ranking.iloc[0]
    assert top["ci_examples_low"] <= top["mean_norm"] <= top["ci_examples_high"]
    assert top["ci_tasks_low"] <= top["mean_norm"] <= top["ci_tasks_high"]
    assert top["tied_with_best"] and top["variant"] in a.tied_with_best()
    assert set(a.modes["mode"]) == {"raw", "per_token", "per_char", "calibrated"}
    assert {"chosen_ci", "regret_ci"} <= set(a.summary)
    loto = res.analyze(protocol="loto", aggregate="win_rate", mode="calibrated", n_boot=100)
    assert len(loto.folds) == 3 and loto.summary["ci_by"] == "folds"
    cmp = res.compare(a.ranking["variant"].iloc[0], a.ranking["variant"].iloc[1])
    assert cmp["task"].tolist()[-1] == "(mean over tasks)"


def test_every_aggregate_has_both_cis(tiny_backend, toy_suite, two_templates):
    res = pk.evaluate(two_templates, toy_suite, tiny_backend, limit=3, progress=False)
    table = res.aggregates(n_boot=100, seed=1)
    assert set(table["aggregate"]) == {"mean_norm", "mean", "mean_rank", "win_rate", "worst"}
    assert len(table) == 5 * 6
    for _, row in table.iterrows():
        assert row["ci_examples_low"] <= row["estimate"] + 1e-12 or row["aggregate"] in ("worst", "mean_rank")
        assert row["ci_tasks_low"] <= row["ci_tasks_high"]
    again = res.aggregates(n_boot=100, seed=1)
    pd.testing.assert_frame_equal(table, again)  # seeded: reproducible
    norm = res.by_task(normalized=True)
    raw = res.by_task()
    assert norm.loc[raw.index[0], "even"] == pytest.approx((raw.loc[raw.index[0], "even"] - 0.5) / 0.5)


# ---------------------------------------------------------------------------- vectorized re-scoring = the old loops


def _old_with_mode(rows, mode):
    """with_mode as it was, one record at a time (the reference the vectorized version must equal)."""
    from promptkit.analysis.metrics import FIXED_KINDS

    out = rows.copy()
    preds, correct = [], []
    for r in rows.to_dict("records"):
        if r.get("kind") in FIXED_KINDS:
            preds.append(r["prediction"])
            value = r.get(f"accuracy@{mode}")
            correct.append(r["accuracy"] if value is None or value != value else value)
            continue
        pred = int(np.argmax(mode_scores(r, mode)))
        preds.append(pred)
        correct.append(float(pred in (r["correct"] if isinstance(r.get("correct"), list) else [r["target"]])))
    out["prediction"], out["accuracy"], out["mode"] = preds, correct, mode
    return out


def _old_choice_probs(rows, mode):
    """ChoiceTable.from_rows' probabilities and correct masks as they were computed, one record at a time."""
    variants = sorted(rows["variant"].unique())
    probs, correct = {}, {}
    choice = rows[rows["kind"] == "choice"]
    for task in sorted(set(choice["task"])):
        part = choice[choice["task"] == task]
        examples = sorted(part["example"].unique(), key=str)
        width = int(part["logprobs"].map(len).max())
        p = np.full((len(variants), len(examples), width), -1.0)
        c = np.zeros((len(examples), width), dtype=bool)
        for r in part.to_dict("records"):
            s = mode_scores(r, mode)
            s = np.exp(s - np.logaddexp.reduce(s))
            vi, ei = variants.index(r["variant"]), examples.index(r["example"])
            p[vi, ei, : len(s)] = s
            c[ei, list(r["correct"]) if isinstance(r.get("correct"), (list, tuple, np.ndarray)) else [r["target"]]] = True
        probs[task], correct[task] = p, c
    return probs, correct


def _mixed_rows(seed: int) -> pd.DataFrame:
    """Rows of every shape re-scoring meets: 2 to 5 choices (several widths in one task), ties, several correct
    choices, rows without a `correct` list, generated answers, and noise means with a per-mode accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(3):
        for v in range(4):
            for e in range(9):
                k = 2 + (e + t) % 4
                lp = np.round(rng.normal(-4, 2, k), 1 if e % 3 == 0 else 6).tolist()  # coarse values: ties
                target = int(rng.integers(k))
                row = {"variant": f"v{v}", "task": f"t{t}", "example": f"e{e}", "kind": "choice", "prediction": 0,
                       "target": target, "correct": [target] + ([k - 1] if e % 4 == 0 and target != k - 1 else []),
                       "accuracy": 0.0, "logprobs": lp, "n_tokens": rng.integers(0, 4, k).tolist(),
                       "n_chars": rng.integers(0, 12, k).tolist(), "cf_logprobs": rng.normal(-3, 1, k).tolist()}
                if e == 5:
                    row["correct"] = None  # an earlier version's row: the target alone
                rows.append(row)
    rows.append({"variant": "v0", "task": "gen", "example": "g0", "kind": "generate", "prediction": -1, "target": "x",
                 "accuracy": 1.0, "logprobs": None, "cf_logprobs": None})
    rows.append({"variant": "v1", "task": "gen", "example": "g0", "kind": "aggregate", "prediction": 2, "target": 1,
                 "accuracy": 0.5, "accuracy@per_char": 0.25, "logprobs": None, "cf_logprobs": None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["raw", "per_token", "per_char", "calibrated"])
def test_vectorized_rescoring_equals_the_record_loop(seed, mode):
    rows = _mixed_rows(seed)
    pd.testing.assert_frame_equal(with_mode(rows, mode), _old_with_mode(rows, mode))


@pytest.mark.parametrize("mode", ["raw", "per_token", "per_char", "calibrated"])
def test_choice_table_probabilities_equal_the_record_loop(mode):
    from promptkit.analysis.selection import ChoiceTable

    rows = _mixed_rows(3)
    info = {t: {"chance": 0.3, "split": "selection"} for t in ["t0", "t1", "t2", "gen"]}
    table = ChoiceTable.from_rows(rows, info, mode)
    probs, correct = _old_choice_probs(rows, mode)
    assert table.tasks == sorted(probs)
    for task in table.tasks:
        assert np.array_equal(table.probs[task], probs[task]) and np.array_equal(table.correct[task], correct[task])


def test_analysis_of_a_saved_run_is_unchanged_by_vectorized_rescoring(monkeypatch):
    """The whole analysis of a stored run (calibrated scores included), old loops against new, to the last bit."""
    import promptkit.analysis.analyze as an
    import promptkit.analysis.metrics as metrics
    from pathlib import Path

    run = pk.load(Path(__file__).parent / "data" / "run_v0_1")
    new = {m: an.analyze(run, mode=m, n_boot=200) for m in ("raw", "calibrated")}
    monkeypatch.setattr(an, "with_mode", _old_with_mode)
    monkeypatch.setattr(metrics, "with_mode", _old_with_mode)
    for mode, a in new.items():
        old = an.analyze(run, mode=mode, n_boot=200)
        for name in ("ranking", "folds", "sensitivity", "modes", "rules"):
            pd.testing.assert_frame_equal(getattr(a, name), getattr(old, name))
        assert a.summary == old.summary
