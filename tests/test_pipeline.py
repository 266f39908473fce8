import json

import pytest
import torch

import promptkit as pk
from promptkit.engine import plan as engine
from promptkit.backends.hf import HFBackend
from promptkit.prompts.render import Request


def direct_loglikelihood(backend: HFBackend, prompt: str, continuation: str) -> float:
    """Reference: one full forward pass through model(...), no batching, full-vocabulary logits."""
    ctx, cont = backend.encode(prompt, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = backend.model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    positions = [len(ctx) - 1 + i for i in range(len(cont))]
    greedy = all(int(logprobs[p].argmax()) == t for p, t in zip(positions, cont))
    return float(sum(logprobs[p, t] for p, t in zip(positions, cont))), greedy


def test_loglikelihood_equals_direct_forward(tiny_backend):
    pairs = [("Question: Is the sky blue? Answer:", " yes"), ("Q: Is grass red? A:", " no maybe"),
             ("Paris", " London Berlin Madrid"), ("", "Rome"), ("Trailing space ", "x")]
    scores = tiny_backend.loglikelihood(pairs)
    for (p, c), s in zip(pairs, scores):
        expected, greedy = direct_loglikelihood(tiny_backend, p, c)
        assert s.logprob == pytest.approx(expected, abs=1e-4)
        assert s.is_greedy == greedy
        assert s.n_chars == len(c) and s.n_tokens >= 1
        assert s.logprob < 0


def test_batching_does_not_change_results(tiny_model):
    pairs = [(f"Question: number {i} " * (1 + i % 5), f" answer {i % 3}") for i in range(20)]
    small = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=16)
    large = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=100_000)
    a, b = small.loglikelihood(pairs), large.loglikelihood(pairs)
    for x, y in zip(a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5)
        assert (x.n_tokens, x.is_greedy) == (y.n_tokens, y.is_greedy)


def test_engine_deduplicates_identical_pairs(tiny_backend):
    calls = []

    class Counting:
        forward_tokens = 0

        def loglikelihood(self, pairs, progress=None, on_scores=None):
            calls.append(list(pairs))
            return tiny_backend.loglikelihood(pairs, progress, on_scores)

    reqs = [Request("v1", "t", "0", "Q: x A:", (" yes", " no")), Request("v2", "t", "0", "Q: x A:", (" yes", " no"))]
    out = engine.score(reqs, Counting(), progress=False)
    assert len(calls[0]) == 2
    assert out[0][0].logprob == out[1][0].logprob


def test_evaluate_end_to_end(tiny_model, toy_suite, two_templates, tmp_path):
    res = pk.evaluate(two_templates, toy_suite, tiny_model, seed=0, out=tmp_path / "run", progress=False)
    df = res.to_pandas()
    n_variants = 4 + 2
    assert len(df) == n_variants * (6 + 5 + 4)
    assert set(df.columns) >= {"variant", "family", "task", "split", "example", "prediction", "target", "accuracy", "logprobs"}
    assert df.groupby(["variant", "task", "example"]).size().max() == 1
    assert set(df["accuracy"]) <= {0.0, 1.0}
    # prediction is the argmax of the logprobs
    for _, row in df.head(10).iterrows():
        assert row["prediction"] == max(range(len(row["logprobs"])), key=row["logprobs"].__getitem__)
    ranking = res.ranking()
    assert len(ranking) == n_variants
    assert list(ranking["selection_mean"]) == sorted(ranking["selection_mean"], reverse=True)
    sel = df[df["split"] == "selection"].groupby(["variant", "task"])["accuracy"].mean().groupby("variant").mean()
    top = ranking.iloc[0]
    assert top["selection_mean"] == pytest.approx(sel[top["variant"]])
    assert {"even", "capitals", "even2"} <= set(ranking.columns)
    summary = res.held_out_summary()
    assert summary["chosen_variant"] == top["variant"]
    assert summary["best_held_out"] >= summary["chosen_held_out"]
    assert summary["regret"] == pytest.approx(summary["best_held_out"] - summary["chosen_held_out"])
    assert res.config["forward_tokens"] > 0
    # run directory
    run = tmp_path / "run"
    for name in ("config.json", "versions.json", "results.jsonl", "ranking.csv", "ranking.json", "held_out.json", "variants.json", "tasks.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    versions = json.loads((run / "versions.json").read_text())
    assert versions["torch"] and versions["transformers"] and versions["python"]
    assert sum(1 for _ in (run / "results.jsonl").open()) == len(df)
    again = pk.load(run)
    assert again.ranking()["variant"].tolist() == ranking["variant"].tolist()
    assert again.ranking()["selection_mean"].tolist() == pytest.approx(ranking["selection_mean"].tolist())


def test_evaluate_reuses_a_backend_and_samples_variants(tiny_backend, toy_suite):
    res = pk.evaluate(None, toy_suite, tiny_backend, max_variants=5, limit=2, seed=3, progress=False)
    assert len(res.variants) == 5
    assert res.to_pandas().groupby("task").size().to_dict() == {"capitals": 10, "even": 10, "even2": 10}


def test_template_errors_surface_before_the_model_loads(toy_suite, tmp_path):
    (tmp_path / "t.yaml").write_text("name: t\nprompt: '{{ question }}'\n")
    with pytest.raises(pk.TemplateError, match="question"):
        pk.evaluate(tmp_path / "t.yaml", toy_suite, model=str(tmp_path / "no-such-model"), progress=False)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(pk.ModelError, match="does not exist"):
        HFBackend(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(pk.ModelError, match="no config.json"):
        HFBackend(str(tmp_path / "empty"))
    with pytest.raises(pk.ModelError, match="does not exist"):
        HFBackend(str(tmp_path / "model.gguf"))


def test_prompt_sharing_equals_unshared_scoring(tiny_model):
    """Scoring continuations from the prompt's cached keys/values matches one full pass per pair."""
    prompts = ["Q: Is grass red? A:", "Question: Is the sky blue? Paris London Berlin Answer:", "Input: two plus two Output:"]
    conts = [" no", " yes maybe", " four Paris London Berlin Madrid", "x", " Rome"]
    pairs = [(p, c) for p in prompts for c in conts]
    shared = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=64)
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    a, b = shared.loglikelihood(pairs), unshared.loglikelihood(pairs)
    for (p, c), x, y in zip(pairs, a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5), (p, c)
        assert (x.n_tokens, x.n_chars, x.is_greedy) == (y.n_tokens, y.n_chars, y.is_greedy)
    assert shared.forward_tokens < unshared.forward_tokens


def test_unknown_hub_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pk.ModelError, match="could not load model 'no-such-org/no-such-model'"):
        HFBackend("no-such-org/no-such-model")
