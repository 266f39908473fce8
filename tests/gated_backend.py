"""A test backend that holds a run at a known point, so a test can interrupt it there without racing it.

`gated:MODEL` loads MODEL with the Hugging Face backend (`promptkit.backends.hf.load`) and wraps it.
When the environment names a gate folder (PROMPTKIT_TEST_GATE), the first batch of results the wrapped
backend hands to the engine's callback (`on_scores` / `on_results`) is passed on first — the engine commits
it to the result cache before the callback returns — and then the wrapper creates GATE/ready and waits, in
short sleeps, for GATE/go (at most PROMPTKIT_TEST_GATE_TIMEOUT seconds, 120 by default; then it carries on).
So from the moment GATE/ready exists until GATE/go does, the run is still running and its first batch is in
the cache. With GATE/go already there, or no gate folder, it is the plain backend.

Everything else is the wrapped backend's: name, fingerprint (so the cache serves the same rows to
`gated:MODEL` and to plain `MODEL`), forward_tokens, describe, and every optional capability
(count_tokens, format_chat, batch_tokens, backoffs).

The `promptkit` command, with this scheme registered:

    PROMPTKIT_TEST_GATE=DIR python tests/gated_backend.py run --model gated:MODEL ...
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

SCHEME = "gated"
GATE = "PROMPTKIT_TEST_GATE"
GATE_TIMEOUT = "PROMPTKIT_TEST_GATE_TIMEOUT"


class GatedBackend:
    """`inner`, pausing after its first batch of results until the gate opens (see the module's docstring)."""

    def __init__(self, inner, gate: Path | None, timeout_s: float = 120.0):
        self._inner = inner
        self._gate = gate
        self._timeout_s = timeout_s
        self._held = gate is None  # the gate holds the run once, at the first batch

    # the required attributes, as properties so that a static lookup (Protocol isinstance checks) finds them
    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def fingerprint(self) -> str:
        return self._inner.fingerprint

    @property
    def forward_tokens(self) -> int:
        return self._inner.forward_tokens

    def describe(self) -> dict:
        return self._inner.describe()

    def loglikelihood(self, pairs, progress=None, on_scores=None):
        return self._inner.loglikelihood(pairs, progress=progress, on_scores=self._gated(on_scores))

    def generate(self, specs, progress=None, on_results=None):
        return self._inner.generate(specs, progress=progress, on_results=self._gated(on_results))

    def __getattr__(self, attr: str):  # optional capabilities and anything else: the wrapped backend's
        if attr.startswith("__") or attr == "_inner":
            raise AttributeError(attr)
        return getattr(self._inner, attr)

    def _gated(self, callback: Callable | None) -> Callable:
        def handed_on(indices: list[int], results: list) -> None:
            if callback is not None:
                callback(indices, results)  # the engine's commit: these rows are in the cache once it returns
            self._hold()
        return handed_on

    def _hold(self) -> None:
        if self._held:
            return
        self._held = True
        (self._gate / "ready").touch()
        deadline = time.monotonic() + self._timeout_s
        while not (self._gate / "go").exists():
            if time.monotonic() >= deadline:
                print(f"gated backend: no {self._gate / 'go'} after {self._timeout_s:g} s; carrying on", file=sys.stderr)
                return
            time.sleep(0.05)


def load(target: str | None, **options) -> GatedBackend:
    """`load(target, **options)` as `promptkit.backends.base.load_backend` calls it: the Hugging Face backend
    for `target`, behind the gate that PROMPTKIT_TEST_GATE names (none: no gate)."""
    from promptkit.backends import hf

    gate = os.environ.get(GATE)
    return GatedBackend(hf.load(target, **options), Path(gate) if gate else None,
                        float(os.environ.get(GATE_TIMEOUT, "120")))


def main(argv: list[str]) -> int:
    """`promptkit ARGV` with the gated scheme registered."""
    from promptkit.backends.base import BACKENDS
    from promptkit.cli import main as promptkit_main

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    BACKENDS[SCHEME] = "gated_backend"  # this file, imported by name from its folder
    return promptkit_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
