"""The real default model (Gemma 3 270M from PyPI) on real BIG-bench tasks. Marked; still run in CI."""

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


def test_default_model_is_cached_and_fingerprinted(gemma):
    info = gemma.describe()
    assert info["class"] == "Gemma3ForCausalLM" and info["dtype"] == "float32"
    assert 250e6 < info["parameters"] < 300e6
    again = HFBackend(None, dtype="float32", device="cpu")  # second load reads the safetensors cache
    assert again.fingerprint == gemma.fingerprint
    assert HFBackend(None, dtype="bfloat16", device="cpu").fingerprint != gemma.fingerprint
