"""HFBackend's scoring plan: pairs → token ids, grouped by prompt; prompt groups planned into packed trees (a shared
prefix once per tree), cached-prefix batches (a prompt whose continuations exceed a batch) or unshared padded rows;
each batch's vectors wait for one large vocabulary projection. The kernels are in hf_packing.py and hf_compute.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .forward import loglikelihood_seq2seq, split_group
from .packing import max_tree, packed_batches, plan_trees, tree_size
from ..base import ContinuationScore
from ..batching import budget_batches, collector
from .forward import _lcp, _Scored

if TYPE_CHECKING:
    from . import HFBackend


def loglikelihood(backend: HFBackend, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None,
                  on_scores: Callable[[list[int], list[ContinuationScore]], None] | None = None) -> list[ContinuationScore]:
    """HFBackend.loglikelihood (see there), with the model loaded."""
    if backend.seq2seq:
        return loglikelihood_seq2seq(backend, pairs, progress, on_scores, _scores_of(pairs))
    encoded = [backend.encode(p, c) for p, c in pairs]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(encoded):
        groups.setdefault(tuple(ctx), []).append(i)
    results: list[ContinuationScore | None] = [None] * len(pairs)
    finish = collector(results, on_scores, progress, _scores_of(pairs))

    def group_cost(g):  # the prompt, plus per continuation the keys it attends to (its prompt) and its tokens;
        # this keeps a batch to about one cluster of similar prompts, which keeps padding small
        return len(g[0]) * (1 + len(g[1])) + sum(len(encoded[j][1]) for j in g[1])

    def alone_size(g):  # tokens of a prompt group as a tree of its own in score_packed
        return tree_size([g[0]], [[encoded[j][1] for j in g[1]]], 0)

    packable, shared, single = [], [], []
    for ctx, members in groups.items():
        longest = max(len(encoded[j][1]) for j in members)
        if backend.pack_prompts and backend.share_prompts and len(ctx) + longest <= backend.pack_depth \
                and alone_size((ctx, members)) <= max_tree(backend):
            packable.append((ctx, members))
            continue
        fits = backend.share_prompts and 2 <= len(ctx) and len(ctx) + longest <= backend.share_limit
        if fits and group_cost((ctx, members)) > backend.batch_tokens:
            # too many continuations for one batch: chunks whose memory (the prompt's cache per packed row,
            # the continuation tokens) fits the budget, so that memory does not grow with their number
            chunks = split_group(backend, len(ctx), [len(encoded[j][1]) for j in members])
            shared += [(ctx, [members[i] for i in chunk]) for chunk in chunks]
        else:
            (shared if fits else single).append((ctx, members))

    # the vocabulary projection reads the whole output matrix, so rows wait here and are
    # projected a few hundred at a time rather than a few dozen per batch
    pending: list[tuple[list[int], _Scored]] = []
    pending_rows = [0]

    def project() -> None:
        if not pending:
            return
        pending_rows[0] = 0
        offsets = [0]
        for _, sc in pending:
            offsets.append(offsets[-1] + len(sc.vectors))
        token_lp, greedy = backend._project(torch.cat([sc.vectors for _, sc in pending]),
                                         torch.cat([sc.targets for _, sc in pending]), is_logits=pending[0][1].is_logits,
                                         rows=torch.cat([sc.target_rows() + o for (_, sc), o in zip(pending, offsets)]))
        lp, gr, base = token_lp.tolist(), greedy.tolist(), 0
        for indices, sc in pending:
            finish(indices, [(sum(lp[base + r] for r in rows), len(rows), all(gr[base + r] for r in rows))
                             for rows in sc.layout])
            base += len(sc.targets)
        pending.clear()

    def defer(indices: list[int], scored: _Scored) -> None:
        if pending and pending[0][1].is_logits != scored.is_logits:
            project()
        pending.append((indices, scored))
        pending_rows[0] += len(scored.vectors)
        if scored.is_logits or pending_rows[0] >= backend.project_rows:
            project()

    def tree(t):  # a planned tree → score_packed's (prompt, continuations) pairs
        return [(list(ctx), [encoded[j][1] for j in m]) for ctx, m in t]

    for batch in packed_batches(plan_trees(backend, packable, lambda g: [encoded[j][1] for j in g[1]]),
                                           lambda t: t.size, backend.batch_tokens):
        backend._run(batch, lambda b: backend._score_packed([tree(t.groups) for t in b]),
                  lambda b: [j for t in b for _, m in t.groups for j in m], defer)
    for batch in plan_shared(backend, shared, group_cost):
        backend._run(batch, lambda b: backend._score_shared([(list(ctx), [encoded[j][1] for j in m], c) for ctx, m, c in b]),
                  lambda b: [j for _, m, _ in b for j in m], defer)
    rest = sorted((j for _, members in single for j in members), key=lambda j: -sum(map(len, encoded[j])))
    for batch in budget_batches(rest, lambda j: min(sum(map(len, encoded[j])), backend.max_length), backend.batch_tokens, padded=True):
        backend._run(batch, lambda b: backend._score_batch([encoded[j] for j in b]), lambda b: list(b), defer)
    project()
    return results  # type: ignore[return-value]


def plan_shared(backend: HFBackend, groups: list, cost: Callable) -> list[list]:
    """Batches of prompt groups, longest first under the token budget. Each group is tagged with
    a cluster: neighbours in lexicographic order that share at least `min_shared_prefix` tokens,
    so that inside a batch every cluster's common prefix runs once."""
    ordered = sorted(groups, key=lambda g: g[0])  # lexicographic: shared prefixes become neighbours
    tagged, cluster = [], 0
    for i, (ctx, members) in enumerate(ordered):
        if i and _lcp(ordered[i - 1][0], ctx) < backend.min_shared_prefix:
            cluster += 1
        tagged.append((ctx, members, cluster))
    sizes: dict[int, int] = {}
    for _, _, c in tagged:
        sizes[c] = sizes.get(c, 0) + 1
    # clusters stay together (their prefix then runs once), longest prompt first inside each;
    # prompts that share nothing are pooled and sorted by length to keep padding small
    clustered = sorted((g for g in tagged if sizes[g[2]] > 1), key=lambda g: (g[2], -len(g[0])))
    alone = sorted((g for g in tagged if sizes[g[2]] == 1), key=lambda g: -len(g[0]))
    return list(budget_batches(clustered + alone, cost, backend.batch_tokens))


def _scores_of(pairs: list[tuple[str, str]]) -> Callable:
    """(log-prob, tokens, greedy) triples of a batch → ContinuationScores (characters from the pair's continuation)."""
    return lambda indices, out: [ContinuationScore(lp, n, len(pairs[j][1]), g) for j, (lp, n, g) in zip(indices, out)]

