"""The render phase: one work list for the whole run. Each item is a variant × task × example with its
rendered request and its role: `evaluated` (scored and reported), `synthetic_demo` (evaluated, but its
prompt shows demonstrations a model writes first, so it is rendered again once they exist),
`content_free` (the calibration prompt of a variant × task × choice set; scored, never reported) or
`prompt_likelihood` (an evaluated prompt's own log-likelihood, for the prompt-perplexity criterion of the
label-free choice; scored, its numbers added to that example's row)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..analysis.metrics import CONTENT_FREE_INPUT
from ..prompts.choice_generation import as_generation
from ..prompts.render import Request, apply_chat, noisy_example, render
from ..prompts.variants import Variant
from ..tasks.core import Example, Task
from .plan import Plan

EVALUATED, SYNTHETIC_DEMO, CONTENT_FREE, PROMPT = "evaluated", "synthetic_demo", "content_free", "prompt_likelihood"
ROLES = (EVALUATED, SYNTHETIC_DEMO, CONTENT_FREE, PROMPT)


@dataclass(frozen=True)
class WorkItem:
    role: str
    variant: Variant
    task: Task
    example: Example
    request: Request

    @property
    def reported(self) -> bool:
        """Gives a row of the results (content-free prompts only feed the calibrated mode; a prompt's likelihood
        adds to its example's row)."""
        return self.role not in (CONTENT_FREE, PROMPT)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.variant.id, self.task.name, self.example.id)

    @property
    def calibration_key(self) -> tuple:
        """Which content-free prompt calibrates this item: variant × task × choice set."""
        return (self.variant.id, self.task.name, tuple(self.example.choices or ()))


def render_item(variant: Variant, task: Task, example: Example, seed: int, mc_scoring: str = "loglikelihood") -> Request:
    """One item's request; with mc_scoring "generation", a multiple-choice example becomes a short generation that
    shows the options (prompts.choice_generation)."""
    request = render(variant, task, example, seed)
    if mc_scoring != "generation" or example.generative:
        return request
    return as_generation(request, list(noisy_example(variant, task, example, seed).choices or []))


def render_work(plan: Plan, seed: int, calibrate: bool = False, mc_scoring: str = "loglikelihood") -> list[WorkItem]:
    """Every request of the run, rendered before any model loads (so a template mistake costs seconds): the
    evaluated items in task × variant × example order, then one content-free item per calibration key."""
    synthetic = {v.id for v in plan.synthetic_variants}
    work = [WorkItem(SYNTHETIC_DEMO if v.id in synthetic else EVALUATED, v, t, e, render_item(v, t, e, seed, mc_scoring))
            for t in plan.tasks for v in plan.variants for e in t.examples]
    if calibrate:
        keys: dict[tuple, WorkItem] = {}
        for item in work:
            if not item.example.generative and item.calibration_key not in keys:
                blank = Example("content-free", CONTENT_FREE_INPUT, list(item.example.choices or []), 0)
                keys[item.calibration_key] = WorkItem(CONTENT_FREE, item.variant, item.task, blank,
                                                      render(item.variant, item.task, blank, seed))
        work += keys.values()
    for note in duplicate_notes(work):
        plan.note(note)
    return work


def duplicate_notes(work: list[WorkItem]) -> list[str]:
    """One warning per variant × task whose examples render two choices to the same continuation (duplicate
    choice texts in the data, or a template that collapses them): those choices would be scored alike."""
    found: dict[tuple[str, str], list[WorkItem]] = {}
    for item in work:
        if item.reported and item.request.duplicated:
            found.setdefault((item.variant.id, item.task.name), []).append(item)
    notes = []
    for (variant, task), items in found.items():
        first = items[0].request.continuations
        twice = next(c for i, c in enumerate(first) if c in first[:i])
        notes.append(f"variant {variant} on task '{task}': {len(items)} of {len(items[0].task.examples)} example(s) "
                     f"render two or more choices to the same continuation (example '{items[0].example.id}': {twice!r}); "
                     "such choices get identical scores and the later ones can never be predicted. Make the "
                     "continuation unique per choice, or remove duplicate choices from the data")
    return notes


def with_chat(work: list[WorkItem], backend) -> list[WorkItem]:
    """The items with chat variants' prompts written in the backend's chat template (its `format_chat`, looked up
    only when there are chat items: a backend may load its tokenizer for it)."""
    if not any(w.request.messages is not None for w in work):
        return work
    requests = apply_chat([w.request for w in work], getattr(backend, "format_chat", None), backend.name)
    return [w if r is w.request else replace(w, request=r) for w, r in zip(work, requests)]


def rerender(work: list[WorkItem], seed: int, backend, mc_scoring: str = "loglikelihood") -> list[WorkItem]:
    """The items whose prompts show synthetic demonstrations, rendered again now that the tasks hold them."""
    again = [i for i, w in enumerate(work) if w.role == SYNTHETIC_DEMO]
    fresh = with_chat([replace(work[i], request=render_item(work[i].variant, work[i].task, work[i].example, seed, mc_scoring))
                       for i in again], backend)
    out = list(work)
    for i, item in zip(again, fresh):
        out[i] = item
    return out


def with_prompt_likelihoods(work: list[WorkItem], n: int) -> list[WorkItem]:
    """The items plus what scores the rendered prompts themselves (as written for the model, chat template included)
    for the first `n` examples of every multiple-choice task: their log-likelihoods after the model's start token,
    from which the label-free choice reads prompt perplexity (Gonen et al. 2022).

    A variant's prompts on one task share a long beginning (instruction, demonstrations), and every prompt token's
    log-probability needs the whole vocabulary projected, so the shared part is scored once: one item scores it
    (example id ""), and one per example scores the rest of its prompt after it, the shared part's keys and values
    reused. The two sum to the prompt's log-likelihood; the cut sits just before a whitespace character, where
    tokenizers start a token."""
    if n <= 0:
        return work
    first: dict[str, list[str]] = {}
    for w in work:
        if w.role == EVALUATED and not w.example.generative:
            ids = first.setdefault(w.task.name, [])
            if len(ids) < n and w.example.id not in ids:
                ids.append(w.example.id)
    groups: dict[tuple[str, str], list[WorkItem]] = {}
    for w in work:
        if w.role == EVALUATED and w.request.prompt and w.example.id in first.get(w.task.name, ()):
            groups.setdefault((w.variant.id, w.task.name), []).append(w)
    extra = []
    for items in groups.values():
        shared = shared_start([w.request.prompt for w in items])
        head = items[0]
        if shared:
            extra.append(WorkItem(PROMPT, head.variant, head.task, head.example,
                                  Request(head.request.variant, head.request.task, "", "", (shared,))))
        extra += [WorkItem(PROMPT, w.variant, w.task, w.example, Request(w.request.variant, w.request.task,
                                                                         w.request.example, shared,
                                                                         (w.request.prompt[len(shared):],)))
                  for w in items]
    return work + extra


def shared_start(texts: list[str]) -> str:
    """The longest beginning all `texts` share, cut just before its last whitespace character ("" when there is
    none, or for a single text)."""
    if len(texts) < 2:
        return ""
    lo, hi = min(texts), max(texts)  # the common prefix of all is that of the smallest and largest
    k = next((i for i, (a, b) in enumerate(zip(lo, hi)) if a != b), min(len(lo), len(hi)))
    common = lo[:k]
    cut = max((i for i, ch in enumerate(common) if ch.isspace()), default=0)
    return common[:cut]
