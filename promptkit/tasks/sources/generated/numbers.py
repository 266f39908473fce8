"""Numbers: arithmetic, comparison, parity, primes, numbers in words (inflect) and Roman numerals (computed)."""

from __future__ import annotations

import random
from functools import lru_cache

from .build import Generator, fixed, forever, generation, mc, true_false, yes_no

PACKAGES_WORDS = ("inflect",)


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


@lru_cache(maxsize=None)
def words(n: int) -> str:
    return _inflect().number_to_words(n)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def roman(n: int) -> str:
    out = ""
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                           (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + letters, n - value
    return out


def _near(rng: random.Random, answer: int, k: int, spread: int) -> list[int]:
    """k distinct wrong numbers near the answer: off by a little, by ten, or with two digits swapped."""
    out: list[int] = []
    digits = str(answer)
    for _ in range(200):
        kind = rng.random()
        if kind < 0.4:
            v = answer + rng.choice([-1, 1]) * rng.randint(1, spread)
        elif kind < 0.7:
            v = answer + rng.choice([-10, 10, -20, 20])
        elif len(digits) > 1:
            i, j = sorted(rng.sample(range(len(digits)), 2))
            s = list(digits)
            s[i], s[j] = s[j], s[i]
            v = int("".join(s)) if s[0] != "0" else answer
        else:
            v = answer + rng.randint(1, spread)
        if v != answer and v >= 1 and v not in out:
            out.append(v)
        if len(out) == k:
            return out
    raise ValueError(f"no {k} distractors near {answer}")


def addition_statement(rng: random.Random):
    def one(rng, truth):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        shown = a + b if truth else _near(rng, a + b, 1, 3)[0]
        return true_false(f"{a} + {b} = {shown}", truth)
    return forever(rng, one)


def larger_number(rng: random.Random):
    def one(rng, _):
        a = rng.randint(100, 9999)
        s = list(str(a))
        i, j = sorted(rng.sample(range(len(s)), 2))
        s[i], s[j] = s[j], s[i]
        b = int("".join(s))
        if b == a or s[0] == "0":
            return None
        pair = [str(a), str(b)] if rng.random() < 0.5 else [str(b), str(a)]
        return {"input": f"Which number is larger, {pair[0]} or {pair[1]}?", "choices": pair, "target": pair.index(str(max(a, b)))}
    return forever(rng, one)


def even_or_odd(rng: random.Random):
    def one(rng, truth):
        n = rng.randint(10, 9999)
        n += (n % 2) if truth else (1 - n % 2)  # truth: even
        return fixed(f"Is {n} even or odd?", ["even", "odd"], "even" if n % 2 == 0 else "odd")
    return forever(rng, one)


def is_prime(rng: random.Random):
    def one(rng, truth):
        n = rng.randint(11, 999)
        if _is_prime(n) != truth or n % 2 == 0 or n % 5 == 0:  # odd composites only: no answer from the last digit
            return None
        return yes_no(f"Is {n} a prime number?", truth)
    return forever(rng, one)


def compare_product(rng: random.Random):
    labels = ["less than", "equal to", "greater than"]

    def one(rng, _):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        want = rng.randrange(3)
        c = a * b + (rng.randint(1, 9) if want == 0 else 0 if want == 1 else -rng.randint(1, 9))
        if c <= 0:
            return None
        return fixed(f"Is {a} × {b} less than, equal to, or greater than {c}?", labels, labels[want])
    return forever(rng, one)


def sign_of_product(rng: random.Random):
    labels = ["positive", "negative", "zero"]

    def one(rng, _):
        want = rng.randrange(3)
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if want == 0:
            a, b = (-a, -b) if rng.random() < 0.5 else (a, b)
        elif want == 1:
            a, b = (-a, b) if rng.random() < 0.5 else (a, -b)
        else:
            a, b = (0, b * rng.choice([-1, 1])) if rng.random() < 0.5 else (a * rng.choice([-1, 1]), 0)
        return fixed(f"Is ({a}) × ({b}) positive, negative, or zero?", labels, labels[want])
    return forever(rng, one)


def number_in_words(rng: random.Random):
    def one(rng, _):
        n = rng.randint(21, 999)
        wrong = [v for v in _near(rng, n, 3, 9)]
        return mc(f"How is the number {n} written in words?", words(n), [words(v) for v in wrong], rng)
    return forever(rng, one)


def multiplication_choice(rng: random.Random):
    def one(rng, _):
        a, b = rng.randint(3, 19), rng.randint(3, 12)
        return mc(f"What is {a} × {b}?", str(a * b), [str(v) for v in _near(rng, a * b, 3, 6)], rng)
    return forever(rng, one)


def roman_numeral(rng: random.Random):
    def one(rng, _):
        n = rng.randint(4, 399)
        return mc(f"How is {n} written in Roman numerals?", roman(n), [roman(v) for v in _near(rng, n, 3, 6)], rng)
    return forever(rng, one)


def addition_answer(rng: random.Random):
    # small numbers: Gemma 3 270M answers no two-digit sum right with any built-in prompt (0 of 128, 2026-12-07)
    def one(rng, _):
        a, b = rng.randint(1, 19), rng.randint(1, 9)
        return generation(f"What is {a} + {b}?", str(a + b))
    return forever(rng, one)


def subtraction_answer(rng: random.Random):
    def one(rng, _):
        a, b = rng.randint(10, 29), rng.randint(1, 9)
        return generation(f"What is {a} - {b}?", str(a - b))
    return forever(rng, one)


def arithmetic_expression(rng: random.Random):
    def one(rng, _):
        terms = [rng.randint(1, 20) for _ in range(rng.randint(2, 3))]
        ops = [rng.choice("+-*") for _ in terms[1:]]
        text = " ".join([str(terms[0]), *(f"{o} {t}" for o, t in zip(ops, terms[1:]))])
        value = eval(text, {"__builtins__": {}})  # whole numbers and + - * only, built just above
        return generation(f"What is {text}?", str(value))
    return forever(rng, one)


def number_from_words(rng: random.Random):
    def one(rng, _):
        n = rng.randint(21, 999)
        return generation(f"Write the number {words(n)} in digits.", str(n))
    return forever(rng, one)


def _g(name, make, fmt, instruction, packages=(), **options):
    return Generator(name, make, fmt, instruction, packages, options=options)


GENERATORS = [
    _g("addition_statement", addition_statement, "true/false", "Say whether the sum is correct."),
    _g("larger_number", larger_number, "options in input", "Say which of the two numbers is larger."),
    _g("even_or_odd", even_or_odd, "2-3 way", "Say whether the number is even or odd."),
    _g("is_prime", is_prime, "yes/no", "Answer yes or no: is the number prime?"),
    _g("compare_product", compare_product, "2-3 way", "Compare the product with the number."),
    _g("sign_of_product", sign_of_product, "2-3 way", "Say whether the product is positive, negative, or zero."),
    _g("number_in_words", number_in_words, "4-5 way", "Write the number in words.", PACKAGES_WORDS),
    _g("multiplication_choice", multiplication_choice, "4-5 way", "Give the product."),
    _g("roman_numeral", roman_numeral, "4-5 way", "Write the number in Roman numerals."),
    _g("addition", addition_answer, "numeric", "Give the sum.", metric="numeric", max_new_tokens=6),
    _g("subtraction", subtraction_answer, "numeric", "Give the difference.", metric="numeric", max_new_tokens=6),
    _g("arithmetic_expression", arithmetic_expression, "numeric", "Calculate the value of the expression (multiplication "
       "before addition and subtraction).", metric="numeric", max_new_tokens=6),
    _g("number_from_words", number_from_words, "numeric", "Write the number in digits.", PACKAGES_WORDS, metric="numeric", max_new_tokens=6),
]
