"""The real default model (Gemma 3 270M from PyPI) on the built-in tasks promptkit generates itself. Marked; still run
in CI."""

import pytest
import torch

import promptkit as pk
from promptkit.backends.hf import HFBackend

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def gemma():
    return HFBackend(None, dtype="float32", device="cpu")


def test_default_model_loglikelihoods_equal_direct_forward(gemma):
    full = pk.load_suite()
    suite = pk.Suite("two", [full.selection[0], full.held_out[0]])
    names = [t.name for t in suite.tasks]
    res = pk.evaluate(None, suite, gemma, limit=3, max_variants=2, seed=0, progress=False)
    df = res.to_pandas()
    assert set(df["task"]) == set(names) and len(df) == 2 * 2 * 3
    variants = {v.id: v for v in pk.expand_all(pk.load_templates())}
    tasks = {t.name: t for t in pk.load_tasks(suite, limit=3, names=names)}
    checked = 0
    for _, row in df.iterrows():
        task = tasks[row["task"]]
        request = pk.render(variants[row["variant"]], task, task.example(row["example"]))
        for cont, lp in zip(request.continuations, row["logprobs"]):
            ctx_ids, cont_ids = gemma.encode(request.prompt, cont)
            ids = torch.tensor([ctx_ids + cont_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(gemma.model(input_ids=ids).logits[0].float(), dim=-1)
            expected = sum(float(logprobs[len(ctx_ids) - 1 + i, t]) for i, t in enumerate(cont_ids))
            assert lp == pytest.approx(expected, abs=2e-3)
            checked += 1
    assert checked >= 24


def test_prompts_longer_than_the_sliding_window_are_shared_exactly(gemma):
    """Three demonstrations of capital_lookup (a list of 50 capitals each) make prompts of 1,000+ tokens, past Gemma 3's
    512-token sliding window: packed as one tree (the demonstrations once), they must still match a direct forward
    pass."""
    from pathlib import Path

    from promptkit.tasks.suites import load_tasks, suite_from_dict

    suite = suite_from_dict({"name": "long", "selection": ["generated:capital_lookup"]}, Path("long.yaml"))
    task = load_tasks(suite, limit=5)[0]
    demos, evaluated = task.examples[:3], task.examples[3:5]
    prefix = "".join(f"Question: {d.input}\nAnswer: {d.choices[d.target]}\n\n" for d in demos)
    pairs = [(f"{prefix}Question: {e.input}\nAnswer:", " " + c) for e in evaluated for c in e.choices[:3]]
    assert len(gemma.encode(*pairs[0])[0]) > 2 * gemma.window
    before = gemma.forward_tokens
    scores = gemma.loglikelihood(pairs)
    assert gemma.forward_tokens - before < 1.5 * len(gemma.encode(*pairs[0])[0])  # the demonstrations ran once
    for (prompt, cont), score in zip(pairs, scores):
        ctx_ids, cont_ids = gemma.encode(prompt, cont)
        with torch.no_grad():
            logprobs = torch.log_softmax(gemma.model(input_ids=torch.tensor([ctx_ids + cont_ids])).logits[0].float(), dim=-1)
        expected = sum(float(logprobs[len(ctx_ids) - 1 + i, t]) for i, t in enumerate(cont_ids))
        assert score.logprob == pytest.approx(expected, abs=2e-3), (prompt[-60:], cont)


def test_default_model_is_cached_and_fingerprinted(gemma):
    info = gemma.describe()
    assert info["class"] == "Gemma3ForCausalLM" and info["dtype"] == "float32"
    assert 250e6 < info["parameters"] < 300e6
    again = HFBackend(None, dtype="float32", device="cpu")  # second load reads the safetensors cache
    assert again.fingerprint == gemma.fingerprint
    assert HFBackend(None, dtype="bfloat16", device="cpu").fingerprint != gemma.fingerprint


def test_default_model_answers_generation_tasks_with_demonstrations(gemma):
    suite = pk.Suite("gen", [pk.load_suite("offline_gen").task("addition")])
    few = [f for f in pk.load_templates() if f.name == "fewshot_qa"]
    res = pk.evaluate(few, suite, gemma, limit=8, max_variants=4, seed=0, progress=False)
    df = res.to_pandas()
    assert set(df["kind"]) == {"generate"} and len(df) == 4 * 8
    assert df["accuracy"].max() == 1.0 and res.ranking()["selection_mean"].iloc[0] > 0
    # left-padded batches give what one prompt alone gives
    prompts = [s["prompt"] for s in (v["sample"] for v in res.variants.values())]
    specs = [(p, ("\n",), 6) for p in prompts]
    assert gemma.generate(specs) == [gemma.generate([s])[0] for s in specs]


@pytest.fixture(scope="module")
def smollm2():
    return HFBackend("smollm2-135m-instruct", dtype="float32", device="cpu")


def test_smollm2_instruct_chat_axis_runs_and_ranks(smollm2):
    info = smollm2.describe()
    assert info["class"] == "LlamaForCausalLM" and 130e6 < info["parameters"] < 140e6
    suite = pk.Suite("gen", [pk.load_suite("offline_gen").task("capital_city"),
                             pk.load_suite().task("capital_of_country")])
    res = pk.evaluate("chat", suite, smollm2, limit=4, seed=0, progress=False)
    values = [v["values"] for v in res.variants.values()]
    assert {str(v["chat"]) for v in values} == {"False", "True", "You are a helpful assistant. Reply with the answer only, nothing else."}
    assert len(res.ranking()) == 12 and set(res.to_pandas()["kind"]) == {"generate", "choice"}
    prompts = {vid: v["sample"]["prompt"] for vid, v in res.variants.items()}
    for vid, v in res.variants.items():
        if v["values"]["chat"] is False:
            assert "<|im_start|>" not in prompts[vid]
        else:
            assert prompts[vid].startswith("<|im_start|>system\n") and prompts[vid].endswith("<|im_start|>assistant\n")
        if isinstance(v["values"]["chat"], str):
            assert prompts[vid].startswith(f"<|im_start|>system\n{v['values']['chat']}<|im_end|>")
