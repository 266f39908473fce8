"""A well-behaved JSON client for model servers: httpx underneath, bounded concurrency, retries with exponential
back-off and jitter on 429/5xx/connection errors (honouring Retry-After), a per-request timeout, an optional
requests-per-minute limit, and counts of requests, retries and the tokens the server reports.

The API key lives only in the Authorization header of the httpx client; every message this module writes is
passed through `redact`, so the key cannot leak into an error, a log or a run directory."""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from ..errors import ModelError

RETRY_STATUS = {408, 425, 429}  # and every 5xx
MAX_RETRY_AFTER_S = 120.0  # a Retry-After longer than this is capped (the run would look hung)
MESSAGE_CHARS = 400  # how much of a server's error message is quoted
READ_CHARS = 1 << 16  # how much of it is read and redacted before the cut


class ServerError(ModelError):
    """A request the server answered with an error that retrying will not fix (4xx), or one that kept failing."""

    def __init__(self, message: str, status: int | None = None, body: str = "", resumable: bool = False):
        super().__init__(message)
        self.status, self.body = status, body
        self.resumable = resumable  # a server that kept failing: what was scored before is kept, a rerun resumes


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


class Client:
    """JSON over HTTP to one base URL. `post`/`get` retry what is worth retrying; `map` runs a function over items
    on `concurrency` threads and hands results back in completion order, stopping at the first failure."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, concurrency: int = 4,
                 requests_per_minute: float | None = None, max_retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, log: Callable[[str], None] = print):
        import httpx  # imported here: `promptkit --help` and HF-only runs never load it

        self._httpx = httpx
        self.endpoint = public_url(base_url)
        self._secret = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout,
                                  limits=httpx.Limits(max_connections=max(1, concurrency)))
        self.timeout, self.concurrency = timeout, max(1, int(concurrency))
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_start = 0.0
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
            time.sleep(start - now)

    def _request(self, method: str, path: str, body: dict | None, retries: int | None) -> dict:
        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            self._pace()
            with self._lock:
                self.stats.requests += 1
            try:
                response = self._http.request(method, path.lstrip("/"), json=body)
            except self._httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                reason, wait_s, detail = type(exc).__name__, None, self.redact(str(exc) or type(exc).__name__)
            else:
                if response.status_code < 400:
                    return self._json(response, path)
                detail = self.redact(_message(response))[:MESSAGE_CHARS]
                if response.status_code not in RETRY_STATUS and response.status_code < 500 or not_retryable(detail):
                    self._count_failure()
                    raise ServerError(f"{self.endpoint}/{path.lstrip('/')}: HTTP {response.status_code}: {detail}",
                                      response.status_code, detail)
                reason, wait_s = str(response.status_code), retry_after(response.headers.get("retry-after"))
            if attempt == retries:
                self._count_failure()
                raise ServerError(f"{self.endpoint}/{path.lstrip('/')} failed {retries + 1} times in a row (last: "
                                  f"{reason}: {detail[:MESSAGE_CHARS]}); the run stopped. Scores that landed before "
                                  "this are kept in the result cache: fix the server and rerun to resume", None, detail,
                                  resumable=True)
            delay = self._delay(attempt, wait_s)
            with self._lock:
                self.stats.retries += 1
                self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential back-off with full jitter; a server's Retry-After is a floor."""
        computed = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
        return max(computed, retry_after_s) if retry_after_s is not None else computed

    def _count_failure(self) -> None:
        with self._lock:
            self.stats.failed += 1

    def _json(self, response, path: str) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise ServerError(f"{self.endpoint}/{path.lstrip('/')}: the server answered HTTP {response.status_code} "
                              f"with something that is not JSON: {self.redact(response.text[:READ_CHARS])[:200]!r}") from None
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            with self._lock:
                self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        return data

    def map(self, fn: Callable, items: Iterable, on_done: Callable[[int, object], None]) -> None:
        """`on_done(i, fn(item))` for every item, `concurrency` at a time, called on this thread in completion order.
        The first exception stops new work; what is in flight finishes (and is handed on) before it is raised."""
        items = list(items)
        if not items:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="promptkit-http")
        pending: dict[Future, int] = {}
        queue = iter(enumerate(items))
        failure: BaseException | None = None
        try:
            for _ in range(self.concurrency):
                self._submit(pool, fn, queue, pending)
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
                        self._submit(pool, fn, queue, pending)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            raise failure

    @staticmethod
    def _submit(pool, fn, queue, pending) -> None:
        nxt = next(queue, None)
        if nxt is not None:
            pending[pool.submit(fn, nxt[1])] = nxt[0]


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number of seconds or an HTTP date), capped; None when absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def not_retryable(message: str) -> bool:
    """A 5xx that says the request itself cannot work (a server that cannot return log-probabilities, a prompt
    longer than the context): retrying would only repeat it."""
    text = message.lower()
    return any(s in text for s in ("logprobs", "logits_all", "echo", "context window", "context length",
                                   "maximum context"))


def _message(response) -> str:
    """The error message of an OpenAI-style error body ({"error": {"message": ...}} or {"detail": ...}), else the text;
    not yet cut to MESSAGE_CHARS (the caller redacts it first), only bounded by READ_CHARS."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:READ_CHARS].strip() or response.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:READ_CHARS]
    return str(data)[:READ_CHARS]
