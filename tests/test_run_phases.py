"""Each phase of the run alone (options → plan → render → execute → collect), the backend contract with a
second backend registered by one line, one run-directory writer for library and CLI, and run directories
written before the phases existed."""

from __future__ import annotations

import json
import math
import shutil
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

import promptkit as pk
from promptkit.backends import base
from promptkit.backends.base import ContinuationScore, Generation, load_backend, parse_model_spec
from promptkit.cli import main
from promptkit.engine.distributed import Ranks
from promptkit.results.rundir import ANALYSIS_FILES, REPORT_FILE, TABLE_FILES
from promptkit.run.collect import collect
from promptkit.run.execute import execute
from promptkit.run.options import RunOptions, options_from
from promptkit.run.plan import make_plan
from promptkit.run.work import CONTENT_FREE, EVALUATED, SYNTHETIC_DEMO, render_work, with_chat

OLD_RUN = Path(__file__).parent / "data" / "run_v0_1"


# ---------------------------------------------------------------------------- a second backend, by contract only


class LengthBackend:
    """A model that prefers short continuations and answers every generation with its prompt's last word:
    deterministic, no torch, and nothing but the contract."""

    name = "length"
    fingerprint = "length-backend-v1"

    def __init__(self, target=None, **options):
        self.target, self.options, self.forward_tokens, self.calls = target, options, 0, 0

    def loglikelihood(self, pairs, progress=None, on_scores=None):
        self.calls += 1
        out = [ContinuationScore(-float(len(c)), len(c.split()), len(c), True) for _, c in pairs]
        self.forward_tokens += sum(len(p) + len(c) for p, c in pairs)
        if on_scores:
            on_scores(list(range(len(pairs))), out)
        if progress:
            progress(len(pairs))
        return out

    def generate(self, specs, progress=None, on_results=None):
        out = [Generation(spec[0].split()[-1] if spec[0].split() else "", 1) for spec in specs]
        if on_results:
            on_results(list(range(len(specs))), out)
        return out

    def describe(self):
        return {"model": self.name, "dtype": "none", "fingerprint": self.fingerprint}


@pytest.fixture()
def length_scheme(monkeypatch):
    """Register the backend above under `length:` the way a new backend module is registered: one line."""
    module = types.ModuleType("length_backend_for_tests")
    module.load = lambda target, **options: LengthBackend(target, **options)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(base.BACKENDS, "length", module.__name__)
    return "length"


def test_model_specs_pick_a_backend_or_say_which_exist():
    assert parse_model_spec(None) == base.ModelSpec("hf", None)
    assert parse_model_spec("org/name") == base.ModelSpec("hf", "org/name")
    assert parse_model_spec("hf:org/name") == base.ModelSpec("hf", "org/name")
    assert parse_model_spec("/models/x.gguf").target == "/models/x.gguf"
    with pytest.raises(pk.ModelError, match="unknown model backend 'nosuch:'.*hf:"):
        parse_model_spec("nosuch:model")
    with pytest.raises(pk.ModelError, match="no model"):
        parse_model_spec("hf:")


def test_a_registered_backend_runs_the_whole_pipeline_without_torch_names(length_scheme, toy_suite, two_templates, tmp_path):
    results = pk.evaluate(str(two_templates), str(toy_suite), "length:anything", cache=tmp_path / "c.sqlite",
                          progress=False, log=lambda m: None, out=tmp_path / "run")
    assert results.config["model"] == {"model": "length", "dtype": "none", "fingerprint": "length-backend-v1"}
    # the shortest continuation wins every example: accuracy is the share of examples whose answer is shortest
    rows = results.rows
    assert set(rows["task"]) == {"even", "capitals", "even2"}
    even = rows[rows["task"] == "even"]
    assert even["accuracy"].mean() == pytest.approx(0.5)  # " no" (3 chars) beats " yes": right on odd numbers only
    assert (tmp_path / "run" / "ranking.csv").is_file() and (tmp_path / "run" / REPORT_FILE).is_file()
    again = pk.evaluate(str(two_templates), str(toy_suite), "length:anything", cache=tmp_path / "c.sqlite",
                        progress=False, log=lambda m: None)
    assert again.config["engine"]["computed"] == 0 and again.config["engine"]["cache_hits"] > 0
    assert load_backend(LengthBackend()).name == "length"  # a loaded backend is used as it is


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs, message", [
    ({"search": "annealing"}, "unknown search strategy 'annealing'"),
    ({"budget": 0.5}, "a budget needs a search strategy"),
    ({"noise": ["typos:0.1"], "search": "halving"}, "--noise cannot be combined"),
    ({"noise": ["typos:0.1"], "calibrate": True}, "--noise cannot be combined"),
    ({"search": "halving", "calibrate": True}, "--calibrate cannot be combined with --search"),
    ({"noise": ["typos:7"]}, "--noise:"),
    ({"analysis": {"protocl": "loto"}}, "unknown analysis option"),
])
def test_option_rules_are_checked_in_one_place(kwargs, message):
    with pytest.raises(pk.PromptkitError, match=message):
        RunOptions(**kwargs).validated()


def test_options_are_normalised():
    opts = RunOptions(search="exhaustive", noise=["typos:0.10", "typos:0.1", "casing:0.05"],
                      analysis={"protocol": "loto"}).validated()
    assert opts.search is None
    assert opts.noise == ["typos:0.1", "casing:0.05"]
    assert opts.analysis.protocol == "loto" and opts.analysis.bootstrap == 1000
    with pytest.raises(pk.PromptkitError, match="unknown option.*limt"):
        options_from({"limt": 3})
    quiet = RunOptions(out="x", log=print).for_rank(Ranks(rank=1, world=2))
    assert quiet.out is None and quiet.progress is False and quiet.log is not print
    assert RunOptions(out="x").for_rank(Ranks(rank=0, world=2)).out == "x"


def test_plan_rules_need_the_plan(gen_suite, fewshot_templates):
    opts = RunOptions(search="halving").validated()
    with pytest.raises(pk.PromptkitError, match="--search works on multiple-choice tasks only.*add"):
        make_plan(str(fewshot_templates), str(gen_suite), opts)


# ---------------------------------------------------------------------------- plan, render, execute, collect


def test_plan_loads_checks_and_samples(toy_suite, two_templates):
    plan = make_plan(str(two_templates), str(toy_suite), RunOptions(max_variants=3, seed=1).validated())
    assert [t.name for t in plan.tasks] == ["even", "capitals", "even2"]
    assert len(plan.variants) == 3 and {v.family.name for v in plan.variants} == {"plain", "listed"}
    assert plan.notes == [] and plan.metrics == {} and plan.synthetic_variants == []


def test_render_gives_one_work_list_with_roles(toy_suite, two_templates):
    plan = make_plan(str(two_templates), str(toy_suite), RunOptions().validated())
    work = render_work(plan, seed=0, calibrate=True)
    evaluated = [w for w in work if w.role == EVALUATED]
    free = [w for w in work if w.role == CONTENT_FREE]
    assert len(evaluated) == len(plan.variants) * sum(len(t.examples) for t in plan.tasks)
    # one content-free prompt per variant × task × choice set, after the evaluated items
    keys = {(w.variant.id, w.task.name, tuple(w.example.choices)) for w in evaluated}
    assert len(free) == len(keys) and work[-len(free):] == free
    assert all(w.example.input == "N/A" and not w.reported for w in free)
    assert all(w.request.prompt and w.reported for w in evaluated)
    # chat formatting is the backend's capability, applied to chat items only
    class NoTemplate:  # a backend whose chat template must not even be looked up when no variant is a chat
        name = "m"

        @property
        def format_chat(self):
            raise AssertionError("format_chat was looked up")

    assert with_chat(work, NoTemplate()) == work  # no chat variants: nothing to format, no capability needed


def test_synthetic_variants_are_marked_for_rendering_again(gen_suite, tmp_path):
    (tmp_path / "demo.yaml").write_text("name: d\naxes:\n  shots: [2]\n  demo_source: [real, synthetic]\n"
                                        "prompt: 'Q: {{ input }}\\nA:'\ncontinuation: ' {{ choice }}'\n")
    plan = make_plan(str(tmp_path / "demo.yaml"), str(gen_suite), RunOptions().validated())
    work = render_work(plan, seed=0)
    roles = {w.variant.values["demo_source"]: w.role for w in work}
    assert roles == {"real": EVALUATED, "synthetic": SYNTHETIC_DEMO}
    with pytest.raises(pk.PromptkitError, match="--calibrate cannot be combined with synthetic"):
        make_plan(str(tmp_path / "demo.yaml"), str(gen_suite), RunOptions(calibrate=True).validated())


def test_execute_and_collect_through_the_contract(toy_suite, two_templates, tmp_path):
    options = RunOptions(calibrate=True, cache=tmp_path / "c.sqlite", progress=False, log=lambda m: None).validated()
    plan = make_plan(str(two_templates), str(toy_suite), options)
    work = render_work(plan, options.seed, options.calibrate)
    backend = LengthBackend()
    done = execute(work, plan, backend, options, Ranks())
    assert len(done.scores) == len(work) and done.n_requests == len(work)
    assert all(len(s) == len(w.request.continuations) for w, s in zip(done.work, done.scores))
    assert done.cache_path == str(tmp_path / "c.sqlite") and done.stats.computed == done.stats.unique
    results = collect(plan, done, backend, options, Ranks(), started=0.0)
    reported = [w for w in work if w.reported]
    assert len(results.rows) == len(reported)
    assert results.rows["cf_logprobs"].map(len).eq(results.rows["logprobs"].map(len)).all()
    first = results.rows.iloc[0]
    assert first["cf_logprobs"] == [-float(len(c)) for c in reported[0].request.continuations]
    assert results.config["n_requests"] == len(work) and results.config["model"]["model"] == "length"
    assert results.config["engine"]["cache"] == str(tmp_path / "c.sqlite")
    assert all("sample" in info for info in results.variants.values())


# ---------------------------------------------------------------------------- one run-directory writer


def test_library_and_cli_write_the_same_run_directory(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    lib, cli = tmp_path / "lib", tmp_path / "cli"
    pk.evaluate(str(two_templates), str(toy_suite), tiny_model, max_variants=4, out=lib, progress=False,
                log=lambda m: None)
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--max-variants", "4", "--out", str(cli), "--quiet"]) == 0
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    assert files(lib) == files(cli)
    assert set(TABLE_FILES) | set(ANALYSIS_FILES) | {REPORT_FILE} <= set(files(lib))
    assert pd.read_csv(lib / "ranking_stats.csv").equals(pd.read_csv(cli / "ranking_stats.csv"))
    printed = capsys.readouterr().out
    assert f"report: {cli / REPORT_FILE}" in printed and "held-out summary" in printed


def test_the_cli_prints_from_the_analysis_the_writer_saved(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--templates", str(two_templates), "--suite", str(toy_suite), "--model", tiny_model,
                 "--max-variants", "2", "--out", str(out), "--quiet", "--no-report", "--bootstrap", "200"]) == 0
    summary = json.loads((out / "analysis.json").read_text())["summary"]
    chosen = pd.read_csv(out / "protocol.csv").iloc[0]["chosen"]
    assert chosen in capsys.readouterr().out
    assert not (out / REPORT_FILE).exists() and summary["level"] == 0.95


# ---------------------------------------------------------------------------- run directories from before


def test_a_run_directory_written_before_the_phases_loads_ranks_and_reports(tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    old = pk.load(run)
    assert len(old.rows) == 20 and old.config["calibrate"] is True
    assert list(old.ranking()["variant"]) == list(pd.read_csv(run / "ranking.csv")["variant"])
    assert main(["rank", str(run), "--mode", "calibrated", "--bootstrap", "100"]) == 0
    assert "chosen prompt" in capsys.readouterr().out
    assert main(["report", str(run), "--bootstrap", "100"]) == 0
    assert (run / REPORT_FILE).stat().st_size > 1000


def test_the_phases_compute_what_the_old_pipeline_computed(tmp_path):
    """The inputs of tests/data/run_v0_1 (written by the pipeline before this change) run again: same rows."""
    from conftest import build_tiny_model, write_bigbench_task

    model = build_tiny_model(tmp_path / "tiny")
    write_bigbench_task(tmp_path / "even" / "task.json", "even", 6)
    write_bigbench_task(tmp_path / "even2" / "task.json", "even2", 4, prefix="")
    (tmp_path / "suite.yaml").write_text("name: toy\nlimit: 10\nselection:\n  - {name: even, source: bigbench, path: "
                                         "even/task.json}\nheld_out:\n  - {name: even2, source: bigbench, path: even2/task.json}\n")
    (tmp_path / "plain.yaml").write_text("name: plain\naxes:\n  label: ['Question:', 'Q:']\n"
                                         "prompt: '{{ label }} {{ input }} Answer:'\ncontinuation: ' {{ choice }}'\n")
    new = pk.evaluate(str(tmp_path / "plain.yaml"), str(tmp_path / "suite.yaml"), str(model), cache=False,
                      calibrate=True, progress=False, log=lambda m: None, dtype="float32")  # the old pipeline's CPU dtype
    old = pk.load(OLD_RUN)
    assert list(new.rows.columns) == list(old.rows.columns)
    for a, b in zip(new.rows.to_dict("records"), old.rows.to_dict("records")):
        for key, value in b.items():
            if isinstance(value, float):
                assert math.isclose(a[key], value, rel_tol=1e-6, abs_tol=1e-6), key
            elif isinstance(value, list):
                assert a[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert a[key] == value, key
    for key in ("n_variants", "n_requests", "forward_tokens", "limit", "calibrate", "noise"):
        assert new.config[key] == old.config[key], key
    for key in ("continuations", "unique", "computed", "forward_tokens"):
        assert new.config["engine"][key] == old.config["engine"][key], key
