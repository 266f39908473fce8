"""`promptkit lint`: check template-family and suite YAML files without running a model."""

from __future__ import annotations

from pathlib import Path

from ..errors import PromptkitError, TemplateSecurityError
from ..tasks.suites import suite_from_dict
from .templates import LintMessage, _node_lines, family_from_dict, lint_family_file, read_yaml

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
