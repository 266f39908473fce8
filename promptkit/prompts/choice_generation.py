"""Multiple choice by generation: a multiple-choice request turned into a short greedy generation, and the generated
answer mapped back to a choice. For endpoints that return no prompt log-probabilities (hosted chat APIs), and to
compare both scoring modes on one model.

How the options are shown: a prompt that already shows every choice's text (the variant lists the options, or its
demonstrations show the answers) is sent as it is, and the model answers in its format. Otherwise a standard block is
appended — to the last user turn of a chat variant, to the end of a plain prompt — listing the options as A., B., …
and asking for the letter; a plain prompt then ends with `Answer:`. The answer is cut at the first newline (plain)
and limited to MAX_NEW_TOKENS tokens.

How an answer maps back (`parse_choice`), first rule that decides wins: the whole answer is one choice's text; a
letter (A, (B), C.) or number (1, 2.) within range; the answer begins with one choice's text (the longest if
several) and names no other choice after it; exactly one choice's text occurs in it as a whole word. Anything else is unparseable: it counts as wrong
and is reported per variant as the parse-failure rate."""

from __future__ import annotations

import re
from dataclasses import replace

from .render import Request

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_NEW_TOKENS = 16
INSTRUCTION = "Answer with the letter of the correct option."
_PUNCT = " \t\n.:;,!?\"'()[]*"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip(_PUNCT).lower())


def _occurs(needle: str, text: str) -> bool:
    """`needle` occurs in `text` as a whole word or phrase (case-insensitive)."""
    return bool(needle) and re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", text, re.IGNORECASE) is not None


def shows_options(text: str, choices: list[str]) -> bool:
    """Every choice's text appears in `text` (so the model can see what to answer)."""
    return all(_occurs(c.strip(), text) for c in choices)


def options_block(choices: list[str]) -> str:
    if len(choices) > len(LETTERS):
        raise ValueError(f"{len(choices)} choices; generation scoring letters at most {len(LETTERS)}")
    return "Options:\n" + "".join(f"{LETTERS[i]}. {c.strip()}\n" for i, c in enumerate(choices)) + INSTRUCTION


def as_generation(request: Request, choices: list[str]) -> Request:
    """The generation request that asks `request`'s question with its options shown (see the module docstring)."""
    if request.messages is not None:
        turns = list(request.messages)
        role, text = turns[-1]
        if not shows_options("\n".join(t for _, t in turns), choices):
            turns[-1] = (role, f"{text}\n\n{options_block(choices)}")
        return replace(request, continuations=(), stop=(), max_new_tokens=MAX_NEW_TOKENS, messages=tuple(turns),
                       temperature=0.0)
    prompt = request.prompt
    if not shows_options(prompt, choices):
        prompt = f"{prompt.rstrip()}\n\n{options_block(choices)}\nAnswer:"
    return replace(request, prompt=prompt, continuations=(), stop=("\n",), max_new_tokens=MAX_NEW_TOKENS,
                   temperature=0.0)


def parse_choice(answer: str, choices: list[str]) -> int | None:
    """The index of the choice a generated answer names, or None when it names none (or several)."""
    text = re.sub(r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option)(?:\s+is)?\s*[:\-]?\s*", "", answer, flags=re.IGNORECASE)
    a = _norm(text)
    if not a:
        return None
    names = [_norm(c) for c in choices]
    exact = [i for i, n in enumerate(names) if n == a]
    if len(exact) == 1:
        return exact[0]
    mark = re.match(r"^\(?([A-Z]|\d{1,2})\)?(?:[.):]|\s*$)", text.strip()) or re.fullmatch(r"\(?([a-z])\)?\.?", text.strip())
    if mark:
        key = mark.group(1)
        i = int(key) - 1 if key.isdigit() else LETTERS.index(key.upper())
        if 0 <= i < len(choices):
            return i
    starts = [i for i, n in enumerate(names) if n and a.startswith(n) and (len(a) == len(n) or not a[len(n)].isalnum())]
    if starts:
        longest = max(len(names[i]) for i in starts)
        best = [i for i in starts if len(names[i]) == longest]
        rest = a[longest:] if len(best) == 1 else ""
        if len(best) == 1 and not any(_occurs(n, rest) for i, n in enumerate(names) if i != best[0]):
            return best[0]
    inside = [i for i, n in enumerate(names) if _occurs(n, a)]
    return inside[0] if len(inside) == 1 else None
