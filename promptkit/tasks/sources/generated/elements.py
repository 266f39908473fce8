"""Chemical elements: names, symbols and atomic numbers, from periodictable (elements 1 to 103: the heavier
ones were named recently and are little known)."""

from __future__ import annotations

import random
from functools import lru_cache

from .build import Generator, each_both_ways, forever, generation, mc, similar, true_false

PACKAGES = ("periodictable",)


@lru_cache(maxsize=1)
def elements() -> list[tuple[int, str, str]]:
    """(atomic number, symbol, name) for elements 1-103."""
    import periodictable

    return [(e.number, e.symbol, e.name) for e in periodictable.elements if 1 <= e.number <= 103]


def element_of_symbol(rng: random.Random):
    table = elements()
    names = [n for _, _, n in table]
    for _, symbol, name in rng.sample(table, len(table)):
        yield mc(f"Which chemical element has the symbol {symbol}?", name, similar(names, name, 3, rng), rng)


def symbol_of_element(rng: random.Random):
    table = elements()
    symbols = [s for _, s, _ in table]
    for _, symbol, name in rng.sample(table, len(table)):
        # distractors of the same length that share the first letter where possible: "Na", "N", "Ne", "Ni"
        near = [s for s in symbols if s[0] == symbol[0] and s != symbol]
        pool = near if len(near) >= 3 else symbols
        yield mc(f"What is the chemical symbol of {name}?", symbol, similar(pool, symbol, 3, rng), rng)


def symbol_statement(rng: random.Random):
    table = elements()

    def one(rng, element, truth):
        number, symbol, name = element
        if not truth:
            others = [s for n, s, _ in table if n != number and (s[0] == symbol[0] or s[0] == name[0].upper())]
            symbol = rng.choice(others or [s for n, s, _ in table if n != number])
        return true_false(f"The chemical symbol of {name} is {symbol}.", truth)
    return each_both_ways(rng, table, one)


def larger_atomic_number(rng: random.Random):
    table = elements()

    def one(rng, _):
        a, b = rng.sample(table, 2)
        if abs(a[0] - b[0]) < 3:
            return None
        names = [a[2], b[2]]
        return {"input": f"Which element has the larger atomic number, {a[2]} or {b[2]}?", "choices": names,
                "target": names.index(max(a, b)[2])}
    return forever(rng, one)


def atomic_number_lookup(rng: random.Random):
    """A long input: 50 elements and their atomic numbers, then a question about one of them."""
    table = elements()

    def one(rng, _):
        listed = rng.sample(table, 50)
        asked = rng.choice(listed)
        lines = "\n".join(f"{name}: {number}" for number, _, name in listed)
        others = [str(n) for n, _, _ in listed if n != asked[0]]
        return mc(f"Elements and their atomic numbers:\n{lines}\n\nAccording to the list, what is the atomic number of "
                  f"{asked[2]}?", str(asked[0]), similar(others, str(asked[0]), 3, rng), rng)
    return forever(rng, one)


def element_name_answer(rng: random.Random):
    table = elements()
    for _, symbol, name in rng.sample(table, len(table)):
        yield generation(f"Which chemical element has the symbol {symbol}?", name)


def _g(name, make, fmt, instruction, **options):
    return Generator(name, make, fmt, instruction, PACKAGES, options=options)


GENERATORS = [
    _g("element_of_symbol", element_of_symbol, "4-5 way", "Name the chemical element with the given symbol."),
    _g("symbol_of_element", symbol_of_element, "4-5 way", "Give the chemical symbol of the element."),
    _g("element_symbol_statement", symbol_statement, "true/false", "Say whether the statement about a chemical symbol is true or false."),
    _g("larger_atomic_number", larger_atomic_number, "options in input", "Say which of the two elements has the larger atomic number."),
    _g("atomic_number_lookup", atomic_number_lookup, "4-5 way", "Answer from the list."),
    _g("element_name", element_name_answer, "exact", "Name the chemical element with the given symbol.", max_new_tokens=8),
]
