"""A well-behaved JSON client for model servers, and one that survives a hostile one: httpx underneath, bounded
concurrency, retries with exponential back-off and jitter on 429/5xx/connection errors (honouring Retry-After, each
wait and the total capped, shown, and cut short by Ctrl-C/SIGTERM), a request timeout that bounds the whole request
(connect, send and every read), responses bounded in bytes read and bytes inflated, JSON checked before use, an
optional requests-per-minute limit, and counts of requests, retries and the tokens the server reports.

The API key lives only in the Authorization header of the httpx client; every message this module writes is
passed through `redact`, so the key cannot leak into an error, a log or a run directory."""

from __future__ import annotations

import email.utils
import json
import math
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from ..errors import ModelError
from .http_limits import (MAX_RESPONSE_BYTES, POLL_S, READ_CHARS, BadResponse, ServerError, Stopped,  # noqa: F401
                          bad_field, guard, local, parse_json, read_body, show, sleep)

RETRY_STATUS = {408, 425, 429}  # and every 5xx
MAX_WAIT_S = 60.0  # one wait before a retry (a server's Retry-After included) is at most this long
MAX_TOTAL_WAIT_S = 180.0  # and the waits of one request together: past it the request fails (the run stops, resumable)
LOG_WAIT_S = 5.0  # a wait this long or longer is shown (one line)
MESSAGE_CHARS = 400  # how much of a server's error message is quoted


@dataclass
class ClientStats:
    """What the client sent and what the server says it cost."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failed: int = 0  # requests that failed for good
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_reasons: dict = field(default_factory=dict)  # "429" / "500" / "ConnectError" -> count

    def as_dict(self) -> dict:
        return {"requests": self.requests, "retries": self.retries, "failed_requests": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "retry_reasons": dict(self.retry_reasons)}


def public_url(url: str) -> str:
    """The URL without user name or password (what is recorded, shown and fingerprinted)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def bad_key_character(key: str) -> int | None:
    """The index of the first character of `key` that cannot go in an HTTP header (space, control, non-ASCII)."""
    return next((i for i, c in enumerate(key) if not 33 <= ord(c) < 127), None)


class Client:
    """JSON over HTTP to one base URL. `post`/`get` retry what is worth retrying; `map` runs a function over items
    on `concurrency` threads and hands results back in completion order, stopping at the first failure."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, concurrency: int = 4,
                 requests_per_minute: float | None = None, max_retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, log: Callable[[str], None] = print):
        import httpx  # imported here: `promptkit --help` and HF-only runs never load it

        bad = bad_key_character(api_key) if api_key else None
        if bad is not None:
            raise ModelError(f"the API key has a character that cannot go in an HTTP header (a space, a control "
                             f"character or a non-ASCII character, at position {bad + 1} of {len(api_key)}); fix it "
                             "(the key is not shown)")
        self._httpx = httpx
        self.endpoint = public_url(base_url)
        self._secret = api_key or None
        # gzip and deflate only: this module inflates them itself, bounded (see _Inflater)
        headers = {"Accept-Encoding": "gzip, deflate", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_connections=max(1, concurrency)))
        self.guarded = guard(self._http)  # every connect, write and read bounded by the request's deadline
        self.timeout, self.concurrency = timeout, max(1, int(concurrency))
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_start = self._quiet_until = 0.0
        self._lock = threading.Lock()
        self.stats = ClientStats()
        self.log = log

    def close(self) -> None:
        self._http.close()

    def redact(self, text: str) -> str:
        """`text` with the API key (should a server or library echo it, as is or escaped) replaced by ***. Redact
        before cutting a message short: a key across the cut would otherwise be half printed."""
        if not self._secret:
            return text
        for form in {self._secret, repr(self._secret)[1:-1], json.dumps(self._secret)[1:-1]}:
            text = text.replace(form, "***")
        return text

    def get(self, path: str, retries: int | None = None) -> dict:
        return self._request("GET", path, None, retries)

    def post(self, path: str, body: dict, retries: int | None = None) -> dict:
        return self._request("POST", path, body, retries)

    def _pace(self) -> None:
        """Wait for this request's slot under the requests-per-minute limit (request starts spaced evenly)."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.interval
        if start > now:
            sleep(start - now)

    def _request(self, method: str, path: str, body: dict | None, retries: int | None) -> dict:
        retries = self.max_retries if retries is None else retries
        where, waited = f"{self.endpoint}/{path.lstrip('/')}", 0.0
        for attempt in range(retries + 1):
            self._pace()
            with self._lock:
                self.stats.requests += 1
            try:
                status, raw, headers, phrase = self._exchange(method, path, body, where)
            except self._httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                reason, wait_s, detail = type(exc).__name__, None, self.redact(str(exc) or type(exc).__name__)
            except BadResponse:
                self._count_failure()
                raise
            else:
                if status < 400:
                    return self._json(raw, status, where)
                detail = self.redact(_message(raw, phrase))[:MESSAGE_CHARS]
                if status not in RETRY_STATUS and status < 500 or not_retryable(detail):
                    self._count_failure()
                    raise ServerError(f"{where}: HTTP {status}: {detail}", status, detail)
                reason, wait_s = str(status), retry_after(headers.get("retry-after"))
            delay = min(self._delay(attempt, wait_s), MAX_TOTAL_WAIT_S - waited)
            if attempt == retries or delay <= 0:
                self._count_failure()
                why = (f"failed {retries + 1} times in a row" if attempt == retries else
                       f"still failing after {attempt + 1} tries and {waited:.0f} s of waiting, the most one request waits")
                raise ServerError(f"{where} {why} (last: {reason}: {detail[:MESSAGE_CHARS]}); the run stopped. Scores "
                                  "that landed before this are kept in the result cache: fix the server and rerun to "
                                  "resume", None, detail, resumable=True)
            with self._lock:
                self.stats.retries += 1
                self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1
            self._show_wait(where, reason, wait_s, delay, attempt + 1, retries)
            sleep(delay)
            waited += delay
        raise AssertionError("unreachable")

    def _exchange(self, method: str, path: str, body: dict | None, where: str):
        """One HTTP exchange within the request timeout (connect, send, every read): status, body bytes (bounded),
        headers and reason phrase. An error body is cut to READ_CHARS; a larger answer is refused."""
        deadline = local.deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream(method, path.lstrip("/"), json=body) as response:
                ok = response.status_code < 400
                raw = read_body(response, MAX_RESPONSE_BYTES if ok else READ_CHARS, deadline, where, ok, self.timeout)
                return response.status_code, raw, response.headers, response.reason_phrase
        finally:
            local.deadline = None

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential back-off with full jitter; a server's Retry-After is a floor; MAX_WAIT_S caps both."""
        computed = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
        return min(max(computed, retry_after_s) if retry_after_s is not None else computed, MAX_WAIT_S)

    def _show_wait(self, where: str, reason: str, asked: float | None, delay: float, retry: int, retries: int) -> None:
        """One line for a long wait, or one the server asked to be longer (not one per thread: while one shows,
        the others are quiet)."""
        if delay < LOG_WAIT_S and (asked is None or asked <= delay):
            return
        with self._lock:
            now = time.monotonic()
            if now < self._quiet_until:
                return
            self._quiet_until = now + delay
        asked_text = f", Retry-After {asked:,.0f} s" if asked is not None else ""
        self.log(f"{where}: {reason}{asked_text}; waiting {delay:.0f} s before retry {retry} of {retries} (at most "
                 f"{MAX_WAIT_S:.0f} s a wait, {MAX_TOTAL_WAIT_S:.0f} s a request; Ctrl-C stops)")

    def _count_failure(self) -> None:
        with self._lock:
            self.stats.failed += 1

    def _json(self, raw: bytes, status: int, where: str) -> dict:
        data = parse_json(raw, where, f"HTTP {status}", self.redact)
        usage = data.get("usage") if isinstance(data, dict) else None
        if usage is None:
            return data
        if not isinstance(usage, dict):
            raise bad_field(where, "usage", usage, "not an object", self.redact)
        counts = [usage.get(name) for name in ("prompt_tokens", "completion_tokens")]
        for name, value in zip(("prompt_tokens", "completion_tokens"), counts):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                                      or value != int(value)):
                raise bad_field(where, f"usage.{name}", value, "not a whole number of tokens >= 0", self.redact)
        with self._lock:
            self.stats.prompt_tokens += int(counts[0] or 0)
            self.stats.completion_tokens += int(counts[1] or 0)
        return data

    def map(self, fn: Callable, items: Iterable, on_done: Callable[[int, object], None]) -> None:
        """`on_done(i, fn(item))` for every item, `concurrency` at a time, called on this thread in completion order.
        The first exception stops new work; what is in flight finishes (and is handed on) before it is raised. A
        Ctrl-C or SIGTERM (KeyboardInterrupt here) stops the workers at once: a wait or a read in flight gives up."""
        items = list(items)
        if not items:
            return
        stop = threading.Event()

        def run(item):
            local.stop = stop
            try:
                return fn(item)
            finally:
                local.stop = None

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="promptkit-http")
        pending: dict[Future, int] = {}
        queue = iter(enumerate(items))
        failure: BaseException | None = None
        try:
            for _ in range(self.concurrency):
                self._submit(pool, run, queue, pending)
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    try:
                        result = future.result()
                    except BaseException as exc:  # noqa: BLE001 - kept, raised once the in-flight requests land
                        failure = failure or exc
                        continue
                    on_done(i, result)
                    if failure is None:
                        self._submit(pool, run, queue, pending)
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)
            if interrupted:
                stop.set()
            for future in pending:
                future.cancel()
            pool.shutdown(wait=not interrupted, cancel_futures=True)
            if interrupted:  # the workers see the stop within POLL_S; no longer than that is spent on them
                wait(list(pending), timeout=2 * POLL_S + 0.5)
            raise
        pool.shutdown(wait=True)
        if failure is not None:
            raise failure

    @staticmethod
    def _submit(pool, fn, queue, pending) -> None:
        nxt = next(queue, None)
        if nxt is not None:
            pending[pool.submit(fn, nxt[1])] = nxt[0]


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number of seconds or an HTTP date), >= 0, not capped (MAX_WAIT_S caps
    the wait); None when absent or unreadable (garbage, NaN, a date out of range): the usual back-off then applies."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (ValueError, TypeError, OverflowError, IndexError, AttributeError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def not_retryable(message: str) -> bool:
    """A 5xx that says the request itself cannot work (a server that cannot return log-probabilities, a prompt
    longer than the context): retrying would only repeat it."""
    text = message.lower()
    return any(s in text for s in ("logprobs", "logits_all", "echo", "context window", "context length",
                                   "maximum context"))


def _message(raw: bytes, phrase: str) -> str:
    """The error message of an OpenAI-style error body ({"error": {"message": ...}} or {"detail": ...}), else the text;
    not yet cut to MESSAGE_CHARS (the caller redacts it first), only bounded by READ_CHARS."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw[:READ_CHARS].decode("utf-8", "replace").strip() or phrase
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:READ_CHARS]
    return str(data)[:READ_CHARS]
