"""Synthetic demonstrations for data-scarce tasks: for each answer, a model writes an input for which that
answer is right (in the spirit of self-generated in-context learning, Kim et al. 2022), through a Jinja
template users can replace; optional filters remove duplicates, odd lengths, copies of evaluated
examples and demonstrations the model itself labels differently. Everything is seeded and cached."""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass, field

import jinja2

from ..engine import plan as engine
from ..errors import PromptkitError
from ..prompts.render import Request
from ..prompts.sandbox import render_bounded
from ..tasks.core import Example, Task
from ..prompts.templates import make_environment

DEFAULT_TEMPLATE = (
    "{% if instruction %}Task: {{ instruction }}\n{% endif %}"
    "Write one new, realistic input for this task whose correct answer is \"{{ answer }}\"."
    "{% if choices %} The possible answers are: {{ choices | join(', ') }}.{% endif %}\n"
    "Input:"
)
FILTERS = ("dedupe", "length", "copies", "consistency")
TEMPERATURE = 0.9


@dataclass
class SyntheticConfig:
    """How synthetic demonstrations are made: per task `n` candidates from `template`, then the filters."""

    n: int = 16
    template: str = DEFAULT_TEMPLATE
    max_new_tokens: int = 48
    min_chars: int = 8
    max_chars: int = 400
    near_duplicate: float = 0.9  # similarity (difflib ratio) at or above which two texts count as the same
    filters: tuple[str, ...] = FILTERS
    seed: int = 0

    def check(self) -> None:
        unknown = set(self.filters) - set(FILTERS)
        if unknown:
            raise PromptkitError(f"unknown synthetic-demonstration filter(s) {', '.join(sorted(unknown))}; "
                                 f"use any of {', '.join(FILTERS)}")
        if self.n < 1 or self.max_new_tokens < 1 or self.min_chars > self.max_chars:
            raise PromptkitError("synthetic demonstrations need n >= 1, max_new_tokens >= 1 and min_chars <= max_chars")
        try:
            make_environment().from_string(self.template)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptkitError(f"synthetic-demonstration template: Jinja syntax error on line {exc.lineno}: {exc.message}") from None


@dataclass
class Candidate:
    """One generated demonstration and what the filters said about it."""

    task: str
    id: str
    answer: str
    input: str
    choices: list[str] | None
    target: int | list[str]
    dropped_by: str = ""  # the first filter that removed it ("" = kept)

    def example(self) -> Example:
        return Example(self.id, self.input, self.choices, self.target, {"synthetic": True})


@dataclass
class SyntheticSet:
    """A task's candidates (kept and dropped) and the counts per filter, in order."""

    task: str
    candidates: list[Candidate]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> list[Example]:
        return [c.example() for c in self.candidates if not c.dropped_by]


def _targets(task: Task, n: int, rng: random.Random) -> list[tuple[str, list[str] | None, int | list[str]]]:
    """What each candidate is asked to be: (answer text, its choices, its target). Answers are spread
    evenly over the task's labels; choices come from the task's own choice sets (no input is shown)."""
    if task.generative:
        refs = [d.references() for d in task.demos]
        if not refs:
            raise PromptkitError(
                f"task '{task.name}': synthetic demonstrations of a generation task need reference answers to write "
                "inputs for, and the task has no examples held apart; lower --limit or give it a `demo_split:`")
        return [(r[0], None, r) for r in (refs[i % len(refs)] for i in range(n))]
    sets = [e.choices for e in task.examples + task.demos if e.choices]
    shared = len({tuple(c) for c in sets}) == 1
    out = []
    for i in range(n):
        choices = list(sets[0]) if shared else list(rng.choice(sets))
        target = i % len(choices) if shared else rng.randrange(len(choices))
        out.append((choices[target], choices, target))
    rng.shuffle(out)
    return out


def requests_for(task: Task, cfg: SyntheticConfig) -> tuple[list[Candidate], list[Request]]:
    """The candidates to write for `task` and the sampled generation request of each."""
    rng = random.Random(f"{cfg.seed}:{task.name}:synthetic")
    template = make_environment().from_string(cfg.template)
    candidates, requests = [], []
    for i, (answer, choices, target) in enumerate(_targets(task, cfg.n, rng)):
        ctx = {"instruction": task.instruction, "answer": answer, "choices": choices or [], "index": i, "task": task.name}
        try:
            prompt = render_bounded(template, ctx)
        except Exception as exc:
            raise PromptkitError(f"synthetic-demonstration template failed on task '{task.name}': {type(exc).__name__}: "
                                 f"{exc}; it may use instruction, answer, choices, index and task") from None
        candidates.append(Candidate(task.name, f"synthetic-{i}", answer, "", choices, target))
        requests.append(Request("synthetic", task.name, f"synthetic-{i}", prompt, (), ("\n",), cfg.max_new_tokens,
                                temperature=TEMPERATURE, seed=rng.randrange(2 ** 31)))
    return candidates, requests


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _similar(a: str, b: str, threshold: float) -> bool:
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b)
    return matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


def apply_filters(candidates: list[Candidate], evaluated: list[Example], cfg: SyntheticConfig,
                  judge=None) -> dict[str, int]:
    """Mark each candidate with the first filter that removes it; returns how many remain after each step.
    `judge(candidates) -> list[bool]` says, for the consistency filter, whether the model gives each
    candidate its intended answer under a neutral prompt."""
    counts = {"generated": len(candidates)}
    alive = lambda: [c for c in candidates if not c.dropped_by]
    for c in candidates:
        if not c.input.strip():
            c.dropped_by = "empty"
    counts["non_empty"] = len(alive())
    if "length" in cfg.filters:
        for c in alive():
            if not cfg.min_chars <= len(c.input.strip()) <= cfg.max_chars:
                c.dropped_by = "length"
        counts["length"] = len(alive())
    if "dedupe" in cfg.filters:
        seen: list[str] = []
        for c in alive():
            text = _norm(c.input)
            if any(_similar(text, s, cfg.near_duplicate) for s in seen):
                c.dropped_by = "duplicate"
            else:
                seen.append(text)
        counts["dedupe"] = len(alive())
    if "copies" in cfg.filters:
        inputs = [_norm(e.input) for e in evaluated]
        for c in alive():
            text = _norm(c.input)
            if any(_similar(text, s, cfg.near_duplicate) or (len(s) > 20 and s in text) for s in inputs):
                c.dropped_by = "copies_evaluated"
        counts["copies"] = len(alive())
    if "consistency" in cfg.filters and judge is not None:
        remaining = alive()
        for c, ok in zip(remaining, judge(remaining)):
            if not ok:
                c.dropped_by = "inconsistent"
        counts["consistency"] = len(alive())
    return counts


def consistency_judge(backend, cache=None, stats=None, progress: bool = False, ranks=None):
    """The consistency filter's judge: a neutral prompt ("INPUT\\nAnswer:"); a multiple-choice candidate
    is kept when its intended choice has the highest log-likelihood, a generation candidate when the
    model's greedy answer matches the intended one (exact match, case and punctuation ignored)."""
    from ..analysis.metrics import choose
    from ..analysis.text_metrics import ExactMatch

    def judge(candidates: list[Candidate]) -> list[bool]:
        prompt = lambda c: f"{c.input.strip()}\nAnswer:"
        mc = [c for c in candidates if c.choices]
        gen = [c for c in candidates if not c.choices]
        verdict: dict[int, bool] = {}
        if mc or ranks is not None:  # every rank takes part in every collective, even with nothing to do
            reqs = [Request("synthetic", c.task, c.id, prompt(c), tuple(f" {x}" for x in c.choices)) for c in mc]
            for c, scores in zip(mc, engine.score(reqs, backend, progress=progress, cache=cache, stats=stats, ranks=ranks)):
                verdict[id(c)] = choose(scores) == c.target
        if gen or ranks is not None:
            reqs = [Request("synthetic", c.task, c.id, prompt(c), (), ("\n",), 16) for c in gen]
            em = ExactMatch()
            for c, g in zip(gen, engine.generate(reqs, backend, progress=progress, cache=cache, stats=stats, ranks=ranks)):
                verdict[id(c)] = bool(em.score(g.text, list(c.target)))
        return [verdict[id(c)] for c in candidates]

    return judge


def make(tasks: list[Task], backend, cfg: SyntheticConfig, cache=None, stats=None, progress: bool = False,
         ranks=None, writer=None, writer_cache=None) -> dict[str, SyntheticSet]:
    """Write, filter and attach synthetic demonstrations (`task.synthetic`) for every task. `writer` (by
    default `backend`, the model under test) writes them; `backend` judges consistency."""
    cfg.check()
    per_task = {t.name: requests_for(t, cfg) for t in tasks}
    requests = [r for _, reqs in per_task.values() for r in reqs]
    writer, writer_cache = (backend, cache) if writer is None else (writer, writer_cache)
    texts = engine.generate(requests, writer, progress=progress, cache=writer_cache, stats=stats, ranks=ranks)
    sets = {}
    for task, text in zip(tasks, _split(texts, [len(per_task[t.name][0]) for t in tasks])):
        candidates = per_task[task.name][0]
        for c, g in zip(candidates, text):
            c.input = g.text.strip()
        sets[task.name] = SyntheticSet(task.name, candidates, apply_filters(candidates, task.examples, cfg))
    if "consistency" in cfg.filters:  # one judging pass over every task's survivors
        alive = [c for s in sets.values() for c in s.candidates if not c.dropped_by]
        for c, ok in zip(alive, consistency_judge(backend, cache, stats, progress, ranks)(alive)):
            if not ok:
                c.dropped_by = "inconsistent"
        for s in sets.values():
            s.counts["consistency"] = sum(not c.dropped_by for c in s.candidates)
    for task in tasks:
        task.synthetic = sets[task.name].kept
    return sets


def _split(items: list, sizes: list[int]) -> list[list]:
    out, k = [], 0
    for n in sizes:
        out.append(items[k:k + n])
        k += n
    return out


def read_template(path) -> str:
    """A synthetic-demonstration template file (--synthetic-template): a regular file of bounded size, UTF-8."""
    from pathlib import Path

    from ..prompts.safe_read import MAX_YAML_BYTES, read_regular

    data = read_regular(Path(path), MAX_YAML_BYTES, "synthetic-demonstration template", PromptkitError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptkitError(f"{path}: the synthetic-demonstration template is not UTF-8 text ({exc})") from None


def config_from(options, seed: int) -> SyntheticConfig:
    """SyntheticConfig from evaluate()'s `synthetic` argument (None, a dict of its fields, or one), checked."""
    if isinstance(options, SyntheticConfig):
        return options
    names = set(SyntheticConfig.__dataclass_fields__)
    unknown = set(options or {}) - names
    if unknown:
        raise PromptkitError(f"synthetic: unknown option(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(names))}")
    cfg = SyntheticConfig(**{"seed": seed, **(options or {})})
    cfg.filters = tuple(cfg.filters)
    cfg.check()
    return cfg
