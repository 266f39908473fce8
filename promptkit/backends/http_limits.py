"""What bounds one HTTP exchange with a model server, however the server behaves: a deadline for the whole request
(connect, send, every read: httpx has none, so a guard sits under its connection pool), a stop that ends a wait or a
blocked read within POLL_S (a Ctrl-C or SIGTERM while worker threads wait), a body bounded in bytes received and in
bytes inflated (gzip and deflate undone here, a bounded chunk at a time), and JSON as the standard allows it. The
errors a server's answer can raise live here too; http_client.py re-exports them."""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from typing import Callable

from ..errors import ModelError

MAX_RESPONSE_BYTES = 8 << 20  # a response body, as received and as inflated: larger is refused (answers are KBs)
READ_CHARS = 1 << 16  # how much of an error body is read (and redacted before it is quoted)
POLL_S = 0.25  # a blocked read looks this often at the request's deadline and at a stop (Ctrl-C, SIGTERM)
local = threading.local()  # per thread: `deadline` of the request in flight, `stop` of the map it runs in


class ServerError(ModelError):
    """A request the server answered with an error that retrying will not fix (4xx), or one that kept failing."""

    def __init__(self, message: str, status: int | None = None, body: str = "", resumable: bool = False):
        super().__init__(message)
        self.status, self.body = status, body
        self.resumable = resumable  # a server that kept failing: what was scored before is kept, a rerun resumes


class BadResponse(ServerError):
    """An answer that cannot be used: too large, not JSON, or a field of the wrong type or an impossible value."""


class Stopped(ModelError):
    """A request given up because the run is stopping (Ctrl-C, SIGTERM)."""


def show(value, redact: Callable[[str], str] = str) -> str:
    """A value from a server's answer, as a message quotes it: its repr, redacted, cut to 80 characters."""
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def bad_field(where: str, name: str, value, expected: str, redact: Callable[[str], str] = str) -> BadResponse:
    """The error for a field of a server's answer that cannot be used (the endpoint and the field named)."""
    return BadResponse(f"{where}: the server's answer has {name} = {show(value, redact)}: {expected}. promptkit cannot "
                       "use this answer (a faulty or not quite OpenAI-compatible server); nothing was scored from it")


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _constant(name: str):
    raise _NotFinite(name)


def _non_finite_at(raw: bytes) -> str:
    """Where the first NaN or Infinity sits in `raw` (e.g. choices[0].logprobs.token_logprobs[3]), '' if unknown."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    stack = [("", data)]
    while stack:  # depth first, in document order, without recursion
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path or "the answer"
        items = (node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ())
        stack.extend(reversed([(f"{path}.{k}" if isinstance(k, str) and path else k if isinstance(k, str)
                                else f"{path}[{k}]", v) for k, v in items]))
    return ""


def parse_json(raw: bytes, where: str, what: str = "", redact: Callable[[str], str] = str):
    """JSON as the standard allows it (no NaN or Infinity, no number overflowing to infinity), nested no deeper than
    the interpreter's recursion limit; anything else is one BadResponse naming the endpoint."""
    try:
        return json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except _NotFinite as exc:
        at = redact(_non_finite_at(raw))[:200]
        raise BadResponse(f"{where}: the server's answer has {at + ' = ' if at else 'the number '}"
                          f"{show(str(exc))[1:-1]} (NaN or Infinity), which JSON does not allow and promptkit cannot "
                          "score with") from None
    except RecursionError:
        raise BadResponse(f"{where}: the server's answer is JSON nested too deeply to read") from None
    except ValueError:
        raise BadResponse(f"{where}: the server answered {what} with something that is not JSON: "
                          f"{redact(raw[:READ_CHARS].decode('utf-8', 'replace'))[:200]!r}".replace("  ", " ")) from None


def sleep(seconds: float) -> None:
    """Sleep, or give up at the map's stop (a worker thread); on the main thread a signal's handler interrupts it."""
    stop = getattr(local, "stop", None)
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise Stopped("stopped while waiting to retry a request (the run is ending)")


class _Inflater:
    """Content-Encoding gzip or deflate undone a chunk at a time, never producing more than asked for (a few KB of
    gzip can inflate to gigabytes); identity passes through; any other encoding is refused."""

    def __init__(self, encoding: str | None, where: str):
        self.encoding = (encoding or "identity").strip().lower()
        if self.encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise BadResponse(f"{where}: the server's answer is in Content-Encoding {show(self.encoding)}, which "
                              "promptkit does not read (it asks for gzip or deflate)")
        self._z = (None if self.encoding == "identity" else
                   zlib.decompressobj(zlib.MAX_WBITS | 16 if "gzip" in self.encoding else zlib.MAX_WBITS))
        self._first, self.where = True, where

    def feed(self, data: bytes, room: int) -> bytes:
        """At most `room` bytes of what `data` inflates to (more than `room` only ever means: too large)."""
        if self._z is None:
            return data
        try:
            try:
                return self._z.decompress(data, max(1, room))
            except zlib.error:
                if not (self._first and self.encoding == "deflate"):
                    raise
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without the zlib header, as some servers send
                return self._z.decompress(data, max(1, room))
            finally:
                self._first = False
        except zlib.error as exc:
            raise BadResponse(f"{self.where}: the server's {self.encoding} answer does not inflate ({exc})") from None

    def flush(self) -> bytes:
        return self._z.flush() if self._z is not None else b""


def read_body(response, limit: int, deadline: float, where: str, strict: bool, timeout: float) -> bytes:
    """The body, read as it streams and inflated here: past `limit` bytes received or inflated it is refused
    (`strict`, an answer) or cut (an error message); past the deadline it times out; at a stop it gives up."""
    import httpx

    declared = response.headers.get("content-length", "").strip()
    if strict and declared.isdigit() and int(declared) > limit:
        raise BadResponse(_too_large(where, f"its Content-Length is {int(declared):,} bytes"))
    inflate = _Inflater(response.headers.get("content-encoding"), where)
    out, received = bytearray(), 0
    for chunk in response.iter_raw():
        received += len(chunk)
        check_stop()
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"no complete answer within the request timeout ({timeout:g} s)")
        out += inflate.feed(chunk, limit + 1 - len(out))
        if len(out) > limit or received > limit:
            if strict:
                raise BadResponse(_too_large(where, f"more than {limit:,} bytes "
                                                    f"{'inflated' if len(out) > limit else 'received'}"))
            return bytes(out[:limit])
    out += inflate.flush()
    if len(out) > limit:
        if strict:
            raise BadResponse(_too_large(where, f"more than {limit:,} bytes inflated"))
        return bytes(out[:limit])
    return bytes(out)


def _too_large(where: str, detail: str) -> str:
    return (f"{where}: the server's answer is larger than {MAX_RESPONSE_BYTES >> 20} MiB ({detail}), the most promptkit "
            "reads from one response (an answer is a few KB); it stopped reading. Does the server ignore max_tokens, "
            "or is --base-url pointing at something else?")


def check_stop() -> None:
    stop = getattr(local, "stop", None)
    if stop is not None and stop.is_set():
        raise Stopped("stopped while reading an answer (the run is ending)")


def _budget(timeout: float | None, error) -> float | None:
    """`timeout` cut to what is left of this thread's request deadline; `error` once none is left."""
    deadline = getattr(local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request took longer than its timeout (--request-timeout), all reads together")
    return left if timeout is None else min(timeout, left)


class _GuardedStream:
    """A network stream whose every read, write and TLS handshake ends by the request's deadline, and whose reads
    wake every POLL_S to see a stop (a worker of an interrupted map) instead of blocking until the server speaks."""

    def __init__(self, inner):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        import httpcore

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            check_stop()
            left = _budget(None if end is None else end - time.monotonic(), httpcore.ReadTimeout)
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout("timed out")
            try:
                return self._inner.read(max_bytes, POLL_S if left is None else min(left, POLL_S))
            except httpcore.ReadTimeout:
                if end is not None and time.monotonic() >= end:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        import httpcore

        self._inner.write(buffer, _budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        import httpcore

        return _GuardedStream(self._inner.start_tls(ssl_context, server_hostname, _budget(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class _GuardedBackend:
    """httpcore's network backend with every connection's stream guarded (see _GuardedStream)."""

    def __init__(self, inner):
        self._inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        import httpcore

        return _GuardedStream(self._inner.connect_tcp(host, port, _budget(timeout, httpcore.ConnectTimeout),
                                                      local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        import httpcore

        return _GuardedStream(self._inner.connect_unix_socket(path, _budget(timeout, httpcore.ConnectTimeout),
                                                              socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guard(http) -> bool:
    """Put _GuardedBackend under every connection pool of the httpx client (its own and any proxy's). httpx has no
    whole-request timeout; without this (another httpx), the body loop still checks the deadline between chunks."""
    transports = [getattr(http, "_transport", None), *(getattr(http, "_mounts", None) or {}).values()]
    pools = [getattr(t, "_pool", None) for t in transports if t is not None]
    guarded = [p for p in pools if p is not None and hasattr(p, "_network_backend")]
    for pool in guarded:
        pool._network_backend = _GuardedBackend(pool._network_backend)
    return bool(guarded)
