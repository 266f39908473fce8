"""Generation, generation metrics, few-shot demonstrations, chat templates and encoder-decoder models."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import promptkit as pk
from promptkit.backends.hf import HFBackend, chat_formatter, cut_at_stop
from promptkit.engine.plan import EngineStats, generate
from promptkit.errors import PromptkitError, SuiteError, TemplateError
from promptkit.analysis.text_metrics import Contains, ExactMatch, NumericMatch, TokenF1, load_metric, parse_number
from promptkit.prompts.render import Request, apply_chat, render, select_demos
from promptkit.tasks.core import Example, Task
from promptkit.tasks.suites import load_suite, load_tasks
from promptkit.prompts.templates import family_from_dict
from promptkit.prompts.variants import expand


def _gen_requests(prompts, stop=("\n",), max_new=6):
    return [Request("v", "t", str(i), p, (), tuple(stop), max_new) for i, p in enumerate(prompts)]


# ---------------------------------------------------------------------------- backend generation


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model):
    prompts = ["Question: Is the sky blue? Answer:", "Q: two", "Read the input and give the correct answer. Input: Paris Output:"]
    wide = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=4096)
    narrow = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=16)
    specs = [(p, (), 7) for p in prompts]
    together = wide.generate(specs)
    alone = [narrow.generate([s])[0] for s in specs]
    assert together == alone
    # no stop sequence: a row runs to the token limit or its end-of-sequence token
    assert together[0].n_tokens == 7 and all(g.n_tokens <= 7 for g in together)
    # a row that a stop sequence ends early counts only its own tokens, not the padding that follows it
    # while the rest of its batch goes on
    text0, text2 = together[0].text, together[2].text
    stop = next(text0[i:i + 2] for i in range(1, len(text0) - 1) if text0[i:i + 2] not in text2)
    specs = [(p, (stop,), 7) for p in prompts]
    stopped = wide.generate(specs)
    assert stopped[0].n_tokens < 7 and stopped[2].n_tokens == 7
    assert stopped == [narrow.generate([s])[0] for s in specs]
    # and the text is the model's own greedy continuation: feeding it back reproduces the argmax at every step
    import torch

    ids = wide.tokenizer(prompts[0], add_special_tokens=True)["input_ids"]
    with torch.inference_mode():
        for _ in range(7):
            ids.append(int(wide.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert wide.tokenizer.decode(ids[-7:], skip_special_tokens=True) == together[0].text


P = "Question: Is the sky blue? Answer:"


def test_stop_sequences_cut_the_text_and_a_missing_one_is_bounded_by_max_tokens(tiny_backend):
    long = tiny_backend.generate([(P, (), 12)])[0]
    assert long.n_tokens == 12 and long.text
    # a stop sequence taken from the middle of the free-running text ends the row there
    stop = long.text.strip()[3:5]
    assert stop and stop in long.text
    cut = tiny_backend.generate([(P, (stop,), 12)])[0]
    assert cut.text == cut_at_stop(long.text, (stop,)) and stop not in cut.text
    assert cut.n_tokens < 12
    # a stop sequence that never appears: generation ends at the token limit, never hangs
    never = tiny_backend.generate([(P, ("§never§",), 5)])[0]
    assert never.n_tokens == 5 and never.text == tiny_backend.generate([(P, (), 5)])[0].text


def test_cut_at_stop_ignores_stops_before_the_answer_begins():
    assert cut_at_stop("\n 42\nmore", ("\n",)) == "\n 42"
    assert cut_at_stop("Paris. Rome", (".", " R")) == "Paris"
    assert cut_at_stop("no stop here", ("\n",)) == "no stop here"


def test_engine_deduplicates_and_caches_generations(tiny_backend, tmp_path):
    from promptkit.engine.cache import ResultCache

    requests = _gen_requests([P, P, "Q: Paris"]) + _gen_requests([P], stop=(), max_new=3)
    cache = ResultCache(tmp_path / "c.sqlite", tiny_backend.fingerprint)
    stats = EngineStats()
    first = generate(requests, tiny_backend, progress=False, cache=cache, stats=stats)
    assert stats.generations == 4 and stats.generations_unique == 3 and stats.generation_cache_hits == 0
    assert first[0] == first[1] and first[3].n_tokens == 3
    before = tiny_backend.forward_tokens
    again = EngineStats()
    second = generate(requests, tiny_backend, progress=False, cache=cache, stats=again)
    assert second == first and again.generation_cache_hits == 3 and tiny_backend.forward_tokens == before
    cache.close()


# ---------------------------------------------------------------------------- metrics


def test_exact_match_normalization_is_configurable():
    assert ExactMatch().score("  Paris. ", ["paris"]) == 1.0
    assert ExactMatch(case=False).score("Paris", ["paris"]) == 0.0
    assert ExactMatch(punctuation=False).score("Paris.", ["Paris"]) == 0.0
    assert ExactMatch().score("the cat", ["cat"]) == 0.0
    assert ExactMatch(articles=True).score("the cat", ["cat"]) == 1.0
    assert ExactMatch(whitespace=False).score("a  b", ["a b"]) == 0.0
    # several references: the best one counts
    assert ExactMatch().score("six", ["6", "six"]) == 1.0
    with pytest.raises(PromptkitError, match="no option.*casefold"):
        ExactMatch(casefold=True)


def test_contains_f1_and_numeric_values():
    assert Contains().score("I think it is Paris, France", ["paris"]) == 1.0
    assert Contains().score("Parisian", ["paris"]) == 0.0  # whole words only
    assert TokenF1().score("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert TokenF1().score("dog", ["cat"]) == 0.0
    assert NumericMatch().score("The answer is 1,000.", ["1000"]) == 1.0
    assert NumericMatch().score("three apples", ["3"]) == 1.0
    assert NumericMatch().score("-7", ["7"]) == 0.0
    assert NumericMatch(rel_tol=0.1).score("105", ["100"]) == 1.0
    assert NumericMatch().score("pharaoh", ["Pharaoh"]) == 1.0  # a reference that is no number: exact match
    assert parse_number("x = 2.5e3 or 4") == 2500.0 and parse_number("none") is None


def test_metrics_are_evaluate_metrics_with_the_usual_compute():
    import evaluate

    for cls in (ExactMatch, Contains, TokenF1, NumericMatch):
        metric = cls()
        assert isinstance(metric, evaluate.Metric)
        out = metric.compute(predictions=["4", "x"], references=[["4"], ["y", "z"]])
        assert out == {metric.key: 0.5}


def test_a_metric_from_a_local_evaluate_script(tmp_path):
    script = tmp_path / "first_letter" / "first_letter.py"
    script.parent.mkdir()
    script.write_text(
        "import datasets\n"
        "import evaluate\n"
        "class FirstLetter(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        return evaluate.MetricInfo(description='', citation='', inputs_description='',\n"
        "            features=datasets.Features({'predictions': datasets.Value('string'), 'references': datasets.Value('string')}))\n"
        "    def _compute(self, predictions, references):\n"
        "        return {'first_letter': sum(p[:1] == r[:1] for p, r in zip(predictions, references)) / len(predictions)}\n")
    metric = load_metric(str(script.parent))
    assert metric.score("Paris", ["Rome", "Prague"]) == 1.0
    assert metric.score("Paris", ["Rome"]) == 0.0
    with pytest.raises(PromptkitError, match="not built in.*evaluate.load"):
        load_metric(str(tmp_path / "missing_metric"))


# ---------------------------------------------------------------------------- demonstrations


def _task(n_eval=4, n_demo=9):
    labels = ["yes", "no", "maybe"]
    mk = lambda i: Example(str(i), f"input {i}", list(labels), i % 3)
    return Task("t", [mk(i) for i in range(n_eval)], demos=[mk(i) for i in range(n_eval, n_eval + n_demo)])


def test_demonstrations_never_include_the_evaluated_example():
    task = _task()
    # a pool row that repeats an evaluated example's input (duplicate rows in the data) is skipped too
    task.demos.append(Example("dup", "input 0", ["yes", "no", "maybe"], 0))
    for example in task.examples:
        for how in ("first_k", "random", "balanced"):
            demos = select_demos(task, example, 10, how)
            assert example.id not in {d.id for d in demos} and example.input not in {d.input for d in demos}


def test_suite_loading_holds_demonstrations_apart(gen_suite):
    tasks = load_tasks(load_suite(gen_suite), seed=3)
    for t in tasks:
        assert len(t.examples) == 6
        assert not {e.id for e in t.examples} & {d.id for d in t.demos}
    assert {len(t.demos) for t in tasks} == {6, 4, 3}  # 12, 10 and 9 rows minus the 6 evaluated


def test_demo_selection_strategies_and_order():
    task = _task()
    ex = task.examples[0]
    assert [d.id for d in select_demos(task, ex, 3, "first_k")] == ["4", "5", "6"]
    assert select_demos(task, task.examples[1], 3, "first_k") == select_demos(task, ex, 3, "first_k")
    assert [d.id for d in select_demos(task, ex, 3, "first_k", "reversed")] == ["6", "5", "4"]
    shuffled = select_demos(task, ex, 3, "first_k", "shuffled", seed=1)
    assert sorted(d.id for d in shuffled) == ["4", "5", "6"]
    assert shuffled == select_demos(task, ex, 3, "first_k", "shuffled", seed=1)
    rnd = select_demos(task, ex, 4, "random", seed=5)
    assert rnd == select_demos(task, ex, 4, "random", seed=5) and len({d.id for d in rnd}) == 4
    assert {tuple(d.id for d in select_demos(task, ex, 4, "random", seed=s)) for s in range(6)} != {tuple(d.id for d in rnd)}
    for k in (3, 6, 7):
        counts = Counter(d.answer() for d in select_demos(task, ex, k, "balanced", seed=2))
        assert sum(counts.values()) == k and max(counts.values()) - min(counts.values()) <= 1
    assert len(select_demos(task, ex, 50, "first_k")) == 9  # never more than the pool holds


def test_few_shot_prompt_layout_and_generation_stop(fewshot_templates, gen_suite):
    from promptkit.prompts.templates import load_templates

    family = load_templates(fewshot_templates)[0]
    tasks = {t.name: t for t in load_tasks(load_suite(gen_suite))}
    add = tasks["add"]
    variants = {(v.values["shots"], v.values["demo_selection"]): v for v in expand(family)}
    example = add.examples[0]
    zero = render(variants[(0, "first_k")], add, example)
    assert zero.prompt == f"Add the numbers.\n\nQ: {example.input}\nA:" and zero.generative
    assert zero.stop == ("\n",) and zero.max_new_tokens == 5  # the task's limit wins over the template's
    two = render(variants[(2, "first_k")], add, example)
    d1, d2 = add.demos[:2]
    assert two.prompt == (f"Add the numbers.\n\nQ: {d1.input}\nA: {d1.answer()}\n\nQ: {d2.input}\nA: {d2.answer()}"
                          f"\n\nQ: {example.input}\nA:")
    assert "\n\n" in two.stop
    # multiple choice: the demonstrations show the correct choice, the continuations are the choices
    even = tasks["even"]
    mc = render(variants[(2, "first_k")], even, even.examples[0])
    assert mc.continuations == (" yes", " no") and not mc.generative
    assert all(f"Q: {d.input}\nA: {d.choices[d.target]}" in mc.prompt for d in even.demos[:2])


def test_few_shot_k_beyond_the_pool_warns_and_an_empty_pool_is_an_error(fewshot_templates, gen_suite, tiny_model, tmp_path):
    text = gen_suite.read_text().replace("limit: 6", "limit: 8")
    (tmp_path / "tight.yaml").write_text(text.replace("path: add", "path: add").replace("max_new_tokens: 5", "max_new_tokens: 5, demo_pool: 1"))
    res = pk.evaluate(fewshot_templates, tmp_path / "tight.yaml", tiny_model, progress=False, log=lambda m: None)
    assert any("task 'add' has 1 demonstration(s) held apart; variants with shots=2 use 1" in n for n in res.config["engine"]["notes"])
    (tmp_path / "none.yaml").write_text(text.replace("limit: 8", "limit: 20"))
    with pytest.raises(PromptkitError, match="task 'add' has none held apart.*Lower --limit"):
        pk.evaluate(fewshot_templates, tmp_path / "none.yaml", tiny_model, progress=False)


# ---------------------------------------------------------------------------- the pipeline


def test_generation_suite_runs_ranks_caches_and_saves(fewshot_templates, gen_suite, tiny_model, tmp_path):
    res = pk.evaluate(fewshot_templates, gen_suite, tiny_model, progress=False, out=tmp_path / "run")
    rows = res.to_pandas()
    gen = rows[rows["kind"] == "generate"]
    assert len(gen) == 4 * 12 and set(gen["task"]) == {"add", "say"}
    assert set(gen.loc[gen["task"] == "add", "metric"]) == {"numeric"} and set(gen.loc[gen["task"] == "say", "metric"]) == {"contains"}
    # every stored value is the metric applied to the stored prediction
    metrics = {"add": NumericMatch(), "say": Contains(case=False)}
    for r in gen.to_dict("records"):
        assert r["accuracy"] == metrics[r["task"]].score(r["prediction"], r["target"])
    assert res.tasks["add"]["chance"] == 0.0
    assert len(res.ranking()) == 4
    eng = res.config["engine"]
    assert eng["generations"] == 48 and eng["generations_unique"] < 48  # shots=0 prompts do not depend on the selection
    again = pk.evaluate(fewshot_templates, gen_suite, tiny_model, progress=False)
    assert again.config["engine"]["generation_cache_hits"] == eng["generations_unique"]
    assert again.config["engine"]["forward_tokens"] == 0
    assert again.to_pandas()["prediction"].tolist() == rows["prediction"].tolist()
    loaded = pk.Results.load(tmp_path / "run")
    assert loaded.ranking()["variant"].tolist() == res.ranking()["variant"].tolist()
    sample = res.variants[res.ranking()["variant"].iloc[0]]["sample"]
    assert sample["task"] == "add" and sample["references"] and sample["stop"]


def test_a_generation_task_without_references_is_refused(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"examples": [{"input": "a", "target": "b"}, {"input": "c", "target": []}]}))
    (tmp_path / "s.yaml").write_text("selection:\n  - {name: t, source: bigbench, path: t.json}\n")
    with pytest.raises(SuiteError, match=r"example 1: generation example has no reference answer"):
        load_tasks(load_suite(tmp_path / "s.yaml"))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"q": "a", "a": "b"}) + "\n" + json.dumps({"q": "c", "a": "  "}))
    (tmp_path / "f.yaml").write_text("selection:\n  - {name: f, source: files, path: rows.jsonl, input: q, target: a}\n")
    with pytest.raises(SuiteError, match=r"rows.jsonl, row 2: task 'f': .*reference answer"):
        load_tasks(load_suite(tmp_path / "f.yaml"))


def test_bad_generation_options_are_named():
    with pytest.raises(TemplateError, match="axis 'shots' has the value -1"):
        family_from_dict({"name": "x", "prompt": "{{ input }}", "axes": {"shots": [-1]}})
    with pytest.raises(TemplateError, match="axis 'demo_selection' has the value 'best'"):
        family_from_dict({"name": "x", "prompt": "{{ input }}", "axes": {"demo_selection": ["best"]}})
    with pytest.raises(TemplateError, match="generation.stop"):
        family_from_dict({"name": "x", "prompt": "{{ input }}", "generation": {"stop": [""]}})
    with pytest.raises(TemplateError, match="`kinds` must list"):
        family_from_dict({"name": "x", "prompt": "{{ input }}", "kinds": ["ranking"]})


def test_a_template_for_multiple_choice_is_refused_on_a_generation_task(gen_suite, tiny_model, tmp_path):
    (tmp_path / "mc.yaml").write_text("name: mc\nkinds: [multiple_choice]\nprompt: '{{ input }} {{ choices | join(\"/\") }}'\n")
    with pytest.raises(PromptkitError, match=r"family 'mc' is for multiple_choice tasks.*add, say are generation"):
        pk.evaluate(tmp_path / "mc.yaml", gen_suite, tiny_model, progress=False)


def test_built_in_families_that_need_choices_are_left_out_of_generation_runs(gen_suite, tiny_model):
    from promptkit.run.plan import fitting_families
    from promptkit.prompts.templates import load_templates

    tasks = load_tasks(load_suite(gen_suite))
    fit, notes = fitting_families(load_templates(), tasks, builtin=True)
    assert {f.name for f in fit} == {"qa_labels", "task_instruction", "fewshot_qa"} and not notes
    # a suite whose examples are all evaluated has no demonstrations: the built-in few-shot family steps aside
    bare = load_tasks(load_suite(gen_suite), limit=100)
    fit, notes = fitting_families(load_templates(), bare, builtin=True)
    assert {f.name for f in fit} == {"qa_labels", "task_instruction"}
    assert "fewshot_qa left out: task(s) add, even, say have no examples held apart" in notes[0]


# ---------------------------------------------------------------------------- chat templates

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _chat_family():
    return family_from_dict({"name": "c", "header": "{{ instruction }}", "prompt": "Q: {{ input }}",
                             "axes": {"chat": [False, True, "Be brief."], "shots": [0, 1]}})


def test_chat_rendering_uses_turns_and_the_tokenizer_template(tiny_backend):
    from copy import deepcopy

    tok = deepcopy(tiny_backend.tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    task = Task("t", [Example("0", "2+2?", None, ["4"])], instruction="Do sums.", demos=[Example("9", "1+1?", None, ["2"])])
    variants = {(v.values["chat"], v.values["shots"]): v for v in expand(_chat_family())}
    plain = render(variants[(False, 1)], task, task.examples[0])
    assert plain.messages is None and plain.prompt == "Do sums.\n\nQ: 1+1? 2\n\nQ: 2+2?"
    chat = render(variants[(True, 1)], task, task.examples[0])
    assert chat.messages == (("user", "Do sums.\n\nQ: 1+1?"), ("assistant", "2"), ("user", "Q: 2+2?"))
    system = render(variants[("Be brief.", 0)], task, task.examples[0])
    assert system.messages == (("system", "Be brief."), ("user", "Do sums.\n\nQ: 2+2?"))
    done = apply_chat([plain, chat, system], chat_formatter(tok), "tiny")
    assert done[0] == plain
    assert done[1].prompt == "<|user|>Do sums.\n\nQ: 1+1?<|end|>\n<|assistant|>2<|end|>\n<|user|>Q: 2+2?<|end|>\n<|assistant|>"
    assert done[2].prompt.startswith("<|system|>Be brief.<|end|>") and done[2].messages is None
    # multiple choice in a chat: the answer starts the assistant's turn, without a leading space
    mc = Task("m", [Example("0", "Sky?", ["blue", "red"], 0)])
    assert render(variants[(True, 0)], mc, mc.examples[0]).continuations == ("blue", "red")


def test_chat_axis_on_a_model_without_a_chat_template_is_refused(tiny_model, gen_suite, tmp_path):
    (tmp_path / "chat.yaml").write_text("name: c\naxes:\n  chat: [true]\nprompt: 'Q: {{ input }}'\n")
    with pytest.raises(PromptkitError, match="has no chat template.*keep the `chat` axis at false"):
        pk.evaluate(tmp_path / "chat.yaml", gen_suite, tiny_model, progress=False)


def test_bos_is_not_doubled_when_the_chat_text_starts_with_it(tiny_backend):
    bos = tiny_backend.tokenizer.bos_token
    ctx, _ = tiny_backend.encode(bos + "Q: two", " A")
    assert ctx.count(tiny_backend.tokenizer.bos_token_id) == 1
    ctx_plain, _ = tiny_backend.encode("Q: two", " A")
    assert ctx == ctx_plain


# ---------------------------------------------------------------------------- encoder-decoder (T5)


def test_t5_scores_continuations_like_a_direct_computation(tiny_t5):
    import torch

    backend = HFBackend(tiny_t5, dtype="float32", device="cpu")
    assert backend.seq2seq and not backend.share_prompts
    pairs = [("Question: Is the sky blue?", " yes"), ("Question: Is the sky blue?", " no maybe"), ("Q: two", " four")]
    got = backend.loglikelihood(pairs)
    tok, model = backend.tokenizer, backend.model
    for (prompt, cont), score in zip(pairs, got):
        enc = tok(prompt, return_tensors="pt")
        target = tok(cont, add_special_tokens=False)["input_ids"]
        dec = torch.tensor([[model.config.decoder_start_token_id] + target[:-1]])
        with torch.inference_mode():
            logp = model(**enc, decoder_input_ids=dec).logits.log_softmax(-1)[0]
        want = sum(float(logp[i, t]) for i, t in enumerate(target))
        assert score.logprob == pytest.approx(want, abs=1e-4) and score.n_tokens == len(target)
        assert score.is_greedy == all(int(logp[i].argmax()) == t for i, t in enumerate(target))


def test_t5_generation_and_a_full_run(tiny_t5, gen_suite, fewshot_templates):
    import torch

    backend = HFBackend(tiny_t5, dtype="float32", device="cpu")
    out = backend.generate([("Q: two", (), 4), ("Question: Is the sky blue?", (), 4)])
    enc = backend.tokenizer("Q: two", return_tensors="pt")
    with torch.inference_mode():
        ref = backend.model.generate(**enc, max_new_tokens=4, do_sample=False)
    ids = [t for t in ref[0, 1:].tolist() if t != backend.tokenizer.eos_token_id]
    assert out[0].text == backend.tokenizer.decode(ids, skip_special_tokens=True)
    res = pk.evaluate(fewshot_templates, gen_suite, backend, progress=False)
    rows = res.to_pandas()
    assert set(rows["kind"]) == {"generate", "choice"} and len(res.ranking()) == 4
    assert res.config["model"]["class"] == "T5ForConditionalGeneration"


def test_demonstrations_from_a_training_split(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps({"q": f"train {i}", "a": f"t{i}"}) for i in range(5)))
    (data / "test.jsonl").write_text("\n".join(json.dumps({"q": f"test {i}", "a": f"e{i}"}) for i in range(4)))
    (tmp_path / "s.yaml").write_text(
        f"selection:\n  - {{name: d, source: hf, dataset: {data}, split: test, demo_split: train, input: q, target: a}}\n")
    task = load_tasks(load_suite(tmp_path / "s.yaml"))[0]
    assert sorted(e.input for e in task.examples) == [f"test {i}" for i in range(4)]
    assert sorted(d.input for d in task.demos) == [f"train {i}" for i in range(5)]
    family = family_from_dict({"name": "f", "prompt": "{{ input }} =", "axes": {"shots": [2]}})
    prompt = render(expand(family)[0], task, task.examples[0]).prompt
    assert prompt.count("train") == 2 and "test" in prompt.split("\n\n")[-1]


# ---------------------------------------------------------------------------- review fixes


def test_exact_match_keeps_signs_and_decimal_points():
    assert ExactMatch().score("5", ["-5"]) == 0.0 and ExactMatch().score("-5.", ["-5"]) == 1.0
    assert ExactMatch().score("35", ["3.5"]) == 0.0 and ExactMatch().score("1,000", ["1000"]) == 1.0
    assert ExactMatch().score("'m'", ["m"]) == 1.0  # quotes are still punctuation
    with pytest.raises(PromptkitError, match="option rel_tol must be a number"):
        NumericMatch(rel_tol="0.01")
    with pytest.raises(PromptkitError, match="option case must be true or false"):
        ExactMatch(case="no")


def test_a_model_without_a_pad_token_keeps_generated_token_zero(tiny_model):
    import torch

    backend = HFBackend(tiny_model, dtype="float32", device="cpu")
    backend.tokenizer.pad_token = None
    assert backend.tokenizer.pad_token_id is None
    zero = backend.tokenizer.convert_ids_to_tokens(0)
    eos = backend.tokenizer.eos_token_id

    def fake_generate(input_ids, **kwargs):  # the model writes token 0 ("!" in GPT-2), then ends
        return torch.cat([input_ids, torch.tensor([[0, 0, eos]] * len(input_ids))], dim=1)

    backend.model.generate = fake_generate
    out = backend.generate([("Q: two", (), 5)])[0]
    assert out.n_tokens == 2 and out.text == backend.tokenizer.decode([0, 0], skip_special_tokens=True)
    assert zero  # token 0 exists; before the fix it was taken for padding and the generation came back empty


def test_sampled_requests_with_the_same_seed_are_never_batched(tiny_backend):
    specs = [("Question: Is the sky blue? Answer:", (), 6, 0.9, 7), ("Read the input and give", (), 6, 0.9, 7)]
    assert tiny_backend.generate(specs) == [tiny_backend.generate([s])[0] for s in specs]


def test_demo_split_equal_to_the_evaluated_split_never_shows_evaluated_examples(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps({"q": f"question {i}?", "a": f"a{i}"}) for i in range(9)))
    (tmp_path / "s.yaml").write_text(f"selection:\n  - {{name: d, source: hf, dataset: {data}, split: train, "
                                     "demo_split: train, input: q, target: a, limit: 5}\n")
    task = load_tasks(load_suite(tmp_path / "s.yaml"))[0]
    assert not {e.input for e in task.examples} & {d.input for d in task.demos} and len(task.demos) == 4


def test_unlabelled_or_invalid_pool_rows_are_left_out_with_a_note(tmp_path, tiny_model, fewshot_templates):
    from promptkit.tasks.sampling import pick_indices

    evaluated = pick_indices(6, 2, 0, "c")  # the bad rows go where the run does not evaluate
    bad = iter([{"q": "Unlabelled?", "opts": ["Paris", "Rome", "Berlin"], "label": -1},
                {"q": "Broken?", "opts": ["Paris", "Rome", "Berlin"], "label": 7}])
    spots = [i for i in range(6) if i not in evaluated][:2]
    rows = [next(bad) if i in spots else {"q": f"Capital {i}?", "opts": ["Paris", "Rome", "Berlin"], "label": i % 3}
            for i in range(6)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "s.yaml").write_text("selection:\n  - {name: c, source: files, path: c.jsonl, input: q, choices: opts, "
                                     "target: label, limit: 2}\n")
    task = load_tasks(load_suite(tmp_path / "s.yaml"))[0]
    assert task.dropped_demos == 2 and {d.input for d in task.demos} <= {f"Capital {i}?" for i in range(6)}
    res = pk.evaluate(fewshot_templates, tmp_path / "s.yaml", tiny_model, progress=False, log=lambda m: None)
    assert any("2 demonstration row(s) left out of the pool" in n for n in res.config["engine"]["notes"])
