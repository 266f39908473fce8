"""A prompt for a new task from its inputs alone: the label-free criteria, how far each is trusted (learned on
the selection tasks left out in turn), `promptkit recommend --unlabelled`, and the transductive choice per
held-out task of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import promptkit as pk
from promptkit.analysis import unlabelled as ul
from promptkit.analysis.selection import ChoiceTable
from promptkit.cli import main


def test_mutual_information_is_high_for_confident_input_dependent_answers_and_zero_for_a_constant_one():
    eye = np.tile(np.eye(3), (2, 1))  # confident, and a different answer per input
    constant = np.tile([[0.9, 0.05, 0.05]], (6, 1))  # confident, always the same answer
    uniform = np.full((6, 3), 1 / 3)
    c = ul.criteria(np.stack([eye, constant, uniform]))
    assert c["mi"][0] == pytest.approx(np.log(3), abs=1e-6) and abs(c["mi"][1]) < 1e-9 and abs(c["mi"][2]) < 1e-9
    # batch calibration removes a constant preference: the constant prompt is no longer confident
    assert c["calibrated"][0] > c["calibrated"][1]


def test_agreement_with_the_ensemble_and_missing_choices():
    a = np.array([[[0.8, 0.2, -1], [0.1, 0.6, 0.3]]] * 2 + [[[0.3, 0.7, -1], [0.2, 0.1, 0.7]]])
    c = ul.criteria(a)
    assert c["agreement"].tolist() == [1.0, 1.0, 0.0]
    assert np.isfinite(c["calibrated"]).all() and np.isfinite(c["mi"]).all()


def synthetic(n_tasks=6, n_var=5, n_ex=30, informative=True, seed=0):
    """Tasks where the variant with the most input-dependent answers is the most accurate (informative) or not."""
    rng = np.random.default_rng(seed)
    probs, correct, chance = {}, {}, {}
    for t in range(n_tasks):
        target = rng.integers(0, 3, n_ex)
        good = rng.permutation(n_var)[0]
        p = np.empty((n_var, n_ex, 3))
        for v in range(n_var):
            sharp = 4.0 if v == good else 0.5
            logits = rng.normal(0, 1, (n_ex, 3))
            if informative or v != good:
                logits[np.arange(n_ex), target] += sharp
            p[v] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        c = np.zeros((n_ex, 3), dtype=bool)
        c[np.arange(n_ex), target] = True
        probs[f"t{t}"], correct[f"t{t}"], chance[f"t{t}"] = p, c, 1 / 3
    return ChoiceTable([f"v{i}" for i in range(n_var)], list(probs), probs, correct, chance)


def test_a_criterion_that_tracks_accuracy_is_used_and_a_misleading_one_gives_way_to_the_prior():
    ct = synthetic(n_tasks=16)  # the best prompt changes from task to task, and the sharpest one is it
    learned = ul.learn(ct, ct.tasks[:-1], n=16)
    assert learned.weight > 1 and "beats the default" in learned.reason()
    _, trans = ul.transductive(ct, ct.tasks[:-1], ct.tasks[-1:])
    assert trans["held_out_mean_norm"].iloc[0] == pytest.approx(trans["best_in_hindsight_mean_norm"].iloc[0])
    # the same variant (the last) best on every task, and the criteria point at the others: the prior beats the
    # default clearly
    steady = synthetic(n_tasks=8, seed=2)
    for t in steady.tasks:
        target = steady.correct[t].argmax(axis=1)
        rows = np.arange(len(target))
        for v in range(5):
            p = np.full(steady.probs[t][v].shape, 0.05 if v < 4 else 0.25)
            p[rows, (target + 1) % 3 if v < 4 else target] = 0.9 if v < 4 else 0.5
            steady.probs[t][v] = p / p.sum(axis=1, keepdims=True)
    learned = ul.learn(steady, steady.tasks, n=16)
    assert learned.criterion == "prior" and "beats the default" in learned.reason()


def test_ensemble_averages_the_top_k_by_the_combined_score():
    ct = synthetic()
    learned = ul.learn(ct, ct.tasks[:5])
    cand, table = ul.choose(ct.probs["t5"], ct.table(ct.tasks[:5]).mean(axis=1), ct.variants, learned, k=3)
    assert cand.method == "mean_prob" and list(cand.members) == table["variant"].head(3).tolist()


# ---------------------------------------------------------------------------- on the tiny model


@pytest.fixture()
def run_dir(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "4", "--max-variants", "4", "--out", str(out), "--quiet"]) == 0
    return out


def write_task(path, targets):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"input": f"Is {i} even?", "choices": ["yes", "no", "maybe"], "target": t} for i, t in enumerate(targets)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_recommend_unlabelled_through_the_cli_and_poisoned_targets_change_nothing(run_dir, tmp_path, capsys):
    true = write_task(tmp_path / "a" / "newtask.jsonl", [i % 2 for i in range(8)])
    rng = np.random.default_rng(5)
    poisoned = write_task(tmp_path / "b" / "newtask.jsonl", rng.integers(0, 3, 8).tolist())
    assert main(["recommend", str(run_dir), "--task", str(true), "--unlabelled", "6", "--quiet"]) == 0
    first = capsys.readouterr().out
    assert main(["recommend", str(run_dir), "--task", str(poisoned), "--unlabelled", "6", "--quiet", "--no-cache"]) == 0
    second = capsys.readouterr().out
    assert "task newtask: 6 unlabelled input(s), targets unread" in first and "recommended prompt: " in first
    assert "criterion: " in first and "perplexity" in first
    scrub = lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("cost: "))  # noqa: E731
    assert scrub(first) == scrub(second)  # every number and the choice: no target was read
    res = pk.load(run_dir)
    u = res.recommend(task=str(true), unlabelled=6, progress=False, log=lambda m: None)
    assert u.n_unlabelled == 6 and u.variant in res.variants and u.calls["prompts"] == 6 * len(res.variants)
    assert main(["recommend", str(run_dir), "--task", str(true), "--unlabelled", "6", "--labelled", "4"]) == 2
    assert "give one" in capsys.readouterr().err
    k2 = res.recommend(task=str(true), unlabelled=6, ensemble=2, progress=False, log=lambda m: None)
    assert k2.candidate.cost == 2 and k2.candidate.members[0] == u.variant


def test_a_run_shows_the_transductive_choice_per_held_out_task_and_the_prompt_to_use(run_dir, capsys):
    summary = json.loads((run_dir / "analysis.json").read_text())["summary"]
    trans = summary["transductive"]
    assert trans["weighting"] and trans["reason"]
    assert [r["task"] for r in trans["tasks"]] == [t for t, i in pk.load(run_dir).tasks.items() if i["split"] == "held_out"]
    use = summary["use"]
    assert use["rule"] == summary["recommendation"]["rule"] and use["choice"] == summary["recommendation"]["choice"]
    html = (run_dir / "report.html").read_text()
    assert "Transductive" in html and "Use this prompt" in html
    assert main(["rank", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "use this prompt: " in text and f"rule {use['rule']}" in text and "transductive (per held-out task" in text



def test_the_transductive_table_of_a_report_with_long_ids_fits_a_1280_pixel_window(tmp_path):
    import re
    import shutil
    import subprocess

    from test_report_layout import long_run

    from promptkit.results.report import write_report

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is needed for the report test: apt-get install chromium (.ci/run does this)")
    html = write_report(long_run(), tmp_path / "run").read_text()
    assert html.count("<table class='rules'>") == 2 and "Transductive" in html and "Use this prompt" in html
    proc = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           (tmp_path / "run" / "report.html").as_uri()], capture_output=True, text=True, timeout=90)
    right = re.search(r'data-rules-right="(\d+)"', proc.stdout)
    assert right, proc.stdout[:500]
    assert int(right.group(1)) <= 1280


def test_a_run_scores_the_prompts_of_each_tasks_first_examples_and_the_numbers_are_the_models(tiny_model, tiny_backend,
                                                                                              toy_suite, two_templates):
    res = pk.evaluate(two_templates, toy_suite, tiny_backend, limit=4, max_variants=3, prompt_likelihood=2,
                      progress=False, log=lambda m: None)
    rows = res.rows
    scored = rows[rows["prompt_logprob"].notna()]
    # two examples per task, every variant, and no more
    assert scored.groupby("task")["example"].nunique().to_dict() == {t: 2 for t in res.tasks}
    assert (scored.groupby(["task", "example"])["variant"].nunique() == len(res.variants)).all()
    assert res.config["prompt_likelihood"] == 2
    # each number is the model's log-likelihood of the prompt as rendered, after its start token
    from promptkit.prompts.render import render
    from promptkit.run.options import RunOptions
    from promptkit.run.plan import make_plan

    # (scored as a shared beginning once per variant and task plus each example's rest: the sum is the whole's)
    plan = make_plan(two_templates, toy_suite, RunOptions(limit=4, max_variants=3))
    for _, row in scored.iterrows():
        v = next(v for v in plan.variants if v.id == row["variant"])
        t = next(t for t in plan.tasks if t.name == row["task"])
        e = next(e for e in t.examples if e.id == row["example"])
        direct = tiny_backend.loglikelihood([("", render(v, t, e, 0).prompt)])[0]
        assert row["prompt_logprob"] == pytest.approx(direct.logprob, abs=1e-3) and row["prompt_tokens"] == direct.n_tokens
    # the ChoiceTable reads them per token, NaN elsewhere; the perplexity criterion uses the inputs every variant has
    ct = ChoiceTable.from_rows(rows, res.tasks)
    ll = ct.prompt_ll["even"]
    assert np.isfinite(ll).all(axis=0).sum() == 2 and np.isnan(ll).all(axis=0).sum() == ct.n_examples("even") - 2
    assert np.isfinite(ul.task_criteria(ct, "even")["perplexity"]).all()
    assert list(ul.inputs_of(ct, "even", 2)) == list(np.flatnonzero(np.isfinite(ll).all(axis=0)))
    # none asked for: no column, and the label-free choice weighs the other criteria only
    none = pk.evaluate(two_templates, toy_suite, tiny_backend, limit=4, max_variants=3, prompt_likelihood=0,
                       progress=False, log=lambda m: None)
    assert "prompt_logprob" not in none.rows
    assert "perplexity" not in ul.available(ChoiceTable.from_rows(none.rows, none.tasks), ["even"])


def test_prompt_perplexity_prefers_the_prompt_the_model_finds_likelier_and_is_learned_where_it_tracks_accuracy():
    ct = synthetic(n_tasks=12, informative=False, seed=3)  # no choice-probability criterion points at the best prompt
    for t in ct.tasks:
        best = int(ct.single(t).argmax())
        ll = np.full((len(ct.variants), ct.n_examples(t)), -3.0)
        ll[best] = -1.5  # the best prompt is the likeliest
        ll[:, 20:] = np.nan  # scored on 20 inputs only
        ct.prompt_ll[t] = ll
    crit = ul.task_criteria(ct, "t0")
    assert int(np.argmax(crit["perplexity"])) == int(ct.single("t0").argmax())
    learned = ul.learn(ct, ct.tasks[:-1], n=16)
    assert learned.criterion == "perplexity" and "perplexity" in learned.criteria
    _, trans = ul.transductive(ct, ct.tasks[:-1], ct.tasks[-1:])
    assert trans["held_out_mean_norm"].iloc[0] == pytest.approx(trans["best_in_hindsight_mean_norm"].iloc[0])
    # a task without prompt likelihoods: perplexity is not weighed for it
    del ct.prompt_ll["t11"]
    assert "perplexity" not in ul.learn(ct, ct.tasks[:-1], n=16, also=["t11"]).criteria


def test_the_shared_beginning_of_prompts_is_cut_before_whitespace():
    from promptkit.run.work import shared_start

    assert shared_start(["Q: the capital of France?\nA:", "Q: the capital of Peru?\nA:"]) == "Q: the capital of"
    assert shared_start(["Demo one.\n\nQ: 1", "Demo one.\n\nQ: 2"]) == "Demo one.\n\nQ:"
    assert shared_start(["abc", "abd"]) == "" and shared_start(["only one prompt"]) == ""


def test_recommend_weighs_perplexity_where_the_run_scored_its_prompts_and_says_so_where_not(tiny_model, toy_suite,
                                                                                            two_templates, tmp_path,
                                                                                            run_dir, capsys):
    out = tmp_path / "with_prompts"
    assert main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates), "--limit",
                 "4", "--max-variants", "4", "--prompt-likelihood", "4", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "analysis.json").read_text())["summary"]
    assert "perplexity" in summary["transductive"]["criteria"]
    task = write_task(tmp_path / "new" / "newtask.jsonl", [i % 2 for i in range(8)])
    res = pk.load(out)
    u = res.recommend(task=str(task), unlabelled=5, progress=False, log=lambda m: None)
    assert "perplexity" in u.criteria and u.table["perplexity"].notna().all()
    assert u.calls["prompts"] > 5 * len(res.variants)  # each input's prompt scored for its choices and on its own
    assert main(["recommend", str(out), "--task", str(task), "--unlabelled", "5", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "scored for its choices and for its own likelihood" in text and "not weighed" not in text
    # a run without prompt likelihoods: perplexity is not weighed, and the output says how to have it
    plain = pk.load(run_dir).recommend(task=str(task), unlabelled=5, progress=False, log=lambda m: None)
    assert "perplexity" not in plain.criteria and plain.calls["prompts"] == 5 * len(pk.load(run_dir).variants)
    assert main(["recommend", str(run_dir), "--task", str(task), "--unlabelled", "5", "--quiet"]) == 0
    assert "prompt perplexity: not weighed" in capsys.readouterr().out
