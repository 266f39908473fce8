"""HFBackend's scoring plan: pairs → token ids, grouped by prompt; prompt groups planned into packed trees (a shared
prefix once per tree), cached-prefix batches (a prompt whose continuations exceed a batch) or unshared padded rows;
each batch's vectors wait for one large vocabulary projection. The kernels are packing.py's, forward.py's and
project.py's, handed over by the backend as Kernels; the plan reads the settings from the Context and the budget
from the Budget each time it cuts batches (a failed batch may have halved it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ..base import ContinuationScore
from ..batching import budget_batches, collector
from .forward import Scored, lcp, scores_of, split_group
from .packing import max_tree, packed_batches, plan_trees, tree_size

if TYPE_CHECKING:
    from .context import Budget, Context


@dataclass(frozen=True)
class Kernels:
    """What one scoring call runs, as the backend hands it over (each bound to that backend's context and counters,
    and replaceable on the backend: a test wraps one to watch or fail it)."""

    packed: Callable[[list], Scored]  # trees of (prompt, continuations) → packing.score_packed
    shared: Callable[[list], Scored]  # (prompt, continuations, cluster) items → forward.score_shared
    batch: Callable[[list], Scored]  # (prompt, continuation) items → forward.score_batch
    project: Callable  # (vectors, targets, is_logits=, rows=) → (log-probs, greedy): project.project
    run: Callable  # (batch, compute, indices, finish): compute one batch, halved on out-of-memory


def loglikelihood(ctx: Context, budget: Budget, kernels: Kernels, encode: Callable, pairs: list[tuple[str, str]],
                  progress: Callable[[int], None] | None = None,
                  on_scores: Callable[[list[int], list[ContinuationScore]], None] | None = None) -> list[ContinuationScore]:
    """HFBackend.loglikelihood (see there) for a decoder-only model, loaded; `encode` makes (prompt ids,
    continuation ids) of a pair."""
    encoded = [encode(p, c) for p, c in pairs]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, _) in enumerate(encoded):
        groups.setdefault(tuple(prompt), []).append(i)
    results: list[ContinuationScore | None] = [None] * len(pairs)
    finish = collector(results, on_scores, progress, scores_of(pairs))

    def group_cost(g):  # the prompt, plus per continuation the keys it attends to (its prompt) and its tokens;
        # this keeps a batch to about one cluster of similar prompts, which keeps padding small
        return len(g[0]) * (1 + len(g[1])) + sum(len(encoded[j][1]) for j in g[1])

    def alone_size(g):  # tokens of a prompt group as a tree of its own in score_packed
        return tree_size([g[0]], [[encoded[j][1] for j in g[1]]], 0)

    packable, shared, single = [], [], []
    for prompt, members in groups.items():
        longest = max(len(encoded[j][1]) for j in members)
        if ctx.pack_prompts and ctx.share_prompts and len(prompt) + longest <= ctx.pack_depth \
                and alone_size((prompt, members)) <= max_tree(budget):
            packable.append((prompt, members))
            continue
        fits = ctx.share_prompts and 2 <= len(prompt) and len(prompt) + longest <= ctx.share_limit
        if fits and group_cost((prompt, members)) > budget.batch_tokens:
            # too many continuations for one batch: chunks whose memory (the prompt's cache per packed row,
            # the continuation tokens) fits the budget, so that memory does not grow with their number
            chunks = split_group(budget, len(prompt), [len(encoded[j][1]) for j in members])
            shared += [(prompt, [members[i] for i in chunk]) for chunk in chunks]
        else:
            (shared if fits else single).append((prompt, members))

    # the vocabulary projection reads the whole output matrix, so rows wait here and are
    # projected a few hundred at a time rather than a few dozen per batch
    pending: list[tuple[list[int], Scored]] = []
    pending_rows = [0]

    def project() -> None:
        if not pending:
            return
        pending_rows[0] = 0
        offsets = [0]
        for _, sc in pending:
            offsets.append(offsets[-1] + len(sc.vectors))
        token_lp, greedy = kernels.project(torch.cat([sc.vectors for _, sc in pending]),
                                           torch.cat([sc.targets for _, sc in pending]), is_logits=pending[0][1].is_logits,
                                           rows=torch.cat([sc.target_rows() + o for (_, sc), o in zip(pending, offsets)]))
        lp, gr, base = token_lp.tolist(), greedy.tolist(), 0
        for indices, sc in pending:
            finish(indices, [(sum(lp[base + r] for r in rows), len(rows), all(gr[base + r] for r in rows))
                             for rows in sc.layout])
            base += len(sc.targets)
        pending.clear()

    def defer(indices: list[int], scored: Scored) -> None:
        if pending and pending[0][1].is_logits != scored.is_logits:
            project()
        pending.append((indices, scored))
        pending_rows[0] += len(scored.vectors)
        if scored.is_logits or pending_rows[0] >= ctx.project_rows:
            project()

    def tree(t):  # a planned tree → score_packed's (prompt, continuations) pairs
        return [(list(prompt), [encoded[j][1] for j in m]) for prompt, m in t]

    trees = plan_trees(ctx, packable, lambda g: [encoded[j][1] for j in g[1]], max_tree(budget))
    for batch in packed_batches(trees, lambda t: t.size, budget.batch_tokens):
        kernels.run(batch, lambda b: kernels.packed([tree(t.groups) for t in b]),
                    lambda b: [j for t in b for _, m in t.groups for j in m], defer)
    # the budget as the packed batches left it (an out-of-memory error halves it)
    for batch in plan_shared(shared, group_cost, ctx.min_shared_prefix, budget.batch_tokens):
        kernels.run(batch, lambda b: kernels.shared([(list(prompt), [encoded[j][1] for j in m], c) for prompt, m, c in b]),
                    lambda b: [j for _, m, _ in b for j in m], defer)
    rest = sorted((j for _, members in single for j in members), key=lambda j: -sum(map(len, encoded[j])))
    for batch in budget_batches(rest, lambda j: min(sum(map(len, encoded[j])), ctx.max_length), budget.batch_tokens, padded=True):
        kernels.run(batch, lambda b: kernels.batch([encoded[j] for j in b]), lambda b: list(b), defer)
    project()
    return results  # type: ignore[return-value]


def plan_shared(groups: list, cost: Callable, min_shared_prefix: int, budget: int) -> list[list]:
    """Batches of prompt groups, longest first under the token budget. Each group is tagged with
    a cluster: neighbours in lexicographic order that share at least `min_shared_prefix` tokens,
    so that inside a batch every cluster's common prefix runs once."""
    ordered = sorted(groups, key=lambda g: g[0])  # lexicographic: shared prefixes become neighbours
    tagged, cluster = [], 0
    for i, (prompt, members) in enumerate(ordered):
        if i and lcp(ordered[i - 1][0], prompt) < min_shared_prefix:
            cluster += 1
        tagged.append((prompt, members, cluster))
    sizes: dict[int, int] = {}
    for _, _, c in tagged:
        sizes[c] = sizes.get(c, 0) + 1
    # clusters stay together (their prefix then runs once), longest prompt first inside each;
    # prompts that share nothing are pooled and sorted by length to keep padding small
    clustered = sorted((g for g in tagged if sizes[g[2]] > 1), key=lambda g: (g[2], -len(g[0])))
    alone = sorted((g for g in tagged if sizes[g[2]] == 1), key=lambda g: -len(g[0]))
    return list(budget_batches(clustered + alone, cost, budget))
