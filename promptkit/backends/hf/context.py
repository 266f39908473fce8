"""What the parts of the Hugging Face engine share, as three small objects instead of the backend itself.

- Context (frozen): the loaded model and the facts and settings a call reads; the backend makes one per call (its
  settings may change between calls), the plan and the kernels only read it.
- Budget: the token budget of a batch. The backend owns it and halves it on out-of-memory; the plan reads it each
  time it cuts batches, so a budget lowered by a failed batch holds for the batches cut after it.
- Counters: the work done (tokens through the model, keys attended to, positions projected, halvings), owned by the
  backend, which hands it to the kernels; they add to it through its methods. The engine reads `forward_tokens` and
  `backoffs` before and after a call, the benchmarks all four.

No torch here: the backend imports this module before it knows whether a model will load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Context:
    """The loaded model and what the plan and the kernels read about it, for one call."""

    model: Any  # the transformers model, loaded and in eval mode
    tokenizer: Any  # its tokenizer: generation and encoder-decoder scoring encode and decode with it
    device: torch.device  # where inputs go (the input embeddings' device under a device map)
    dtype: torch.dtype  # the weights' dtype: additive masks are made in it
    pad_id: int  # padding of scored rows: the tokenizer's pad id, else 0
    cache_arg: str  # the forward argument that takes a key/value cache: "cache" (transformers 5) or "past_key_values"
    head16: torch.Tensor | None  # bf16-mixed: the output matrix for the shifted bfloat16 projection (project.py)
    seq2seq: bool  # an encoder-decoder model: the prompt is the encoder's input
    max_length: int  # the model's context in tokens
    window: int  # the smallest attention window (max_length without sliding-window layers)
    sliding_masks: bool  # sliding-window layers take a mask of their own (packing._attention_masks)
    min_shared_prefix: int  # fewest shared tokens that several prompts run once
    # how the plan routes prompt groups (plan.py)
    share_prompts: bool  # continuations read their prompt's keys and values (no re-run of the prompt)
    pack_prompts: bool  # prompt groups packed as trees into rows (packing.py)
    share_limit: int  # longest prompt + continuation for the cached passes (inside the smallest window)
    pack_depth: int  # longest prompt + continuation for a packed tree
    attention_per_key: float  # attention FLOPs per attended key, as a share of the weights' FLOPs per token
    project_rows: int  # scored positions gathered before one vocabulary projection


@dataclass
class Budget:
    """Padded tokens per batch; halved (at least 64) after an out-of-memory error."""

    batch_tokens: int

    def halve(self) -> None:
        self.batch_tokens = max(64, self.batch_tokens // 2)


@dataclass
class Counters:
    """The work a backend has done since it was made (or since a benchmark reset it)."""

    forward_tokens: int = 0  # tokens through the model, padding excluded
    # keys that the forwarded tokens attended to, summed (full layers, sliding-window layers): with forward_tokens
    # this gives the model FLOPs actually done, attention included
    attention_keys: list[int] = field(default_factory=lambda: [0, 0])
    projected_rows: int = 0  # positions projected onto the vocabulary: each once, however many targets it predicts
    backoffs: int = 0  # out-of-memory halvings of the budget

    def add_tokens(self, n: int) -> None:
        self.forward_tokens += n

    def add_keys(self, spans: Iterable[tuple[int, int]], window: int) -> None:
        """The keys attended to by `n` tokens that follow `past` earlier ones, for each (past, n)."""
        for past, n in spans:
            self.attention_keys[0] += _keys_seen(past, n, None)
            self.attention_keys[1] += _keys_seen(past, n, window)

    def add_projected(self, rows: int) -> None:
        self.projected_rows += rows

    def add_backoff(self) -> None:
        self.backoffs += 1


def _keys_seen(past: int, n: int, window: int | None) -> int:
    """Sum over k = past+1 .. past+n of min(k, window): keys seen by each of n consecutive tokens."""
    if n <= 0:
        return 0
    last = past + n
    if window is None or last <= window:
        return (past + 1 + last) * n // 2
    if past >= window:
        return window * n
    return (past + 1 + window) * (window - past) // 2 + window * (last - window)
