"""Synthetic demonstrations: written through the engine and its cache, filtered as documented, never a
copy of an evaluated example, saved as a datasets.Dataset, and compared with no and real demonstrations."""

from __future__ import annotations

import pytest

import promptkit as pk
from promptkit.prompts.variants import variant_id
from promptkit.engine.cache import ResultCache
from promptkit.engine.plan import EngineStats
from promptkit.errors import PromptkitError
from promptkit.run.synthetic import Candidate, SyntheticConfig, apply_filters, make, requests_for
from promptkit.tasks.core import Example, Task
from promptkit.tasks.suites import load_suite, load_tasks


def _cand(i, text, answer="yes"):
    return Candidate("t", f"s{i}", answer, text, ["yes", "no"], 0 if answer == "yes" else 1)


def test_filters_do_what_they_say_on_constructed_cases():
    evaluated = [Example("0", "Is the number fourteen an even number?", ["yes", "no"], 0)]
    cands = [
        _cand(0, "Is twelve even?"),
        _cand(1, "is   TWELVE even?"),                             # exact duplicate after normalization
        _cand(2, "Is twelve even??"),                              # near duplicate
        _cand(3, "hm"),                                            # too short
        _cand(4, "x" * 500),                                       # too long
        _cand(5, "Is the number fourteen an even number?"),       # copies an evaluated example
        _cand(6, "Here is a new one. Is the number fourteen an even number? The answer is yes, it is."),  # contains one
        _cand(7, "Is seven even?", "no"),
        _cand(8, "Is nine even?", "yes"),                         # the judge disagrees with its label
        _cand(9, ""),
    ]
    judge = lambda cs: [c.id != "s8" for c in cs]
    counts = apply_filters(cands, evaluated, SyntheticConfig(min_chars=8, max_chars=400), judge)
    dropped = {c.id: c.dropped_by for c in cands}
    assert dropped == {"s0": "", "s1": "duplicate", "s2": "duplicate", "s3": "length", "s4": "length",
                       "s5": "copies_evaluated", "s6": "copies_evaluated", "s7": "", "s8": "inconsistent", "s9": "empty"}
    assert counts == {"generated": 10, "non_empty": 9, "length": 7, "dedupe": 5, "copies": 3, "consistency": 2}
    # each filter is optional
    for c in cands:
        c.dropped_by = ""
    counts = apply_filters(cands, evaluated, SyntheticConfig(filters=("length",), min_chars=8, max_chars=400), judge)
    assert counts == {"generated": 10, "non_empty": 9, "length": 7}


def test_answers_are_spread_over_labels_and_the_template_is_replaceable():
    task = Task("t", [Example(str(i), f"q{i}", ["yes", "no", "maybe"], i % 3) for i in range(4)], instruction="Judge.")
    cands, reqs = requests_for(task, SyntheticConfig(n=9))
    assert sorted(c.answer for c in cands) == ["maybe"] * 3 + ["no"] * 3 + ["yes"] * 3
    assert all(c.choices[c.target] == c.answer for c in cands)
    assert all(r.temperature > 0 and r.generative for r in reqs) and len({r.seed for r in reqs}) == 9
    assert 'whose correct answer is "' in reqs[0].prompt and reqs[0].prompt.startswith("Task: Judge.")
    custom = SyntheticConfig(n=2, template="Write a question answered by {{ answer }} ({{ index }}):")
    assert [r.prompt for r in requests_for(task, custom)[1]][0].startswith("Write a question answered by")
    assert requests_for(task, custom)[1] == requests_for(task, custom)[1]  # seeded
    with pytest.raises(PromptkitError, match="Jinja syntax error"):
        SyntheticConfig(template="{{ answer ").check()
    with pytest.raises(PromptkitError, match="unknown synthetic-demonstration filter"):
        SyntheticConfig(filters=("magic",)).check()
    gen = Task("g", [Example("0", "2+2", None, ["4"])])
    with pytest.raises(PromptkitError, match="need reference answers"):
        requests_for(gen, SyntheticConfig(n=2))


def test_sampled_generation_is_seeded_per_request(tiny_backend):
    specs = [("Question: Is the sky blue? Answer:", (), 6, 0.9, s) for s in (1, 2, 1)]
    out = tiny_backend.generate(specs)
    assert out[0] == out[2] and out[0] != out[1]
    assert tiny_backend.generate([specs[1]])[0] == out[1]  # the same text alone as in a batch


def test_synthetic_demos_go_through_the_engine_and_its_cache(tiny_backend, tmp_path, gen_suite):
    tasks = load_tasks(load_suite(gen_suite))
    cfg = SyntheticConfig(n=4, min_chars=1)
    cache = ResultCache(tmp_path / "c.sqlite", tiny_backend.fingerprint)
    first_stats = EngineStats()
    sets = make(tasks, tiny_backend, cfg, cache=cache, stats=first_stats)
    assert first_stats.generations_unique >= 12 and first_stats.generation_cache_hits == 0
    again = EngineStats()
    tasks2 = load_tasks(load_suite(gen_suite))
    sets2 = make(tasks2, tiny_backend, cfg, cache=cache, stats=again)
    assert again.forward_tokens == 0 and again.generation_cache_hits == first_stats.generations_unique
    assert [c.input for s in sets.values() for c in s.candidates] == [c.input for s in sets2.values() for c in s.candidates]
    for t in tasks:
        assert [e.input for e in t.synthetic] == [c.input for c in sets[t.name].candidates if not c.dropped_by]
        evaluated = {" ".join(e.input.lower().split()) for e in t.examples}
        assert not evaluated & {" ".join(e.input.lower().split()) for e in t.synthetic}
    cache.close()


def test_a_run_compares_none_real_and_synthetic_and_saves_what_the_model_was_shown(tiny_model, gen_suite, tmp_path):
    import datasets

    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.yaml").write_text("name: a\naxes:\n  shots: [2]\n  demo_source: [none, real, synthetic]\n"
                                   "  label: ['Q:', 'Question:']\nprompt: '{{ label }} {{ input }} A:'\n")
    res = pk.evaluate(folder, gen_suite, tiny_model, progress=False, out=tmp_path / "run",
                      synthetic={"n": 6, "min_chars": 1, "filters": ("dedupe", "length", "copies")}, log=lambda m: None)
    saved = datasets.load_from_disk(str(tmp_path / "run" / "synthetic"))
    assert len(saved) == 18 and set(saved["task"]) == {"add", "even", "say"}
    kept = [r for r in saved if r["kept"]]
    info = res.config["synthetic"]
    assert sum(c["dropped_by"] == "" for c in info["candidates"]) == len(kept)
    assert set(info["counts"]["even"]) == {"generated", "non_empty", "length", "dedupe", "copies"}
    # what a synthetic variant shows is exactly the kept synthetic demonstrations
    tasks = {t.name: t for t in load_tasks(load_suite(gen_suite))}
    synth_inputs = {r["input"] for r in kept}
    for vid, v in res.variants.items():
        prompt = v["sample"]["prompt"]
        if v["values"]["demo_source"] == "synthetic" and len([r for r in kept if r["task"] == v["sample"]["task"]]) >= 2:
            assert sum(s in prompt for s in synth_inputs if s) >= 2
        if v["values"]["demo_source"] == "none":
            assert prompt.count(" A:") == 1
        for e in tasks[v["sample"]["task"]].examples:  # never an evaluated example other than the one asked
            if e.id != v["sample"]["example"]:
                assert e.input not in prompt
    table = res.demo_sources(n_boot=200)
    assert len(table) == 2 and {"selection_none", "selection_real", "selection_synthetic",
                                "selection_synthetic_vs_none_ci", "held_out_synthetic_vs_real"} <= set(table.columns)
    rows = res.to_pandas()
    for r in table.to_dict("records"):
        ids = {v["values"]["demo_source"]: vid for vid, v in res.variants.items()
               if variant_id("a", {k: x for k, x in v["values"].items() if k != "demo_source"}) == r["prompt"]}
        sel = rows[rows["split"] == "selection"]
        per = lambda vid: sel[sel["variant"] == vid].groupby("task")["accuracy"].mean().mean()
        assert r["selection_synthetic_vs_none"] == pytest.approx(per(ids["synthetic"]) - per(ids["none"]))
        lo, hi = r["selection_synthetic_vs_none_ci"]
        assert lo <= r["selection_synthetic_vs_none"] + 1e-9 and r["selection_synthetic_vs_none"] <= hi + 1e-9
    from promptkit.results.report import write_report

    html = write_report(res, tmp_path / "run").read_text()
    assert "Demonstrations: none, real or synthetic" in html and "synthetic/" in html
