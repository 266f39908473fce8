"""Request planning and execution: deduplicate (prompt, continuation) pairs, look them up in the
result cache, score only what is missing (committing as batches finish), and map back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tqdm.auto import tqdm

from .backends.hf import ContinuationScore
from .cache import ResultCache, request_key
from .render import Request


class Backend(Protocol):
    forward_tokens: int

    def loglikelihood(self, pairs, progress=None, on_scores=None) -> list[ContinuationScore]: ...


@dataclass
class EngineStats:
    """What a scoring call asked for and what it actually computed."""

    continuations: int = 0  # (prompt, continuation) pairs over all requests
    unique: int = 0  # after deduplication
    cache_hits: int = 0
    computed: int = 0
    forward_tokens: int = 0
    batch_backoffs: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "notes"}


def score(requests: list[Request], backend: Backend, progress: bool = True,
          cache: ResultCache | None = None, stats: EngineStats | None = None) -> list[list[ContinuationScore]]:
    """Scores for every continuation of every request; identical pairs are computed once, cached
    pairs not at all, and new scores reach the cache batch by batch."""
    stats = stats if stats is not None else EngineStats()
    unique: dict[tuple[str, str], int] = {}
    for request in requests:
        for continuation in request.continuations:
            stats.continuations += 1
            unique.setdefault((request.prompt, continuation), len(unique))
    pairs = list(unique)
    stats.unique = len(pairs)
    scores: list[ContinuationScore | None] = [None] * len(pairs)
    keys = [request_key(p, c) for p, c in pairs]
    if cache is not None:
        found = cache.get_many(keys)
        for i, key in enumerate(keys):
            if key in found:
                lp, n, chars, greedy = found[key]
                scores[i] = ContinuationScore(lp, n, chars, greedy)
        stats.cache_hits = sum(s is not None for s in scores)
    missing = [i for i, s in enumerate(scores) if s is None]
    stats.computed = len(missing)

    def commit(indices: list[int], new: list[ContinuationScore]) -> None:
        for j, s in zip(indices, new):
            scores[missing[j]] = s
        if cache is not None:
            cache.put_many([(keys[missing[j]], s.logprob, s.n_tokens, s.n_chars, s.is_greedy) for j, s in zip(indices, new)])

    before = backend.forward_tokens
    backoffs_before = getattr(backend, "backoffs", 0)
    if missing:
        with tqdm(total=len(missing), unit="seq", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
            backend.loglikelihood([pairs[i] for i in missing], progress=bar.update, on_scores=commit)
    stats.forward_tokens += backend.forward_tokens - before
    stats.batch_backoffs += getattr(backend, "backoffs", 0) - backoffs_before
    return [[scores[unique[(r.prompt, c)]] for c in r.continuations] for r in requests]  # type: ignore[misc]
