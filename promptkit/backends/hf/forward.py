"""The forward passes behind HFBackend's scoring: the three cached passes of a shared prefix, the unshared padded
rows and the encoder-decoder path (packed trees are packing.py's, the vocabulary projection project.py's), and the
row helpers they share with packing.py and generate.py. Each kernel takes a Context (the model and its facts) and
the Counters it adds its work to; a kernel's output (Scored) waits for the plan's vocabulary projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ...errors import ModelError
from ..base import ContinuationScore
from ..batching import budget_batches, collector

if TYPE_CHECKING:
    from .context import Budget, Context, Counters


@dataclass
class Scored:
    """One batch's output before the vocabulary projection: the vectors (final hidden states, or
    logits) that predict each scored token, the tokens, and which rows belong to which continuation."""

    vectors: torch.Tensor
    targets: torch.Tensor
    layout: list[list[int]]
    is_logits: bool = False
    # the vector row that predicts each target (None: row i predicts target i); the first tokens of a prompt's
    # continuations are all predicted from its last position, so that row is projected once, not once per choice
    rows: torch.Tensor | None = None

    def target_rows(self) -> torch.Tensor:
        return self.rows if self.rows is not None else torch.arange(len(self.targets))


def right_pad(rows: list[list[int]], pad: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded id tensor and its attention mask."""
    width = width if width is not None else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, : len(row)] = 1
    return ids, mask


def lcp(a, b) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def lcp_all(seqs: list) -> int:
    """Length of the prefix that all the sequences share."""
    first = seqs[0]
    return min((lcp(first, s) for s in seqs[1:]), default=len(first))


def _cache_of(out):
    """The key/value cache of a model output (transformers 5 calls it `cache`, 4.x `past_key_values`)."""
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def pack_width(budget: Budget) -> int:
    """Most continuation tokens packed into one row of pass 3 (a single longer continuation gets a row of its own)."""
    return max(1, min(1024, budget.batch_tokens // 4))


def pack_rows(sizes: list[int], width: int) -> list[list[int]]:
    """Continuations (by packed size: their tokens but the last) in order into rows of at most `width`
    tokens; the indices in each row, at least one row."""
    rows: list[list[int]] = [[]]
    fill = 0
    for i, n in enumerate(sizes):
        if rows[-1] and fill + n > width:
            rows.append([])
            fill = 0
        rows[-1].append(i)
        fill += n
    return rows


def split_group(budget: Budget, prompt: int, sizes: list[int]) -> list[list[int]]:
    """A prompt's continuations (by token count) in chunks scored as separate items, each within the token
    budget: the prompt, its cache once per packed row (pack_rows), and the continuation tokens. A chunk
    holds at least one continuation; all of them in one chunk when they fit."""
    width, chunks = pack_width(budget), []
    rows = fill = total = 0  # of the open chunk: rows as pack_rows makes them, tokens in its last row, all tokens
    for i, n in enumerate(sizes):
        if chunks:
            opens = fill + n - 1 > width  # a new row, as in pack_rows (the open row is never empty here)
            r, f = (rows + 1, n - 1) if opens else (rows, fill + n - 1)
            if prompt * (1 + r) + total + n <= budget.batch_tokens:
                chunks[-1].append(i)
                rows, fill, total = r, f, total + n
                continue
        chunks.append([i])
        rows, fill, total = 1, n - 1, n
    return chunks


@torch.inference_mode()
def score_shared(ctx: Context, counters: Counters, items: list[tuple[list[int], list[list[int]], int]], width: int) -> Scored:
    """Three passes over one batch, each reading the previous one's key/value cache:
    1. prefixes: one row per cluster's shared prefix (or, for a prompt that shares nothing,
       all but its last token);
    2. the rest of every prompt, its cache rows copied from its prefix row;
    3. every continuation (all but its last token), packed behind its prompt's cache, in rows of at most
       `width` tokens (pack_width; a prompt with many continuations gets several rows).
    """
    base, dev = ctx.model.base_model, ctx.device
    # ---- pass 1: prefixes
    members: dict[int, list[int]] = {}
    for g, (_, _, cluster) in enumerate(items):
        members.setdefault(cluster, []).append(g)
    prefix_rows: list[list[int]] = []
    row_of, cut = [0] * len(items), [0] * len(items)
    for group in members.values():
        ctxs = [items[g][0] for g in group]
        shared = min(lcp_all(ctxs), min(len(c) for c in ctxs) - 1)
        if len(group) > 1 and shared >= ctx.min_shared_prefix:
            prefix_rows.append(ctxs[0][:shared])
            for g in group:
                row_of[g], cut[g] = len(prefix_rows) - 1, shared
        else:
            for g in group:
                prefix_rows.append(items[g][0][:-1])
                row_of[g], cut[g] = len(prefix_rows) - 1, len(items[g][0]) - 1
    ids1, mask1 = right_pad(prefix_rows, ctx.pad_id)
    width1 = ids1.shape[1]
    out = base(input_ids=ids1.to(dev), attention_mask=mask1.to(dev),
               position_ids=torch.arange(width1).expand(len(prefix_rows), width1).to(dev), use_cache=True)
    cache = _cache_of(out)
    counters.add_tokens(int(mask1.sum()))
    counters.add_keys(((0, len(r)) for r in prefix_rows), ctx.window)
    # ---- pass 2: the rest of each prompt
    rep1 = torch.tensor(row_of)
    cache.reorder_cache(rep1.to(dev))
    ids2, smask = right_pad([prompt[cut[g]:] for g, (prompt, _, _) in enumerate(items)], ctx.pad_id)
    width2 = ids2.shape[1]
    cuts = torch.tensor(cut)
    mask2 = torch.cat([mask1[rep1], smask], dim=1)
    out = base(input_ids=ids2.to(dev), attention_mask=mask2.to(dev),
               position_ids=(cuts[:, None] + torch.arange(width2)).to(dev), use_cache=True, **{ctx.cache_arg: cache})
    prompt_hidden, cache = out[0], _cache_of(out)
    counters.add_tokens(int(smask.sum()))
    counters.add_keys(((cut[g], len(prompt) - cut[g]) for g, (prompt, _, _) in enumerate(items)), ctx.window)
    # ---- pass 3: continuations; the first token of each is predicted from the prompt's last position.
    # The continuations of a prompt are packed into rows of at most pack_width tokens (no copy of the
    # prompt's cache per continuation, one per row): a 4D mask lets each token see its prompt and the
    # earlier tokens of its own continuation only. The mask and the attention of a row grow with
    # width × (prompt + width), so a bounded width keeps them linear in the number of continuations.
    conts = [(g, cont) for g, (_, group, _) in enumerate(items) for cont in group]
    rep = torch.tensor([g for g, _ in conts])
    lengths = torch.tensor([len(prompt) for prompt, _, _ in items])
    # one row per prompt: its last position predicts the first token of every one of its continuations
    vectors = [prompt_hidden[torch.arange(len(items)).to(dev), (lengths - 1 - cuts).to(dev)]]
    targets = [cont[0] for _, cont in conts]
    target_rows = rep.tolist()
    packed: list[list[int]] = []
    segments: list[list[tuple[int, int]]] = []  # (start, length) of each continuation in its row
    row_item: list[int] = []  # the prompt (cache row of pass 2) that each packed row reads
    for g, (_, group, _) in enumerate(items):
        for row in pack_rows([len(c) - 1 for c in group], width):
            packed.append([]), segments.append([]), row_item.append(g)
            for i in row:
                segments[-1].append((len(packed[-1]), len(group[i]) - 1))
                packed[-1] += group[i][:-1]
    width3 = max(len(row) for row in packed)
    if width3:
        rep3 = torch.tensor(row_item)
        if len(packed) != len(items):  # a prompt spread over several rows: its cache row is repeated
            cache.reorder_cache(rep3.to(dev))
        cin, cmask = right_pad(packed, ctx.pad_id, width3)
        past = mask2.shape[1]
        allowed = torch.zeros((len(packed), width3, past + width3), dtype=torch.bool)
        allowed[:, :, :past] = mask2.bool()[rep3][:, None, :]
        offsets = torch.zeros((len(packed), width3), dtype=torch.long)
        for r, segs in enumerate(segments):
            for start, n in segs:
                if n:
                    block = torch.ones(n, n, dtype=torch.bool).tril()
                    allowed[r, start:start + n, past + start:past + start + n] = block
                    offsets[r, start:start + n] = torch.arange(n)
        idx = torch.arange(width3)
        allowed[:, idx, past + idx] |= ~cmask.bool()  # padding rows attend to themselves (never read)
        bias = torch.zeros(allowed.shape, dtype=ctx.dtype)
        bias.masked_fill_(~allowed, torch.finfo(ctx.dtype).min)
        del allowed
        hidden = base(input_ids=cin.to(dev), attention_mask=bias[:, None].to(dev),
                      position_ids=(lengths[rep3][:, None] + offsets).to(dev), use_cache=True, **{ctx.cache_arg: cache})[0]
        counters.add_tokens(int(cmask.sum()))
        counters.add_keys(((len(items[g][0]), len(cont) - 1) for g, cont in conts), ctx.window)
        rows = [r for r, segs in enumerate(segments) for start, n in segs for _ in range(n)]
        cols = [start + j for segs in segments for start, n in segs for j in range(n)]
        vectors.append(hidden[torch.tensor(rows, dtype=torch.long).to(dev), torch.tensor(cols, dtype=torch.long).to(dev)])
        targets += [t for _, cont in conts for t in cont[1:]]
        target_rows += range(len(items), len(items) + len(rows))
    # token order: all first tokens, then the rest continuation by continuation
    layout, k = [], len(conts)
    for c, (_, cont) in enumerate(conts):
        layout.append([c, *range(k, k + len(cont) - 1)])
        k += len(cont) - 1
    return Scored(torch.cat(vectors), torch.tensor(targets), layout, rows=torch.tensor(target_rows, dtype=torch.long))


@torch.inference_mode()
def score_batch(ctx: Context, counters: Counters, items: list[tuple[list[int], list[int]]]) -> Scored:
    """Unshared path: each (prompt + continuation) is its own right-padded row."""
    rows = []
    for prompt, cont in items:
        if len(cont) >= ctx.max_length:
            raise ModelError(f"a continuation of {len(cont)} tokens does not fit the model's context of {ctx.max_length}")
        rows.append((prompt + cont)[-ctx.max_length:])  # keep the end: the continuation must stay whole
    ids, mask = right_pad(rows, ctx.pad_id)
    counters.add_tokens(int(mask.sum()))
    counters.add_keys(((0, len(row)) for row in rows), ctx.window)
    # positions whose next-token distribution we need: the one before each continuation token
    row_idx, pos_idx, targets = [], [], []
    for r, ((_, cont), row) in enumerate(zip(items, rows)):
        start = len(row) - len(cont)
        row_idx += [r] * len(cont)
        pos_idx += list(range(start - 1, len(row) - 1))
        targets += cont
    ids, mask = ids.to(ctx.device), mask.to(ctx.device)
    rows_t, pos_t = torch.tensor(row_idx).to(ctx.device), torch.tensor(pos_idx).to(ctx.device)
    layout, k = [], 0
    for _, cont in items:
        layout.append(list(range(k, k + len(cont))))
        k += len(cont)
    if ctx.model.base_model is ctx.model or ctx.model.get_output_embeddings() is None:
        logits = ctx.model(input_ids=ids, attention_mask=mask).logits[rows_t, pos_t]
        return Scored(logits, torch.tensor(targets), layout, is_logits=True)
    hidden = ctx.model.base_model(input_ids=ids, attention_mask=mask)[0]
    return Scored(hidden[rows_t, pos_t], torch.tensor(targets), layout)


def loglikelihood_seq2seq(ctx: Context, counters: Counters, budget: Budget, pairs: list[tuple[str, str]],
                          project: Callable, run: Callable, progress: Callable[[int], None] | None,
                          on_scores: Callable | None) -> list[ContinuationScore]:
    """Encoder-decoder scoring: the prompt is the encoder's input and the continuation the decoder's
    target; one padded row per pair, batches under the token budget. `project` is the vocabulary projection
    (project.project with its context), `run` computes one batch, halving it on out-of-memory."""
    tok = ctx.tokenizer
    encoded = []
    for prompt, continuation in pairs:
        target = tok(continuation, add_special_tokens=False)["input_ids"]
        if not target:
            raise ModelError(f"the continuation {continuation!r} has no tokens for this tokenizer; a continuation must contain the answer")
        encoded.append((tok(prompt.strip(), add_special_tokens=True)["input_ids"][-ctx.max_length:], target))
    results: list = [None] * len(pairs)
    start = ctx.model.config.decoder_start_token_id
    start = ctx.pad_id if start is None else start

    @torch.inference_mode()
    def compute(batch: list[int]) -> list[tuple[float, int, bool]]:
        enc, enc_mask = right_pad([encoded[j][0] for j in batch], ctx.pad_id)
        dec, dec_mask = right_pad([[start] + encoded[j][1][:-1] for j in batch], ctx.pad_id)
        counters.add_tokens(int(enc_mask.sum() + dec_mask.sum()))
        logits = ctx.model(input_ids=enc.to(ctx.device), attention_mask=enc_mask.to(ctx.device),
                           decoder_input_ids=dec.to(ctx.device), decoder_attention_mask=dec_mask.to(ctx.device)).logits
        rows = [r for r, j in enumerate(batch) for _ in encoded[j][1]]
        cols = [c for j in batch for c in range(len(encoded[j][1]))]
        lp, greedy = project(logits[torch.tensor(rows), torch.tensor(cols)],
                             torch.tensor([t for j in batch for t in encoded[j][1]]), is_logits=True)
        out, k = [], 0
        for j in batch:
            n = len(encoded[j][1])
            out.append((float(lp[k:k + n].sum()), n, bool(greedy[k:k + n].all())))
            k += n
        return out

    finish = collector(results, on_scores, progress, scores_of(pairs))
    order = sorted(range(len(pairs)), key=lambda j: -sum(map(len, encoded[j])))
    for batch in budget_batches(order, lambda j: sum(map(len, encoded[j])), budget.batch_tokens, padded=True):
        run(batch, compute, lambda b: list(b), finish)
    return results  # type: ignore[return-value]


def scores_of(pairs: list[tuple[str, str]]) -> Callable:
    """(log-prob, tokens, greedy) triples of a batch → ContinuationScores (characters from the pair's continuation)."""
    return lambda indices, out: [ContinuationScore(lp, n, len(pairs[j][1]), g) for j, (lp, n, g) in zip(indices, out)]
