"""Request planning and execution: deduplicate (prompt, continuation) pairs, look them up in the
result cache, score only what is missing (committing as batches finish), and map back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tqdm.auto import tqdm

from .backends.hf import ContinuationScore
from .cache import ResultCache, request_key
from .distributed import Ranks, shard_by_cost
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
          cache: ResultCache | None = None, stats: EngineStats | None = None,
          ranks: Ranks | None = None) -> list[list[ContinuationScore]]:
    """Scores for every continuation of every request; identical pairs are computed once, cached
    pairs not at all, and new scores reach the cache batch by batch.

    With several ranks (`accelerate launch`), rank 0 plans once (deduplication, cache lookup,
    token-balanced shards), every rank scores its shard and commits it, and every rank ends with
    all the scores; rank 0 also stores the other ranks' scores, for caches that are not shared."""
    stats = stats if stats is not None else EngineStats()
    ranks = ranks or Ranks()
    unique: dict[tuple[str, str], int] = {}
    for request in requests:
        for continuation in request.continuations:
            stats.continuations += 1
            unique.setdefault((request.prompt, continuation), len(unique))
    pairs = list(unique)
    stats.unique += len(pairs)
    keys = [request_key(p, c) for p, c in pairs]
    plan = None
    if ranks.is_main:
        found = cache.get_many(keys) if cache is not None else {}
        cached = {i: found[key] for i, key in enumerate(keys) if key in found}
        missing = [i for i in range(len(pairs)) if i not in cached]
        plan = (cached, _shards(pairs, missing, backend, ranks.world) if ranks.active else [missing])
    cached, shards = ranks.broadcast(plan)
    scores: list[ContinuationScore | None] = [None] * len(pairs)
    for i, row in cached.items():
        scores[i] = ContinuationScore(*row)
    stats.cache_hits += len(cached)
    stats.computed += sum(map(len, shards))
    mine = shards[ranks.rank]

    def commit(indices: list[int], new: list[ContinuationScore]) -> None:
        for j, s in zip(indices, new):
            scores[mine[j]] = s
        if cache is not None:
            cache.put_many([(keys[mine[j]], *_row(s)) for j, s in zip(indices, new)])

    before = backend.forward_tokens
    backoffs_before = getattr(backend, "backoffs", 0)
    if mine:
        with tqdm(total=len(mine), unit="seq", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
            backend.loglikelihood([pairs[i] for i in mine], progress=bar.update, on_scores=commit)
    done = (backend.forward_tokens - before, getattr(backend, "backoffs", 0) - backoffs_before)
    if ranks.active:
        gathered = ranks.gather(([_row(scores[i]) for i in mine], *done))
        for rank, (rows, _, _) in enumerate(gathered):
            for i, row in zip(shards[rank], rows):
                scores[i] = ContinuationScore(*row)
            if rank != ranks.rank and ranks.is_main and cache is not None:
                cache.put_many([(keys[i], *row) for i, row in zip(shards[rank], rows)])
        done = (sum(g[1] for g in gathered), sum(g[2] for g in gathered))
    stats.forward_tokens += done[0]
    stats.batch_backoffs += done[1]
    return [[scores[unique[(r.prompt, c)]] for c in r.continuations] for r in requests]  # type: ignore[misc]


def token_counts(backend: Backend, texts: list[str]) -> list[int]:
    """Tokens in each text by the backend's tokenizer (about 4 characters a token for a backend without one)."""
    count = getattr(backend, "count_tokens", None)
    return count(texts) if count else [len(t) // 4 + 1 for t in texts]


def _row(s: ContinuationScore) -> tuple:
    return (s.logprob, s.n_tokens, s.n_chars, s.is_greedy)


def _shards(pairs: list[tuple[str, str]], missing: list[int], backend: Backend, world: int) -> list[list[int]]:
    """The missing pairs split over `world` ranks with about equal token counts. A prompt's pairs stay
    on one rank (its choices share one prompt pass) and prompts go in text order, so prompts that
    share demonstrations or an instruction land on the same rank and keep sharing their prefix."""
    by_prompt: dict[str, list[int]] = {}
    for i in missing:
        by_prompt.setdefault(pairs[i][0], []).append(i)
    prompts = sorted(by_prompt)
    prompt_tokens = token_counts(backend, prompts)
    cont_tokens = dict(zip(missing, token_counts(backend, [pairs[i][1] for i in missing])))
    costs = [n + sum(cont_tokens[i] for i in by_prompt[p]) for p, n in zip(prompts, prompt_tokens)]
    return [[i for g in shard for i in by_prompt[prompts[g]]] for shard in shard_by_cost(costs, world)]
