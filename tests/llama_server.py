"""Test helpers: a real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`) on 127.0.0.1, started on a
free port, waited for with a bounded timeout and stopped by its PID; and a fault-injecting HTTP proxy in front of it
(a threaded HTTP server that forwards to the llama server and answers some requests with 429 or 500 instead)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str  # base URL, ending in /v1
    port: int
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_server(gguf: Path, alias: str, log: Path, port: int | None = None, api_key: str | None = None,
                 logits_all: bool = True, n_ctx: int = 1024) -> Server:
    """`python -m llama_cpp.server` serving `gguf` as model `alias`; returns once GET /v1/models answers."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
           "--logits_all", str(logits_all).lower(), "--n_ctx", str(n_ctx), "--n_threads", "2", "--verbose", "false",
           "--host", "127.0.0.1", "--port", str(port)] + (["--api_key", api_key] if api_key else [])
    out = open(log, "ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    server = Server(f"http://127.0.0.1:{port}/v1", port, proc, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/models", timeout=2.0).status_code in (200, 401):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"llama server not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_text()[-3000:]}")


def stop_server(server: Server, sig: int = signal.SIGTERM) -> None:
    """Stop the server by its PID (its own process group, started above), escalating to SIGKILL after 15 s."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, sig)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=15)


@contextmanager
def llama_server(gguf: Path, alias: str, log: Path, **kw):
    server = start_server(gguf, alias, log, **kw)
    try:
        yield server
    finally:
        stop_server(server)


@dataclass
class FaultPlan:
    """Which POST requests fail: the n-th POST (from 1) gets 429 with Retry-After when n % every_429 == 0, else 500
    when n % every_500 == 0; every other request is forwarded, and so is the retry of a request that just failed
    (with several requests in flight a fixed schedule could otherwise hit the same request every time)."""

    every_429: int = 3
    every_500: int = 5
    retry_after: str = "1"
    posts: int = 0
    injected: dict = field(default_factory=lambda: {"429": 0, "500": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: set = field(default_factory=set)

    def next(self, body: bytes) -> int | None:
        with self.lock:
            self.posts += 1
            n = self.posts
            if body in self.failed:
                self.failed.discard(body)
                return None
            status = 429 if n % self.every_429 == 0 else 500 if n % self.every_500 == 0 else None
            if status:
                self.injected[str(status)] += 1
                self.failed.add(body)
            return status


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan):
    """A proxy on 127.0.0.1 that forwards to `upstream` (a base URL ending in /v1) and injects `plan`'s faults;
    yields its own base URL."""
    origin = upstream.rsplit("/v1", 1)[0]
    client = httpx.Client(timeout=300.0)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if method == "POST":
                status = plan.next(body)
                if status == 429:
                    return self._send(429, b'{"error": {"message": "rate limited (injected)"}}',
                                      {"Content-Type": "application/json", "Retry-After": plan.retry_after})
                if status == 500:
                    return self._send(500, b'{"error": {"message": "internal error (injected)"}}',
                                      {"Content-Type": "application/json"})
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
            r = client.request(method, origin + self.path, content=body, headers=headers)
            self._send(r.status_code, r.content, {"Content-Type": r.headers.get("content-type", "application/json")})

        def do_GET(self):
            self._forward("GET")

        def do_POST(self):
            self._forward("POST")

    try:
        with serve(Handler) as url:
            yield url
    finally:
        client.close()


@contextmanager
def serve(handler):
    """A threaded HTTP server on 127.0.0.1 with `handler`, yielding its /v1 base URL; shut down and joined on exit."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
