"""Rendering: Variant × Task × Example → Request, the exact text the model sees: the prompt (with any
few-shot demonstrations and the model's chat template) and either the continuations to score or what
to generate."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..errors import PromptkitError
from .noise import CLEAN, perturb_example, perturb_wording
from .noise import parse as parse_noise
from ..tasks.core import DEFAULT_MAX_NEW_TOKENS, Example, Task
from .variants import Variant

DEFAULT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Request:
    """A fully rendered request: one prompt and either one continuation per choice (scored) or a
    generation spec (greedy, up to `max_new_tokens`, cut at the first stop sequence)."""

    variant: str
    task: str
    example: str
    prompt: str
    continuations: tuple[str, ...]
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 0  # > 0: generate instead of scoring continuations
    messages: tuple[tuple[str, str], ...] | None = None  # chat turns, until apply_chat() writes `prompt`
    temperature: float = 0.0  # generation: 0 is greedy; above 0, sampled from `seed`
    seed: int = 0

    @property
    def generative(self) -> bool:
        return self.max_new_tokens > 0

    @property
    def duplicated(self) -> bool:
        """Two or more choices render to the same continuation: they get identical scores, and a model can
        never pick the later ones (the run records a warning, see run.work.duplicate_notes)."""
        return len(set(self.continuations)) < len(self.continuations)


def context(variant: Variant, task: Task, example: Example) -> dict:
    """Names a template may use: the canonical fields, the task's instruction, and the axes. The example's data
    is given deep-frozen, so that nothing a template does can change what a later render of it shows."""
    return {
        **variant.values,
        "id": example.id,
        "input": example.input,
        "choices": list(example.choices or []),  # a fresh copy for every render
        "instruction": task.instruction,
        "meta": frozen(example.meta),
    }


def _refuse(self, *args, **kwargs):
    raise TypeError("the example's data is read-only in a template")


class FrozenDict(dict):
    """A dict no one can change (still a dict for filters and `tojson`, so the sandbox refuses its mutating
    methods as a TemplateSecurityError before they are reached; they raise here too)."""

    __setitem__ = __delitem__ = __ior__ = update = setdefault = pop = popitem = clear = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


class FrozenList(list):
    """A list no one can change, in the same way."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = clear = sort = \
        reverse = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        return (FrozenList, (list(self),))


def frozen(value):
    """A deep, read-only copy of data: dicts become FrozenDicts, lists FrozenLists, tuples tuples, sets frozensets."""
    if isinstance(value, dict):
        return FrozenDict({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(frozen(v) for v in value)
    if isinstance(value, tuple):
        return tuple(frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(frozen(v) for v in value)
    return value


def select_demos(task: Task, example: Example, k: int, how: str = "first_k", order: str = "as_selected",
                 seed: int = 0) -> list[Example]:
    """Up to `k` demonstrations for `example` from the task's held-apart pool, never the example itself
    (nor a pool row with the same input text).

    first_k: the pool's first k (the same for every example, so prompts share a prefix);
    random: a seeded sample per example; balanced: a seeded sample spread evenly over labels (the
    answer text when all examples offer the same choices, else the correct position).
    Order: as selected, reversed, or shuffled (seeded per example)."""
    pool = [d for d in task.demos if d.id != example.id and d.input != example.input]
    rng = random.Random(f"{seed}:{task.name}:{example.id}")
    if how == "first_k":
        chosen = pool[:k]
    elif how == "random":
        chosen = rng.sample(pool, min(k, len(pool)))
    elif how == "balanced":
        same_choices = len({tuple(d.choices or ()) for d in pool}) == 1
        groups: dict[object, list[Example]] = {}
        for d in pool:
            label = d.answer() if d.generative or same_choices else d.correct_indices()[0]
            groups.setdefault(label, []).append(d)
        buckets = list(groups.values())
        for bucket in buckets:
            rng.shuffle(bucket)
        rng.shuffle(buckets)
        chosen = []
        while len(chosen) < k and any(buckets):
            for bucket in buckets:
                if bucket and len(chosen) < k:
                    chosen.append(bucket.pop())
    else:
        raise PromptkitError(f"unknown demonstration selection '{how}'; use first_k, random or balanced")
    if order == "reversed":
        chosen = chosen[::-1]
    elif order == "shuffled":
        chosen = list(chosen)
        random.Random(f"{seed}:{task.name}:{example.id}:order").shuffle(chosen)
    elif order != "as_selected":
        raise PromptkitError(f"unknown demonstration order '{order}'; use as_selected, reversed or shuffled")
    return chosen


def noisy_example(variant: Variant, task: Task, example: Example, seed: int = 0) -> Example:
    """The example as the variant shows it: with noise on its input, or its choices shuffled (and the
    target moved with its choice), when the variant has a `noise` axis value; else unchanged."""
    return perturb_example(example, parse_noise(variant.values.get("noise", CLEAN)), seed, task.name)


def render(variant: Variant, task: Task, example: Example, seed: int = 0) -> Request:
    family = variant.family
    values = variant.values
    shown = example
    noise = parse_noise(values.get("noise", CLEAN))
    example = noisy_example(variant, task, example, seed)
    ctx = context(variant, task, example)
    query = perturb_wording(family.render("prompt", ctx), example, noise, seed, task.name)
    header = perturb_wording(family.render("header", ctx), example, noise, seed, task.name + ":header") if family.header else ""
    chat = values.get("chat", False)
    system = chat if isinstance(chat, str) else values.get("system")  # a string value: chat with that system message
    separator = str(values.get("demo_separator", DEFAULT_SEPARATOR))
    demos = []
    shots = int(values.get("shots", 0) or 0)
    source = values.get("demo_source", "real")
    if shots and source != "none":
        pool = task if source == "real" else replace(task, demos=task.synthetic)
        for demo in select_demos(pool, shown, shots, values.get("demo_selection", "first_k"),
                                 values.get("demo_order", "as_selected"), seed):
            dctx = context(variant, task, demo)
            index = 0 if demo.generative else demo.correct_indices()[0]
            answer = family.render("continuation", {**dctx, "choice": demo.answer(), "index": index})
            demos.append((family.render("prompt", dctx), answer))
    if example.generative:
        continuations: tuple[str, ...] = ()
        stop = list(family.generation.get("stop", []))
        stop += [s for s in task.stop if s not in stop]
        if demos and not chat and "\n" in separator and separator not in stop:
            stop.append(separator)  # the model would go on to write another demonstration
        limit = task.max_new_tokens or family.generation.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS
    else:
        continuations = tuple(
            family.render("continuation", {**ctx, "choice": choice, "index": i})
            for i, choice in enumerate(example.choices or [])
        )
        for i, text in enumerate(continuations):
            if not text.strip():
                raise PromptkitError(
                    f"{family.where('continuation')}: template family '{family.name}' renders an empty continuation "
                    f"for choice {i} of task '{task.name}', example '{example.id}'; a continuation must contain the answer"
                )
        stop, limit = [], 0
    if chat:  # the model's own chat template is applied once the model is loaded (apply_chat)
        turns: list[tuple[str, str]] = []
        if system:
            turns.append(("system", str(system)))
        lead = header + separator if header else ""
        for prompt, answer in demos:
            turns += [("user", lead + prompt.strip()), ("assistant", answer.strip())]
            lead = ""
        turns.append(("user", lead + query.strip()))
        return Request(variant.id, task.name, example.id, "", tuple(c.lstrip() for c in continuations), tuple(stop),
                       limit, tuple(turns))
    parts = [prompt + answer for prompt, answer in demos] + [query]
    text = (header + separator if header else "") + separator.join(parts)
    return Request(variant.id, task.name, example.id, text, continuations, tuple(stop), limit)


def apply_chat(requests: list[Request], format_chat, model: str) -> list[Request]:
    """Write the prompt of every chat request with the model's chat template: `format_chat` is the backend's
    capability (chat turns → text with the assistant's turn opened, so continuations and generations are the
    assistant's answer), None for a model without a chat template."""
    if not any(r.messages is not None for r in requests):
        return requests
    if format_chat is None:
        raise PromptkitError(
            f"model '{model}' has no chat template in its tokenizer, but variants set the `chat` axis to true; use an "
            "instruction-tuned model that has one (e.g. SmolLM2-135M-Instruct), or keep the `chat` axis at false")
    done: dict[tuple, str] = {}
    out = []
    for r in requests:
        if r.messages is None:
            out.append(r)
            continue
        if r.messages not in done:
            try:
                done[r.messages] = format_chat(r.messages)
            except Exception as exc:  # the template itself may refuse, e.g. a system role it does not support
                raise PromptkitError(f"model '{model}': its chat template failed on variant {r.variant} "
                                     f"({type(exc).__name__}: {exc}); if it refuses the system role, set the `system` "
                                     "axis to an empty string") from None
        out.append(replace(r, prompt=done[r.messages], messages=None))
    return out


def sample_of(task: Task, example: Example, request: Request) -> dict:
    """One rendered request as reports show it."""
    sample = {"task": task.name, "example": example.id, "prompt": request.prompt,
              "continuations": list(request.continuations), "correct": example.correct_indices()}
    if request.generative:  # a generation task, or a multiple-choice example scored by generation
        sample.update(references=example.references() if example.generative else list(example.choices or []),
                      stop=list(request.stop), max_new_tokens=request.max_new_tokens)
    return sample
