"""Data-parallel runs through `accelerate launch`: two CPU processes over gloo give what one process
gives, a process that dies takes the job down with a clear message, and a rerun resumes from the cache."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import promptkit as pk
from promptkit.engine import plan as engine
from promptkit.engine.distributed import Ranks, shard_by_cost
from promptkit.prompts.render import Request

from test_crash import _cached, _rows, _same, reference, templates  # noqa: F401  (fixtures)

LAUNCH_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(templates, suite, model, cache, out, processes: int = 2) -> list[str]:
    # on a machine without GPUs, `--multi_gpu` is accelerate's switch for torchrun-launched processes;
    # promptkit then talks over gloo
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "promptkit", "run", "--templates", str(templates),
            "--suite", str(suite), "--model", model, "--cache", str(cache), "--out", str(out), "--batch-tokens", "48",
            "--max-variants", "0", "--quiet", "--no-report", "--device", "cpu",
            "--dtype", "float32"]  # float32: the shards' batches differ from one process's, and results must not


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def test_shards_are_contiguous_and_balanced_by_cost():
    rng = random.Random(0)
    for trial in range(200):
        costs = [rng.randint(1, 50) for _ in range(rng.randint(0, 60))]
        world = rng.randint(1, 5)
        shards = shard_by_cost(costs, world)
        assert len(shards) == world
        assert [i for s in shards for i in s] == list(range(len(costs)))  # every item once, in order
        if costs:
            ideal, worst = sum(costs) / world, max(costs)
            for s in shards:
                assert abs(sum(costs[i] for i in s) - ideal) <= worst, (costs, world, shards)


def test_a_prompts_choices_stay_on_one_rank_and_shards_follow_text_order(tiny_backend):
    pairs = [(f"Shared demos. Question {q}:", f" answer {c}") for q in (3, 1, 2, 0) for c in range(3)]
    shards = engine._shards(pairs, list(range(len(pairs))), tiny_backend, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(pairs)))
    prompts = [[pairs[i][0] for i in s] for s in shards]
    for s in prompts:
        assert s == sorted(s)  # text order: neighbours share prefixes
    assert not set(prompts[0]) & set(prompts[1])  # a prompt is never split
    assert all(prompts)  # both ranks get work


def test_one_rank_plan_is_the_plain_engine(tiny_backend, tmp_path):
    """Ranks() (no launcher) must behave exactly like before: plan, compute, cache."""
    from promptkit.engine.cache import ResultCache

    requests = [Request("v", "t", str(i), f"Q{i}: is it?", (" yes", " no")) for i in range(5)]
    cache = ResultCache(tmp_path / "c.sqlite", tiny_backend.fingerprint)
    first = engine.score(requests, tiny_backend, progress=False, cache=cache, ranks=Ranks())
    stats = engine.EngineStats()
    again = engine.score(requests, tiny_backend, progress=False, cache=cache, stats=stats)
    assert again == first and stats.cache_hits == 10 and stats.computed == 0


def test_two_processes_through_accelerate_equal_one_process(tiny_model, toy_suite, templates, tmp_path, reference):
    db, out = tmp_path / "cache.sqlite", tmp_path / "run"
    run = subprocess.run(_launch(templates, toy_suite, tiny_model, db, out), capture_output=True, text=True,
                         timeout=LAUNCH_TIMEOUT_S, env=_env())
    assert run.returncode == 0, run.stderr[-3000:]
    _same(_rows(out), reference)
    saved = pk.Results.load(out)
    eng = saved.config["engine"]
    assert saved.config["processes"] == 2
    assert eng["computed"] == eng["unique"] > 0 and eng["cache_hits"] == 0
    assert _cached(db) == eng["unique"]  # both ranks' scores reached the cache
    single = pk.Results(reference, saved.tasks, saved.variants, saved.config)  # the one-process run's rows
    assert saved.ranking()["variant"].tolist() == single.ranking()["variant"].tolist()
    assert run.stdout.count("Run directory:") == 1  # rank 0 alone reports


def test_a_rank_that_dies_stops_the_job_and_a_rerun_resumes(tiny_model, toy_suite, templates, tmp_path, reference):
    db, out = tmp_path / "cache.sqlite", tmp_path / "run"
    argv = _launch(templates, toy_suite, tiny_model, db, out)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + LAUNCH_TIMEOUT_S
        victim = None
        while time.time() < deadline and proc.poll() is None and _cached(db) == 0:
            time.sleep(0.02)
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == "1" and "promptkit" in " ".join(child.cmdline()):
                    victim = child
            except psutil.Error:
                continue
        assert proc.poll() is None and victim is not None, "the job ended before a rank could be killed"
        victim.send_signal(signal.SIGKILL)
        started = time.time()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.time() - started < 120
    assert "SIGKILL" in err or "promptkit: stopped" in err, err[-3000:]
    kept = _cached(db)
    assert kept > 0
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=_env())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _same(_rows(out), reference)
    assert pk.Results.load(out).config["engine"]["cache_hits"] >= kept


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_engine_equals_one_rank_in_process(tiny_backend, world):
    """Each simulated rank computes only its shard; put together they give the one-rank scores."""
    requests = [Request("v", "t", str(i), f"Shared instruction.\nQ{i % 7}: pick", (" a", " bb", " c c")) for i in range(20)]
    whole = engine.score(requests, tiny_backend, progress=False)
    pairs = list(dict.fromkeys((r.prompt, c) for r in requests for c in r.continuations))
    shards = engine._shards(pairs, list(range(len(pairs))), tiny_backend, world)
    got = {}
    for shard in shards:
        for i, s in zip(shard, tiny_backend.loglikelihood([pairs[i] for i in shard])):
            got[pairs[i]] = s
    for r, scores in zip(requests, whole):
        for c, s in zip(r.continuations, scores):
            assert got[(r.prompt, c)].logprob == pytest.approx(s.logprob, abs=1e-5)


def test_generation_under_two_processes_equals_one_process(tiny_model, gen_suite, fewshot_templates, tmp_path):
    """Generation requests are sharded, gathered and cached like scores."""
    single = pk.evaluate(fewshot_templates, gen_suite, tiny_model, progress=False, cache=False, batch_tokens=48,
                         dtype="float32")
    db, out = tmp_path / "cache.sqlite", tmp_path / "run"
    run = subprocess.run(_launch(fewshot_templates, gen_suite, tiny_model, db, out), capture_output=True, text=True,
                         timeout=LAUNCH_TIMEOUT_S, env=_env())
    assert run.returncode == 0, run.stderr[-3000:]
    saved = pk.Results.load(out)
    key = ["variant", "task", "example"]
    got = saved.to_pandas().sort_values(key).reset_index(drop=True)
    want = single.to_pandas().sort_values(key).reset_index(drop=True)
    assert got["prediction"].astype(str).tolist() == want["prediction"].astype(str).tolist()
    assert got["accuracy"].tolist() == want["accuracy"].tolist()
    eng = saved.config["engine"]
    assert saved.config["processes"] == 2 and eng["generations_unique"] > 0 and eng["generation_cache_hits"] == 0
    import sqlite3

    with sqlite3.connect(db) as con:  # both ranks' generations reached the cache
        assert con.execute("SELECT COUNT(*) FROM generation").fetchone()[0] == eng["generations_unique"]
