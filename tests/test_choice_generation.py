"""Multiple choice by generation (mc_scoring="generation"): how the options are shown, how an answer maps back to a
choice, and a run on the tiny in-process model with the parse-failure rate in the rows, the ranking and the report."""

from __future__ import annotations

import pytest

from promptkit.errors import PromptkitError
from promptkit.prompts.choice_generation import MAX_NEW_TOKENS, as_generation, parse_choice, shows_options
from promptkit.prompts.render import Request
from promptkit.run.evaluate import evaluate

CHOICES = ["yes", "no", "maybe"]


@pytest.mark.parametrize("answer, expected", [
    ("yes", 0), (" No.", 1), ("B", 1), ("(C)", 2), ("c", 2), ("2", 1), ("The answer is: maybe", 2),
    ("B. no", 1), ("yes, because it is", 0), ("I think maybe", 2), ("", None), ("purple", None), ("yes or no", None),
    ("D", None), ("A dog", None),
])
def test_an_answer_maps_back_to_a_choice(answer, expected):
    assert parse_choice(answer, CHOICES) == expected


def test_choice_text_wins_over_a_letter_and_the_longest_prefix_wins():
    assert parse_choice("A", ["B", "A"]) == 1
    assert parse_choice("New York City", ["New York", "New York City"]) == 1


def test_options_are_appended_only_when_the_prompt_does_not_show_them():
    plain = Request("v", "t", "e", "Q: Is 2 even?\nA:", (" yes", " no"))
    made = as_generation(plain, ["yes", "no"])
    assert made.generative and made.max_new_tokens == MAX_NEW_TOKENS and made.stop == ("\n",) and not made.continuations
    assert made.prompt.endswith("Options:\nA. yes\nB. no\nAnswer with the letter of the correct option.\nAnswer:")
    listed = Request("v", "t", "e", "Q: Is 2 even? (yes or no)\nA:", (" yes", " no"))
    assert as_generation(listed, ["yes", "no"]).prompt == listed.prompt
    chat = Request("v", "t", "e", "", ("yes", "no"), messages=(("system", "Be brief."), ("user", "Is 2 even?")))
    turns = as_generation(chat, ["yes", "no"]).messages
    assert turns[0] == ("system", "Be brief.") and "A. yes\nB. no" in turns[-1][1]
    assert shows_options("one, Two", ["one", "two"]) and not shows_options("someone", ["one"])


def test_mc_by_generation_on_the_tiny_model(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    results = evaluate(two_templates, toy_suite, tiny_model, mc_scoring="generation", out=out, progress=False,
                       log=lambda m: None)
    rows = results.rows
    assert (rows["kind"] == "choice_generated").all()
    assert {"generated", "parse_failed"} <= set(rows.columns)
    failed = rows["parse_failed"].astype(float)
    assert ((rows["prediction"] == -1) == rows["parse_failed"]).all() and (rows.loc[failed == 1, "accuracy"] == 0).all()
    ranking = results.ranking()
    rate = failed.groupby(rows["variant"]).mean()
    assert ranking.set_index("variant")["parse_failure_rate"].sort_index().tolist() == rate.sort_index().tolist()
    assert "parse_failure_rate" in (out / "ranking.csv").read_text()
    assert "mapped back to a choice" in (out / "report.html").read_text()
    assert results.config["mc_scoring"] == "generation"
    again = results.analyze()  # every scoring mode keeps a generated answer's prediction
    assert again is not None


def test_mc_scoring_is_checked_with_the_field_named(toy_suite, tiny_model):
    with pytest.raises(PromptkitError, match=r"--mc-scoring \(mc_scoring=\)"):
        evaluate(None, toy_suite, tiny_model, mc_scoring="vibes", progress=False)
    with pytest.raises(PromptkitError, match="--calibrate"):
        evaluate(None, toy_suite, tiny_model, mc_scoring="generation", calibrate=True, progress=False)
    with pytest.raises(PromptkitError, match="--request-timeout"):
        evaluate(None, toy_suite, tiny_model, request_timeout=0, progress=False)
