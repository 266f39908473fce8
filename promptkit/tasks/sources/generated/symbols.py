"""Characters: what an emoji shows (the emoji package's English names) and the case of letters from the Latin,
Greek and Cyrillic alphabets (Python's unicodedata)."""

from __future__ import annotations

import random
import unicodedata
from functools import lru_cache

from .build import Generator, fixed, mc, similar


@lru_cache(maxsize=1)
def emojis() -> list[tuple[str, str]]:
    """(emoji, name) for single-character, fully qualified emoji with a plain name (no flags, keycaps or skin
    tones), the name with underscores as spaces."""
    import emoji

    out = []
    for char, info in sorted(emoji.EMOJI_DATA.items()):
        name = info["en"].strip(":").replace("_", " ")
        if len(char) == 1 and info.get("status") == emoji.STATUS["fully_qualified"] and name.isascii() \
                and all(c.isalpha() or c == " " for c in name):
            out.append((char, name.lower()))
    return out


def emoji_name(rng: random.Random):
    table = emojis()
    names = [n for _, n in table]
    for char, name in rng.sample(table, len(table)):
        # no distractor shares a word with the name ("red apple" vs "green apple" would be a coin toss for a reader
        # who knows the picture only roughly; one word in common is too close to call the row sound)
        words = set(name.split())
        pool = [n for n in names if not words & set(n.split())]
        yield mc(f"What does the emoji {char} show?", name, similar(pool, name, 3, rng), rng)


def emoji_of_name(rng: random.Random):
    table = emojis()
    by_name = dict((n, c) for c, n in table)
    names = [n for _, n in table]
    for char, name in rng.sample(table, len(table)):
        words = set(name.split())
        wrong = similar([n for n in names if not words & set(n.split())], name, 3, rng)
        row = mc(f"Which emoji is named \"{name}\"?", name, wrong, rng)
        row["choices"] = [by_name[n] for n in row["choices"]]
        yield row


@lru_cache(maxsize=1)
def cased_letters() -> list[tuple[str, str]]:
    """(letter, 'uppercase' | 'lowercase') for the letters of the basic Latin, Greek and Cyrillic blocks that have a
    single-character partner of the other case."""
    out = []
    for block in (range(0x41, 0x7B), range(0x391, 0x3CA), range(0x410, 0x450)):
        for code in block:
            ch = chr(code)
            if not ch.isalpha() or unicodedata.category(ch) not in ("Lu", "Ll"):
                continue
            other = ch.lower() if ch.isupper() else ch.upper()
            if len(other) == 1 and other != ch:
                out.append((ch, "uppercase" if ch.isupper() else "lowercase"))
    return out


def letter_case(rng: random.Random):
    table = cased_letters()
    choices = ["uppercase", "lowercase"]
    for ch, case in rng.sample(table, len(table)):
        yield fixed(f"Is the letter {ch} uppercase or lowercase?", choices, case)


def _g(name, make, fmt, instruction, packages=(), **options):
    return Generator(name, make, fmt, instruction, packages, options=options)


GENERATORS = [
    _g("emoji_name", emoji_name, "4-5 way", "Say what the emoji shows.", ("emoji",)),
    _g("emoji_of_name", emoji_of_name, "4-5 way", "Choose the emoji that shows the thing named.", ("emoji",)),
    _g("letter_case", letter_case, "2-3 way", "Say whether the letter is uppercase or lowercase."),
]
