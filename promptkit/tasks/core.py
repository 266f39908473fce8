"""The canonical records every task is normalized to: Example, Task, Suite (and a suite's TaskSpec).
Imports nothing of promptkit but its error types, so any module can depend on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PromptkitError, SuiteError

SOURCES = ("generated", "bigbench", "files", "hf")
TASK_KEYS = {
    "name", "source", "task", "path", "format", "field", "dataset", "config", "split", "revision",
    "input", "choices", "target", "id", "instruction", "cluster", "limit",
    "metric", "stop", "max_new_tokens", "demo_split", "demo_pool", "kind",
}
KINDS = ("multiple_choice", "generation")
DEMO_POOL = 64  # demonstrations held apart per task (examples never evaluated in the run)
DEFAULT_MAX_NEW_TOKENS = 32
SUITE_KEYS = {"name", "description", "limit", "selection", "held_out", "notes", "allow_outside_data"}


@dataclass(frozen=True)
class Example:
    """The record every task is normalized to. `target` indexes `choices` for multiple choice."""

    id: str
    input: str
    choices: list[str] | None
    target: int | str | list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def generative(self) -> bool:
        """A free-form answer is generated and compared to reference strings (no choices)."""
        return self.choices is None

    def correct_indices(self) -> list[int]:
        """Indices of all choices that count as correct (BIG-bench allows several); none for generation."""
        if self.generative:
            return []
        return list(self.meta.get("correct", [self.target]))

    def references(self) -> list[str]:
        """The reference answers of a generation example."""
        return [self.target] if isinstance(self.target, str) else list(self.target)  # type: ignore[arg-type]

    def answer(self) -> str:
        """The text of the right answer, as a demonstration shows it."""
        if self.generative:
            return self.references()[0]
        return self.choices[self.correct_indices()[0]]  # type: ignore[index]


@dataclass(frozen=True)
class TaskSpec:
    """A task as a suite file declares it (nothing loaded yet)."""

    name: str
    source: str
    options: dict[str, Any]
    split: str  # "selection" or "held_out"
    where: str  # "suite.yaml: selection[2]" for error messages


@dataclass
class Task:
    name: str
    examples: list[Example]
    instruction: str = ""
    split: str = "selection"
    cluster: str | None = None
    source: str = ""
    origin: str = ""  # where the examples came from: a file, a hub id, a generator and its data package
    demos: list[Example] = field(default_factory=list)  # demonstration pool, disjoint from `examples`
    synthetic: list[Example] = field(default_factory=list)  # demonstrations a model wrote (promptkit.run.synthetic)
    dropped_demos: int = 0  # pool rows left out because their answer is missing or invalid
    metric: Any = None  # generation: a metric name, hub id or path, or {name: ..., options}
    stop: list[str] = field(default_factory=list)  # generation: extra stop sequences
    max_new_tokens: int | None = None  # generation: token limit (else the template's, else 32)

    @property
    def generative(self) -> bool:
        return any(e.generative for e in self.examples)

    @property
    def chance(self) -> float:
        """Expected accuracy of picking a choice uniformly at random (0 for generation)."""
        values = [len(e.correct_indices()) / len(e.choices) for e in self.examples if e.choices]
        return sum(values) / len(values) if values else 0.0

    def features(self) -> dict[str, float]:
        """What a task looks like without reading a single answer: mean number of choices, the share of
        two-way yes/no (or true/false) examples, the share of examples whose input already lists every
        choice, the mean length of a choice and of an input (characters). Task-aware prompt choice
        compares tasks by these (promptkit.analysis.selection); none of them uses a target."""
        choice = [e for e in self.examples if e.choices]
        if not choice:
            return {"n_choices": 0.0, "yes_no": 0.0, "options_in_input": 0.0, "answer_chars": 0.0,
                    "input_chars": float(sum(len(e.input) for e in self.examples) / max(len(self.examples), 1))}
        n = len(choice)
        binary = {frozenset({"yes", "no"}), frozenset({"true", "false"})}
        return {
            "n_choices": sum(len(e.choices) for e in choice) / n,
            "yes_no": sum(frozenset(c.strip().lower().rstrip(".") for c in e.choices) in binary for e in choice) / n,
            "options_in_input": sum(all(c.strip() and c.strip() in e.input for c in e.choices) for e in choice) / n,
            "answer_chars": sum(sum(len(c) for c in e.choices) / len(e.choices) for e in choice) / n,
            "input_chars": sum(len(e.input) for e in choice) / n,
        }

    def locate(self, key: str) -> tuple[int, Example]:
        """(position, example) for a user's key: '#N' is the N-th evaluated example; anything else is an id, or,
        when no example has that id, a bare position (`promptkit render --example`)."""
        if key.startswith("#"):
            n = key[1:]
            if not n.isdigit() or int(n) >= len(self.examples):
                raise PromptkitError(f"--example {key}: task '{self.name}' evaluates {len(self.examples)} examples, "
                                     f"#0 to #{len(self.examples) - 1}; or pass an example id")
            return int(n), self.examples[int(n)]
        example = self.example(key)
        return next(i for i, e in enumerate(self.examples) if e is example), example

    def example(self, key: str | int) -> Example:
        """Find an example by id, or by position when given an int."""
        for example in self.examples:
            if example.id == str(key):
                return example
        if isinstance(key, int) or str(key).isdigit():
            index = int(key)
            if 0 <= index < len(self.examples):
                return self.examples[index]
        raise PromptkitError(
            f"task '{self.name}' has no example {key!r}; it has {len(self.examples)} examples "
            f"(ids {self.examples[0].id!r} … {self.examples[-1].id!r})" if self.examples else f"task '{self.name}' has no examples"
        )


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: list[TaskSpec]
    path: str = "<memory>"
    description: str = ""
    limit: int | None = None

    @property
    def selection(self) -> list[TaskSpec]:
        return [t for t in self.tasks if t.split == "selection"]

    @property
    def held_out(self) -> list[TaskSpec]:
        return [t for t in self.tasks if t.split == "held_out"]

    def task(self, name: str) -> TaskSpec:
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise SuiteError(f"{self.path}: suite '{self.name}' has no task '{name}'; it has: {', '.join(t.name for t in self.tasks)}")
