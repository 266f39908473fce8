"""The OpenAI-compatible backend against a real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`, the
GGUF files promptkit already assembles from PyPI): agreement with the in-process backend, the API key kept out of
everything a run writes, a wrong key or model refused before scoring, a server without prompt log-probabilities
detected, a killed server (nothing scored lost, the rerun resumes), a fault-injecting proxy (429 + Retry-After, 500s:
same results, retries counted), chat generation on offline_gen, and multiple choice by generation."""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llama_server import FaultPlan, fault_proxy, llama_server, start_server, stop_server
from promptkit.backends.acquire import default_gguf, packaged_gguf
from promptkit.engine.cache import count_rows
from promptkit.errors import PromptkitError
from promptkit.run.evaluate import evaluate
from promptkit.tasks.suites import load_suite, suite_from_dict

pytestmark = pytest.mark.server

KEY = "sk-promptkit-test-5f0c1e9a77"  # the server's key; it must never appear in anything a run writes
KEY_ENV = "PROMPTKIT_TEST_SERVER_KEY"
SHORT_TASKS = ("capital_check", "leap_year", "even_or_odd", "capital_of_country")  # short inputs; 2, 2, 2 and 4 choices
QUIET = {"progress": False, "log": lambda msg: None}


def family(folder: Path, text: str = "name: short\nprompt: \"Q: {{ input }}\\nA:\"\ncontinuation: ' {{ choice }}'\n") -> str:
    path = folder / "short.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory):
    with llama_server(default_gguf(lambda m: None), "gemma-3-270m", tmp_path_factory.mktemp("gemma") / "server.log",
                      api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    with llama_server(packaged_gguf("smollm2-135m-instruct"), "smollm2", tmp_path_factory.mktemp("smol") / "server.log",
                      api_key=KEY) as server:
        yield server


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


DECISIVE = 0.25  # nats between HF's best and second-best choice: above it, quantized arithmetic never flipped an answer


def short_builtin_suite():
    """Four generated tasks with short inputs (the server spends ~0.5 s per echoed token on Gemma's 262k vocabulary,
    so the agreement check stays on short prompts)."""
    return suite_from_dict({"name": "short", "selection": [f"generated:{t}" for t in SHORT_TASKS]}, Path("short.yaml"))


@pytest.mark.real_model
def test_server_agrees_with_in_process_backend_and_never_records_the_key(gemma_server, key, tmp_path):
    suite, templates = short_builtin_suite(), family(tmp_path)
    out = tmp_path / "run"
    remote = evaluate(templates, suite, "openai:gemma-3-270m", limit=3, base_url=gemma_server.url, api_key_env=key,
                      concurrency=2, out=out, cache=tmp_path / "cache.sqlite", **QUIET)
    local = evaluate(templates, suite, None, limit=3, cache=False, **QUIET)
    on = ["variant", "task", "example"]
    both = remote.rows.merge(local.rows, on=on, suffixes=("_server", "_hf"))
    assert len(both) == len(local.rows) == len(remote.rows) >= 12
    agree = both["prediction_server"] == both["prediction_hf"]
    deltas = [abs(a - b) for x, y in zip(both["logprobs_server"], both["logprobs_hf"]) for a, b in zip(x, y)]
    # llama.cpp computes on the Q4_K_M weights with 8-bit activations; the HF path dequantizes them to float32. Both
    # score the same tokens (checked pair by pair), and llama.cpp on an F32 copy of the same weights agrees with HF to
    # 0.0007 nats per token; with Q4_K_M the log-likelihoods move by a few tenths of a nat, which flips near-ties only
    # (on 120 examples: 95% same answer overall, 109/109 where HF's best beats its second by >= 0.25 nats). So:
    # every decisive example must agree, and the whole sample must agree on most examples.
    margin = both["logprobs_hf"].map(lambda lp: float(np.diff(np.sort(lp))[-1]) if len(lp) > 1 else np.inf)
    decisive = margin >= DECISIVE
    print(f"\nagreement: {agree.mean():.1%} same argmax on {len(both)} examples ({agree[decisive].mean():.0%} of the "
          f"{int(decisive.sum())} where HF's margin >= {DECISIVE} nats); |Δ log-lik| max {max(deltas):.3f}, "
          f"median {statistics.median(deltas):.3f} over {len(deltas)} continuations")
    assert agree[decisive].all(), both.loc[decisive & ~agree, ["task", "example", "logprobs_server", "logprobs_hf"]]
    assert agree.mean() >= 0.75 and statistics.median(deltas) < 0.5
    config = json.loads((out / "config.json").read_text())
    client = config["model"]["client"]
    assert client["requests"] >= len(deltas) and client["prompt_tokens"] > 0 and client["retries"] == 0
    assert config["model"]["endpoint"] == gemma_server.url and config["model"]["api_key_env"] == KEY_ENV
    written = [p for p in out.rglob("*") if p.is_file()] + [tmp_path / "cache.sqlite"]
    assert not [p for p in written if KEY.encode() in p.read_bytes()]


def test_wrong_key_unknown_model_and_missing_url_fail_before_scoring(smol_server, key, tmp_path, monkeypatch, toy_suite):
    templates, cache = family(tmp_path), tmp_path / "cache.sqlite"
    posts_before = smol_server.log_text().count("POST /v1/")
    monkeypatch.setenv("WRONG_KEY", "sk-not-the-right-one")
    with pytest.raises(PromptkitError) as wrong:
        evaluate(templates, toy_suite, "openai:smollm2", base_url=smol_server.url, api_key_env="WRONG_KEY", cache=cache, **QUIET)
    assert "refused the API key" in str(wrong.value) and "WRONG_KEY" in str(wrong.value)
    assert "sk-not-the-right-one" not in str(wrong.value)
    with pytest.raises(PromptkitError) as unknown:
        evaluate(templates, toy_suite, "openai:no-such-model", base_url=smol_server.url, api_key_env=key, cache=cache, **QUIET)
    assert "does not serve a model named 'no-such-model'" in str(unknown.value) and "smollm2" in str(unknown.value)
    for variable in ("PROMPTKIT_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(PromptkitError, match="--base-url"):
        evaluate(templates, toy_suite, "openai:smollm2", api_key_env=key, cache=cache, **QUIET)
    with pytest.raises(PromptkitError, match="--concurrency"):
        evaluate(templates, toy_suite, "openai:smollm2", base_url=smol_server.url, concurrency=0, cache=cache, **QUIET)
    assert not cache.exists() or count_rows(cache) == 0  # nothing was scored
    assert smol_server.log_text().count("POST /v1/") == posts_before


def test_a_server_without_prompt_logprobs_is_detected_on_the_first_request(tmp_path, toy_suite):
    with llama_server(packaged_gguf("smollm2-135m-instruct"), "smollm2", tmp_path / "server.log", logits_all=False) as server:
        with pytest.raises(PromptkitError) as caught:
            evaluate(family(tmp_path), toy_suite, "openai:smollm2", base_url=server.url, cache=False, **QUIET)
        posts = server.log_text().count("POST /v1/completions")
    message = str(caught.value)
    assert f"{server.url}/completions gives no log-probabilities" in message and "--mc-scoring generation" in message
    assert posts == 1  # found on the first request, not retried, nothing else sent


def test_killed_server_stops_the_run_keeps_what_was_scored_and_the_rerun_resumes(tmp_path, toy_suite):
    gguf, cache, templates = packaged_gguf("smollm2-135m-instruct"), tmp_path / "cache.sqlite", family(tmp_path)
    server = start_server(gguf, "smollm2", tmp_path / "server.log")
    seen_at_kill = []

    def kill_after_some_scores():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if cache.exists() and count_rows(cache) >= 5:
                seen_at_kill.append(count_rows(cache))
                stop_server(server)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_some_scores, daemon=True)
    killer.start()
    try:
        with pytest.raises(PromptkitError) as caught:
            evaluate(templates, toy_suite, "openai:smollm2", base_url=server.url, cache=cache, concurrency=2, **QUIET)
    finally:
        killer.join(timeout=310)
        stop_server(server)
    assert seen_at_kill, "the run finished before the server was killed"
    assert "failed 6 times in a row" in str(caught.value) and "rerun to resume" in str(caught.value)
    assert getattr(caught.value, "resumable", False)
    kept = count_rows(cache)
    assert kept >= seen_at_kill[0]  # nothing already scored was lost
    server = start_server(gguf, "smollm2", tmp_path / "server2.log", port=server.port)  # same endpoint, same cache key
    try:
        done = evaluate(templates, toy_suite, "openai:smollm2", base_url=server.url, cache=cache, **QUIET)
    finally:
        stop_server(server)
    engine = done.config["engine"]
    assert engine["cache_hits"] == kept and engine["computed"] == engine["unique"] - kept
    assert done.rows["accuracy"].notna().all() and len(done.rows) == 15


def test_a_faulty_proxy_gives_the_same_results_with_the_retries_counted(smol_server, key, tmp_path, toy_suite):
    templates = family(tmp_path)
    # one request at a time, so that the server sees the same order with and without the faults: llama.cpp reuses the
    # previous request's matching prefix, and its numbers depend a little on which (see README, "Models behind a server")
    run = lambda url, out: evaluate(templates, toy_suite, "openai:smollm2", base_url=url, api_key_env=key, concurrency=1,
                                    cache=tmp_path / "cache.sqlite", out=out, **QUIET)
    direct = run(smol_server.url, tmp_path / "direct")
    plan = FaultPlan(every_429=3, every_500=5)
    with fault_proxy(smol_server.url, plan) as proxied_url:
        proxied = run(proxied_url, tmp_path / "proxied")
    assert plan.injected["429"] >= 3 and plan.injected["500"] >= 2
    key_cols = ["task", "example"]
    a, b = direct.rows.sort_values(key_cols), proxied.rows.sort_values(key_cols)
    assert a["prediction"].tolist() == b["prediction"].tolist()
    drift = max(abs(x - y) for p, q in zip(a["logprobs"], b["logprobs"]) for x, y in zip(p, q))
    print(f"\nmax |Δ log-lik| direct vs through the proxy: {drift:.2e}")
    assert drift < 1e-5
    client = json.loads((tmp_path / "proxied" / "config.json").read_text())["model"]["client"]
    assert client["retries"] == sum(plan.injected.values())
    assert client["retry_reasons"] == {k: v for k, v in plan.injected.items() if v}
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".log"]
    assert not [p for p in written if KEY.encode() in p.read_bytes()]


CHAT_FAMILY = ("name: chat_short\nheader: '{{ instruction }}'\ngeneration: {stop: [\"\\n\"], max_new_tokens: 12}\n"
               "axes:\n  chat: ['Reply with the answer only.']\nprompt: '{{ input }}'\ncontinuation: ' {{ choice }}'\n")


def test_generation_through_the_chat_endpoint_on_offline_gen(smol_server, key, tmp_path):
    suite = load_suite("offline_gen")
    suite = replace(suite, tasks=suite.tasks[:2] + suite.held_out[:1])
    results = evaluate(family(tmp_path, CHAT_FAMILY), suite, "openai:smollm2", limit=3, base_url=smol_server.url,
                       api_key_env=key, cache=False, **QUIET)
    rows = results.rows
    assert len(rows) == 9 and (rows["kind"] == "generate").all()
    assert rows["prediction"].str.strip().str.len().gt(0).all()  # non-empty answers
    assert rows["accuracy"].between(0, 1).all()  # scored by each task's metric, as on the in-process path
    assert smol_server.log_text().count("POST /v1/chat/completions") >= 9
    assert results.config["model"]["client"]["completion_tokens"] > 0


def test_multiple_choice_by_generation_through_the_server(smol_server, key, tmp_path, toy_suite):
    results = evaluate(family(tmp_path, CHAT_FAMILY), toy_suite, "openai:smollm2", base_url=smol_server.url,
                       api_key_env=key, mc_scoring="generation", cache=False, **QUIET)
    rows = results.rows
    assert (rows["kind"] == "choice_generated").all() and len(rows) == 15
    assert rows["generated"].str.len().gt(0).all()
    assert set(rows["parse_failed"]) <= {True, False}
    ranking = results.ranking()
    assert "parse_failure_rate" in ranking and ranking["parse_failure_rate"].between(0, 1).all()
    assert results.config["mc_scoring"] == "generation"
