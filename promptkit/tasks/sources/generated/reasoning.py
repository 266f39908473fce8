"""Reasoning puzzles from reasoning-gym's procedural generators: syllogisms, family relations, words spelled
backward and letter counts. (Its arithmetic expressions are not used: in 0.1.25, "Calculate 8 - 7 * 9." has the
answer 9, the operations taken from left to right.) The answer instructions its questions carry ("(Answer Yes
or No)", "Answer with a single word.") are cut off: the task's instruction and the prompt template say how to
answer, so a template never repeats them."""

from __future__ import annotations

import random

from .build import Generator, generation, yes_no

PACKAGES = ("reasoning-gym",)
FAMILY_SUFFIXES = (" Respond only with the word that describes their relationship.", " Answer with a single word.",
                   " Provide the relationship in one word.")


def _items(name: str, rng: random.Random, size: int = 1200, **config):
    import reasoning_gym

    return list(reasoning_gym.create_dataset(name, seed=rng.randrange(2 ** 31), size=size, **config))


def _cut(question: str, suffixes: tuple[str, ...]) -> str:
    q = question.strip()
    for s in suffixes:
        if q.endswith(s.strip()):
            return q[: -len(s.strip())].rstrip()
    raise ValueError(f"reasoning-gym question without a known answer instruction: {question[-80:]!r}")


def syllogism(rng: random.Random):
    items = _items("syllogism", rng)
    valid = [x for x in items if x["answer"] == "Yes"]
    invalid = [x for x in items if x["answer"] == "No"]

    for yes, no in zip(valid, invalid):  # as many valid as invalid conclusions (the generator makes mostly valid ones)
        for x in (yes, no):
            yield yes_no(_cut(x["question"], ("(Answer Yes or No)",)), x["answer"] == "Yes")


RELATIONS = ["father", "mother", "husband", "wife", "son", "daughter", "grandfather", "grandmother",
             "father-in-law", "mother-in-law", "brother", "sister"]


def family_relation(rng: random.Random):
    for x in _items("family_relationships", rng):
        if x["answer"] not in RELATIONS:
            continue
        yield {"input": _cut(x["question"], FAMILY_SUFFIXES), "choices": list(RELATIONS), "target": RELATIONS.index(x["answer"])}


def family_relation_answer(rng: random.Random):
    for x in _items("family_relationships", rng):
        yield generation(_cut(x["question"], FAMILY_SUFFIXES), x["answer"])


def spell_backward(rng: random.Random):
    for x in _items("spell_backward", rng, min_word_len=3, max_word_len=6):
        yield generation(f"Spell the word \"{x['metadata']['word']}\" backward.", x["answer"])


def count_letter(rng: random.Random):
    for x in _items("letter_counting", rng, min_words=3, max_words=6):
        yield generation(x["question"].strip(), x["answer"])


def _g(name, make, fmt, instruction, **options):
    return Generator(name, make, fmt, instruction, PACKAGES, options=options)


GENERATORS = [
    _g("syllogism", syllogism, "yes/no", "Answer yes or no: does the conclusion follow from the statements?"),
    _g("family_relation", family_relation, "many-way", "Name how the two people are related."),
    _g("family_relation_word", family_relation_answer, "exact", "Name how the two people are related, in one word.", max_new_tokens=6),
    _g("spell_backward", spell_backward, "exact", "Spell the word backward.", max_new_tokens=8),
    _g("count_letter", count_letter, "numeric", "Count how many times the letter appears.", metric="numeric", max_new_tokens=4),
]
