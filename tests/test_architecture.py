"""The shape of the code: one-direction layers, no import cycles, short modules and run-path functions,
a pipeline that names no concrete backend, and entry points that import no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "promptkit"

# lower layers never import higher ones; prompts and tasks share a layer (a template renders a task's example,
# a suite's field expressions run in the template sandbox)
LAYERS = {"errors": 0, "paths": 0, "launch": 0, "prompts": 1, "tasks": 1, "backends": 2, "engine": 3, "analysis": 4,
          "results": 5, "run": 6, "cli_parser": 7, "cli": 7, "__main__": 8, "__init__": 8}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p, package): p for p in package.rglob("*.py")}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of `package` → the modules of it that it imports: at module level, inside functions, and under
    `if TYPE_CHECKING:` (an import for annotations only never runs, but it is a dependency all the same: a cycle
    through one is still two modules that cannot be understood, moved or tested one without the other)."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets.append(origin)
                targets += [f"{origin}.{a.name}" for a in node.names]  # `from . import module`
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_module" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                targets.append(node.args[0].value)
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The cycles a depth-first walk of the graph meets, each as `a -> b -> ... -> a` (none: the graph is acyclic)."""
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in seen:
                visit(nxt, stack + [nxt])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    return cycles


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_every_module_sits_in_a_known_layer():
    for name in _modules():
        layer(name)  # KeyError: a new top-level module needs a place in LAYERS (and in ARCHITECTURE.md)


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
             for a, targets in import_graph().items() for b in targets if layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "\n".join(cycles)


def test_the_cycle_check_sees_imports_for_annotations_and_inside_functions(tmp_path):
    """A planted cycle through an `if TYPE_CHECKING:` import (either spelling) or a function's import is found;
    the same modules without it are not a cycle."""
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\n\n\nclass A:\n    pass\n")
    plain = "class B:\n    pass\n"
    (package / "b.py").write_text(plain)
    assert import_cycles(import_graph(package)) == []
    for back in ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .a import A\n",
                 "import typing\n\nif typing.TYPE_CHECKING:\n    from planted.a import A\n",
                 "def make():\n    from . import a\n    return a.A()\n"):
        (package / "b.py").write_text(back + plain)
        assert import_cycles(import_graph(package)) == ["planted.a -> planted.b -> planted.a"], back


def test_task_core_imports_only_the_error_types():
    assert import_graph()["promptkit.tasks.core"] <= {"promptkit.errors"}


def test_the_run_names_no_concrete_backend():
    for path in (PACKAGE / "run").rglob("*.py"):
        text = path.read_text()
        assert "backends.hf" not in text and "HFBackend" not in text, path
    assert not {m for m in import_graph()["promptkit.engine.plan"] if m.startswith("promptkit.backends.")} - {
        "promptkit.backends.base"}


def test_modules_and_run_path_functions_stay_short():
    long_modules = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > 400]
    assert not long_modules, long_modules
    long_functions = []
    for path in (PACKAGE / "run").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80 or (node.name == "evaluate" and path.name == "evaluate.py" and n > 60):
                    long_functions.append(f"{path.name}:{node.name} {n} lines")
    assert not long_functions, long_functions


def _imported_by(code: str) -> dict:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in ('torch', 'transformers', 'datasets', 'evaluate', " \
                   "'pandas', 'scipy', 'numpy') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_option_names_match_what_they_name():
    from promptkit.analysis import metrics, names, ranking

    assert names.AGGREGATES == tuple(ranking.AGGREGATES) and names.MODES == metrics.MODES
    assert names.DEFAULT_AGGREGATE in names.AGGREGATES


def test_help_lint_render_and_import_load_no_torch(toy_suite, tmp_path):
    """Nor pandas, scipy or numpy: the entry points start in about a second."""
    family = tmp_path / "fam.yaml"
    family.write_text("name: fam\nprompt: 'Q: {{ input }}'\ncontinuation: ' {{ choice }}'\n")
    assert _imported_by("import promptkit; promptkit.PromptkitError") == []
    assert _imported_by("from promptkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass") == []
    assert _imported_by(f"from promptkit.cli import main; main(['lint', {str(family)!r}])") == []
    assert _imported_by(f"from promptkit.cli import main; main(['render', 'fam', '--templates', {str(family)!r}, "
                        f"'--suite', {str(toy_suite)!r}, '--task', 'toy'])") == []
