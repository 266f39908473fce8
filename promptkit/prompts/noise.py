"""Noisy and incomplete inputs: seeded, deterministic perturbations of an example's input (or of a
prompt's own wording), named by a spec such as "typos:0.05", and the `noise` axis that carries them."""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, replace

from ..tasks.core import Example

KINDS = ("typos", "word_drop", "word_swap", "casing", "whitespace", "choices")
CLEAN = "none"
_LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Perturbation:
    """One kind of noise at one rate, applied to the example's input or to the prompt's wording."""

    kind: str
    rate: float
    target: str = "input"

    @property
    def spec(self) -> str:
        head = "prompt." if self.target == "prompt" else ""
        return f"{head}{self.kind}" if self.kind == "choices" else f"{head}{self.kind}:{self.rate:g}"


def parse(spec: str) -> Perturbation | None:
    """'typos:0.05', 'word_drop:0.1', 'casing:0.2', 'whitespace:0.1', 'choices' (shuffle the choices),
    'prompt.typos:0.05' (the prompt's own wording); 'none' is the clean input. ValueError if malformed."""
    if spec == CLEAN:
        return None
    if not isinstance(spec, str):
        raise ValueError(f"a noise spec is a string like 'typos:0.05' (got {spec!r})")
    target, rest = ("prompt", spec.removeprefix("prompt.")) if spec.startswith("prompt.") else ("input", spec)
    kind, sep, rate = rest.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown noise '{kind}' in {spec!r}; use one of {', '.join(KINDS)} (or none)")
    if kind == "choices":
        if sep:
            raise ValueError(f"'choices' shuffles the answer choices and takes no rate (got {spec!r})")
        if target == "prompt":
            raise ValueError("'choices' applies to the example, not to the prompt's wording")
        return Perturbation(kind, 1.0, target)
    try:
        value = float(rate)
    except ValueError:
        raise ValueError(f"noise {spec!r} needs a rate from 0 to 1, as in '{kind}:0.05'") from None
    if not 0 <= value <= 1:
        raise ValueError(f"noise rate in {spec!r} must be from 0 to 1")
    return Perturbation(kind, value, target)


def typos(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """Each non-space character is, with probability `rate`, the site of one edit: a letter inserted after
    it, deleted, swapped with the character before it, or replaced by another letter. Returns the text and
    the number of edits."""
    out: list[str] = []
    hits = 0
    for c in text:
        if c.isspace() or rng.random() >= rate:
            out.append(c)
            continue
        hits += 1
        op = rng.randrange(4)
        if op == 0:
            out += [c, rng.choice(_LETTERS)]
        elif op == 2 and out and not out[-1].isspace():
            out.insert(len(out) - 1, c)
        elif op != 1:  # substitute (also a swap with nothing before it)
            out.append(rng.choice([x for x in _LETTERS if x != c.lower()]))
    return "".join(out), hits


def perturb_text(text: str, p: Perturbation, rng: random.Random) -> str:
    """`text` with noise of kind `p.kind`; each character (or word, or space) is hit with probability `p.rate`."""
    if p.kind == "typos":
        return typos(text, p.rate, rng)[0]
    if p.kind in ("word_drop", "word_swap"):
        words = text.split(" ")
        if p.kind == "word_drop":
            kept = [w for w in words if rng.random() >= p.rate]
            return " ".join(kept if kept else words[:1])
        i = 0
        while i < len(words) - 1:
            if rng.random() < p.rate:
                words[i], words[i + 1] = words[i + 1], words[i]
                i += 1
            i += 1
        return " ".join(words)
    if p.kind == "casing":
        return "".join(c.swapcase() if c.isalpha() and rng.random() < p.rate else c for c in text)
    if p.kind == "whitespace":  # a hit space is doubled, dropped (words run together) or becomes a newline
        out = []
        for c in text:
            if c == " " and rng.random() < p.rate:
                out.append(rng.choice(["  ", "", "\n"]))
            else:
                out.append(c)
        return "".join(out)
    raise ValueError(f"unknown text noise '{p.kind}'")


def rng_for(p: Perturbation, seed: int, task: str, example: str) -> random.Random:
    """The same example gets the same noise under every variant (comparisons stay paired)."""
    return random.Random(f"{seed}:{p.spec}:{task}:{example}")


def perturb_example(example: Example, p: Perturbation | None, seed: int, task: str) -> Example:
    """The example with noise on its input, or its choices shuffled (the target follows its choice).
    The answer choices and the target are never changed otherwise."""
    if p is None or p.target != "input":
        return example
    rng = rng_for(p, seed, task, example.id)
    if p.kind == "choices":
        if not example.choices:
            return example
        order = list(range(len(example.choices)))
        rng.shuffle(order)
        where = {old: new for new, old in enumerate(order)}
        meta = dict(example.meta)
        if "correct" in meta:
            meta["correct"] = sorted(where[i] for i in meta["correct"])
        return replace(example, choices=[example.choices[i] for i in order], target=where[example.target], meta=meta)
    return replace(example, input=perturb_text(example.input, p, rng))


def perturb_wording(text: str, example: Example, p: Perturbation | None, seed: int, task: str) -> str:
    """A rendered prompt with noise on its own wording (labels, instructions, cues), leaving the example's
    input and choices exactly as they are wherever they appear in it."""
    if p is None or p.target != "prompt":
        return text
    rng = rng_for(p, seed, task, example.id)
    keep = sorted({s for s in [example.input, *(example.choices or [])] if s}, key=len, reverse=True)
    if not keep:
        return perturb_text(text, p, rng)
    pieces = re.split("(" + "|".join(map(re.escape, keep)) + ")", text)
    # odd pieces are the protected matches; even pieces are the prompt's own text
    return "".join(piece if k % 2 else perturb_text(piece, p, rng) for k, piece in enumerate(pieces))
