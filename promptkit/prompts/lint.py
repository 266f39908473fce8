"""`promptkit lint`: check template-family and suite YAML files without running a model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2.meta
import yaml

from ..errors import PromptkitError, TemplateError, TemplateSecurityError
from ..tasks.suites import suite_from_dict
from .safe_read import BoundedLoader
from .templates import (CANONICAL_FIELDS, CONTINUATION_FIELDS, RESERVED_AXES, _node_lines, family_from_dict, too_deep,
                        make_environment, read_yaml)

# what a trial render shows a family: lint renders its first variant once, to catch templates that run past the
# sandbox's budgets (an error that depends on the data, such as a bad index, is left to `render`)
SAMPLE = {"id": "0", "input": "An example input.", "choices": ["first", "second"], "instruction": "Answer.",
          "meta": {}, "choice": "first", "index": 0}


def lint_paths(paths: list[str | Path]) -> list[LintMessage]:
    files: list[Path] = []
    out: list[LintMessage] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(list(path.rglob("*.yaml")) + list(path.rglob("*.yml")))
        elif path.exists() or path.is_symlink():
            files.append(path)  # read_yaml refuses anything but a regular file, saying what it is
        else:
            out.append(LintMessage(str(path), None, "error", "no such file or directory"))
    for path in files:
        out += lint_file(path)
    return out


def lint_file(path: Path) -> list[LintMessage]:
    try:
        data, text = read_yaml(path)
    except PromptkitError as exc:
        return [LintMessage.from_error(path, exc)]
    if isinstance(data, dict) and "prompt" in data:
        out = lint_family_file(path, data, text)
        return out if any(m.level == "error" for m in out) else out + trial_render(path, data, text)
    if isinstance(data, dict) and ("selection" in data or "held_out" in data):
        return lint_suite_file(path, data, text)
    return [LintMessage(str(path), None, "error", "not a template family (needs `prompt:`) nor a suite (needs `selection:`)")]


def lint_suite_file(path: Path, data: dict, text: str) -> list[LintMessage]:
    """Check a suite as `run` loads it, without a model: its fields, then every task entry on its own (so that one
    bad entry does not hide the next) with its data read and mapped onto examples (columns, choices, targets), each
    error at the line of the task entry, or of the field, it concerns. Data that only the network has (a Hub
    dataset, a BIG-bench task not cached yet) is not fetched: a BIG-bench name is checked against the listing when
    one is cached, and the rest is left to `run`."""
    from ..tasks.suites import load_tasks

    lines = nested_lines(text)
    top = {k: v for k, v in data.items() if k not in ("selection", "held_out")}
    out: dict[tuple, LintMessage] = {}
    parsed = {k: v for k, v in data.items() if k in ("selection", "held_out") and not isinstance(v, list)}
    index: dict[str, list[int]] = {}
    for split in ("selection", "held_out"):
        entries = data.get(split)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            key = f"{split}[{i}]"
            try:
                one = suite_from_dict({**top, "selection": [entry], "held_out": []}, path)
                parsed.setdefault(split, []).append(entry)
                index.setdefault(split, []).append(i)  # where the entry that parses stands in the file
                if _offline(one.tasks[0]):
                    load_tasks(one, None, 0)
            except PromptkitError as exc:
                m = _at_entry(path, str(exc).replace(f"{path}: selection[0]", f"{path}: {key}"), lines, key)
                out.setdefault((m.line, m.message), m)
    try:  # what concerns the suite as a whole (its fields, a task listed twice), over the entries that parse
        suite_from_dict({**top, **parsed} if parsed.get("selection") or not out else data, path)
    except PromptkitError as exc:
        text = re.sub(r"(selection|held_out)\[(\d+)\]", lambda g: f"{g[1]}[{index.get(g[1], [])[int(g[2])]}]"
                      if int(g[2]) < len(index.get(g[1], [])) else g[0], str(exc))
        m = _at_entry(path, text, lines)
        if not any(m.message == seen.message for seen in out.values()):
            out[(m.line, m.message)] = m
    return list(out.values())


def _offline(spec) -> bool:
    """Whether lint can read the task's data without the network (and, for a BIG-bench name, check it)."""
    if spec.source == "hf":
        return False
    if spec.source == "bigbench" and not spec.options.get("path"):
        from ..tasks.sources import bigbench

        bigbench.check_known([spec.options["task"]])  # a typo, when a listing is cached
        return bigbench.task_file(spec.options["task"]).is_file()
    return True


def _at_entry(path: Path, text: str, lines: dict[str, int], where: str | None = None) -> LintMessage:
    """A suite error at its line: the field it names inside the task entry, else the entry, else the suite's."""
    entry = re.search(r"(selection|held_out)\[(\d+)\]", where or text)
    key = f"{entry.group(1)}[{entry.group(2)}]" if entry else None
    field = re.search(r"`(\w+):?`", text)
    line = (lines.get(f"{key}.{field.group(1)}") if key and field else None) or (lines.get(key) if key else None) \
        or (lines.get(field.group(1)) if field and not key else None)
    prefix = f"{path}: {key}: " if key else f"{path}: "
    message = text[len(prefix):] if text.startswith(prefix) else text.removeprefix(f"{path}: ")
    if line is None:
        return LintMessage.from_error(path, PromptkitError(text))
    return LintMessage(str(path), line, "error", message)


def nested_lines(text: str) -> dict[str, int]:
    """1-based lines of a YAML file's top-level keys, of each key one level down ('axes.NAME'), and of each item of
    a top-level list with its keys ('selection[0]', 'selection[0].choices')."""
    try:
        root = yaml.compose(text, Loader=BoundedLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value in root.value:
        key = str(key_node.value)
        lines[key] = key_node.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[f"{key}.{sub.value}"] = sub.start_mark.line + 1
        elif isinstance(value, yaml.SequenceNode):
            for i, item in enumerate(value.value):
                lines[f"{key}[{i}]"] = item.start_mark.line + 1
                for sub, _ in item.value if isinstance(item, yaml.MappingNode) else []:
                    lines[f"{key}[{i}].{sub.value}"] = sub.start_mark.line + 1
    return lines


def trial_render(path: Path, data: dict, text: str) -> list[LintMessage]:
    family = family_from_dict(data, str(path), _node_lines(text))
    context = {**SAMPLE, **{axis: values[0] for axis, values in family.axes.items()}}
    out = []
    for key in ("header", "prompt", "continuation"):
        try:
            family.render(key, context)
        except TemplateSecurityError as exc:
            out.append(LintMessage.from_error(path, exc))
        except PromptkitError:
            pass
    return out


@dataclass(frozen=True)
class LintMessage:
    path: str
    line: int | None
    level: str  # "error" or "warning"
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.level}: {self.message}"

    @classmethod
    def from_error(cls, path: Path, exc: Exception) -> "LintMessage":
        """Turn a 'FILE[:LINE]: message' error into a lint message with its line."""
        text = str(exc)
        prefix = str(path)
        if text.startswith(prefix):
            rest = text[len(prefix):]
            line, sep, after = rest.lstrip(":").partition(": ")
            if rest.startswith(":") and line.isdigit() and sep:
                return cls(prefix, int(line), "error", after)
            return cls(prefix, None, "error", rest.removeprefix(": "))
        return cls(prefix, None, "error", text)


def lint_family_file(path: Path, data: Any, text: str) -> list[LintMessage]:
    """Check one template family file without rendering it on data."""
    lines = _node_lines(text)
    out: list[LintMessage] = []
    try:
        family = family_from_dict(data, str(path), lines)
    except TemplateError as exc:
        return [LintMessage.from_error(path, exc)]
    env = make_environment()
    axes = set(family.axes)
    used: set[str] = set()
    for key, allowed in (
        ("header", set(CANONICAL_FIELDS) | axes),
        ("prompt", set(CANONICAL_FIELDS) | axes),
        ("continuation", set(CANONICAL_FIELDS) | set(CONTINUATION_FIELDS) | axes),
    ):
        try:
            names = jinja2.meta.find_undeclared_variables(env.parse(getattr(family, key)))
        except (SyntaxError, RecursionError, MemoryError) as exc:
            return [LintMessage.from_error(path, TemplateError(too_deep(family, key, exc)))]
        used |= names
        for name in sorted(names - allowed):
            out.append(
                LintMessage(
                    str(path), lines.get(key), "error",
                    f"'{key}' uses variable '{name}', which is neither a canonical field "
                    f"({', '.join(CANONICAL_FIELDS)}) nor a declared axis; declare it under `axes:` or fix the name",
                )
            )
    axis_lines = nested_lines(text)
    for axis in sorted(axes - used - set(RESERVED_AXES)):
        out.append(LintMessage(str(path), axis_lines.get(f"axes.{axis}") or lines.get("axes"), "warning",
                               f"axis '{axis}' is declared but never used by the templates; it only multiplies identical variants"))
    return out
