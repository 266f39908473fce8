"""Packed scoring for HFBackend: prompts, the prefix they share and their continuations as trees, packed side by
side into rows and run in one forward pass with a 4D mask (no key/value cache, little padding). The planner
groups prompts into trees, the batcher fills batches of a token budget, the kernel packs each batch into as few rows
as it can and builds the masks. The kernel takes a Context and the Counters it adds its work to (context.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from .attention import blocked
from .forward import Scored, lcp, lcp_all

if TYPE_CHECKING:
    from .context import Budget, Context, Counters


@dataclass
class Tree:
    """Prompt groups scored as one tree of score_packed: their common prefix (`lcp` tokens) runs once."""

    groups: list
    lcp: int
    size: int


MAX_TREE = 4096  # widest packed row: its masks hold width² entries per layer type (64 MiB each at 4,096 in float32)


def max_tree(budget: Budget) -> int:
    """Most tokens in one tree (one packed row); larger prompt groups take the cached or the unshared path."""
    return min(budget.batch_tokens, MAX_TREE)


def plan_trees(ctx: Context, groups: list, conts_of: Callable, widest: int) -> list[Tree]:
    """Prompt groups → the trees of score_packed, largest first, none over `widest` tokens but a lone group.
    Neighbours in lexicographic order that share at least `min_shared_prefix` tokens go into one tree while that
    lowers the cost per prompt: each prompt added saves running the shared prefix again but widens the packed row,
    and a packed row's attention costs (width × `attention_per_key`) per token on top of the weights."""
    trees: list[Tree] = []
    for prompt, members in sorted(groups, key=lambda g: g[0]):
        if trees:
            last = trees[-1]
            common = min(last.lcp, lcp(last.groups[-1][0], prompt)) if len(last.groups) > 1 else \
                min(lcp(last.groups[0][0], prompt), len(last.groups[0][0]) - 1)
            grown = Tree(last.groups + [(prompt, members)], common, 0)
            grown.size = _tree_tokens(ctx.min_shared_prefix, grown, conts_of)
            if common >= ctx.min_shared_prefix and grown.size <= widest and \
                    _tree_cost(ctx, grown) / len(grown.groups) < _tree_cost(ctx, last) / len(last.groups):
                trees[-1] = grown
                continue
        t = Tree([(prompt, members)], len(prompt), 0)
        t.size = _tree_tokens(ctx.min_shared_prefix, t, conts_of)
        trees.append(t)
    return sorted(trees, key=lambda t: -t.size)


def _tree_tokens(min_shared_prefix: int, t: Tree, conts_of: Callable) -> int:
    """Tokens of a planned tree, its prefix counted once when score_packed will share it."""
    shared = min(t.lcp, min(len(c) for c, _ in t.groups) - 1) if len(t.groups) > 1 else 0
    return tree_size([list(c) for c, _ in t.groups], [conts_of(g) for g in t.groups],
                     shared if shared >= min_shared_prefix else 0)


def _tree_cost(ctx: Context, t: Tree) -> float:
    """Relative cost of a tree: its tokens through the weights, plus attention over a row as wide as the tree."""
    return t.size * (1 + ctx.attention_per_key * t.size)


def tree_size(ctxs: list[list[int]], conts: list[list[list[int]]], shared: int) -> int:
    """Tokens of one tree of score_packed: the shared prefix once, the rest of every prompt, every continuation
    but its last token."""
    return shared + sum(len(c) - shared for c in ctxs) + sum(len(x) - 1 for group in conts for x in group)


def shared_prefix(ctx: Context, prompts: list[list[int]]) -> int:
    """Tokens that the prompts of one tree share and run once (0 for a lone prompt or a short common prefix);
    every prompt keeps at least its last token, whose position predicts its continuations."""
    if len(prompts) < 2:
        return 0
    shared = min(lcp_all(prompts), min(len(c) for c in prompts) - 1)
    return shared if shared >= ctx.min_shared_prefix else 0


def fill_rows(sizes: list[int], width: int) -> list[list[int]]:
    """Segments (by size) into rows of `width` tokens (a larger segment gets a row of its own), first fit in
    decreasing size; the segment indices of each row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):
        for r, room in enumerate(free):
            if sizes[g] <= room:
                rows[r].append(g)
                free[r] -= sizes[g]
                break
        else:
            rows.append([g])
            free.append(width - sizes[g])
    return rows


def packed_batches(trees: list, size, budget: int) -> list[list]:
    """Trees in batches for score_packed of at most `budget` tokens each (fill_rows: first fit in decreasing size).
    score_packed packs a batch into as few rows as it can, so mixing large and small trees costs no padding."""
    return [[trees[i] for i in batch] for batch in fill_rows([size(t) for t in trees], budget)]


@torch.inference_mode()
def score_packed(ctx: Context, counters: Counters, trees: list[list[tuple[list[int], list[list[int]]]]], widest: int) -> Scored:
    """One forward pass, no key/value cache. A tree is prompts with their continuations: their shared prefix
    (the instruction, the demonstrations) once, then each prompt's remaining tokens, then each continuation but
    its last token. Trees are packed side by side into rows of at most `widest` tokens (max_tree), first fit in decreasing
    size; a row is as wide as what it holds, so a batch that fits in one row runs without padding (attention by
    blocks keeps a wide row's masked work small). A 4D mask lets every token see exactly its ancestors (a
    continuation token: its prompt and the earlier tokens of its own continuation) and positions count the depth
    in the tree, so each token sees what it sees in a row of its own; sliding-window layers get the same mask cut
    to the window. Compared with padded rows and cached passes this saves the padding, the cache copies and most
    per-pass overhead."""
    dev = ctx.device
    shares = [shared_prefix(ctx, [prompt for prompt, _ in tree]) for tree in trees]
    sizes = [tree_size([prompt for prompt, _ in tree], [conts for _, conts in tree], k) for tree, k in zip(trees, shares)]
    placement = fill_rows(sizes, widest)
    used = max(sum(sizes[t] for t in row) for row in placement)
    ids = torch.full((len(placement), used), ctx.pad_id, dtype=torch.long)
    pos = torch.zeros((len(placement), used), dtype=torch.long)
    allowed = torch.zeros((len(placement), used, used), dtype=torch.bool)
    # scored vectors: (row, column) of each position that predicts a token; targets in continuation order
    vec: list[tuple[int, int]] = []
    targets: list[int] = []
    target_rows: list[int] = []
    layout: list[list[int]] = []
    spans: dict[int, list] = {}  # tree → its pieces, filled in row order, read back in tree order

    def span(r: int, at: int, tokens: list[int], depth: int, parents: list[tuple[int, int]]) -> int:
        n = len(tokens)
        if n:
            ids[r, at:at + n] = torch.tensor(tokens)
            pos[r, at:at + n] = torch.arange(depth, depth + n)
            for a, b in parents:
                allowed[r, at:at + n, a:b] = True
            allowed[r, at:at + n, at:at + n] = torch.ones(n, n, dtype=torch.bool).tril()
        return at + n

    for r, row in enumerate(placement):
        at = 0
        for t in row:
            tree, k = trees[t], shares[t]
            prefix = (at, at + k)
            at = span(r, at, tree[0][0][:k], 0, [])
            pieces = []
            for prompt_ids, conts in tree:
                start = at
                at = span(r, at, prompt_ids[k:], k, [prefix])
                prompt = [prefix, (start, at)]
                last = (r, at - 1)
                starts = []
                for cont in conts:
                    starts.append(at)
                    at = span(r, at, cont[:-1], len(prompt_ids), prompt)
                pieces.append((last, starts))
            spans[t] = pieces
        if at < used:  # padding attends to itself only (its outputs are never read)
            idx = torch.arange(at, used)
            allowed[r, idx, idx] = True
    for t, tree in enumerate(trees):
        for (_, conts), (last, starts) in zip(tree, spans[t]):
            first = len(vec)
            vec.append(last)
            r = last[0]
            for cont, q in zip(conts, starts):
                layout.append(list(range(len(targets), len(targets) + len(cont))))
                targets += cont
                target_rows.append(first)
                for j in range(len(cont) - 1):
                    target_rows.append(len(vec))
                    vec.append((r, q + j))
    masks = _attention_masks(ctx, allowed, pos)
    with blocked(ctx.model):  # attention by blocks of queries, over the keys their masks open (attention.py)
        hidden = ctx.model.base_model(input_ids=ids.to(dev), attention_mask=masks, position_ids=pos.to(dev), use_cache=False)[0]
    counters.add_tokens(sum(sizes))
    for tree, k in zip(trees, shares):
        counters.add_keys([(0, k)] + [(k, len(p) - k) for p, _ in tree] + [(len(p), len(c) - 1) for p, conts in tree for c in conts],
                          ctx.window)
    rows_t = torch.tensor([r for r, _ in vec], dtype=torch.long).to(dev)
    cols_t = torch.tensor([c for _, c in vec], dtype=torch.long).to(dev)
    return Scored(hidden[rows_t, cols_t], torch.tensor(targets), layout, rows=torch.tensor(target_rows, dtype=torch.long))


def _attention_masks(ctx: Context, allowed: torch.Tensor, pos: torch.Tensor):
    """Additive 4D masks for `allowed` (rows × queries × keys): one tensor, or, for a model with sliding-window
    layers, one per layer type with keys further back than the window cut in the sliding one (the same tensor for
    both when no tree is deeper than the window: nothing to cut)."""
    def additive(ok: torch.Tensor) -> torch.Tensor:
        zero, low = torch.zeros((), dtype=ctx.dtype), torch.tensor(torch.finfo(ctx.dtype).min, dtype=ctx.dtype)
        return torch.where(ok, zero, low)[:, None].to(ctx.device)

    full = additive(allowed)
    if not ctx.sliding_masks:
        return full
    if int(pos.max()) < ctx.window:
        return {"full_attention": full, "sliding_attention": full}
    pos = pos.to(torch.int32)
    near = (pos[:, :, None] - pos[:, None, :]) < ctx.window
    near |= torch.eye(allowed.shape[1], dtype=torch.bool)  # padding keeps attending to itself
    return {"full_attention": full, "sliding_attention": additive(allowed & near)}
