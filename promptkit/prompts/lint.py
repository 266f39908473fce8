"""`promptkit lint`: check template-family and suite YAML files without running a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2.meta

from ..errors import PromptkitError, TemplateError, TemplateSecurityError
from ..tasks.suites import suite_from_dict
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
        try:
            suite_from_dict(data, path)
        except PromptkitError as exc:
            return [LintMessage.from_error(path, exc)]
        return []
    return [LintMessage(str(path), None, "error", "not a template family (needs `prompt:`) nor a suite (needs `selection:`)")]


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
    for axis in sorted(axes - used - set(RESERVED_AXES)):
        out.append(LintMessage(str(path), lines.get("axes"), "warning", f"axis '{axis}' is declared but never used by the templates; it only multiplies identical variants"))
    return out
