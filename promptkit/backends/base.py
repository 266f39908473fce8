"""The backend contract: what the run needs from any model (log-likelihoods, generation, a fingerprint,
a description, optional capabilities), the result types, and model specs → backends.

Adding a backend is one module with a `load(target, **options)` function (and, optionally, `check(target,
**options)`, which finds a bad spec without loading the model) plus one line in BACKENDS;
the run, the engine, search and synthesis only ever see this contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable, Protocol, runtime_checkable

from ..errors import ModelError


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of one continuation given its prompt."""

    logprob: float  # summed over the continuation's tokens, in nats
    n_tokens: int
    n_chars: int
    is_greedy: bool  # every continuation token is the model's argmax


@dataclass(frozen=True)
class Generation:
    """A generated text, cut before the first stop sequence."""

    text: str
    n_tokens: int  # tokens generated (up to the stop sequence or the end-of-sequence token)


# (prompt, stop sequences, max new tokens, temperature, seed): temperature 0 is greedy
GenerationSpec = tuple


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first stop sequence that comes after its first non-space character."""
    lead = len(text) - len(text.lstrip())
    cuts = [i for i in (text.find(s, lead) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


@runtime_checkable
class Backend(Protocol):
    """A model the run can score and generate with.

    Required: `name` (what the user asked for), `fingerprint` (identity of the weights, dtype and
    tokenizer: the result cache is keyed by it, so it must change whenever the answers could),
    `forward_tokens` (a running count of the tokens the model has processed), `loglikelihood`,
    `generate` and `describe`. Both compute methods return results in input order and hand each
    finished batch to the callback as (indices, results), so the engine can commit it at once.

    Optional capabilities, looked up with `getattr`: `count_tokens(texts) -> list[int]` (exact
    token counts for batching, sharding and search costs; about 4 characters a token without it),
    `format_chat(messages) -> str` (the model's chat template over (role, text) turns, with the
    assistant's turn opened), `batch_tokens` (int), `backoffs` (out-of-memory halvings so far), `close()`
    (release the model; a run with several models calls it before loading the next).
    """

    name: str
    fingerprint: str
    forward_tokens: int

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None,
                      on_scores: Callable[[list[int], list[ContinuationScore]], None] | None = None
                      ) -> list[ContinuationScore]: ...

    def generate(self, specs: list[GenerationSpec], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]: ...

    def describe(self) -> dict: ...


# model-spec scheme -> module holding `load(target, **options) -> Backend`
BACKENDS = {
    "hf": "promptkit.backends.hf",
    "openai": "promptkit.backends.openai",
}
DEFAULT_SCHEME = "hf"  # a spec without a scheme: a built-in name, a hub id, a directory or a .gguf file


@dataclass(frozen=True)
class ModelSpec:
    """A --model value taken apart: which backend, and what that backend should load."""

    scheme: str
    target: str | None  # None: the backend's default model

    def __str__(self) -> str:
        return self.target or "default"


def parse_model_spec(spec: str | None) -> ModelSpec:
    """'hf:org/name', 'openai:NAME' (a model behind an OpenAI-compatible server), or a plain built-in name, hub id, directory or
    .gguf file (the Hugging Face backend)."""
    if spec is None or spec == "":
        return ModelSpec(DEFAULT_SCHEME, None)
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in BACKENDS:
        if not rest:
            raise ModelError(f"model spec '{spec}' names the {scheme} backend but no model; write {scheme}:MODEL")
        return ModelSpec(scheme, rest)
    if sep and scheme.isalpha() and len(scheme) > 1 and not rest.startswith(("/", "\\")) and "/" not in scheme:
        raise ModelError(f"unknown model backend '{scheme}:' in '{spec}'; known: "
                         f"{', '.join(s + ':' for s in BACKENDS)} (or a plain hub id, model directory or .gguf file)")
    return ModelSpec(DEFAULT_SCHEME, spec)


def is_backend(value) -> bool:
    """A loaded backend (as opposed to a spec to load)."""
    return isinstance(value, Backend)


def load_backend(spec: str | Backend | None, **options) -> Backend:
    """The backend a model spec names, loaded with `options` (dtype, device, batch_tokens, progress, log, ...;
    each backend takes the ones that apply to it). A loaded backend is returned as it is."""
    if is_backend(spec):
        return spec  # type: ignore[return-value]
    if spec is not None and not isinstance(spec, str):
        raise ModelError(f"model must be a spec string or a loaded backend, not {type(spec).__name__}")
    parsed = parse_model_spec(spec)
    return import_module(BACKENDS[parsed.scheme]).load(parsed.target, **options)


def check_backend(spec: str | None, **options) -> None:
    """Check a model spec without loading the model (files exist, the backend knows the name), where its backend
    module offers `check(target, **options)`; a problem raises ModelError before any scoring."""
    parsed = parse_model_spec(spec)
    check = getattr(import_module(BACKENDS[parsed.scheme]), "check", None)
    if check is not None:
        check(parsed.target, **options)
