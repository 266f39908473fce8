"""Several models in one run: the model column, per-model cache keys, one model in memory at a time, the
transfer protocol on a hand-built table with a known answer, and the bad inputs."""

from __future__ import annotations

import json
import sqlite3
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

import promptkit as pk
from promptkit.analysis.transfer import transfer
from promptkit.backends import base
from promptkit.backends.base import ContinuationScore
from promptkit.cli import main
from promptkit.results.core import Results
from promptkit.run.models import combine

from conftest import train_tokenizer


def build_tiny_gpt2(folder: Path) -> Path:
    """A second tiny model with another architecture and another tokenizer (no BOS, other specials)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    fast = train_tokenizer(["<|endoftext|>", "<unk>"], "$A", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                           unk_token="<unk>")
    config = GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=2, n_head=4, n_positions=512,
                        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    torch.manual_seed(1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2")))


def test_two_models_one_run_equal_two_single_runs(tiny_model, tiny_gpt2, toy_suite, two_templates, tmp_path):
    db = tmp_path / "cache.sqlite"
    both = pk.evaluate(str(two_templates), str(toy_suite), [tiny_model, tiny_gpt2], cache=db, max_variants=3,
                       progress=False, log=lambda m: None)
    assert both.models == [tiny_model, tiny_gpt2]
    assert set(both.rows["model"]) == {tiny_model, tiny_gpt2}
    fingerprints = [m["fingerprint"] for m in both.config["models"]]
    assert len(set(fingerprints)) == 2
    with sqlite3.connect(db) as con:  # every score sits under its own model's fingerprint
        stored = dict(con.execute("SELECT fingerprint, COUNT(*) FROM loglikelihood GROUP BY fingerprint").fetchall())
    assert set(stored) == set(fingerprints) and all(stored.values())
    for name in (tiny_model, tiny_gpt2):
        alone = pk.evaluate(str(two_templates), str(toy_suite), name, cache=False, max_variants=3, progress=False,
                            log=lambda m: None)
        mine = both.for_model(name)
        assert "model" not in alone.rows.columns
        pd.testing.assert_frame_equal(mine.rows[alone.rows.columns], alone.rows, check_exact=False, atol=1e-6)
        assert mine.config["model"]["fingerprint"] == alone.config["model"]["fingerprint"]
    # ranked over (model, task) cells by default; pooled over models with across("tasks")
    assert set(both.ranked().tasks) == {f"{m}::{t}" for m in both.models for t in both.tasks}
    assert set(both.across("tasks").tasks) == set(both.tasks)
    assert both.plot("transfer").axes[0].get_xlabel() == "scored on (held-out tasks)"
    assert list(both.transfer(n_boot=50)["chosen_on"])[:4] == [tiny_model, tiny_model, tiny_gpt2, tiny_gpt2]
    assert len(both.across("tasks").rows) == len(both.rows)


class Tracked:
    """A contract-only backend that records how many instances are alive at once."""

    live = peak = 0
    name, fingerprint = "tracked", "tracked"

    def __init__(self, target):
        Tracked.live += 1
        Tracked.peak = max(Tracked.peak, Tracked.live)
        self.name, self.fingerprint, self.forward_tokens = f"tracked:{target}", f"tracked-{target}", 0
        self.bias = 1.0 if target == "a" else -1.0

    def loglikelihood(self, pairs, progress=None, on_scores=None):
        assert Tracked.live == 1, "a second model is in memory while this one scores"
        out = [ContinuationScore(self.bias * -len(c), 1, len(c), True) for _, c in pairs]
        if on_scores:
            on_scores(list(range(len(pairs))), out)
        return out

    def generate(self, specs, progress=None, on_results=None):
        raise AssertionError("no generation in this test")

    def describe(self):
        return {"model": self.name, "dtype": "none", "fingerprint": self.fingerprint}

    def close(self):
        Tracked.live -= 1


def _check_tracked(target, **options):
    if target not in ("a", "b", "c"):
        raise pk.ModelError(f"no such tracked model {target}")


@pytest.fixture()
def tracked(monkeypatch):
    module = types.ModuleType("tracked_backend_for_tests")
    module.load = lambda target, **options: Tracked(target)
    module.check = _check_tracked
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(base.BACKENDS, "tracked", module.__name__)
    Tracked.live = Tracked.peak = 0


def test_one_model_in_memory_at_a_time_and_each_released(tracked, toy_suite, two_templates):
    res = pk.evaluate(str(two_templates), str(toy_suite), ["tracked:a", "tracked:b", "tracked:c"], cache=False,
                      progress=False, log=lambda m: None)
    assert Tracked.peak == 1 and Tracked.live == 0
    assert res.models == ["tracked:a", "tracked:b", "tracked:c"]


def test_a_model_that_cannot_load_stops_the_run_before_any_scoring(tracked, toy_suite, two_templates, tmp_path):
    db = tmp_path / "cache.sqlite"
    with pytest.raises(pk.ModelError, match="model .tracked:zzz. cannot be used"):
        pk.evaluate(str(two_templates), str(toy_suite), ["tracked:a", "tracked:zzz"], cache=db, progress=False,
                    log=lambda m: None)
    assert Tracked.peak == 0  # nothing was loaded, so nothing was scored
    with pytest.raises(pk.ModelError, match="does not exist"):
        pk.evaluate(str(two_templates), str(toy_suite), ["tracked:a", str(tmp_path / "missing.gguf")], cache=db,
                    progress=False, log=lambda m: None)


def test_duplicate_models_run_once_with_a_note(tracked, toy_suite, two_templates):
    notes = []
    res = pk.evaluate(str(two_templates), str(toy_suite), ["tracked:a", "tracked:a"], cache=False, progress=False,
                      log=notes.append)
    assert res.models == [] and "model" not in res.rows.columns  # one model: today's results
    assert any("given more than once" in n for n in notes)
    assert any("given more than once" in n for n in res.config["engine"]["notes"])


def test_options_that_do_not_work_with_several_models_are_refused(tracked, toy_suite, two_templates):
    for kwargs, message in [({"search": "halving"}, "--search runs on one model"),
                            ({"noise": ["typos:0.1"]}, "--noise cannot be combined with several models")]:
        with pytest.raises(pk.PromptkitError, match=message):
            pk.evaluate(str(two_templates), str(toy_suite), ["tracked:a", "tracked:b"], cache=False, progress=False,
                        log=lambda m: None, **kwargs)


def _run(rows, models, tasks):
    config = {"model": {"fingerprint": models}, "engine": {"notes": [], "unique": 1}, "n_requests": 1,
              "forward_tokens": 1, "wall_seconds": 1.0}
    return Results(pd.DataFrame(rows), tasks, {}, config)


def test_models_that_saw_different_examples_are_refused():
    tasks = {"t": {"split": "selection", "chance": 0.5}}
    a = _run([{"variant": "v", "task": "t", "example": "1", "accuracy": 1.0}], "fa", tasks)
    b = _run([{"variant": "v", "task": "t", "example": "2", "accuracy": 1.0}], "fb", tasks)
    with pytest.raises(pk.PromptkitError, match="saw different examples"):
        combine([a, b], ["a", "b"], [])


def _table(scores: dict) -> pd.DataFrame:
    """Tidy rows from {(model, variant, task): [per-example accuracies]}."""
    return pd.DataFrame([{"model": m, "variant": v, "task": t, "example": str(i), "accuracy": float(x)}
                         for (m, v, t), xs in scores.items() for i, x in enumerate(xs)])


def test_transfer_matrix_on_a_hand_built_table():
    # chance 0.5 everywhere, so mean_norm = 2 * accuracy - 1.
    # model A: v1 wins selection and held-out; model B: v2 wins both. So choosing on A and scoring on B picks v1,
    # which on B's held-out task scores 0.5 (norm 0.0) against v2's 1.0 (norm 1.0): regret 1.0.
    tasks = {"s": {"split": "selection", "chance": 0.5}, "h": {"split": "held_out", "chance": 0.5}}
    acc = {("A", "v1", "s"): [1, 1, 1, 1], ("A", "v2", "s"): [0, 0, 1, 1], ("A", "v1", "h"): [1, 1, 1, 1],
           ("A", "v2", "h"): [1, 1, 0, 0], ("B", "v1", "s"): [0, 0, 1, 1], ("B", "v2", "s"): [1, 1, 1, 1],
           ("B", "v1", "h"): [1, 1, 0, 0], ("B", "v2", "h"): [1, 1, 1, 1]}
    variants = {"v1": {"family": "f", "values": {"label": "Q:"}}, "v2": {"family": "f", "values": {"label": "Question:"}}}
    t = transfer(_table(acc), tasks, variants, ["A", "B"], n_boot=200, seed=0)
    m = t.matrix.set_index(["chosen_on", "scored_on"])
    assert m.loc[("A", "B"), "chosen"] == "v1" and m.loc[("A", "B"), "regret"] == pytest.approx(1.0)
    assert m.loc[("B", "A"), "chosen"] == "v2" and m.loc[("B", "A"), "regret"] == pytest.approx(1.0)
    assert m.loc[("A", "A"), "regret"] == 0 and m.loc[("B", "B"), "regret"] == 0
    assert m.loc[("all but B", "B"), "chosen"] == "v1" and m.loc[("all but A", "A"), "chosen"] == "v2"
    assert m.loc[("A", "B"), "regret_ci_low"] <= 1.0 <= m.loc[("A", "B"), "regret_ci_high"]
    tau = t.tau.iloc[0]
    assert tau["kendall_tau"] == pytest.approx(-1.0)  # the two models rank the two variants oppositely
    axes = t.axes.set_index("axis")
    assert axes.loc["label", "best_on_A"] == "'Q:'" and axes.loc["label", "best_on_B"] == "'Question:'"
    assert not axes.loc["label", "agrees"]
    # the cross-model prompt: a tie on the mean of selection scores (0.5 and 0.5) goes to the first variant;
    # on A it gives up nothing, on B it gives up its whole held-out margin
    cross = t.cross.set_index("model")
    assert t.chosen == "v1"
    assert cross.loc["A", "cost_held_out"] == pytest.approx(0.0) and cross.loc["B", "cost_held_out"] == pytest.approx(1.0)
    worst = transfer(_table(acc), tasks, variants, ["A", "B"], how="worst", n_boot=0)
    assert worst.chosen == "v1"
    with pytest.raises(pk.PromptkitError, match="at least two models"):
        transfer(_table(acc), tasks, variants, ["A"], n_boot=0)


def test_cli_runs_several_models_and_ranks_by_transfer(tiny_model, tiny_gpt2, toy_suite, two_templates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--model", tiny_gpt2, "--max-variants", "3", "--out", str(out), "--quiet", "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "transfer across models" in printed and "prompt that holds across models" in printed
    assert (out / "transfer.csv").is_file()
    data = json.loads((out / "transfer.json").read_text())
    assert data["models"] == [tiny_model, tiny_gpt2] and len(data["kendall_tau"]) == 1
    assert "Across models" in (out / "report.html").read_text()
    loaded = pk.load(out)
    assert loaded.models == [tiny_model, tiny_gpt2]
    assert main(["rank", str(out), "--protocol", "models", "--bootstrap", "100"]) == 0
    assert "Kendall tau" in capsys.readouterr().out
    assert main(["rank", str(out), "--on-model", tiny_gpt2, "--bootstrap", "100"]) == 0
    assert "chosen prompt" in capsys.readouterr().out
    assert main(["rank", str(out), "--on-model", "nope"]) == 2
