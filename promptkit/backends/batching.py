"""Batching that any backend can use: token-budget batches, halving a batch on out-of-memory instead of
failing, and handing each finished batch on (to the engine's cache commit and the progress bar)."""

from __future__ import annotations

from typing import Callable


def budget_batches(items: list, cost: Callable, budget: int, padded: bool = False):
    """Split length-sorted items into batches whose cost stays within `budget` (at least one item each).

    With `padded`, a batch costs (longest item) × (number of items), as right-padding does.
    """
    batch: list = []
    total = widest = 0
    for item in items:
        c = cost(item)
        new_total = max(widest, c) * (len(batch) + 1) if padded else total + c
        if batch and new_total > budget:
            yield batch
            batch, total, widest = [], 0, 0
            new_total = c
        batch.append(item)
        total, widest = new_total, max(widest, c)
    if batch:
        yield batch


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error of any device (torch's OutOfMemoryError, or the allocator's message)."""
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def run_halving(batch: list, compute: Callable, indices: Callable, finish: Callable, shrink: Callable[[], None]) -> None:
    """Compute one batch and `finish(indices(batch), output)`; on out-of-memory call `shrink` (the backend lowers
    its budget and frees what it can) and run the two halves instead. A single item that does not fit fails."""
    try:
        out = compute(batch)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_oom(exc) or len(batch) == 1:
            raise
        shrink()
        half = len(batch) // 2
        run_halving(batch[:half], compute, indices, finish, shrink)
        run_halving(batch[half:], compute, indices, finish, shrink)
        return
    finish(indices(batch), out)


def collector(results: list, on_done: Callable | None, progress: Callable | None,
              make: Callable = lambda indices, out: out) -> Callable:
    """The `finish` of a batch loop: turn a batch's output into results (`make`), store them by index,
    hand them on (the engine commits them to the cache) and advance the progress bar."""
    def finish(indices: list[int], out: list) -> None:
        made = make(indices, out)
        for j, r in zip(indices, made):
            results[j] = r
        if on_done:
            on_done(indices, made)
        if progress:
            progress(len(indices))
    return finish
