"""Request planning and execution: deduplicate (prompt, continuation) pairs, score them once, map back."""

from __future__ import annotations

from typing import Protocol

from tqdm.auto import tqdm

from .backends.hf import ContinuationScore
from .render import Request


class Backend(Protocol):
    def loglikelihood(self, pairs, progress=None) -> list[ContinuationScore]: ...


def score(requests: list[Request], backend: Backend, progress: bool = True) -> list[list[ContinuationScore]]:
    """Scores for every continuation of every request; identical pairs are computed once."""
    unique: dict[tuple[str, str], int] = {}
    for request in requests:
        for continuation in request.continuations:
            unique.setdefault((request.prompt, continuation), len(unique))
    pairs = list(unique)
    with tqdm(total=len(pairs), unit="seq", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
        scores = backend.loglikelihood(pairs, progress=bar.update)
    return [[scores[unique[(r.prompt, c)]] for c in r.continuations] for r in requests]
