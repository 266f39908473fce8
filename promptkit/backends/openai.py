"""OpenAI-compatible model servers (vLLM, llama.cpp's server, TGI, SGLang, Ollama, hosted APIs) behind the backend
contract, as the model spec `openai:NAME`: log-likelihoods from `/v1/completions` with `echo` and `logprobs` (the
continuation's tokens found from the returned character offsets, never by tokenizing here), generation from
`/v1/chat/completions` (chat variants) or `/v1/completions` (plain prompts). The HTTP client is http_client.py.

Every field of an answer is checked before use (types, finite numbers, log-probabilities <= 0, offsets >= 0): a bad
one is a BadResponse naming the endpoint and the field, never a traceback or a silently wrong score. A generation is
cut to max_new_tokens here too (a server may ignore max_tokens): without a tokenizer on this side, by characters,
CHARS_PER_TOKEN per token, a bound no real answer of that many tokens reaches."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Callable
from urllib.parse import urlsplit

from ..errors import ModelError
from .base import ContinuationScore, Generation, cut_at_stop
from .batching import collector
from .http_client import Client, ServerError, bad_field, bad_key_character, public_url

BACKEND_VERSION = "openai-1"
BASE_URL_VARIABLES = ("PROMPTKIT_BASE_URL", "OPENAI_BASE_URL")
DEFAULT_KEY_VARIABLE = "OPENAI_API_KEY"
# a chat variant's prompt, as this backend's `format_chat` writes it: the turns themselves, which generate() sends
# as `messages` (the server applies the model's chat template; the client has no tokenizer to do it)
CHAT_MARK = "[chat turns, sent to /v1/chat/completions as messages]\n"
# how this backend scores, recorded in the fingerprint: a change here must never reuse cached scores
SCORING = {"loglikelihood": "/v1/completions echo=true logprobs=1 max_tokens=1 temperature=0, continuation tokens "
                            "from text_offset", "generation": "chat: /v1/chat/completions, plain: /v1/completions; "
                                                              "temperature 0 greedy, else top_p 0.95 and the seed"}
STOPS_SENT = 4  # OpenAI's API takes at most 4 stop sequences; every stop sequence is also applied here
CHARS_PER_TOKEN = 32  # a generation is cut to max_new_tokens * this many characters (tokens average ~4)
LOGPROB_SLACK = 1e-4  # a log-probability above this is impossible (a probability above 1), beyond rounding
# known API key prefixes: a value starting with one of these, then KEY_RUN or more characters, is a key, not a name
KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "ghp_", "gho_", "github_pat_", "glpat-", "xai-", "AIza", "r8_", "pk_",
                "rk_", "nvapi-", "pplx-", "key-")
KEY_RUN = 16


class NoPromptLogprobs(ModelError):
    """The server gives no log-probabilities for prompt tokens, so log-likelihood scoring cannot run on it."""


def load(target: str | None, *, base_url: str | None = None, api_key_env: str = DEFAULT_KEY_VARIABLE,
         concurrency: int = 4, requests_per_minute: float | None = None, request_timeout: float = 60.0,
         model_revision: str | None = None, max_retries: int = 5, log: Callable[[str], None] = print,
         **ignored) -> "OpenAIBackend":
    """The backend for `openai:NAME`, as `backends.base.load_backend` asks for it (options of other backends ignored)."""
    return OpenAIBackend(target, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                         requests_per_minute=requests_per_minute, request_timeout=request_timeout,
                         model_revision=model_revision, max_retries=max_retries, log=log)


def check(target: str | None, *, base_url: str | None = None, api_key_env: str = DEFAULT_KEY_VARIABLE,
          request_timeout: float = 60.0, log: Callable[[str], None] = print, **ignored) -> None:
    """Before any scoring: the server answers at the base URL, accepts the key and serves the model."""
    client = _client(target, base_url, api_key_env, request_timeout, 1, None, 2, log)
    try:
        server_model(client, target, api_key_env)  # type: ignore[arg-type]
    finally:
        client.close()


def endpoint_of(base_url: str | None) -> str:
    """The base URL to use: `base_url`, else $PROMPTKIT_BASE_URL, else $OPENAI_BASE_URL; '/v1' added to a bare host."""
    url = base_url or next((os.environ[v] for v in BASE_URL_VARIABLES if os.environ.get(v)), None)
    if not url:
        raise ModelError("a model behind a server needs its address: pass --base-url http://HOST:PORT/v1 (base_url=...), "
                         "or set PROMPTKIT_BASE_URL; for OpenAI's own API that is https://api.openai.com/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(f"--base-url {public_url(url)!r} is not an http(s) URL; write e.g. http://127.0.0.1:8000/v1")
    return url.rstrip("/") + "/v1" if parts.path in ("", "/") else url


def check_key_variable(variable) -> None:
    """`variable` must be an environment variable's NAME: refused, without being shown, when it is not one (letters,
    digits and _) or when it looks like a key itself (a known key prefix, or a long random-looking run)."""
    if not isinstance(variable, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
        why = "is not an environment variable's name (letters, digits and _, not starting with a digit)"
    elif looks_like_key(variable):
        why = "looks like an API key itself (if it is one, it may now be in your shell history: consider rotating it)"
    else:
        return
    raise ModelError(f"--api-key-env (api_key_env=) takes the NAME of the environment variable that holds the key, "
                     f"never the key: the value given {why}; it is not shown. Put the key in a variable (export "
                     "MY_API_KEY=...) and pass --api-key-env MY_API_KEY (default OPENAI_API_KEY)")


def looks_like_key(name: str) -> bool:
    """A known key prefix followed by a long run, a word (between _ and -) of 32+ characters, or one of 16+ that
    switches between lower case, upper case and digits at least every fourth character (random, not CamelCase)."""
    for prefix in KEY_PREFIXES:
        if name.startswith(prefix) and len(rest := name[len(prefix):]) >= KEY_RUN and "_" not in rest.strip("_"):
            return True
    kind = lambda c: "d" if c.isdigit() else "u" if c.isupper() else "l"  # noqa: E731
    for word in re.split(r"[_-]+", name):
        switches = sum(kind(a) != kind(b) for a, b in zip(word, word[1:]))
        if len(word) >= 32 or (len(word) >= KEY_RUN and switches * 4 >= len(word)):
            return True
    return False


def api_key(variable: str | None) -> str | None:
    """The key from the environment variable `variable` (None when unset: local servers need none)."""
    check_key_variable(variable)
    key = (os.environ.get(variable) or "").strip()  # a key file saved with CRLF endings leaves "\r" at the end
    bad = bad_key_character(key)
    if bad is not None:
        raise ModelError(f"the API key in ${variable} has a character that cannot go in an HTTP header (a space, a "
                         f"control character or a non-ASCII character, at position {bad + 1} of {len(key)}); "
                         "fix the variable's value (the key is not shown)")
    return key or None


def _client(target, base_url, api_key_env, timeout, concurrency, rpm, max_retries, log) -> Client:
    if not target:
        raise ModelError("model spec 'openai:' needs the server's model name: write openai:MODEL_NAME")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ModelError(f"--concurrency must be a whole number >= 1 (got {concurrency!r})")
    if not timeout or float(timeout) <= 0:
        raise ModelError(f"--request-timeout must be a number of seconds > 0 (got {timeout!r})")
    if rpm is not None and float(rpm) <= 0:
        raise ModelError(f"--requests-per-minute must be > 0 (got {rpm!r}); leave it out for no limit")
    return Client(endpoint_of(base_url), api_key(api_key_env), timeout=float(timeout), concurrency=concurrency,
                  requests_per_minute=rpm, max_retries=max_retries, log=log)


def server_model(client: Client, name: str, key_variable: str) -> dict:
    """The server's entry for model `name` in GET /models (what it says the model is); a refused key, an unreachable
    server or a name the server does not list is one clear error. A server without /models is taken at its word."""
    try:
        listing = client.get("models")
    except ServerError as exc:
        if exc.status in (401, 403):
            raise ModelError(f"the server at {client.endpoint} refused the API key (HTTP {exc.status}): set the "
                             f"environment variable {key_variable} to a valid key for it (--api-key-env names the "
                             "variable)") from None
        if exc.status == 404:
            return {"id": name}
        raise ModelError(f"cannot use the model server at {client.endpoint}: {exc}. Is it running, and is --base-url "
                         "right (it ends in /v1 for most servers)?") from None
    data = listing.get("data") if isinstance(listing, dict) else None
    entries = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    found = next((m for m in entries if m.get("id") == name), None)
    if found is None and entries:
        served = ", ".join(client.redact(str(m.get("id")))[:80] for m in entries[:20])
        raise ModelError(f"the server at {client.endpoint} does not serve a model named '{name}'; it serves: {served}. "
                         "Write --model openai:ONE_OF_THEM")
    return found or {"id": name}


def _identity(entry: dict) -> dict:
    """What a /models entry says about the weights (never its `created`, which some servers set to the request time)."""
    return {k: entry[k] for k in ("id", "root", "parent", "owned_by", "revision", "version")
            if isinstance(entry.get(k), (str, int, float, bool))}  # scalars only: a server's odd structure is not kept


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP API."""

    def __init__(self, target: str | None, base_url: str | None = None, api_key_env: str = DEFAULT_KEY_VARIABLE,
                 concurrency: int = 4, requests_per_minute: float | None = None, request_timeout: float = 60.0,
                 model_revision: str | None = None, max_retries: int = 5, log: Callable[[str], None] = print):
        self.client = _client(target, base_url, api_key_env, request_timeout, concurrency, requests_per_minute,
                              max_retries, log)
        self.model, self.key_variable, self.revision = str(target), api_key_env, model_revision
        try:
            self.server = _identity(server_model(self.client, self.model, api_key_env))
        except BaseException:
            self.client.close()
            raise
        self.options = {"concurrency": self.client.concurrency, "requests_per_minute": requests_per_minute,
                        "request_timeout": self.client.timeout, "max_retries": max_retries}
        # the result cache is keyed by this: where, which model, what the server says it is, the user's pin, and how
        # it is scored; never the key
        self.fingerprint = hashlib.sha256(json.dumps([
            BACKEND_VERSION, self.client.endpoint, self.model, self.server, model_revision, SCORING]).encode()).hexdigest()[:24]
        self._probed = self._cut_noted = False

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def forward_tokens(self) -> int:
        """Tokens the server reports having processed (prompt and completion) for this backend's requests."""
        return self.client.stats.prompt_tokens + self.client.stats.completion_tokens

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict:
        return {"model": self.name, "backend": "openai-compatible", "endpoint": self.client.endpoint,
                "server_model": self.server, "model_revision": self.revision, "api_key_env": self.key_variable,
                "scoring": SCORING, "fingerprint": self.fingerprint, **self.options, "client": self.client.stats.as_dict()}

    def format_chat(self, messages: tuple[tuple[str, str], ...]) -> str:
        """Chat turns kept as turns: generation sends them as `messages`, and the server applies the chat template."""
        return CHAT_MARK + json.dumps([[role, text] for role, text in messages], ensure_ascii=False)

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None,
                      on_scores: Callable[[list[int], list[ContinuationScore]], None] | None = None
                      ) -> list[ContinuationScore]:
        """One /v1/completions request per pair (prompt + continuation, echoed with log-probabilities), `concurrency`
        at a time; each score goes to `on_scores` as it lands, so the engine commits it. The first request runs alone:
        a server that returns no prompt log-probabilities is found before anything else is sent."""
        if any(p.startswith(CHAT_MARK) for p, _ in pairs):
            raise ModelError(f"{self.name}: chat variants cannot be scored by log-likelihood through an OpenAI-compatible "
                             "API (the server applies the chat template only when it generates); use --mc-scoring "
                             "generation, or set the `chat` axis to false")
        results: list[ContinuationScore | None] = [None] * len(pairs)
        finish = collector(results, on_scores, progress)

        def done(i: int, score: ContinuationScore) -> None:
            finish([i], [score])

        start = 0
        if pairs and not self._probed:
            done(0, self._score(pairs[0]))
            self._probed, start = True, 1
        self.client.map(self._score, pairs[start:], lambda j, s: done(j + start, s))
        return results  # type: ignore[return-value]

    def _score(self, pair: tuple[str, str]) -> ContinuationScore:
        prompt, continuation = pair
        body = {"model": self.model, "prompt": prompt + continuation, "max_tokens": 1, "temperature": 0,
                "echo": True, "logprobs": 1}
        try:
            data = self.client.post("completions", body)
        except ServerError as exc:
            if exc.status is not None and any(w in exc.body.lower() for w in ("logprob", "logits_all", "echo")):
                raise self._no_logprobs(exc.body) from None
            raise
        return self._parse(data, prompt, continuation)

    def _parse(self, data: dict, prompt: str, continuation: str) -> ContinuationScore:
        """The continuation's summed log-probability: the tokens whose character span reaches past the prompt's end
        (a token straddling the boundary counts, as the prompt's trailing space does on the in-process path). Every
        field used is checked first."""
        where, redact = f"{self.client.endpoint}/completions", self.client.redact
        choice = _first_choice(data, where, redact)
        echoed = _text(choice.get("text"), where, "choices[0].text", redact)
        lp = choice.get("logprobs")
        if lp is not None and not isinstance(lp, dict):
            raise bad_field(where, "choices[0].logprobs", lp, "not an object", redact)
        offsets, values, top = ((lp.get("text_offset"), lp.get("token_logprobs"), lp.get("top_logprobs"))
                                if lp else (None, None, None))
        text = prompt + continuation
        if not offsets or not values:
            raise self._no_logprobs("the answer has no token_logprobs/text_offset for the echoed prompt")
        field = "choices[0].logprobs."
        _checked_list(offsets, where, field + "text_offset", _offset, "a character offset (a whole number >= 0)", redact)
        _checked_list(values, where, field + "token_logprobs", _logprob,
                      "a log-probability (a finite number <= 0) or null", redact)
        if len(offsets) != len(values):
            raise bad_field(where, field + "text_offset", f"{len(offsets)} entries",
                            f"token_logprobs has {len(values)}: one of each per token", redact)
        if top is not None and not isinstance(top, list):
            raise bad_field(where, field + "top_logprobs", top, "not a list", redact)
        if not echoed.startswith(text):
            raise self._no_logprobs("the answer has no token_logprobs/text_offset for the echoed prompt")
        ends = list(offsets[1:]) + [len(echoed)]
        mine = [k for k, (o, e) in enumerate(zip(offsets, ends)) if o < len(text) and e > len(prompt)]
        if mine and mine[0] == 0 and values[0] is None:
            if len(mine) == 1:
                raise ModelError(f"{self.name}: a prompt is empty, and servers give the first token no log-probability; "
                                 "give the template some text before the answer")
            mine = mine[1:]  # a text scored on its own (a prompt's likelihood): from its second token on
        if not mine or any(values[k] is None for k in mine):
            raise self._no_logprobs("the continuation's tokens have no log-probabilities")
        best = [_best(top[k] if top and k < len(top) else None, where, f"{field}top_logprobs[{k}]", redact) for k in mine]
        greedy = bool(top) and all(b is not None and values[k] >= b - 1e-6 for k, b in zip(mine, best))
        return ContinuationScore(float(sum(values[k] for k in mine)), len(mine), len(continuation), greedy)

    def _no_logprobs(self, detail: str) -> NoPromptLogprobs:
        return NoPromptLogprobs(
            f"{self.client.endpoint}/completions gives no log-probabilities for prompt tokens (asked with echo=true, "
            f"logprobs=1: {self.client.redact(detail)[:300]}). Multiple-choice scoring by log-likelihood needs a server "
            "that returns them (vLLM; llama.cpp's server with --logits_all true); for a chat-only or hosted API, run "
            "with --mc-scoring generation (mc_scoring='generation'), which generates the answer instead")

    def generate(self, specs: list[tuple], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """One request per spec, `concurrency` at a time, each handed to `on_results` as it lands."""
        results: list[Generation | None] = [None] * len(specs)
        finish = collector(results, on_results, progress)
        self.client.map(self._generate_one, specs, lambda i, g: finish([i], [g]))
        return results  # type: ignore[return-value]

    def _generate_one(self, spec: tuple) -> Generation:
        """Stop sequences that begin with a space or newline are applied here only: the in-process path ignores a
        stop sequence before the answer's first non-space character, and a server would stop at once."""
        prompt, stop, max_new, temperature, seed = tuple(spec) + (0.0, 0)[len(spec) - 3:]
        body: dict = {"model": self.model, "max_tokens": int(max_new), "temperature": float(temperature),
                      "top_p": 0.95 if temperature > 0 else 1.0}
        if temperature > 0:
            body["seed"] = int(seed)
        sent = [s for s in stop if s and not s[0].isspace()][:STOPS_SENT]
        if sent:
            body["stop"] = sent
        where, redact = f"{self.client.endpoint}/{'chat/completions' if prompt.startswith(CHAT_MARK) else 'completions'}", \
            self.client.redact
        if prompt.startswith(CHAT_MARK):
            body["messages"] = [{"role": r, "content": t} for r, t in json.loads(prompt[len(CHAT_MARK):])]
            data = self.client.post("chat/completions", body)
            message = _first_choice(data, where, redact).get("message")
            if not isinstance(message, dict):
                raise bad_field(where, "choices[0].message", message, "not an object", redact)
            text = _text(message.get("content"), where, "choices[0].message.content", redact)
        else:
            data = self.client.post("completions", {**body, "prompt": prompt})
            text = _text(_first_choice(data, where, redact).get("text"), where, "choices[0].text", redact)
        text, most = cut_at_stop(text, stop), max(1, int(max_new)) * CHARS_PER_TOKEN
        if len(text) > most:  # the server ignored max_tokens: cut here, or a run directory grows without bound
            if not self._cut_noted:
                self._cut_noted = True
                self.client.log(f"{where} answered past max_tokens ({int(max_new)}); answers are cut here to "
                                f"{CHARS_PER_TOKEN} characters a token ({most:,} characters)")
            text = text[:most]
        reported = (data.get("usage") or {}).get("completion_tokens")  # checked by the client: a count or None
        tokens = int(reported or 0) or (len(text) + 3) // 4
        return Generation(text, min(tokens, max(1, int(max_new))))


def _first_choice(data, where: str, redact) -> dict:
    """choices[0] of an answer, checked to be an object in a non-empty list in an object."""
    if not isinstance(data, dict):
        raise bad_field(where, "the answer", data, "not a JSON object", redact)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise bad_field(where, "choices", choices, "not a non-empty list", redact)
    if not isinstance(choices[0], dict):
        raise bad_field(where, "choices[0]", choices[0], "not an object", redact)
    return choices[0]


def _text(value, where: str, name: str, redact) -> str:
    """A text field: a string (null is an empty answer)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_field(where, name, value, "not a string", redact)
    return value


def _number(value) -> float | None:
    """`value` as a finite float, or None when it is not a JSON number (bool is not one) or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _offset(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _logprob(value) -> bool:
    number = _number(value)
    return value is None or (number is not None and number <= LOGPROB_SLACK)


def _checked_list(values, where: str, name: str, ok: Callable, expected: str, redact) -> None:
    if not isinstance(values, list):
        raise bad_field(where, name, values, "not a list", redact)
    bad = next((k for k, v in enumerate(values) if not ok(v)), None)
    if bad is not None:
        raise bad_field(where, f"{name}[{bad}]", values[bad], f"not {expected}", redact)


def _best(alternatives, where: str, name: str, redact) -> float | None:
    """The best of a token's returned top log-probs ({token: logprob}, or [{"token": ..., "logprob": ...}, ...] as
    some servers send), checked to be log-probabilities; None when there are none."""
    if not alternatives:
        return None
    if isinstance(alternatives, dict):
        pairs = list(alternatives.items())
    elif isinstance(alternatives, list):
        pairs = [(k, a.get("logprob")) for k, a in enumerate(alternatives) if isinstance(a, dict) and "logprob" in a]
    else:
        raise bad_field(where, name, alternatives, "not an object or a list", redact)
    for key, value in pairs:
        if value is None or not _logprob(value):
            raise bad_field(where, f"{name}[{key!r}]" if isinstance(key, str) else f"{name}[{key}].logprob", value,
                            "not a log-probability (a finite number <= 0)", redact)
    return max((float(v) for _, v in pairs), default=None)
