"""Search strategies on simulated score tables with a known ground truth (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptkit.run import search


def table(n_variants=32, n_tasks=4, n_examples=100, gap=0.2, seed=0, best=0):
    """A variants × cells correctness table: variant `best` answers each task with probability
    base + gap, the others with a probability drawn from [0.40, 0.60]; cells round-robin over tasks."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.40, 0.60, size=(n_variants, n_tasks))
    p[best] = 0.60 + gap
    cells = search.cell_order([f"t{t}" for t in range(n_tasks)], [n_examples] * n_tasks, seed)
    truth = np.array([[rng.random() < p[v, t] for t, _ in cells] for v in range(n_variants)], dtype=float)
    cost = np.array([[20 + 5 * (v % 3) + (e % 7) for _, e in cells] for v in range(n_variants)])
    chance = np.array([0.25 if t % 2 else 0.5 for t, _ in cells])
    return truth, cost, chance, n_tasks


def oracle(truth, calls=None):
    def evaluate(pairs):
        if calls is not None:
            calls.append(list(pairs))
        return [truth[v, c] for v, c in pairs]
    return evaluate


def test_cells_are_round_robin_over_tasks_and_seeded():
    cells = search.cell_order(["a", "b", "c"], [4, 2, 3], seed=1)
    assert sorted(cells) == [(t, e) for t, n in enumerate([4, 2, 3]) for e in range(n)]
    assert [t for t, _ in cells[:3]] == [0, 1, 2] and [t for t, _ in cells[3:6]] == [0, 1, 2]
    assert cells == search.cell_order(["a", "b", "c"], [4, 2, 3], seed=1)
    assert cells != search.cell_order(["a", "b", "c"], [4, 2, 3], seed=2)


def test_budget_parsing():
    assert search.parse_budget("0.25", 1000) == 250
    assert search.parse_budget("25%", 1000) == 250
    assert search.parse_budget(0.1, 1000) == 100
    assert search.parse_budget("2e6", 1000) == 2_000_000
    for bad in ("lots", "0", "-1", "inf"):
        with pytest.raises(ValueError, match="budget"):
            search.parse_budget(bad, 1000)


@pytest.mark.parametrize("strategy", search.STRATEGIES)
def test_budgets_are_never_exceeded_and_runs_are_reproducible(strategy):
    rng = np.random.default_rng(7)
    for trial in range(25):
        truth, cost, chance, k = table(n_variants=int(rng.integers(2, 24)), n_tasks=int(rng.integers(1, 5)),
                                       n_examples=int(rng.integers(2, 40)), seed=trial)
        budget = int(cost.sum() * rng.uniform(0.01, 1.0))
        calls = []
        got = search.run(strategy, cost, chance, oracle(truth, calls), budget, seed=trial, blocks=k)
        spent = sum(int(cost[v, c]) for call in calls for v, c in call)
        assert got.used == spent <= budget
        pairs = [p for call in calls for p in call]
        assert len(pairs) == len(set(pairs))  # nothing evaluated twice
        assert sum(got.n_cells) == len(pairs)
        again = search.run(strategy, cost, chance, oracle(truth), budget, seed=trial, blocks=k)
        assert (again.chosen, again.used, again.n_cells) == (got.chosen, got.used, got.n_cells)


def test_exhaustive_with_the_full_budget_sees_everything_and_picks_the_table_best():
    truth, cost, chance, k = table(n_variants=6, n_examples=10)
    got = search.run("exhaustive", cost, chance, oracle(truth), int(cost.sum()), blocks=k)
    assert got.used == cost.sum() and set(got.n_cells) == {cost.shape[1]}
    value = (truth - chance) / (1 - chance)
    assert got.chosen == int(np.argmax(value.mean(1)))


@pytest.mark.parametrize("strategy", ["halving", "racing", "thompson"])
def test_the_best_arm_is_found_with_a_quarter_of_the_compute(strategy):
    found = 0
    for seed in range(20):
        truth, cost, chance, k = table(seed=seed, best=seed % 32)
        got = search.run(strategy, cost, chance, oracle(truth), int(0.25 * cost.sum()), seed=seed, blocks=k)
        assert got.used <= 0.25 * cost.sum()
        found += got.chosen == seed % 32
    assert found >= 18, f"{strategy} found the best arm in {found} of 20 runs"


def test_racing_removes_the_true_best_no_more_often_than_alpha_allows():
    """A small gap (0.62 vs at most 0.60) and many looks: the true best may survive or not be
    separated, but it is eliminated in at most alpha of the runs (plus binomial slack)."""
    alpha, trials, removed = 0.10, 200, 0
    for seed in range(trials):
        truth, cost, chance, k = table(n_variants=8, n_tasks=2, n_examples=60, gap=0.02, seed=seed)
        got = search.run("racing", cost, chance, oracle(truth), int(cost.sum()), seed=seed, blocks=k, alpha=alpha)
        removed += 0 not in got.alive
    slack = 3 * math.sqrt(trials * alpha * (1 - alpha))
    assert removed <= alpha * trials + slack, f"true best removed in {removed} of {trials} runs"


def test_racing_does_remove_clearly_worse_variants():
    truth, cost, chance, k = table(n_variants=16, gap=0.3, seed=3)
    got = search.run("racing", cost, chance, oracle(truth), int(cost.sum()), seed=3, blocks=k)
    assert 0 in got.alive and len(got.alive) < 16
    assert any(h["removed"] for h in got.history)


def test_thompson_reports_the_worst_variant_too():
    truth, cost, chance, k = table(n_variants=12, seed=5)
    truth[7] = 0.0  # a variant that is always wrong
    got = search.run("thompson", cost, chance, oracle(truth), int(0.25 * cost.sum()), seed=5, blocks=k)
    assert got.chosen == 0 and got.worst == 7


def test_friedman_posthoc_keeps_ties_and_drops_a_dominated_column():
    rng = np.random.default_rng(0)
    same = rng.random((30, 4))
    assert search.friedman_posthoc(np.ones((30, 4)), 0.05) == set()
    worse = same.copy()
    worse[:, 2] -= 1.0
    assert search.friedman_posthoc(worse, 0.05) == {2}


def test_unknown_strategy_is_a_clear_error():
    truth, cost, chance, k = table(n_variants=2, n_examples=2)
    with pytest.raises(ValueError, match="unknown search strategy 'greedy'"):
        search.run("greedy", cost, chance, oracle(truth), 100)


# ---------------------------------------------------------------------------- through the pipeline (tiny model)


def test_a_search_run_spends_within_budget_and_records_each_variants_sample(tiny_model, toy_suite, two_templates):
    import promptkit as pk

    run = lambda seed=0, budget=0.5: pk.evaluate(two_templates, toy_suite, tiny_model, cache=False, progress=False,
                                                 search="halving", budget=budget, seed=seed)
    res = run()
    info = res.config["search"]
    assert info["used_tokens"] <= info["budget_tokens"] == int(0.5 * info["exhaustive_tokens"])
    rows = res.to_pandas()
    sel = rows[rows["split"] == "selection"]
    assert sel.groupby("variant").size().to_dict() == {v: n for v, n in info["cells"].items() if n}
    held = rows[rows["split"] == "held_out"]
    assert set(held["variant"]) == {info["chosen"]}  # only the chosen variant sees the held-out tasks
    assert info["chosen"] in info["alive"] and info["ranking"][0] == info["chosen"]
    again = run()
    assert again.config["search"]["chosen"] == info["chosen"] and len(again.to_pandas()) == len(rows)
    # the exhaustive run's scores agree with the search's on every cell the search scored
    full = pk.evaluate(two_templates, toy_suite, tiny_model, cache=False, progress=False).to_pandas()
    merged = rows.merge(full, on=["variant", "task", "example"], suffixes=("", "_full"))
    assert len(merged) == len(rows) and (merged["prediction"] == merged["prediction_full"]).all()


def test_search_input_errors_are_clear(tiny_model, toy_suite, two_templates):
    import promptkit as pk
    from promptkit.errors import PromptkitError

    go = lambda **kw: pk.evaluate(two_templates, toy_suite, tiny_model, cache=False, progress=False, **kw)
    with pytest.raises(PromptkitError, match="unknown search strategy 'best'"):
        go(search="best")
    with pytest.raises(PromptkitError, match="a budget needs a search strategy"):
        go(budget=0.5)
    with pytest.raises(PromptkitError, match="leaves nothing for the search"):
        go(search="racing", budget=10)
    with pytest.raises(PromptkitError, match="--budget"):
        go(search="racing", budget="half")


def test_cli_search_prints_what_it_spent_and_chose(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    from promptkit.cli import main

    code = main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model, "--no-cache",
                 "--out", str(tmp_path / "run"), "--quiet", "--search", "thompson", "--budget", "60%", "--max-variants", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "search thompson (seed 0)" in out and "chosen:" in out and "worst found:" in out
    assert "held-out tasks (never seen by the search)" in out
    assert (tmp_path / "run" / "config.json").is_file()
