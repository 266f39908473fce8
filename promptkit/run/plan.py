"""The plan phase: templates, suite, tasks and variants, loaded and checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import PromptkitError
from ..prompts.templates import TemplateFamily, load_templates
from ..prompts.variants import Variant, expand_all, with_noise
from ..tasks.core import Suite, Task
from ..tasks.suites import load_suite, load_tasks
from .options import RunOptions


@dataclass
class Plan:
    """What a run will score: the families that fit the suite, the loaded tasks, the sampled variants (with
    their noise copies), generation metrics per generative task, and notes recorded with the run."""

    families: list[TemplateFamily]
    suite: Suite
    tasks: list[Task]
    variants: list[Variant]
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    log: Callable[[str], None] | None = None  # where notes found after planning go (the render phase's)

    def note(self, text: str) -> None:
        """Record a note found after planning (rendering) with the run, and log it as a warning."""
        self.notes.append(text)
        if self.log:
            self.log(f"warning: {text}")

    @property
    def synthetic_variants(self) -> list[Variant]:
        """Variants that show demonstrations a model writes (`demo_source: synthetic` with shots)."""
        return [v for v in self.variants if v.values.get("demo_source") == "synthetic" and int(v.values.get("shots", 0) or 0) > 0]


def make_plan(templates, suite, options: RunOptions) -> Plan:
    """Load and check everything the run needs but the model: template mistakes, suite mistakes, missing
    demonstrations and unknown metrics surface in seconds."""
    families = templates if _is_families(templates) else load_templates(templates)
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    tasks = load_tasks(suite, options.limit, options.seed)
    families, left_out = fitting_families(families, tasks, builtin=templates is None)
    variants = with_noise(kept(expand_all(families, options.max_variants, options.seed), options.variants), options.noise)
    metrics = {}
    if any(t.generative for t in tasks):
        from ..analysis.text_metrics import load_metric

        metrics = {t.name: load_metric(t.metric) for t in tasks if t.generative}  # a bad name fails before the model loads
    plan = Plan(families, suite, tasks, variants, metrics, left_out + check_demonstrations(variants, tasks), options.log)
    options.check_plan(list(metrics), bool(plan.synthetic_variants))
    return plan


def kept(variants: list[Variant], ids: list[str] | None) -> list[Variant]:
    """Only the variants named by id (all when `ids` is None); an id the templates do not produce is an error."""
    if ids is None:
        return variants
    known = {v.id for v in variants}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise PromptkitError(f"variants= names {len(unknown)} id(s) these templates do not produce for this suite: "
                             f"{', '.join(unknown[:5])}; take ids from the run's variants.json (or ranking.csv)")
    wanted = set(ids)
    return [v for v in variants if v.id in wanted]


def _is_families(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, TemplateFamily) for v in value)


def fitting_families(families: list[TemplateFamily], tasks: list[Task], builtin: bool) -> tuple[list[TemplateFamily], list[str]]:
    """The families that can prompt every task of the suite (by their `kinds`), and notes on what was
    left out. Built-in families that cannot are left out, as are built-in few-shot families when a task
    has no demonstrations held apart; a user's family that cannot is an error (see check_demonstrations)."""
    needed = {"generation" if t.generative else "multiple_choice" for t in tasks}
    fit = [f for f in families if needed <= set(f.kinds)]
    if builtin and fit:
        bare = [t.name for t in tasks if not t.demos]
        few = [f for f in fit if any(v for v in f.axes.get("shots", [0]))]
        if bare and few and len(few) < len(fit):
            return [f for f in fit if f not in few], [
                f"built-in few-shot famil{'ies' if len(few) > 1 else 'y'} {', '.join(f.name for f in few)} left out: "
                f"task(s) {', '.join(bare[:5])} have no examples held apart as demonstrations (every example is "
                "evaluated; lower --limit to keep some apart)"]
        return fit, []
    for f in families:
        if not needed <= set(f.kinds):
            kind = sorted(needed - set(f.kinds))[0]
            names = [t.name for t in tasks if ("generation" if t.generative else "multiple_choice") == kind]
            raise PromptkitError(f"{f.path}: template family '{f.name}' is for {' and '.join(f.kinds)} tasks, but the "
                                 f"suite's tasks {', '.join(names)} are {kind} tasks; leave the family out, or run it on "
                                 "a suite of the kind it declares under `kinds:`")
    return families, []


def check_demonstrations(variants: list[Variant], tasks: list[Task]) -> list[str]:
    """Few-shot variants need demonstrations held apart from the evaluated examples: none at all is an
    error; fewer than asked is a warning (the variants use what there is) recorded with the run."""
    notes = [f"task '{t.name}': {t.dropped_demos} demonstration row(s) left out of the pool (no valid answer: an "
             "unlabelled row, or a label outside the choices)" for t in tasks if t.dropped_demos]
    real = [v for v in variants if v.values.get("demo_source", "real") == "real"]
    for k in sorted({int(v.values.get("shots", 0) or 0) for v in real} - {0}):
        for t in tasks:
            if not t.demos:
                raise PromptkitError(
                    f"variants ask for {k} demonstration(s), but task '{t.name}' has none held apart: all its "
                    f"{len(t.examples)} examples are evaluated. Lower --limit (examples beyond the limit become "
                    "demonstrations), give an hf task a `demo_split:`, or use variants with shots: 0")
            if len(t.demos) < k:
                notes.append(f"task '{t.name}' has {len(t.demos)} demonstration(s) held apart; variants with shots={k} "
                             f"use {len(t.demos)}")
    return notes
