"""Generation for HFBackend: requests batched by generation setting under the token budget (left padding
for decoder-only models), greedy or seeded sampling through transformers' `generate`, and texts cut at
their stop sequences. It takes a Context, the Counters it adds the tokens to, and the Budget (context.py)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable

import torch

from ...errors import ModelError
from ..base import Generation, cut_at_stop
from ..batching import collector
from .forward import right_pad
from .tokens import add_special

if TYPE_CHECKING:
    from .context import Budget, Context, Counters


def generate(ctx: Context, counters: Counters, budget: Budget, specs: list[tuple], run: Callable,
             progress: Callable[[int], None] | None = None,
             on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
    """Generation for (prompt, stop sequences, max new tokens[, temperature, seed]) specs: greedy,
    batched with left padding (decoder-only models) under the token budget; with a temperature above
    0, sampled, one request at a time from its own seed (the same text on every run and batch size). A row stops at its end-of-sequence
    token, at `max new tokens`, or once its text holds a stop sequence after the first non-space
    character; the text is cut before that stop sequence. `run` computes one batch, halving it on out-of-memory."""
    tok = ctx.tokenizer
    encoded = []
    specs = [tuple(spec) + (0.0, 0)[len(spec) - 3:] for spec in specs]  # greedy unless a temperature is given
    for prompt, _, max_new, _, _ in specs:
        ids = tok(prompt, add_special_tokens=True if ctx.seq2seq else add_special(tok, prompt))["input_ids"]
        if not ids:
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ids = [start]
        room = ctx.max_length if ctx.seq2seq else ctx.max_length - max_new
        if room < 1:
            raise ModelError(f"max_new_tokens={max_new} does not fit the model's context of {ctx.max_length} tokens; lower it")
        encoded.append(ids[-room:])  # keep the end of a prompt that is too long
    results: list[Generation | None] = [None] * len(specs)
    finish = collector(results, on_results, progress)

    # one generation setting per batch; longest prompts first, so padding stays small
    order = sorted(range(len(specs)), key=lambda j: (specs[j][1], specs[j][2], -len(encoded[j])))
    batches: list[list[int]] = []
    for j in order:
        last = batches[-1] if batches else None
        if last and specs[last[0]][1:] == specs[j][1:] and specs[j][3] == 0 and len(last) < 64 and \
                (len(encoded[last[0]]) + specs[j][2]) * (len(last) + 1) <= budget.batch_tokens:
            last.append(j)
        else:
            batches.append([j])
    for batch in batches:
        run(batch, lambda b: generate_batch(ctx, counters, [encoded[j] for j in b], *specs[b[0]][1:]), lambda b: list(b), finish)
    return results  # type: ignore[return-value]


@torch.inference_mode()
def generate_batch(ctx: Context, counters: Counters, rows: list[list[int]], stop: tuple[str, ...], max_new: int,
                   temperature: float = 0.0, seed: int = 0) -> list[Generation]:
    """One batch of token rows with one generation setting → its Generations (tokens counted into `counters`)."""
    from transformers import StoppingCriteriaList

    tok = ctx.tokenizer
    # padding of generated rows: the pad token, else end-of-sequence (never a real token such as id 0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id if tok.eos_token_id is not None else 0
    width = max(len(r) for r in rows)
    if ctx.seq2seq:
        ids, mask = right_pad(rows, pad)
    else:  # left padding: every row's next token is at the same position
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row):] = 1
    config = copy.deepcopy(ctx.model.generation_config)
    for name, value in {"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None,
                        "min_p": None, "typical_p": None, "repetition_penalty": None, "max_length": None,
                        "max_new_tokens": max_new, "pad_token_id": pad}.items():
        setattr(config, name, value)
    if config.eos_token_id is None:
        config.eos_token_id = tok.eos_token_id
    if temperature > 0:
        config.do_sample, config.temperature, config.top_p = True, float(temperature), 0.95
        torch.manual_seed(seed)
    offset = 1 if ctx.seq2seq else width  # the decoder starts with one start token
    criteria = StoppingCriteriaList([_StopSequences(tok, stop, offset)]) if stop else None
    out = ctx.model.generate(input_ids=ids.to(ctx.device), attention_mask=mask.to(ctx.device),
                             generation_config=config, stopping_criteria=criteria)
    # a row ends at its end-of-sequence token; once a stop sequence has finished it, generate fills it with padding
    ends = set(config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id])
    if tok.pad_token_id is not None:
        ends.add(tok.pad_token_id)
    made = []
    for r in range(len(rows)):
        new = out[r, offset:].tolist()
        cut = next((k for k, t in enumerate(new) if t in ends), len(new))
        text = tok.decode(new[:cut], skip_special_tokens=True)
        made.append(Generation(cut_at_stop(text, stop), cut))
    counters.add_tokens(int(mask.sum()) + sum(g.n_tokens for g in made))
    return made


class _StopSequences:
    """Stopping criterion for `generate`: a row is done once its new text holds a stop sequence after its
    first non-space character (decoding the few dozen new tokens per step costs little)."""

    def __init__(self, tokenizer, stop: tuple[str, ...], offset: int):
        self.tokenizer, self.stop, self.offset = tokenizer, stop, offset

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.offset:], skip_special_tokens=True)
        return torch.tensor([cut_at_stop(t, self.stop) != t for t in texts], dtype=torch.bool, device=input_ids.device)
