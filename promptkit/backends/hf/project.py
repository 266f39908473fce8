"""The vocabulary projection behind HFBackend's scoring: final hidden states (or logits) → the log-probability of
each target token and whether it is the argmax. The vocabulary is walked in slices with a running log-sum-exp, so
memory holds a slice of logits, not all of them.

Two ways: float32 (exact; every dtype but bf16-mixed), and for bf16-mixed a bfloat16 product with a per-row
shift. A bfloat16 matrix product returns bfloat16, and a logit of 20 rounded to bfloat16 is off by up to 0.06 — as
much as the log-sum-exp may move. So each row's product includes minus a shift close to the row's largest logit (an
extra column: [h, -s] · [w, 1]), accumulated in float32 inside the product; what is rounded to bfloat16 is then
l - s, small exactly where the log-sum-exp has its weight. What is left is the rounding of h and of the output
matrix to bfloat16, the same approximation every other layer makes in bf16-mixed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .context import Context, Counters

REDO_ABOVE = 1.0  # a slice whose largest l - s exceeds this (nats) is computed again for that row with s raised
EXACT_TOP = 16  # largest logits of a row taken again in float32 (they carry most of the log-sum-exp)
SLICE = 2048  # vocabulary entries per slice of the float32 way: its logits stay in cache for the reductions
SLICE_SHIFTED = 32768  # per slice of the bfloat16 way (each slice's top k joins a running top k)


def project(ctx: Context, counters: Counters, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool = False,
            chunk: int | None = None, rows: torch.Tensor | None = None):
    """Log-probability of each target token and whether it is the argmax, from final hidden states (projected onto
    the vocabulary here) or from logits; `rows[i]` is the vector that predicts target i (default: vector i), so a
    vector that predicts several targets is projected once. bf16-mixed's autocast stops here: the projection is
    float32, or bfloat16 with a shift when the context holds a shifted output matrix (shifted_head). `chunk`: the
    vocabulary entries per slice (default SLICE, or SLICE_SHIFTED for the bfloat16 way)."""
    rows = torch.arange(len(targets)) if rows is None else rows
    if not is_logits:
        counters.add_projected(len(vectors))
    with torch.autocast(vectors.device.type, enabled=False):
        if ctx.head16 is not None and not is_logits:
            return _project_shifted(ctx.model, ctx.head16, vectors.float(), targets, chunk or SLICE_SHIFTED, rows)
        return _project(ctx.model, vectors, targets, is_logits, chunk or SLICE, rows)


def shifted_head(model) -> torch.Tensor | None:
    """The output matrix in bfloat16 with a column of ones appended (the shift's column), or None where the shifted
    bfloat16 projection does not apply: no separate output matrix, a bias, soft-capped logits (tanh of the logits
    is not a shift of them), or an encoder-decoder model (scored from its logits)."""
    head = model.get_output_embeddings()
    if head is None or model.base_model is model or getattr(head, "bias", None) is not None \
            or getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "is_encoder_decoder", False):
        return None
    weight = head.weight.detach()
    out = torch.ones((weight.shape[0], weight.shape[1] + 1), dtype=torch.bfloat16, device=weight.device)
    out[:, :-1] = weight
    return out


@torch.inference_mode()
def _project_shifted(model, head16: torch.Tensor, vectors: torch.Tensor, targets: torch.Tensor, chunk: int,
                     rows: torch.Tensor):
    """bf16-mixed's projection (see the module's docstring). The first shift of a row is the largest float32 logit
    among its targets (a gather, no product with the whole matrix); a slice whose largest l - s comes out above
    REDO_ABOVE is multiplied again for those rows with s raised to it, so every logit near the row's maximum is
    rounded as l - s with |l - s| ≤ REDO_ABOVE. Then the EXACT_TOP largest logits of each row, which carry most
    of the log-sum-exp's weight, and the targets' logits are taken in float32 (a gather of their rows of the
    output matrix): the bfloat16 rounding of h and of the matrix is left only in the tail of the distribution.
    The argmax is the largest of those float32 logits."""
    n, device, dim = len(vectors), vectors.device, vectors.shape[1]
    rows, targets = rows.to(device), targets.to(device)
    head = model.get_output_embeddings().weight
    exact = (vectors[rows] * head[targets].float()).sum(-1)  # float32 logit of every target
    shift = torch.full((n,), -float("inf"), device=device).scatter_reduce(0, rows, exact, "amax")
    shift = torch.where(torch.isfinite(shift), shift, 0.0).bfloat16()  # exact in bfloat16, so [h, -s]·[w, 1] is l - s
    h = torch.empty((n, dim + 1), dtype=torch.bfloat16, device=device)
    h[:, :dim] = vectors
    h[:, dim] = -shift
    vocab = head16.shape[0]
    width = min(chunk, vocab)
    k = min(EXACT_TOP, width)
    space = torch.empty(n * width, dtype=torch.bfloat16, device=device)
    space32 = torch.empty(n * width, device=device)
    lse = torch.full((n,), -float("inf"), device=device)
    top_val = torch.full((n, 0), -float("inf"), device=device)  # the running top k: bf16 logits (absolute), ids
    top_id = torch.zeros((n, 0), dtype=torch.long, device=device)
    for start in range(0, vocab, width):
        stop = min(vocab, start + width)
        buf = space[: n * (stop - start)].view(n, stop - start)
        torch.mm(h, head16[start:stop].t(), out=buf)  # l - s, rounded to bfloat16
        val, at = buf.topk(min(k, stop - start), dim=-1)
        redo = (val[:, 0] > REDO_ABOVE).nonzero().flatten()
        if len(redo):  # the row's maximum is well above its shift: raise the shift to it, multiply again
            raised = (shift[redo].float() + val[redo, 0].float()).bfloat16()
            shift[redo] = raised
            h[redo, dim] = -raised
            buf[redo] = h[redo] @ head16[start:stop].t()
            val[redo], at[redo] = buf[redo].topk(val.shape[1], dim=-1)
        base, val = shift.float(), val.float()
        top = val[:, 0]
        logits = space32[: n * (stop - start)].view(n, stop - start)
        logits.copy_(buf)  # from here on float32, as in _project
        top_val, keep = torch.cat([top_val, val + base[:, None]], dim=1).topk(min(k, top_val.shape[1] + val.shape[1]), dim=-1)
        top_id = torch.cat([top_id, at + start], dim=1).gather(1, keep)
        # log-sum-exp of this slice, in place, merged into the running one
        part = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_().add_(top + base)
        lse = torch.logaddexp(lse, part)
    # the top k in float32: their bfloat16 share of the sum out, their exact share in (float64: the rest can be tiny)
    true_val = torch.einsum("nd,nkd->nk", vectors, head[top_id].float())
    lse64 = lse.double()
    rest = (1 - torch.exp(top_val.double() - lse64[:, None]).sum(-1)).clamp_(min=0)
    lse = (torch.log(rest + torch.exp(true_val.double() - lse64[:, None]).sum(-1)) + lse64).float()
    best_at = top_id.gather(1, true_val.argmax(dim=-1, keepdim=True)).squeeze(1)
    return (exact - lse[rows]).clamp_(max=0).cpu(), (best_at[rows] == targets).cpu()


@torch.inference_mode()
def _project(model, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool, chunk: int,
             rows: torch.Tensor):
    """The float32 projection. The vocabulary is walked in slices of `chunk` entries with a running log-sum-exp
    and argmax, inside one reused buffer: all rows share one read of the output matrix, memory holds
    (rows × chunk) logits instead of (rows × vocabulary) — 1 MiB per row for a 262k vocabulary — and no large
    block is freed and reallocated per slice (on glibc such churn fragments the heap and the process keeps
    growing). Slices of SLICE entries keep a slice's logits in cache for the reductions that follow the product,
    and a row's argmax is taken only in the slices where its maximum rises (a plain maximum is far cheaper than
    an argmax on CPU): 1.2-1.4x over slices of 32,768 with an argmax each (benchmarks/README)."""
    head = None if is_logits else model.get_output_embeddings()
    cap = None if is_logits else getattr(model.config, "final_logit_softcapping", None)
    vocab = vectors.shape[1] if is_logits else head.weight.shape[0]
    n, device = len(vectors), vectors.device
    rows, targets = rows.to(device), targets.to(device)
    width = min(chunk, vocab)
    space = torch.empty(n * width, dtype=vectors.dtype, device=device)
    lse = torch.full((n,), -float("inf"), device=device)
    target_logit = torch.zeros(len(targets), device=device)
    best = torch.full((n,), -float("inf"), device=device)
    best_at = torch.zeros(n, dtype=torch.long, device=device)
    for start in range(0, vocab, width):
        stop = min(vocab, start + width)
        buf = space[: n * (stop - start)].view(n, stop - start)
        if is_logits:
            buf.copy_(vectors[:, start:stop])
        else:
            torch.mm(vectors, head.weight[start:stop].t(), out=buf)
            if head.bias is not None:
                buf.add_(head.bias[start:stop])
        logits = buf if buf.dtype == torch.float32 else buf.float()
        if cap:
            logits.div_(cap).tanh_().mul_(cap)
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            target_logit[inside] = logits[rows[inside], targets[inside] - start]
        top = logits.amax(dim=-1)
        better = (top > best).nonzero().flatten()  # strictly: the first maximum wins, as argmax does
        if len(better):  # the argmax only of the rows whose maximum rose (an argmax costs ~20 maxima on CPU)
            best_at[better] = (logits.argmax(dim=-1) if len(better) == n else logits[better].argmax(dim=-1)) + start
            best[better] = top[better]
        # log-sum-exp of this slice, in place, merged into the running one
        part = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_().add_(top)
        lse = torch.logaddexp(lse, part)
    return (target_logit - lse[rows]).cpu(), (best_at[rows] == targets).cpu()
