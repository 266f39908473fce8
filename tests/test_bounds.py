"""Resource attacks: files and templates that would hang promptkit or exhaust memory.

Each attack runs the real command line in a child process under a 1 GiB address-space cap and a wall-clock
timeout, and must end well within both with a clear error: exit 2 (lint: exit 1 and an error line), a message
that names the file and says what to do, and no traceback.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MEMORY = 1 << 30  # bytes of address space for the child (a plain `render` peaks near 200 MB)
TIMEOUT = 90  # seconds before the child is killed: a hang
QUICK = 30  # seconds an attack may take on a loaded machine (the real cost is a few seconds at most)

CHILD = f"""
import atexit, resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, {MEMORY}))
atexit.register(lambda: print('PEAK_KB=%d' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))
sys.argv = ['promptkit'] + sys.argv[1:]
runpy.run_module('promptkit', run_name='__main__')
"""


def promptkit(cwd: Path, *args: str) -> tuple[int, str, float]:
    """Run `promptkit ARGS` in a capped child; return (exit code, stdout + stderr, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY)))
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def assert_refused(result, *needles: str, code: int = 2) -> None:
    rc, out, seconds = result
    assert "Traceback" not in out and "MemoryError" not in out, out[-3000:]
    assert rc == code, out[-3000:]
    assert seconds < QUICK, f"took {seconds:.1f} s"
    for needle in needles:
        assert needle in out, (needle, out[-3000:])


@pytest.fixture
def workdir(tmp_path):
    """A suite with one small `files` task, and an ordinary template family next to it."""
    rows = [{"q": f"question {i}", "a": "yes", "b": "no", "t": i % 2} for i in range(4)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"selection": [
        {"source": "files", "path": "data.jsonl", "input": "q", "choices": ["a", "b"], "target": "t"}]}))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "fine.yaml").write_text('name: fine\nprompt: "Q: {{ input }}"\ncontinuation: " {{ choice }}"\n')
    return tmp_path


def render(workdir: Path, family: str = "fine", templates: str = "templates", suite: str = "suite.yaml"):
    return promptkit(workdir, "render", family, "--templates", templates, "--suite", suite, "--task", "data")


def test_the_harness_renders_an_ordinary_family(workdir):
    rc, out, _ = render(workdir)
    assert rc == 0 and "Q: question" in out, out[-3000:]


# ---------------------------------------------------------------------------- 3. YAML aliases


def laughs(levels: int = 9) -> list[str]:
    """YAML lines defining &l0 .. &l{levels-1}: each level repeats the one before nine times (9**9 'lol's)."""
    lines = ["  - &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return lines


def test_billion_laughs_in_a_template_is_refused_by_lint_and_render(workdir):
    path = workdir / "templates" / "laughs.yaml"
    path.write_text("\n".join(["name: laughs", 'prompt: "{{ input }}"', "metadata:", "  all:", *laughs(),
                               "description: *l8", ""]))
    for result, code in ((promptkit(workdir, "lint", str(path)), 1), (render(workdir, "laughs"), 2)):
        assert_refused(result, "laughs.yaml:8: ", "YAML refused: the alias *l2", "write the values out", code=code)


def test_billion_laughs_in_a_suite_is_refused(workdir):
    (workdir / "suite.yaml").write_text((workdir / "suite.yaml").read_text() + "description:\n" + "\n".join(laughs()) + "\n")
    assert_refused(render(workdir), "suite.yaml:13: YAML refused: the alias *l2")
    assert_refused(promptkit(workdir, "lint", "suite.yaml"), "suite.yaml:13: error: YAML refused", code=1)


def test_small_aliases_still_load_and_recursive_ones_are_refused(tmp_path):
    from promptkit.errors import TemplateError
    from promptkit.prompts.templates import read_yaml

    path = tmp_path / "alias.yaml"
    path.write_text("axes:\n  a: &v [x, y]\n  b: *v\nname: ok\n")
    assert read_yaml(path)[0] == {"axes": {"a": ["x", "y"], "b": ["x", "y"]}, "name": "ok"}
    path.write_text("name: loop\nmetadata: &m\n  self: *m\n")
    with pytest.raises(TemplateError, match=r"alias.yaml:3: .*refers to a value it is inside of"):
        read_yaml(path)


# ---------------------------------------------------------------------------- 4. special files


def special(path: Path, kind: str) -> Path:
    """Make `path` a link to /dev/zero ("zero") or a FIFO that nobody writes to ("fifo")."""
    if kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


KINDS = {"zero": "a character device", "fifo": "a FIFO"}


@pytest.mark.parametrize("kind", KINDS)
def test_special_template_files_are_refused(workdir, kind):
    path = special(workdir / "templates" / "bad.yaml", kind)
    assert_refused(render(workdir), "bad.yaml", KINDS[kind], "not a regular file")
    assert_refused(promptkit(workdir, "lint", "templates"), "bad.yaml", KINDS[kind], code=1)
    assert_refused(promptkit(workdir, "lint", str(path)), "bad.yaml", KINDS[kind], code=1)
    assert_refused(render(workdir, templates=str(path)), "bad.yaml", KINDS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_special_suite_and_data_files_are_refused(workdir, kind):
    (workdir / "data.jsonl").unlink()
    special(workdir / "data.jsonl", kind)
    if kind == "zero":  # a link out of the suite's folder is refused as such, before the file is opened
        assert_refused(render(workdir), "data.jsonl", "/dev/zero", "outside the suite's folder")
        suite = yaml.safe_load((workdir / "suite.yaml").read_text())
        (workdir / "suite.yaml").write_text(yaml.safe_dump({**suite, "allow_outside_data": True}))
    assert_refused(render(workdir), "data.jsonl", KINDS[kind], "not a regular file")
    special(workdir / "other.yaml", kind)
    assert_refused(render(workdir, suite="other.yaml"), "other.yaml", KINDS[kind], "not a regular file")


def test_oversized_yaml_is_refused_before_it_is_read(workdir):
    path = workdir / "templates" / "huge.yaml"
    path.write_text("name: huge\nprompt: '{{ input }}'\ndescription: '" + "x" * 1_200_000 + "'\n")
    assert_refused(render(workdir), "huge.yaml", "over the 1,000,000-byte limit")


# ---------------------------------------------------------------------------- 1. work, 2. size before allocation

S = "{% set s = 'a' * 99999 %}"
# templates that ran for minutes or reached gigabytes before the budgets bounded work and checked sizes first
WORK = [
    "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
    "{% set ns = namespace(x=1) %}{% for i in range(99999) %}{% set ns.x = ns.x - (-ns.x) %}{% endfor %}{{ ns.x }}",
    "{{ ([['a'] * 20000] * 20000)|sum(start=[])|length }}",
    "{{ (['a'] * 30000)|map('list')|sum(start=[])|length }}",
    "{% set l = [1] * 30000 %}{% for i in range(99999) %}{% set x = l %}{% endfor %}",  # only the deadline stops it
]
SIZE = [
    S + "{{ [s] * 99999 }}",
    S + "{{ (['a'] * 99999)|join(s) }}",
    "{% set s = '\\n' * 99999 %}{{ s|indent(99999) }}",
    "{% set s = '\\n' * 99999 %}{{ s|indent('x' * 99999) }}",
    "{{ dict.fromkeys(range(99999), 'a' * 99999)|tojson }}",
    "{{ ([1] * 1000)|tojson(indent=99999) }}",
    "{{ ('\\t' * 99999).expandtabs(99999) }}",
    "{{ ('a' * 99999).translate({97: 'b' * 50000}) }}",
    "{{ ('{:99999}' * 1000).format(*range(1000)) }}",
    S + "{{ ('%s' * 100) % ((s,) * 100) }}",
    S + "{{ s ~ s }}",
    "{{ range(99999)|map('center', 99999)|list|length }}",
    "{% macro m() %}{% for i in range(99999) %}{{ 'a' * 99999 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    "{% set x %}{% for i in range(99999) %}{{ 'a' * 99999 }}{% endfor %}{% endset %}{{ x|length }}",
    "{% set x %}{% for i in range(99999) %}" + "z" * 5000 + "{% endfor %}{% endset %}{{ x|length }}",
]


def family_file(directory: Path, name: str, prompt: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "prompt": prompt, "continuation": " {{ choice }}"}))
    return path


@pytest.mark.parametrize("prompt", WORK + SIZE, ids=[f"work{i}" for i in range(len(WORK))] + [f"size{i}" for i in range(len(SIZE))])
def test_lint_stops_runaway_templates(workdir, prompt):
    path = family_file(workdir / "templates", "runaway", prompt)
    assert_refused(promptkit(workdir, "lint", str(path)), "runaway.yaml", "stopped by the sandbox", code=1)


@pytest.mark.parametrize("i", [0, 2, 4])
def test_render_stops_templates_that_would_run_for_minutes(workdir, i):
    family_file(workdir / "templates", "runaway", WORK[i])
    assert_refused(render(workdir, "runaway"), "runaway.yaml", "stopped by the sandbox", "runaway")


@pytest.mark.parametrize("i", [0, 4, 12])
def test_render_stops_templates_before_they_allocate(workdir, i):
    family_file(workdir / "templates", "runaway", SIZE[i])
    assert_refused(render(workdir, "runaway"), "runaway.yaml", "stopped by the sandbox", "runaway")


def test_budgets_leave_ordinary_templates_alone():
    from promptkit.prompts.templates import family_from_dict

    prompt = ("{% set ns = namespace(n=0) %}{% for c in choices %}{% set ns.n = ns.n + 1 %}{% endfor %}"
              "{{ '%s/%d' % (input, ns.n) }} {{ '{}:{}'.format(id, 2 ** 10) }} {{ choices|join(', ') }} "
              "{{ [[1], [2]]|sum(start=[]) }} {{ 'a\\nb'|indent(2) }} {{ ('x' * 3) ~ input }} {{ meta|tojson }}")
    text = family_from_dict({"name": "fine", "prompt": prompt}).render(
        "prompt", {"input": "hi", "choices": ["a", "b"], "id": "7", "instruction": "", "meta": {"k": 1}})
    assert text == 'hi/2 7:1024 a, b [1, 2] a\n  b xxxhi {"k": 1}'
