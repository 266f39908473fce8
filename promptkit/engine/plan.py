"""Request planning and execution: deduplicate (prompt, continuation) pairs and generation requests,
look them up in the result cache, compute only what is missing (committing as batches finish), and
map back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tqdm.auto import tqdm

from ..backends.base import Backend, ContinuationScore, Generation
from .cache import ResultCache, generation_key, request_key
from .distributed import Ranks, shard_by_cost
from ..prompts.render import Request


@dataclass
class EngineStats:
    """What a scoring call asked for and what it actually computed."""

    continuations: int = 0  # (prompt, continuation) pairs over all requests
    unique: int = 0  # after deduplication
    cache_hits: int = 0
    computed: int = 0
    forward_tokens: int = 0
    batch_backoffs: int = 0
    generations: int = 0  # generation requests
    generations_unique: int = 0
    generation_cache_hits: int = 0
    generated_tokens: int = 0
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
    unique: dict[tuple[str, str], int] = {}
    for request in requests:
        for continuation in request.continuations:
            stats.continuations += 1
            unique.setdefault((request.prompt, continuation), len(unique))
    pairs = list(unique)
    stats.unique += len(pairs)

    def run(mine: list[int], commit) -> None:
        _load_before_the_bar(backend, mine)
        with tqdm(total=len(mine), unit="seq", desc="scoring", disable=not progress, dynamic_ncols=True) as bar:
            backend.loglikelihood([pairs[i] for i in mine], progress=bar.update, on_scores=commit)

    scores, hits, computed = _execute(
        [request_key(p, c) for p, c in pairs], "loglikelihood", run, _row, lambda row: ContinuationScore(*row),
        lambda missing, world: _shards(pairs, missing, backend, world), backend, cache, stats, ranks)
    stats.cache_hits += hits
    stats.computed += computed
    return [[scores[unique[(r.prompt, c)]] for c in r.continuations] for r in requests]


def _load_before_the_bar(backend, mine: list[int]) -> None:
    """A backend that loads its weights on first use (optional `load_weights`) loads them before the progress bar
    starts, so the bar never sits at 0% while a model loads; with nothing to score (all cached) nothing loads."""
    if mine and callable(getattr(backend, "load_weights", None)):
        backend.load_weights()


def generate(requests: list[Request], backend: Backend, progress: bool = True,
             cache: ResultCache | None = None, stats: EngineStats | None = None,
             ranks: Ranks | None = None) -> list[Generation]:
    """Generations for generation requests, planned like `score`: identical (prompt, stop sequences,
    token limit, temperature, seed) requests run once, cached ones not at all, new ones are cached per batch,
    and under `accelerate launch` the missing ones are split over the ranks by token count."""
    stats = stats if stats is not None else EngineStats()
    unique: dict[tuple, int] = {}
    spec_of = lambda r: (r.prompt, tuple(r.stop), r.max_new_tokens, r.temperature, r.seed)
    for r in requests:
        unique.setdefault(spec_of(r), len(unique))
    specs = list(unique)
    stats.generations += len(requests)
    stats.generations_unique += len(specs)

    def run(mine: list[int], commit) -> None:
        _load_before_the_bar(backend, mine)
        with tqdm(total=len(mine), unit="seq", desc="generating", disable=not progress, dynamic_ncols=True) as bar:
            backend.generate([specs[i] for i in mine], progress=bar.update, on_results=commit)

    def shard(missing: list[int], world: int) -> list[list[int]]:
        costs = [n + specs[i][2] for i, n in zip(missing, token_counts(backend, [specs[i][0] for i in missing]))]
        return [[missing[j] for j in part] for part in shard_by_cost(costs, world)]

    texts, hits, _ = _execute([generation_key(*spec) for spec in specs], "generation", run,
                              lambda g: (g.text, g.n_tokens), lambda row: Generation(*row), shard, backend, cache, stats, ranks)
    stats.generation_cache_hits += hits
    stats.generated_tokens += sum(texts[i].n_tokens for i in range(len(specs)) if texts[i] is not None)
    return [texts[unique[spec_of(r)]] for r in requests]


def _execute(keys: list[str], table: str, run: Callable, to_row: Callable, from_row: Callable, shard: Callable,
             backend: Backend, cache: ResultCache | None, stats: EngineStats, ranks: Ranks | None):
    """Shared plan for scoring and generation: rank 0 looks every key up in the cache and shards what is
    missing; each rank runs its shard, committing results to the cache as they come; the ranks then
    exchange their results. Returns (results by key, cache hits, computed)."""
    ranks = ranks or Ranks()
    plan = None
    if ranks.is_main:
        found = cache.get_many(keys, table) if cache is not None else {}
        cached = {i: found[key] for i, key in enumerate(keys) if key in found}
        missing = [i for i in range(len(keys)) if i not in cached]
        plan = (cached, shard(missing, ranks.world) if ranks.active else [missing])
    cached, shards = ranks.broadcast(plan)
    results: list = [None] * len(keys)
    for i, row in cached.items():
        results[i] = from_row(row)
    mine = shards[ranks.rank]

    def commit(indices: list[int], new: list) -> None:
        for j, s in zip(indices, new):
            results[mine[j]] = s
        if cache is not None:
            cache.put_many([(keys[mine[j]], *to_row(s)) for j, s in zip(indices, new)], table)

    before = backend.forward_tokens
    backoffs_before = getattr(backend, "backoffs", 0)
    if mine:
        run(mine, commit)
    done = (backend.forward_tokens - before, getattr(backend, "backoffs", 0) - backoffs_before)
    if ranks.active:
        gathered = ranks.gather(([to_row(results[i]) for i in mine], *done))
        for rank, (rows, _, _) in enumerate(gathered):
            for i, row in zip(shards[rank], rows):
                results[i] = from_row(row)
            if rank != ranks.rank and ranks.is_main and cache is not None:
                cache.put_many([(keys[i], *row) for i, row in zip(shards[rank], rows)], table)
        done = (sum(g[1] for g in gathered), sum(g[2] for g in gathered))
    stats.forward_tokens += done[0]
    stats.batch_backoffs += done[1]
    return results, len(cached), sum(map(len, shards))


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
