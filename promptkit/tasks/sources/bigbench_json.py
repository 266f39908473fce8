"""BIG-bench's task.json format, normalized into a promptkit Task (wherever bigbench.py found the file)."""

from __future__ import annotations

import math

from ...errors import SuiteError
from ..core import DEMO_POOL, Example, Task
from ..sampling import demo_indices, pick_indices


def task_from_json(data: dict, name: str, origin: str, limit: int | None = None, seed: int = 0,
                   pool: int = DEMO_POOL, kind: str | None = None) -> Task:
    """Normalize a BIG-bench task.json: `target_scores` → choices + target index; `target` → references.
    Examples that are not evaluated form the demonstration pool (up to `pool` of them). An example with
    both is multiple choice unless `kind` is "generation"."""
    raw = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{origin}: BIG-bench task '{name}' has no examples; it needs a non-empty `examples` list")
    evaluated = pick_indices(len(raw), limit, seed, name)
    examples = [_example(raw[i], i, name, origin, kind) for i in evaluated]
    demos = [_example(raw[i], i, name, origin, kind) for i in demo_indices(len(raw), evaluated, seed, name, pool)]
    instruction = str(data.get("task_prefix", "") or "").strip()
    return Task(name, examples, instruction, source="bigbench", origin=origin, demos=demos)


def _example(row: dict, i: int, name: str, origin: str, kind: str | None = None) -> Example:
    where = f"{origin}: task '{name}', example {i}"
    if not isinstance(row, dict) or not isinstance(row.get("input"), str):
        raise SuiteError(f"{where}: every example needs a string `input`")
    if kind == "generation" and "target" not in row:
        raise SuiteError(f"{where}: the suite asks for `kind: generation`, but this example has no `target` (reference answer)")
    if kind == "multiple_choice" and "target_scores" not in row:
        raise SuiteError(f"{where}: the suite asks for `kind: multiple_choice`, but this example has no `target_scores`")
    if "target_scores" in row and kind != "generation":
        scores = row["target_scores"]
        if not isinstance(scores, dict) or len(scores) < 2:
            raise SuiteError(f"{where}: `target_scores` must map at least 2 choices to scores")
        choices = [str(c) for c in scores]
        for choice, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SuiteError(f"{where}: `target_scores` gives choice {choice!r} the score {v!r}; every score must "
                                 "be a number (1 for a correct choice, 0 for a wrong one); fix the task file")
        values = [float(v) for v in scores.values()]
        best = max(values)
        if best <= 0:
            raise SuiteError(f"{where}: no choice in `target_scores` has a positive score, so none is correct")
        correct = [j for j, v in enumerate(values) if v == best]
        meta = {"correct": correct} if len(correct) > 1 else {}
        return Example(str(i), row["input"], choices, correct[0], meta)
    if "target" in row:
        target = row["target"]
        refs = [target] if isinstance(target, str) else [str(t) for t in target] if isinstance(target, list) else []
        if not refs or not all(r.strip() for r in refs):
            raise SuiteError(f"{where}: generation example has no reference answer (`target` is {target!r}); "
                             "give it a non-empty string or list of strings")
        return Example(str(i), row["input"], None, refs, {})
    raise SuiteError(f"{where}: needs `target_scores` (multiple choice) or `target` (generation)")
