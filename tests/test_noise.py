"""Noisy and incomplete inputs: seeded perturbations, the noise conditions of a run, and robustness."""

from __future__ import annotations

import random

import pytest

import promptkit as pk
from promptkit.prompts.variants import variant_id
from promptkit.errors import PromptkitError, TemplateError
from promptkit.prompts.noise import Perturbation, parse, perturb_example, perturb_text, perturb_wording, typos
from promptkit.tasks.core import Example
from promptkit.prompts.templates import family_from_dict
from promptkit.prompts.variants import expand

TEXT = "The quick brown fox jumps over the lazy dog near the river bank today"


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_fixed_seeds_give_exact_outputs():
    pinned = {
        "typos:0.1": "The qluicc brohwn bo jumps over thte lazy dog near the river baynk today",
        "word_drop:0.3": "The brown jumps over lazy near bank today",
        "word_swap:0.3": "The brown quick fox over jumps the lazy near dog the bank river today",
        "casing:0.2": "THe QuiCk BrOWn fOx jumps OveR The Lazy dOG near the river bank TodAy",
        "whitespace:0.3": "The quick\nbrown\nfox\njumps\nover  the lazy  dog near\nthe  river bank today",
    }
    got = {spec: perturb_text(TEXT, parse(spec), random.Random(7)) for spec in pinned}
    for spec, text in got.items():  # the same seed gives the same text, every time
        assert perturb_text(TEXT, parse(spec), random.Random(7)) == text
        assert text != TEXT
    assert got == pinned


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_rates_are_honoured_over_many_samples(rate):
    rng = random.Random(1)
    words = TEXT.split()
    n_words = n_dropped = n_letters = n_flipped = n_spaces = n_ws = 0
    chars = dist = 0
    for _ in range(300):
        dropped = perturb_text(TEXT, Perturbation("word_drop", rate), rng)
        n_words += len(words)
        n_dropped += len(words) - len(dropped.split())
        cased = perturb_text(TEXT, Perturbation("casing", rate), rng)
        n_letters += sum(c.isalpha() for c in TEXT)
        n_flipped += sum(a != b for a, b in zip(TEXT, cased))
        spaced = perturb_text(TEXT, Perturbation("whitespace", rate), rng)
        n_spaces += TEXT.count(" ")
        n_ws += TEXT.count(" ") - spaced.count(" ") + spaced.count("  ") * 2 + spaced.count("\n") - spaced.count("  ")
        typo, hits = typos(TEXT, rate, rng)
        chars += sum(not c.isspace() for c in TEXT)
        dist += hits
        assert _distance(TEXT, typo) <= 2 * hits  # each edit changes at most two characters
    tol = lambda n: 4 * (rate * (1 - rate) / n) ** 0.5 + 0.005
    assert abs(n_dropped / n_words - rate) < tol(n_words)
    assert abs(n_flipped / n_letters - rate) < tol(n_letters)
    assert abs(n_ws / n_spaces - rate) < tol(n_spaces) * 1.5
    assert abs(dist / chars - rate) < tol(chars)


def test_choices_and_targets_are_untouched_unless_choices_are_shuffled():
    ex = Example("3", "Is the sky blue on a clear day?", ["yes", "no", "maybe"], 0, {"correct": [0, 2]})
    for spec in ("typos:0.3", "word_drop:0.3", "word_swap:0.5", "casing:0.5", "whitespace:0.5"):
        noisy = perturb_example(ex, parse(spec), seed=0, task="t")
        assert noisy.choices == ex.choices and noisy.target == ex.target and noisy.meta == ex.meta
        assert noisy.input != ex.input and noisy.id == ex.id
        assert perturb_example(ex, parse(spec), seed=0, task="t") == noisy
        assert perturb_example(ex, parse(spec), seed=1, task="t") != noisy
    moved = [perturb_example(ex, parse("choices"), seed=s, task="t") for s in range(12)]
    for m in moved:
        assert sorted(m.choices) == sorted(ex.choices) and m.input == ex.input
        assert m.choices[m.target] == "yes" and sorted(m.choices[i] for i in m.meta["correct"]) == ["maybe", "yes"]
    assert len({tuple(m.choices) for m in moved}) > 1
    assert perturb_example(ex, None, 0, "t") is ex


def test_prompt_noise_changes_the_wording_but_never_the_example():
    ex = Example("0", "Paris is in France", ["true", "false"], 0)
    text = "Decide whether the statement is correct.\nStatement: Paris is in France\nOptions: true, false\nAnswer:"
    noisy = perturb_wording(text, ex, parse("prompt.typos:0.3"), 0, "t")
    assert noisy != text
    assert "Paris is in France" in noisy and "true, false" in noisy
    assert perturb_wording(text, ex, parse("typos:0.3"), 0, "t") == text  # input noise leaves the wording alone


def test_bad_noise_specs_are_explained():
    for spec, msg in [("typo:0.1", "unknown noise 'typo'"), ("typos", "needs a rate"), ("typos:2", "from 0 to 1"),
                      ("choices:0.5", "takes no rate"), ("prompt.choices", "not to the prompt")]:
        with pytest.raises(ValueError, match=msg):
            parse(spec)
    with pytest.raises(TemplateError, match="axis 'noise' has the value 'typos:x'"):
        family_from_dict({"name": "x", "prompt": "{{ input }}", "axes": {"noise": ["none", "typos:x"]}})


def test_a_noise_axis_in_a_template_renders_noisy_inputs():
    family = family_from_dict({"name": "n", "prompt": "Q: {{ input }}", "axes": {"noise": ["none", "casing:1.0"]}})
    task = pk.Task("t", [Example("0", "abc def", ["x", "y"], 0)])
    clean, loud = (pk.render(v, task, task.examples[0]) for v in expand(family))
    assert clean.prompt == "Q: abc def" and loud.prompt == "Q: ABC DEF" and loud.continuations == clean.continuations


def test_noise_run_pairs_every_variant_with_its_noisy_copies(two_templates, toy_suite, tiny_model, tmp_path):
    plain = pk.evaluate(two_templates, toy_suite, tiny_model, progress=False)
    specs = ["typos:0.2", "choices"]
    res = pk.evaluate(two_templates, toy_suite, tiny_model, progress=False, noise=specs, out=tmp_path / "run")
    assert res.config["noise"] == specs
    assert len(res.variants) == 3 * len(plain.variants)
    # the clean copies keep their ids, and score exactly as in a run without noise
    key = ["variant", "task", "example"]
    clean = res.rank_by("clean").to_pandas().sort_values(key).reset_index(drop=True)
    base = plain.to_pandas().sort_values(key).reset_index(drop=True)
    assert clean["variant"].tolist() == base["variant"].tolist()
    assert clean["accuracy"].tolist() == base["accuracy"].tolist()
    assert res.ranking()["variant"].tolist() == plain.ranking()["variant"].tolist()  # rank clean by default
    # robustness: every value recomputed by hand from the rows
    rows = res.to_pandas()
    values = {v: i["values"] for v, i in res.variants.items()}
    rows["noise"] = rows["variant"].map(lambda v: values[v].get("noise", "none"))
    table = res.robustness()
    assert len(table) == len(plain.variants) * 2
    for r in table.to_dict("records"):
        noisy_id = next(v for v, i in res.variants.items()
                        if i["values"].get("noise") == r["noise"] and variant_id(
                            i["family"], {k: x for k, x in i["values"].items() if k != "noise"}) == r["variant"])
        sel = rows[(rows["split"] == "selection")]
        noisy = sel[sel["variant"] == noisy_id].groupby("task")["accuracy"].mean().mean()
        clean_score = sel[sel["variant"] == r["variant"]].groupby("task")["accuracy"].mean().mean()
        assert r["selection_noisy"] == pytest.approx(noisy) and r["selection_drop"] == pytest.approx(clean_score - noisy)
    summary = res.robustness_summary()
    assert set(summary.columns) >= {"clean", "noisy", "mean_drop", "worst_drop", "worst_noise", "rank_clean", "rank_noisy"}
    # rank by the mean over noise conditions
    noisy_rows = res.rank_by("noisy").to_pandas()
    assert len(noisy_rows) == len(base) and set(noisy_rows["kind"]) == {"aggregate"}
    one = noisy_rows[(noisy_rows["variant"] == base["variant"][0]) & (noisy_rows["task"] == base["task"][0])
                     & (noisy_rows["example"] == base["example"][0])]["accuracy"].iloc[0]
    ids = [v for v, i in res.variants.items() if i["values"].get("noise", "none") != "none"
           and variant_id(i["family"], {k: x for k, x in i["values"].items() if k != "noise"}) == base["variant"][0]]
    want = rows[rows["variant"].isin(ids) & (rows["task"] == base["task"][0]) & (rows["example"] == base["example"][0])]["accuracy"].mean()
    assert one == pytest.approx(want)
    with pytest.raises(PromptkitError, match="cannot rank by 'loud'"):
        res.rank_by("loud")


def test_cli_noise_run_prints_and_reports_robustness(two_templates, toy_suite, tiny_model, tmp_path, capsys):
    from promptkit.cli import main

    out = tmp_path / "run"
    code = main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--out", str(out), "--quiet", "--noise", "typos:0.1", "word_drop:0.2", "--rank-by", "combined",
                 "--bootstrap", "50"])
    assert code == 0
    text = capsys.readouterr().out
    assert "robustness (selection tasks, mean accuracy; noise: typos:0.1, word_drop:0.2)" in text
    html = (out / "report.html").read_text()
    assert "Robustness to noisy inputs" in html and "Ranked by the combined score" in html
    assert main(["rank", str(out), "--rank-by", "word_drop:0.2", "--bootstrap", "50"]) == 0
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--out", str(tmp_path / "bad"), "--quiet", "--noise", "typos"]) == 2
    assert "--noise: noise 'typos' needs a rate" in capsys.readouterr().err


def test_review_fixes_noise(two_templates, toy_suite, tiny_model):
    from promptkit.analysis.metrics import with_mode

    res = pk.evaluate(two_templates, toy_suite, tiny_model, progress=False, noise=["casing:0.3", "casing:0.30", "choices"])
    assert res.config["noise"] == ["casing:0.3", "choices"]  # the same spec twice runs once
    # a noisy ranking under another scoring mode averages that mode's scores over the conditions
    rows = res.to_pandas()
    noise = {v: i["values"].get("noise", "none") for v, i in res.variants.items()}
    noisy_rows = rows[rows["variant"].map(noise) != "none"]
    per_char = with_mode(noisy_rows, "per_char")
    collapsed = with_mode(res.rank_by("noisy").to_pandas(), "per_char")
    assert collapsed["accuracy"].mean() == pytest.approx(per_char["accuracy"].mean())
    # the stored sample marks the correct choice where the shuffled prompt shows it
    for vid, info in res.variants.items():
        s = info["sample"]
        if info["values"].get("noise") == "choices":
            task = next(t for t in pk.load_tasks(pk.load_suite(toy_suite)) if t.name == s["task"])
            ex = task.example(s["example"])
            assert all(s["continuations"][i].strip() == ex.choices[ex.target] for i in s["correct"])
