"""Suites and task loading: suite YAML, field mapping onto Example, selection/held-out splits, demonstration pools."""

from __future__ import annotations

import ast
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from ..errors import SuiteError, TemplateError
from ..paths import builtin_dir
from ..prompts.budget import MAX_SIZE
from ..prompts.safe_read import MAX_YAML_BYTES, check_regular
from ..prompts.sandbox import render_bounded
from ..prompts.templates import make_environment, read_yaml
from .sampling import demo_indices, pick_indices
from .core import (DEMO_POOL, KINDS, SOURCES, SUITE_KEYS, TASK_KEYS, Example, Suite, Task,
                   TaskSpec)

# ---------------------------------------------------------------------------- suites


def resolve_suite_path(spec: str | Path | None) -> Path:
    if spec is None:
        spec = "offline_mc"
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        check_regular(path, MAX_YAML_BYTES, "suite file", SuiteError)  # not a FIFO, a device or a huge file
        return path
    builtin = builtin_dir("suites") / f"{spec}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(p.stem for p in builtin_dir("suites").glob("*.yaml"))
    raise SuiteError(f"unknown suite '{spec}': not a file, and not a built-in suite (built-ins: {', '.join(names)})")


def load_suite(spec: str | Path | None = None) -> Suite:
    """Load and validate a suite: a built-in name, or a YAML path. Nothing is downloaded yet."""
    path = resolve_suite_path(spec)
    try:
        data, _ = read_yaml(path)
    except TemplateError as exc:
        raise SuiteError(str(exc)) from None
    return suite_from_dict(data, path)


def suite_from_dict(data: Any, path: Path) -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a YAML mapping with `selection:` and `held_out:` task lists")
    unknown = set(data) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(SUITE_KEYS))}")
    if not data.get("selection"):
        raise SuiteError(f"{path}: `selection:` must list at least one task")
    outside = data.get("allow_outside_data", False)
    if not isinstance(outside, bool):
        raise SuiteError(f"{path}: `allow_outside_data:` must be true or false (got {outside!r})")
    tasks: list[TaskSpec] = []
    for split in ("selection", "held_out"):
        entries = data.get(split) or []
        if not isinstance(entries, list):
            raise SuiteError(f"{path}: `{split}:` must be a list of tasks")
        for i, entry in enumerate(entries):
            tasks.append(_task_spec(entry, split, f"{path}: {split}[{i}]", path.parent))
    if not outside:
        for spec in tasks:
            _check_inside(spec, path)
    seen: dict[str, str] = {}
    for spec in tasks:
        if spec.name in seen:
            raise SuiteError(
                f"{spec.where}: task '{spec.name}' is already listed at {seen[spec.name]}; a task may appear "
                "once, in either selection or held_out (give the second one its own `name:`)"
            )
        seen[spec.name] = spec.where
    limit = data.get("limit")
    _check_limit(limit, f"{path}")
    return Suite(str(data.get("name") or path.stem), tasks, str(path), str(data.get("description", "")), limit)


def _check_inside(spec: TaskSpec, suite: Path) -> None:
    """A suite reads local data from its own folder (links resolved) unless it says `allow_outside_data: true`: a
    shared suite naming ~/.aws/credentials would otherwise put its lines into prompts, results and reports (and,
    with a hosted model, send them out)."""
    local = spec.options.get("path")
    if local is None and spec.source == "hf" and isinstance(spec.options.get("dataset"), str):
        candidate = Path(spec.options["dataset"]).expanduser()  # a local folder or file given as the dataset
        local = str(candidate if candidate.is_absolute() else suite.parent / candidate) if (
            candidate.is_absolute() or str(candidate).startswith((".", "~")) or (suite.parent / candidate).exists()) else None
    if local is None:
        return
    folder = suite.parent.resolve()
    target = Path(local).resolve()
    if target != folder and folder not in target.parents:
        shown = local if Path(local) == target else f"{local} (which is {target})"
        raise SuiteError(f"{spec.where}: {shown} is outside the suite's folder {folder}; a suite reads local data "
                         "from its own folder unless it says otherwise. If you mean it, add `allow_outside_data: true` "
                         f"at the top of {suite.name}, or move the data next to the suite")


def _check_limit(limit: Any, where: str) -> None:
    """`limit:` is a positive whole number (YAML's `true` is not 1, `-1` is not "all")."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SuiteError(f"{where}: `limit` must be a positive integer, the number of examples to score per task "
                         f"(got {limit!r}); remove it to score every example")


def _check_generation_options(o: dict, where: str) -> None:
    _check_limit(o.get("limit"), where)
    if o.get("kind") is not None and o["kind"] not in KINDS:
        raise SuiteError(f"{where}: `kind:` must be multiple_choice or generation (got {o['kind']!r})")
    stop = o.get("stop")
    if stop is not None and (not isinstance(stop, (str, list)) or isinstance(stop, list) and
                             not all(isinstance(x, str) and x for x in stop) or stop == ""):
        raise SuiteError(f"{where}: `stop:` must be a non-empty string or a list of them (got {stop!r})")
    n = o.get("max_new_tokens")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096):
        raise SuiteError(f"{where}: `max_new_tokens:` must be an integer from 1 to 4096 (got {n!r})")
    pool = o.get("demo_pool")
    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 0):
        raise SuiteError(f"{where}: `demo_pool:` must be a non-negative integer (got {pool!r})")
    metric = o.get("metric")
    if metric is not None and not (isinstance(metric, str) and metric or isinstance(metric, dict) and isinstance(metric.get("name"), str)):
        raise SuiteError(f"{where}: `metric:` must be a metric name (exact_match, contains, f1, numeric), an `evaluate` "
                         f"hub id or path, or a mapping with `name:` and options (got {metric!r})")


def _task_spec(entry: Any, split: str, where: str, base: Path) -> TaskSpec:
    if isinstance(entry, str):  # shorthand "generated:task_name", "bigbench:task_name"
        source, sep, name = entry.partition(":")
        if not sep or source not in SOURCES or not name:
            raise SuiteError(f"{where}: write a task as 'generated:TASK', 'bigbench:TASK' or as a mapping with `source:` "
                             f"(got {entry!r})")
        entry = {"source": source, "task" if source in ("bigbench", "generated") else "path": name}
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: a task must be a mapping, 'generated:TASK' or 'bigbench:TASK' (got {entry!r})")
    unknown = set(entry) - TASK_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(TASK_KEYS))}")
    source = entry.get("source", "bigbench" if "task" in entry else None)
    if source not in SOURCES:
        raise SuiteError(f"{where}: `source` must be one of {', '.join(SOURCES)} (got {source!r})")
    options = dict(entry)
    if source == "generated":
        from .sources import generated

        if not isinstance(options.get("task"), str) or options.get("path"):
            raise SuiteError(f"{where}: a generated task needs `task:` (one of promptkit's generated tasks; "
                             "`promptkit tasks` lists them) and no `path:`")
        # the generator's own settings (a generation task's metric and token limit) unless the suite sets them
        options = {**generated.generator(options["task"], where).options, **options}
    if source == "bigbench" and not (options.get("task") or options.get("path")):
        raise SuiteError(f"{where}: a bigbench task needs `task:` (a BIG-bench task name) or `path:` (a task.json file)")
    if source == "files" and not options.get("path"):
        raise SuiteError(f"{where}: a files task needs `path:` (a .json, .jsonl or .csv file)")
    if source == "hf" and not options.get("dataset"):
        raise SuiteError(f"{where}: an hf task needs `dataset:` (a datasets hub id) and usually `split:`")
    if source in ("files", "hf") and not (options.get("input") and "target" in options):
        raise SuiteError(f"{where}: map the data's columns onto the Example with `input:`, `target:` and, for "
                         "multiple choice, `choices:` (without `choices:` the task is generative: `target:` gives the "
                         "reference answer or a list of them)")
    _check_generation_options(options, where)
    if source == "bigbench":
        _check_generation_options(options, where)
    if options.get("path"):
        p = Path(options["path"]).expanduser()
        options["path"] = str(p if p.is_absolute() else base / p)
    name = options.get("name") or options.get("task") or options.get("dataset") or Path(options.get("path", "task")).stem
    return TaskSpec(str(name), source, options, split, where)


# ---------------------------------------------------------------------------- loading


def load_task(spec: TaskSpec, limit: int | None = None, seed: int = 0) -> Task:
    """Load one task's examples (and its demonstration pool) from its source and normalize them."""
    from .sources import bigbench
    from .sources import files
    from .sources import generated
    from .sources import hf

    limit = spec.options.get("limit", limit)
    pool_size = spec.options.get("demo_pool", DEMO_POOL)
    if spec.source == "generated":
        task = generated.load(spec, limit, seed, pool_size)
    elif spec.source == "bigbench":
        task = bigbench.load(spec, limit, seed, pool_size)
    else:
        loader = files.rows if spec.source == "files" else hf.rows
        split_pool = spec.source == "hf" and spec.options.get("demo_split") not in (None, spec.options.get("split", "test"))
        plan: dict[str, list[int]] = {}

        def pick(n: int) -> list[int]:
            plan["eval"] = pick_indices(n, limit, seed, spec.name)
            plan["demos"] = [] if split_pool else demo_indices(n, plan["eval"], seed, spec.name, pool_size)
            return sorted(plan["eval"] + plan["demos"])

        rows, total, origin = loader(spec, pick)
        by_index = {idx: row for idx, row in rows}
        examples = [map_row(by_index[i], spec, i, origin) for i in plan["eval"]]
        demos = [map_row(by_index[i], spec, i, origin, evaluated=False) for i in plan["demos"]]
        if split_pool:  # demonstrations from the data set's own training split
            demo_spec = TaskSpec(spec.name, spec.source, {**spec.options, "split": spec.options["demo_split"]}, spec.split, spec.where)
            picked, _, demo_origin = hf.rows(demo_spec, lambda n: sorted(random.Random(f"{seed}:{spec.name}:demos").sample(range(n), min(n, pool_size))))
            demos = [replace(map_row(row, demo_spec, i, demo_origin, evaluated=False), id=f"{spec.options['demo_split']}:{i}") for i, row in picked]
        task = Task(spec.name, examples, str(spec.options.get("instruction", "")), source=spec.source, demos=demos,
                    origin=f"hub {origin}" if spec.source == "hf" else f"file {origin}")
    task.split = spec.split
    task.cluster = spec.options.get("cluster")
    if "instruction" in spec.options:
        task.instruction = str(spec.options["instruction"])
    o = spec.options
    task.metric = o.get("metric")
    task.stop = [o["stop"]] if isinstance(o.get("stop"), str) else list(o.get("stop") or [])
    task.max_new_tokens = o.get("max_new_tokens")
    check_examples(task, spec)
    usable = [d for d in task.demos if _usable_demo(d)]
    task.dropped_demos, task.demos = len(task.demos) - len(usable), usable
    return task


def _usable_demo(d: Example) -> bool:
    """A pool row can be shown as a demonstration: its answer exists (an unlabelled row, such as a test
    split's label -1, or a label outside the choices, cannot)."""
    if d.generative:
        refs = d.target if isinstance(d.target, list) else [d.target]
        return bool(refs) and all(isinstance(r, str) and r.strip() for r in refs)
    idx = d.correct_indices()
    return bool(idx) and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(d.choices or []) for i in idx)


def check_examples(task: Task, spec: TaskSpec) -> None:
    if not task.examples:
        raise SuiteError(f"{spec.where}: task '{task.name}' has no examples; check its data file or filters")
    ids: set[str] = set()
    for example in task.examples:
        if example.id in ids:
            raise SuiteError(f"{spec.where}: task '{task.name}' has two examples with id '{example.id}'; ids must be unique (map `id:` to a unique column)")
        ids.add(example.id)
        where = f"{spec.where}: example '{example.id}'"
        if not isinstance(example.input, str):
            raise SuiteError(f"{where}: task '{task.name}': the input is a {type(example.input).__name__}, not text "
                             f"({_short(example.input)}); give every example a text `input`")
        for what, text in [("input", example.input), *((f"choice {k}", c) for k, c in enumerate(example.choices or []))]:
            _check_size(str(text), what, spec, where)
        if example.generative:
            refs = example.target if isinstance(example.target, list) else [example.target]
            if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
                raise SuiteError(
                    f"{spec.where}: task '{task.name}', example '{example.id}' is a generation example (no choices) "
                    f"without a reference answer (target {example.target!r}); give every example a non-empty `target` "
                    "(a string or a list of strings), or map `choices:` for multiple choice")
        if example.choices is not None:
            if len(example.choices) < 2:
                raise SuiteError(f"{spec.where}: task '{task.name}', example '{example.id}' has {len(example.choices)} choice(s); multiple choice needs at least 2")
            for index in example.correct_indices():
                if not isinstance(index, int) or not 0 <= index < len(example.choices):
                    raise SuiteError(
                        f"{spec.where}: task '{task.name}', example '{example.id}': target {index!r} is outside "
                        f"the {len(example.choices)} choices (valid: 0..{len(example.choices) - 1}); fix the `target:` mapping or the data"
                    )


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _check_size(text: str, what: str, spec: TaskSpec, where: str) -> None:
    """An input or choice longer than a template may handle is the data's fault: say so before any render."""
    if len(text) > MAX_SIZE:
        raise SuiteError(f"{where}: task '{spec.name}': {what} is {len(text):,} characters, over the {MAX_SIZE:,} a "
                         "template may render; shorten it in the data or drop the row")


def _field(row: dict, expr: Any, key: str, spec: TaskSpec, idx: int, origin: str) -> Any:
    """Resolve one mapped field: a column name, or a small Jinja expression over the row."""
    where = f"{origin}, row {idx + 1}"
    if isinstance(expr, list):
        return [_field(row, e, key, spec, idx, origin) for e in expr]
    if not isinstance(expr, str):
        raise SuiteError(f"{spec.where}: `{key}:` must be a column name or a Jinja string (got {expr!r})")
    if "{{" in expr or "{%" in expr:
        try:
            return render_bounded(make_environment().from_string(expr), row)
        except jinja2.TemplateSyntaxError as exc:
            raise SuiteError(f"{spec.where}: Jinja syntax error in `{key}:` mapping: {exc.message}") from None
        except (jinja2.exceptions.SecurityError, RecursionError) as exc:
            raise SuiteError(f"{spec.where}: the `{key}:` mapping of task '{spec.name}' was stopped by the sandbox: "
                             f"{exc or 'it recursed without end'}. Mappings may only read the row's columns.") from None
        except jinja2.UndefinedError as exc:
            raise SuiteError(f"{where}: task '{spec.name}': `{key}:` mapping failed: {exc.message}; the row has columns: {', '.join(map(str, row))}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise SuiteError(f"{where}: task '{spec.name}': the `{key}:` mapping {expr!r} failed on this row: "
                             f"{type(exc).__name__}: {exc}; fix the expression (e.g. convert with `| int` or `| string`) "
                             f"or the data (the row has columns: {', '.join(map(str, row))})") from None
    if expr not in row:
        raise SuiteError(
            f"{where}: task '{spec.name}': column '{expr}' (mapped to `{key}`) is missing; "
            f"the row has columns: {', '.join(map(str, row))}. Fix the `{key}:` mapping or the data."
        )
    value = row[expr]
    if value is None or (isinstance(value, float) and value != value):
        raise SuiteError(f"{where}: task '{spec.name}': column '{expr}' (mapped to `{key}`) is empty; fill it in or drop the row")
    return value


def _list_text(text: str) -> list | None:
    """The list a text cell spells as JSON or a Python literal (a CSV cannot hold a list otherwise), or None."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return value
    return None


def map_row(row: dict, spec: TaskSpec, idx: int, origin: str, evaluated: bool = True) -> Example:
    """Map one data row onto the canonical Example using the task's `input/choices/target/id`. An evaluated row's
    choices and target are checked here, so the first row at fault is the one named; a demonstration-pool row
    without a usable answer is left out later, with a note."""
    o = spec.options
    text = _field(row, o["input"], "input", spec, idx, origin)
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': `input:` (column or mapping {o['input']!r}) gives a "
                         f"{type(text).__name__}, not text ({_short(text)}); map `input:` to a text column, or join "
                         "the values in a mapping, e.g. \"{{ col | join(' ') }}\"")
    _check_size(str(text), "input", spec, f"{origin}, row {idx + 1}")
    ex_id = str(_field(row, o["id"], "id", spec, idx, origin)) if o.get("id") else str(idx)
    if not o.get("choices"):  # generation: the target is the reference answer (or a list of them)
        refs = _field(row, o["target"], "target", spec, idx, origin)
        refs = [refs] if isinstance(refs, (str, int, float)) and not isinstance(refs, bool) else refs
        if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, (str, int, float)) and str(r).strip() for r in refs):
            raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': `target:` must give a non-empty reference answer "
                             f"or a list of them for a generation task (got {refs!r})")
        return Example(ex_id, str(text), None, [str(r) for r in refs], {"row": idx})
    choices = _field(row, o["choices"], "choices", spec, idx, origin)
    if isinstance(choices, str):
        listed = _list_text(choices)  # a CSV cell holding a list: ["Paris", "Rome"] or ['Paris', 'Rome']
        choices = listed if listed is not None else [c.strip() for c in choices.split("|")] if "|" in choices else [choices]
    if not isinstance(choices, (list, tuple)):
        raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': `choices:` must give a list (got {type(choices).__name__}); "
                         "map it to a list column, or to text separated by '|'")
    for k, c in enumerate(choices):
        if c is None or (isinstance(c, float) and c != c) or not str(c).strip():
            raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': choice {k} is empty ({c!r}); fill it in or drop the row")
    choices = [str(c) for c in choices]
    for k, c in enumerate(choices):
        _check_size(c, f"choice {k}", spec, f"{origin}, row {idx + 1}")
    raw_target = _field(row, o["target"], "target", spec, idx, origin)
    if isinstance(raw_target, bool) or not isinstance(raw_target, (int, str)):
        raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': target {raw_target!r} must be a choice index or a choice's text")
    if isinstance(raw_target, str):
        if raw_target in choices:
            target: int = choices.index(raw_target)
        elif raw_target.strip().lstrip("-").isdecimal():  # isdigit() also accepts "²", which int() refuses
            target = int(raw_target)
        else:
            raise SuiteError(
                f"{origin}, row {idx + 1}: task '{spec.name}': target {raw_target!r} is neither a choice index nor one of "
                f"the choices {choices}; fix the `target:` mapping"
            )
    else:
        target = raw_target
    if not evaluated:
        return Example(ex_id, str(text), choices, target, {"row": idx})
    if len(choices) < 2:
        raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': {len(choices)} choice(s) ({_short(choices)}); "
                         "multiple choice needs at least 2 (a list column, several columns in a list, or text separated "
                         "by '|')")
    if not 0 <= target < len(choices):
        raise SuiteError(f"{origin}, row {idx + 1}: task '{spec.name}': target {raw_target!r} is outside the "
                         f"{len(choices)} choices (valid: 0..{len(choices) - 1}); fix the `target:` mapping or the data")
    return Example(ex_id, str(text), choices, target, {"row": idx})


def load_tasks(suite: Suite, limit: int | None = None, seed: int = 0, names: list[str] | None = None) -> list[Task]:
    limit = limit if limit is not None else suite.limit
    specs = suite.tasks if names is None else [suite.task(n) for n in names]
    from .sources import bigbench

    bigbench.ensure_cached([s.options["task"] for s in specs if s.source == "bigbench" and not s.options.get("path")])
    return [load_task(spec, limit, seed) for spec in specs]
