"""The template library is `templates/` at the repository root: it lints clean, a checkout reads it,
and a built wheel ships it (with the suites) inside the package, where an installed promptkit finds it.

The wheel is built offline: pip without build isolation or an index, using the setuptools already
installed next to the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import promptkit
from promptkit.cli import main

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
SUITES = REPO / "promptkit" / "data" / "suites"
FROM_CHECKOUT = Path(promptkit.__file__).resolve().parent == REPO / "promptkit"


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _env() -> dict[str, str]:
    """The test's environment without PYTHONPATH (so the repository is not importable) and without
    pip asking questions or looking for a newer pip."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(args: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_lint_templates_from_the_repository_root(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert (TEMPLATES / "README.md").is_file()  # the folder holds more than YAML; lint must not choke on it
    assert main(["lint", "templates"]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


@pytest.mark.skipif(not FROM_CHECKOUT, reason="promptkit is imported from an installed copy, not this checkout")
def test_a_checkout_reads_the_repository_templates_folder():
    from promptkit.paths import builtin_dir
    from promptkit.prompts.templates import builtin_sets, template_files

    assert builtin_dir("templates") == TEMPLATES
    assert not (REPO / "promptkit" / "_templates").exists()  # only the wheel has it
    assert builtin_sets() == sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir())
    assert template_files(None) == sorted(TEMPLATES.glob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (so no build/ or egg-info is left in the checkout and
    none left there from an earlier build can leak into it)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("promptkit", "templates"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp / "dist"
    result = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                   "--wheel-dir", str(out), str(src)], cwd=tmp, timeout=180)
    (built,) = out.glob("promptkit-*.whl")
    (tmp / "build.log").write_text(result.stdout + result.stderr)
    return built


def test_the_build_has_no_deprecation_that_will_become_an_error(wheel):
    """setuptools stops building a `project.license` TOML table on 2027-02-18: the license is an SPDX string."""
    log = (wheel.parent.parent / "build.log").read_text()
    assert "Successfully built promptkit" in log or wheel.is_file()
    deprecated = [line.strip() for line in log.splitlines() if "deprecat" in line.lower()]
    assert not deprecated, deprecated[:5]


def test_the_wheel_ships_every_template_suite_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = _yaml_files(TEMPLATES)
    assert len(templates) >= 7
    for path in templates + [TEMPLATES / "README.md"]:
        assert f"promptkit/_templates/{path.relative_to(TEMPLATES).as_posix()}" in names, path
    for path in _yaml_files(SUITES):
        assert f"promptkit/data/suites/{path.name}" in names, path
    missing = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "promptkit").rglob("*.py")
                     if "__pycache__" not in p.parts and p.relative_to(REPO).as_posix() not in names)
    assert not missing, (f"modules missing from the wheel: {missing}; add their package to "
                         "[tool.setuptools] packages in pyproject.toml")
    assert not any(n.startswith(("promptkit/data/templates/", "templates/")) for n in names)


CHECK_INSTALLED = """
import json, sys
from pathlib import Path
import promptkit
from promptkit.paths import builtin_dir
from promptkit.prompts.templates import builtin_sets, load_templates
from promptkit.tasks.suites import load_suite
print(json.dumps({
    "file": promptkit.__file__,
    "path": sys.path,
    "templates": str(builtin_dir("templates")),
    "families": sorted(f.name for f in load_templates()),
    "sets": {s: sorted(f.name for f in load_templates(s)) for s in builtin_sets()},
    "suites": [load_suite().name, load_suite("offline_gen").name, load_suite("bigbench_gen").name],
}))
"""


def test_an_installed_wheel_finds_the_builtin_templates_and_suites(wheel, tmp_path):
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
         cwd=tmp_path, timeout=120)
    # only the installed copy on the path: the interpreter's site-packages still provide the dependencies
    env = {**_env(), "PYTHONPATH": str(target)}
    result = _run([sys.executable, "-c", CHECK_INSTALLED], cwd=tmp_path, timeout=120, env=env)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(target.resolve())
    assert not any(p and Path(p).resolve() == REPO for p in info["path"])
    assert Path(info["templates"]).resolve() == (target / "promptkit" / "_templates").resolve()

    from promptkit.prompts.templates import load_family

    def names(folder: Path) -> list[str]:
        return sorted(load_family(p).name for p in folder.glob("*.yaml"))

    assert info["families"] == names(TEMPLATES) and len(info["families"]) >= 5
    assert info["sets"] == {d.name: names(d) for d in sorted(TEMPLATES.iterdir()) if d.is_dir()}
    assert info["sets"]["chat"] == ["chat_qa"]
    assert info["suites"] == ["offline_mc", "offline_gen", "bigbench_gen"]
