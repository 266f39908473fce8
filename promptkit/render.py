"""Rendering: Variant × Task × Example → Request, the exact text the model sees."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PromptkitError
from .tasks import Example, Task
from .variants import Variant


@dataclass(frozen=True)
class Request:
    """A fully rendered multiple-choice request: one prompt, one continuation per choice."""

    variant: str
    task: str
    example: str
    prompt: str
    continuations: tuple[str, ...]


def context(variant: Variant, task: Task, example: Example) -> dict:
    """Names a template may use: the canonical fields, the task's instruction, and the axes."""
    return {
        **variant.values,
        "id": example.id,
        "input": example.input,
        "choices": list(example.choices or []),
        "instruction": task.instruction,
        "meta": dict(example.meta),
    }


def render(variant: Variant, task: Task, example: Example) -> Request:
    if not example.choices:
        raise PromptkitError(
            f"task '{task.name}', example '{example.id}' has no choices; this version scores multiple-choice tasks only"
        )
    family = variant.family
    ctx = context(variant, task, example)
    prompt = family.render("prompt", ctx)
    continuations = tuple(
        family.render("continuation", {**ctx, "choice": choice, "index": i})
        for i, choice in enumerate(example.choices)
    )
    for i, text in enumerate(continuations):
        if not text:
            raise PromptkitError(
                f"{family.where('continuation')}: template family '{family.name}' renders an empty continuation "
                f"for choice {i} of task '{task.name}', example '{example.id}'; a continuation must contain the answer"
            )
    return Request(variant.id, task.name, example.id, prompt, continuations)
