"""Packed scoring for HFBackend: prompts, the prefix they share and their continuations as trees, packed side by
side into rows and run in one forward pass with a 4D mask (no key/value cache, little padding). The planner
groups prompts into trees, the batcher fills batches of a token budget, the kernel packs each batch into as few rows
as it can and builds the masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from .attention import blocked
from .forward import _lcp, _lcp_all, _Scored

if TYPE_CHECKING:
    from . import HFBackend


@dataclass
class Tree:
    """Prompt groups scored as one tree of score_packed: their common prefix (`lcp` tokens) runs once."""

    groups: list
    lcp: int
    size: int


MAX_TREE = 4096  # widest packed row: its masks hold width² entries per layer type (64 MiB each at 4,096 in float32)


def max_tree(backend: HFBackend) -> int:
    """Most tokens in one tree (one packed row); larger prompt groups take the cached or the unshared path."""
    return min(backend.batch_tokens, MAX_TREE)


def attention_per_key(model) -> float:
    """FLOPs of attention per key a token attends to, as a share of the FLOPs of the weights per token."""
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    heads = int(getattr(cfg, "num_attention_heads", 8) or 8)
    head_dim = int(getattr(cfg, "head_dim", None) or int(getattr(cfg, "hidden_size", 512)) // heads)
    layers = int(getattr(cfg, "num_hidden_layers", 12) or 12)
    emb = model.get_input_embeddings().weight.numel()
    weights = max(1, sum(p.numel() for p in model.parameters()) - emb)
    return 4 * heads * head_dim * layers / (2 * weights)


def plan_trees(backend: HFBackend, groups: list, conts_of: Callable) -> list[Tree]:
    """Prompt groups → the trees of score_packed, largest first. Neighbours in lexicographic order that share at
    least `min_shared_prefix` tokens go into one tree while that lowers the cost per prompt: each prompt added
    saves running the shared prefix again but widens the packed row, and a packed row's attention costs
    (width × `attention_per_key`) per token on top of the weights."""
    trees: list[Tree] = []
    for ctx, members in sorted(groups, key=lambda g: g[0]):
        if trees:
            last = trees[-1]
            lcp = min(last.lcp, _lcp(last.groups[-1][0], ctx)) if len(last.groups) > 1 else \
                min(_lcp(last.groups[0][0], ctx), len(last.groups[0][0]) - 1)
            grown = Tree(last.groups + [(ctx, members)], lcp, 0)
            grown.size = _tree_tokens(backend, grown, conts_of)
            if lcp >= backend.min_shared_prefix and grown.size <= max_tree(backend) and \
                    _tree_cost(backend, grown) / len(grown.groups) < _tree_cost(backend, last) / len(last.groups):
                trees[-1] = grown
                continue
        t = Tree([(ctx, members)], len(ctx), 0)
        t.size = _tree_tokens(backend, t, conts_of)
        trees.append(t)
    return sorted(trees, key=lambda t: -t.size)


def _tree_tokens(backend: HFBackend, t: Tree, conts_of: Callable) -> int:
    """Tokens of a planned tree, its prefix counted once when score_packed will share it."""
    shared = min(t.lcp, min(len(c) for c, _ in t.groups) - 1) if len(t.groups) > 1 else 0
    return tree_size([list(c) for c, _ in t.groups], [conts_of(g) for g in t.groups],
                                shared if shared >= backend.min_shared_prefix else 0)


def _tree_cost(backend: HFBackend, t: Tree) -> float:
    """Relative cost of a tree: its tokens through the weights, plus attention over a row as wide as the tree."""
    return t.size * (1 + backend.attention_per_key * t.size)


def tree_size(ctxs: list[list[int]], conts: list[list[list[int]]], shared: int) -> int:
    """Tokens of one tree of score_packed: the shared prefix once, the rest of every prompt, every continuation
    but its last token."""
    return shared + sum(len(c) - shared for c in ctxs) + sum(len(x) - 1 for group in conts for x in group)


def shared_prefix(backend: HFBackend, ctxs: list[list[int]]) -> int:
    """Tokens that the prompts of one tree share and run once (0 for a lone prompt or a short common prefix);
    every prompt keeps at least its last token, whose position predicts its continuations."""
    if len(ctxs) < 2:
        return 0
    shared = min(_lcp_all(ctxs), min(len(c) for c in ctxs) - 1)
    return shared if shared >= backend.min_shared_prefix else 0


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
def score_packed(backend: HFBackend, trees: list[list[tuple[list[int], list[list[int]]]]]) -> _Scored:
    """One forward pass, no key/value cache. A tree is prompts with their continuations: their shared prefix
    (the instruction, the demonstrations) once, then each prompt's remaining tokens, then each continuation but
    its last token. Trees are packed side by side into rows of at most `max_tree` tokens, first fit in decreasing
    size; a row is as wide as what it holds, so a batch that fits in one row runs without padding (attention by
    blocks keeps a wide row's masked work small). A 4D mask lets every token see exactly its ancestors (a
    continuation token: its prompt and the earlier tokens of its own continuation) and positions count the depth
    in the tree, so each token sees what it sees in a row of its own; sliding-window layers get the same mask cut
    to the window. Compared with padded rows and cached passes this saves the padding, the cache copies and most
    per-pass overhead."""
    dev = backend.device
    shares = [shared_prefix(backend, [ctx for ctx, _ in tree]) for tree in trees]
    sizes = [tree_size([ctx for ctx, _ in tree], [conts for _, conts in tree], k) for tree, k in zip(trees, shares)]
    placement = fill_rows(sizes, max_tree(backend))
    used = max(sum(sizes[t] for t in row) for row in placement)
    ids = torch.full((len(placement), used), backend._pad_id(), dtype=torch.long)
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
            for ctx, conts in tree:
                start = at
                at = span(r, at, ctx[k:], k, [prefix])
                prompt = [prefix, (start, at)]
                last = (r, at - 1)
                starts = []
                for cont in conts:
                    starts.append(at)
                    at = span(r, at, cont[:-1], len(ctx), prompt)
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
    masks = _attention_masks(backend, allowed, pos)
    with blocked(backend.model):  # attention by blocks of queries, over the keys their masks open (hf_attention.py)
        hidden = backend.model.base_model(input_ids=ids.to(dev), attention_mask=masks, position_ids=pos.to(dev), use_cache=False)[0]
    backend.forward_tokens += sum(sizes)
    for tree, k in zip(trees, shares):
        backend._count_keys([(0, k)] + [(k, len(ctx) - k) for ctx, _ in tree] + [(len(ctx), len(c) - 1) for ctx, conts in tree for c in conts])
    rows_t = torch.tensor([r for r, _ in vec], dtype=torch.long).to(dev)
    cols_t = torch.tensor([c for _, c in vec], dtype=torch.long).to(dev)
    return _Scored(hidden[rows_t, cols_t], torch.tensor(targets), layout, rows=torch.tensor(target_rows, dtype=torch.long))


def _attention_masks(backend: HFBackend, allowed: torch.Tensor, pos: torch.Tensor):
    """Additive 4D masks for `allowed` (rows × queries × keys): one tensor, or, for a model with sliding-window
    layers, one per layer type with keys further back than the window cut in the sliding one (the same tensor for
    both when no tree is deeper than the window: nothing to cut)."""
    def additive(ok: torch.Tensor) -> torch.Tensor:
        zero, low = torch.zeros((), dtype=backend.dtype), torch.tensor(torch.finfo(backend.dtype).min, dtype=backend.dtype)
        return torch.where(ok, zero, low)[:, None].to(backend.device)

    full = additive(allowed)
    if not backend.sliding_masks:
        return full
    if int(pos.max()) < backend.window:
        return {"full_attention": full, "sliding_attention": full}
    pos = pos.to(torch.int32)
    near = (pos[:, :, None] - pos[:, None, :]) < backend.window
    near |= torch.eye(allowed.shape[1], dtype=torch.bool)  # padding keeps attending to itself
    return {"full_attention": full, "sliding_attention": additive(allowed & near)}
