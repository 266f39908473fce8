"""Which rows of a task are evaluated and which are held apart as demonstrations: seeded samples that are the
same on every machine, and never overlap."""

from __future__ import annotations

import random

from .core import DEMO_POOL


def pick_indices(n: int, limit: int | None, seed: int, task: str) -> list[int]:
    """A seeded sample of `limit` row indices (sorted), the same on every machine."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(f"{seed}:{task}").sample(range(n), limit))


def demo_indices(n: int, evaluated: list[int], seed: int, task: str, size: int = DEMO_POOL) -> list[int]:
    """The demonstration pool: a seeded sample of rows that are not evaluated, so an evaluated example
    can never be shown as a demonstration."""
    taken = set(evaluated)
    rest = [i for i in range(n) if i not in taken]
    rng = random.Random(f"{seed}:{task}:demos")
    if len(rest) > size:
        rest = rng.sample(rest, size)  # a sample over all of `rest` without building a shuffled copy
    else:
        rng.shuffle(rest)
    return rest
