"""The OpenAI-compatible client against a hostile server (local, on 127.0.0.1, started and stopped by each test): a key
given where the NAME of its variable belongs, bodies that are huge, endless or inflate to gigabytes, answers far past
max_tokens, a server that trickles one byte at a time, Retry-After waits that never end (and the signals that must
still stop the run), and answers whose fields have the wrong type or impossible values. Each case is bounded in time
(pytest-timeout) and in memory (the bytes the server sends, the RSS the client grows by)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psutil
import pytest

from llama_server import serve
from promptkit.backends import http_client
from promptkit.backends.http_client import Client, ServerError, retry_after
from promptkit.backends.openai import CHAT_MARK, OpenAIBackend, api_key
from promptkit.engine.cache import count_rows
from promptkit.errors import ModelError, PromptkitError
from promptkit.run.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda msg: None}
TEMPLATE = "name: short\nprompt: \"Q: {{ input }}\\nA:\"\ncontinuation: ' {{ choice }}'\n"
MiB = 1 << 20


# --- the hostile server -------------------------------------------------------------------------------------------

class State:
    """What the server saw and sent (read by the test)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.posts = 0
        self.sent = 0  # body bytes the server managed to write
        self.hits: dict[str, int] = {}

    def hit(self, name: str) -> None:
        with self.lock:
            self.hits[name] = self.hits.get(name, 0) + 1


def echo_completion(prompt: str) -> dict:
    """What a well-behaved server answers to echo=true, logprobs=1, max_tokens=1: one token per character here."""
    text = prompt + "!"
    n = len(text)
    return {"choices": [{"text": text, "logprobs": {"text_offset": list(range(n)), "token_logprobs": [None] + [-0.5] * (n - 1),
                                                    "top_logprobs": [None] + [{"x": -0.1}] * (n - 1)}}],
            "usage": {"prompt_tokens": n, "completion_tokens": 1}}


def chat_answer(content) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"prompt_tokens": 3,
                                                                                        "completion_tokens": 2}}


@contextmanager
def hostile(post=None, get=None):
    """A server on 127.0.0.1: GET /v1/models lists model `x` unless `get` answers; every POST goes to
    `post(handler, n, path, body)` (n counts POSTs from 1). Yields (base URL, State)."""
    state = State()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append(("GET", self.path))
            if get is not None:
                return get(self)
            send_json(self, {"data": [{"id": "x", "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            with state.lock:
                state.posts += 1
                n = state.posts
            state.requests.append(("POST", self.path))
            if post is None:
                return send_json(self, echo_completion(body.get("prompt", "")))
            post(self, n, self.path, body)

    Handler.state = state
    with serve(Handler) as url:
        yield url, state


def send_bytes(h, body: bytes, status: int = 200, headers: dict | None = None, state: State | None = None) -> None:
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    try:
        for i in range(0, len(body), 1 << 16):
            h.wfile.write(body[i:i + (1 << 16)])
            if state is not None:
                state.sent += len(body[i:i + (1 << 16)])
    except (BrokenPipeError, ConnectionResetError):
        pass


def send_json(h, obj, status: int = 200, headers: dict | None = None) -> None:
    send_bytes(h, json.dumps(obj).encode(), status, headers)


def send_chunked(h, chunks, state: State) -> None:
    """Transfer-Encoding: chunked, for as long as `chunks` yields and the client reads."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    try:
        for chunk in chunks:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            state.sent += len(chunk)
        h.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass


@contextmanager
def rss_growth():
    """The largest growth of this process's RSS while the block runs (sampled every 5 ms), in box['growth']."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, stop, box = [base], threading.Event(), {}

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        box["growth"] = peak[0] - base


def client(url: str, **kw) -> Client:
    return Client(url, None, **{"timeout": 10.0, "max_retries": 0, "log": lambda m: None, **kw})


# --- 5: a key given where its variable's NAME belongs --------------------------------------------------------------

HF_LIKE = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"  # a valid identifier, and plainly a key


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", [HF_LIKE, "sk-proj-Zx81kLmQ0aTgHs7e2bV4", "sk_live_51HxYzAbCdEfGh1234567890",
                                   "3f9a0c7e12b44d5e8f6a7b9c0d1e2f3a", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQr", "my key"])
def test_a_key_given_as_the_variable_name_is_refused_without_being_shown(value):
    with pytest.raises(ModelError) as err:
        api_key(value)
    text = str(err.value)
    assert "NAME of the environment variable" in text and "--api-key-env" in text
    assert value not in text and value[:8] not in text and value[-8:] not in text


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "hf_token", "GROQ_API_KEY", "MY_SERVER_KEY_2",
                                  "PROMPTKIT_TEST_SERVER_KEY", "sk", "AZURE_OPENAI_API_KEY_WESTEUROPE"])
def test_ordinary_variable_names_are_accepted(name, monkeypatch):
    monkeypatch.delenv(name, raising=False)
    assert api_key(name) is None


@pytest.mark.timeout(60)
def test_a_key_as_variable_name_stops_the_cli_before_any_request(tmp_path, toy_suite, capsys):
    from promptkit.cli import main

    (tmp_path / "short.yaml").write_text(TEMPLATE)
    with hostile() as (url, state):
        code = main(["run", "--templates", str(tmp_path / "short.yaml"), "--suite", str(toy_suite), "--model",
                     "openai:x", "--base-url", url, "--api-key-env", HF_LIKE, "--no-cache", "--quiet",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "NAME of the environment variable" in err
    assert HF_LIKE not in err and HF_LIKE[3:12] not in err
    assert state.requests == []  # not one request
    assert not (tmp_path / "run" / "config.json").exists()


# --- 7: responses of unbounded size ---------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_huge_body_is_refused_after_a_bounded_read(tmp_path):
    body = b'{"data": "' + b"a" * (64 * MiB) + b'"}'
    with hostile(get=lambda h: send_bytes(h, body, state=h.state)) as (url, state):
        c = client(url)
        with rss_growth() as mem, pytest.raises(ServerError) as err:
            c.get("models")
        c.close()
    assert f"{url}/models" in str(err.value) and "larger than" in str(err.value)
    assert mem["growth"] < 48 * MiB, mem


@pytest.mark.timeout(60)
def test_an_endless_chunked_body_is_cut_off():
    def endless(h):
        def chunks():
            start = time.monotonic()
            while h.state.sent < 256 * MiB and time.monotonic() - start < 30:
                yield b"[" * 65536
        send_chunked(h, chunks(), h.state)

    with hostile(get=endless) as (url, state):
        c = client(url)
        with rss_growth() as mem, pytest.raises(ServerError) as err:
            c.get("models")
        c.close()
        sent = state.sent
    assert f"{url}/models" in str(err.value) and "larger than" in str(err.value)
    assert sent < 48 * MiB and mem["growth"] < 48 * MiB, (sent, mem)


@pytest.mark.timeout(60)
def test_a_gzip_bomb_is_not_inflated_past_the_bound():
    packer, block = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16), b" " * MiB
    bomb = b"".join(packer.compress(block) for _ in range(256)) + packer.flush()  # 256 MiB in ~250 KB of gzip
    assert len(bomb) < 1 * MiB
    with hostile(get=lambda h: send_bytes(h, bomb, headers={"Content-Encoding": "gzip"})) as (url, state):
        c = client(url)
        with rss_growth() as mem, pytest.raises(ServerError) as err:
            c.get("models")
        c.close()
    assert f"{url}/models" in str(err.value) and "larger than" in str(err.value)
    assert mem["growth"] < 48 * MiB, mem


@pytest.mark.timeout(60)
def test_a_compressed_answer_of_fair_size_still_reads():
    answer = {"data": [{"id": "x", "pad": "y" * 100_000}]}
    raw = json.dumps(answer).encode()
    bare = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # deflate without the zlib header, as some servers send
    for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)),
                             ("deflate", bare.compress(raw) + bare.flush())):
        with hostile(get=lambda h: send_bytes(h, packed, headers={"Content-Encoding": encoding})) as (url, _):
            c = client(url)
            assert c.get("models") == answer
            c.close()


@pytest.mark.timeout(60)
def test_a_chat_answer_past_max_tokens_is_cut_on_the_client_and_a_huge_one_refused():
    size = {"n": 1 * MiB}
    with hostile(post=lambda h, n, path, body: send_json(h, chat_answer("a" * size["n"]))) as (url, _):
        backend = OpenAIBackend("x", base_url=url, log=lambda m: None)
        spec = (CHAT_MARK + json.dumps([["user", "hi"]]), ("\n",), 12)
        [gen] = backend.generate([spec])
        assert 0 < len(gen.text) <= 12 * 32 and gen.n_tokens <= 12
        size["n"] = 50 * MiB
        with pytest.raises(ServerError) as err:
            backend.generate([spec])
        backend.close()
    assert f"{url}/chat/completions" in str(err.value) and "larger than" in str(err.value)


# --- 8: a request timeout that bounds the whole request ------------------------------------------------------------

def trickle(h, headers_too: bool):
    """One byte every 0.5 s, for 60 s at most: the body only, or the status line and headers as well."""
    body = json.dumps({"data": [{"id": "x"}]}).encode()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    try:
        if not headers_too:
            h.wfile.write(head)
            h.wfile.flush()
        for b in (head if headers_too else b"") + body:
            h.wfile.write(bytes([b]))
            h.wfile.flush()
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_server_that_trickles_bytes_times_out_at_the_request_timeout(headers_too):
    with hostile(get=lambda h: trickle(h, headers_too)) as (url, _):
        c = client(url, timeout=2.0)
        start = time.monotonic()
        with pytest.raises(ServerError) as err:
            c.get("models")
        took = time.monotonic() - start
        c.close()
    assert took < 5.0, took
    assert f"{url}/models" in str(err.value) and "Timeout" in str(err.value)


# --- 9: waits a server asks for are capped, shown, and stop at a signal ---------------------------------------------

@pytest.mark.parametrize("value, seconds", [("garbage", None), ("Mon, 01 Jan 99999 00:00:00 GMT", None),
                                            ("nan", None), ("-5", 0.0), ("2", 2.0), ("999999999", 999999999.0),
                                            ("", None), (None, None)])
def test_retry_after_values_never_raise(value, seconds):
    assert retry_after(value) == seconds


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["garbage", "Mon, 01 Jan 99999 00:00:00 GMT", "999999999"])
def test_a_bad_or_huge_retry_after_is_capped_shown_and_bounded(value, monkeypatch):
    monkeypatch.setattr(http_client, "MAX_WAIT_S", 0.5)
    monkeypatch.setattr(http_client, "MAX_TOTAL_WAIT_S", 1.2)

    def always_429(h):
        send_json(h, {"error": {"message": "slow down"}}, 429, {"Retry-After": value})

    with hostile(get=always_429) as (url, state):
        lines = []
        c = client(url, max_retries=10, backoff_s=0.01, log=lines.append)
        start = time.monotonic()
        with pytest.raises(ServerError) as err:
            c.get("models")
        took = time.monotonic() - start
        c.close()
    assert took < 4.0, took
    assert "429" in str(err.value)
    assert err.value.resumable
    if value == "999999999":
        assert any("Retry-After" in line and "waiting" in line for line in lines), lines
        assert len(state.requests) <= 4  # 0.5 s at most per wait, 1.2 s in all


def good_then_429(h, n, path, body):
    if n == 1:
        return send_json(h, echo_completion(body["prompt"]))
    h.state.hit("429")
    send_json(h, {"error": {"message": "rate limited"}}, 429, {"Retry-After": "999999999"})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_run_whose_workers_wait_on_retry_after(sig, code, tmp_path, toy_suite):
    (tmp_path / "short.yaml").write_text(TEMPLATE)
    with hostile(post=good_then_429) as (url, state):
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptkit", "run", "--templates", str(tmp_path / "short.yaml"), "--suite",
             str(toy_suite), "--model", "openai:x", "--base-url", url, "--concurrency", "3", "--no-cache",
             "--out", str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 90
            while state.hits.get("429", 0) < 3 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert state.hits.get("429", 0) >= 3, proc.communicate(timeout=5)
            time.sleep(0.5)  # the workers are asleep on Retry-After now
            sent_at = time.monotonic()
            proc.send_signal(sig)
            try:
                out, err = proc.communicate(timeout=8)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 8 s after {sig.name}")
            took = time.monotonic() - sent_at
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    text = err.decode()
    assert proc.returncode == code, text[-2000:]
    assert took < 5.0, took
    assert "Retry-After" in text and "waiting" in text, text[-2000:]


# --- 10: every field of an answer checked ---------------------------------------------------------------------------

def completion_with(change):
    """A POST handler answering each completion well, with `change(answer)` applied."""
    def post(h, n, path, body):
        answer = echo_completion(body["prompt"])
        out = change(answer)
        raw = out if isinstance(out, bytes) else json.dumps(answer).encode()
        send_bytes(h, raw)
    return post


def set_lp(k, value):
    def change(a):
        a["choices"][0]["logprobs"]["token_logprobs"][k] = value
    return change


def set_field(path, value):
    def change(a):
        node = a
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return change


BAD_ANSWERS = {
    "nan-logprob": (lambda a: json.dumps(a).replace("-0.5", "NaN", 1).encode(), "token_logprobs[1] = NaN"),
    "inf-logprob": (lambda a: json.dumps(a).replace("-0.5", "-1e999", 1).encode(), "token_logprobs[1] = -1e999"),
    "positive-logprob": (set_lp(-1, 50.0), "token_logprobs"),
    "string-logprob": (set_lp(-1, "-0.5"), "token_logprobs"),
    "negative-offset": (set_field(["choices", 0, "logprobs", "text_offset", 1], -3), "text_offset"),
    "string-offsets": (set_field(["choices", 0, "logprobs", "text_offset"], "0,1,2"), "text_offset"),
    "offsets-of-floats": (lambda a: a["choices"][0]["logprobs"].update(
        text_offset=[float(o) + 0.5 for o in a["choices"][0]["logprobs"]["text_offset"]]), "text_offset"),
    "top-logprob-string": (lambda a: a["choices"][0]["logprobs"].update(
        top_logprobs=[None] + [{"x": "high"}] * (len(a["choices"][0]["logprobs"]["text_offset"]) - 1)), "top_logprobs"),
    "usage-strings": (set_field(["usage", "prompt_tokens"], "12"), "usage.prompt_tokens"),
    "usage-nan": (lambda a: json.dumps(a).replace('"completion_tokens": 1', '"completion_tokens": NaN').encode(), "usage.completion_tokens = NaN"),
    "text-not-string": (set_field(["choices", 0, "text"], ["a"]), "text"),
    "choices-not-list": (set_field(["choices"], {"0": 1}), "choices"),
    "top-level-list": (lambda a: b"[1, 2, 3]", "JSON object"),
    "not-json": (lambda a: b"<html>oops</html>", "not JSON"),
    "too-deep": (lambda a: b"[" * 100_000 + b"]" * 100_000, "nested"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_a_bad_field_in_a_scoring_answer_is_a_clear_error(case):
    change, word = BAD_ANSWERS[case]
    with hostile(post=completion_with(change)) as (url, _):
        backend = OpenAIBackend("x", base_url=url, max_retries=0, log=lambda m: None)
        try:
            with pytest.raises(PromptkitError) as err:
                backend.loglikelihood([("Q: 1\nA:", " yes")])
        finally:
            backend.close()
    text = str(err.value)
    assert f"{url}/completions" in text and word in text, text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content, word", [({"text": "hi"}, "content"), (["hi"], "content"), (7, "content")])
def test_a_chat_content_that_is_not_a_string_is_a_clear_error(content, word):
    with hostile(post=lambda h, n, path, body: send_json(h, chat_answer(content))) as (url, _):
        backend = OpenAIBackend("x", base_url=url, max_retries=0, log=lambda m: None)
        try:
            with pytest.raises(PromptkitError) as err:
                backend.generate([(CHAT_MARK + json.dumps([["user", "hi"]]), (), 8)])
        finally:
            backend.close()
    assert f"{url}/chat/completions" in str(err.value) and "message.content" in str(err.value)


@pytest.mark.timeout(60)
def test_a_key_with_an_invisible_character_given_to_the_client_is_refused():
    with pytest.raises(ModelError, match="cannot go in an HTTP header") as err:
        Client("http://127.0.0.1:9/v1", "sk-abc\u200bdef", log=lambda m: None)
    assert "sk-abc" not in str(err.value)


@pytest.mark.timeout(120)
def test_a_bad_answer_mid_run_fails_clearly_and_keeps_what_was_scored(tmp_path, toy_suite):
    def post(h, n, path, body):
        answer = echo_completion(body["prompt"])
        raw = json.dumps(answer).encode()
        send_bytes(h, raw.replace(b"-0.5", b"NaN", 1) if n == 6 else raw)

    (tmp_path / "short.yaml").write_text(TEMPLATE)
    cache = tmp_path / "cache.sqlite"
    with hostile(post=post) as (url, _):
        with pytest.raises(PromptkitError) as err:
            evaluate(str(tmp_path / "short.yaml"), str(toy_suite), "openai:x", base_url=url, concurrency=1, cache=cache,
                     **QUIET)
    assert f"{url}/completions" in str(err.value) and "token_logprobs[1] = NaN" in str(err.value)
    assert count_rows(cache) == 5  # the five answers before the bad one


def test_the_limits_are_module_constants():
    assert http_client.MAX_RESPONSE_BYTES == 8 * MiB
    assert http_client.MAX_WAIT_S <= 60 and http_client.MAX_TOTAL_WAIT_S <= 600


# --- 6: the CLI path, not only evaluate() --------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_cli_run_scored_by_a_server_prints_its_ranking_and_footer(toy_suite, tmp_path, capsys, monkeypatch):
    """Every CLI run whose first --model was openai:... ended in KeyError: 'dtype' in the footer after the run
    directory was written (exit 1, no ranking printed); the tests called evaluate() and missed it."""
    from promptkit.cli import main

    monkeypatch.setenv("PROMPTKIT_TEST_KEY", "sk-local-test-key")
    (tmp_path / "short.yaml").write_text(TEMPLATE)
    with hostile() as (url, state):
        code = main(["run", "--templates", str(tmp_path / "short.yaml"), "--suite", str(toy_suite), "--model",
                     "openai:x", "--base-url", url, "--api-key-env", "PROMPTKIT_TEST_KEY", "--no-cache", "--quiet",
                     "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert state.posts > 0 and "held-out summary" in out and "openai" in out
    assert (tmp_path / "run" / "manifest.json").is_file() and "sk-local-test-key" not in out


@pytest.mark.timeout(60)
def test_a_text_scored_on_its_own_counts_from_its_second_token_and_a_lone_token_is_still_refused():
    with hostile(post=completion_with(lambda a: None)) as (url, _):
        backend = OpenAIBackend("x", base_url=url, max_retries=0, log=lambda m: None)
        try:
            whole = backend.loglikelihood([("", "Q: 1\nA:")])[0]  # a prompt's own likelihood (--prompt-likelihood)
            assert whole.n_tokens == len("Q: 1\nA:") - 1 and whole.logprob == pytest.approx(-0.5 * whole.n_tokens)
            with pytest.raises(PromptkitError, match="a prompt is empty"):
                backend.loglikelihood([("", "Q")])
        finally:
            backend.close()
