"""The pieces every generator is made of: a Generator's description, sound multiple-choice rows (one correct
choice, no duplicates, distractors of the same kind and a similar length) and bounded, deterministic sampling."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

Row = dict  # {"input": str, "choices": list[str] | None, "target": int | list[str]}

SIZE = 1000  # rows a generator makes at most (fewer where its fact table is smaller)
FORMATS = ("yes/no", "true/false", "options in input", "2-3 way", "4-5 way", "many-way", "exact", "numeric")


@dataclass(frozen=True)
class Generator:
    """One generated task: `make(rng)` yields rows (duplicates by input are dropped, the first `SIZE` kept)."""

    name: str
    make: Callable[[random.Random], Iterator[Row]]
    format: str  # one of FORMATS: the multiple-choice shape, or the kind of generation answer
    instruction: str
    packages: tuple[str, ...] = ()  # distributions the facts come from (their versions go into the task's origin)
    description: str = ""
    options: dict = field(default_factory=dict)  # suite-task options it implies: metric, max_new_tokens, stop

    @property
    def kind(self) -> str:
        return "generation" if self.format in ("exact", "numeric") else "multiple_choice"


def mc(question: str, answer: str, distractors: list[str], rng: random.Random) -> Row:
    """A multiple-choice row with the answer at a random position; refuses a duplicate choice."""
    choices = [answer, *distractors]
    if len({c.strip().lower() for c in choices}) != len(choices) or not all(c.strip() for c in choices):
        raise ValueError(f"duplicate or empty choices {choices!r} for {question!r}")
    rng.shuffle(choices)
    return {"input": question, "choices": choices, "target": choices.index(answer)}


def fixed(question: str, choices: list[str], answer: str) -> Row:
    """A row whose choices keep a fixed order (yes/no, true/false, even/odd)."""
    if answer not in choices or len(set(choices)) != len(choices):
        raise ValueError(f"answer {answer!r} is not exactly one of {choices!r}")
    return {"input": question, "choices": list(choices), "target": choices.index(answer)}


def yes_no(question: str, truth: bool) -> Row:
    return fixed(question, ["yes", "no"], "yes" if truth else "no")


def true_false(statement: str, truth: bool) -> Row:
    return fixed(statement, ["True", "False"], "True" if truth else "False")


def generation(question: str, *references: str) -> Row:
    refs = [str(r) for r in references]
    if not refs or not all(r.strip() for r in refs):
        raise ValueError(f"no reference answer for {question!r}")
    return {"input": question, "choices": None, "target": refs}


def similar(pool: list[str], answer: str, k: int, rng: random.Random, avoid: set[str] | frozenset = frozenset()) -> list[str]:
    """k distinct distractors from `pool` (the answer's own fact table), drawn among those whose length is closest
    to the answer's, never the answer or anything in `avoid` (compared without case)."""
    banned = {answer.lower(), *(a.lower() for a in avoid)}
    seen: set[str] = set()
    candidates = []
    for p in sorted(set(pool)):  # sorted: the same draw on every machine, whatever the hash seed
        if p.lower() not in banned and p.lower() not in seen:
            seen.add(p.lower())
            candidates.append(p)
    if len(candidates) < k:
        raise ValueError(f"only {len(candidates)} distractors for {answer!r}")
    candidates.sort(key=lambda p: abs(len(p) - len(answer)))  # stable: ties stay in sorted order
    return rng.sample(candidates[: max(3 * k, 8)], k)


def rows(gen: Generator, seed: str, size: int = SIZE) -> list[Row]:
    """The generator's rows, deterministic for (name, seed): the first `size` distinct inputs it yields, with a
    bounded number of attempts (a generator with a small fact table ends sooner)."""
    rng = random.Random(f"{seed}:{gen.name}")
    out: list[Row] = []
    seen: set[str] = set()
    for attempt, row in enumerate(gen.make(rng)):
        if row["input"] not in seen:
            seen.add(row["input"])
            out.append(row)
        if len(out) >= size or attempt >= 20 * size:
            break
    return out


def forever(rng: random.Random, make_one: Callable[[random.Random, bool], Row | None]) -> Iterator[Row]:
    """Rows from `make_one(rng, truth)` with the truth alternating (balanced classes); None is skipped. Bounded by
    `rows`, which stops pulling."""
    i = 0
    while True:
        row = make_one(rng, i % 2 == 0)
        i += 1
        if row is not None:
            yield row


def each_both_ways(rng: random.Random, table: list, make_one: Callable[[random.Random, object, bool], Row | None]) -> Iterator[Row]:
    """One true and one false row for every item of a small fact table, in a seeded order: balanced classes even
    where the true rows are few (a table of 100 facts has only 100 true statements)."""
    pairs = [(item, truth) for item in table for truth in (True, False)]
    rng.shuffle(pairs)
    for item, truth in pairs:
        row = make_one(rng, item, truth)
        if row is not None:
            yield row
