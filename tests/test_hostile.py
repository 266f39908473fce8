"""Hostile inputs and interrupted writes: each ends in one clear message (CLI exit 2, a PromptkitError from the
library), never a traceback, a mix of two runs, or a silently wrong render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import promptkit as pk
from promptkit.results.rundir import write_manifest
import promptkit.results.rundir as rundir
from promptkit.cli import main


def _run(tiny_model, toy_suite, templates, out, **kw):
    return pk.evaluate(str(templates), str(toy_suite), tiny_model, limit=2, max_variants=2, out=out, progress=False,
                       **kw)


# 1. run directories: a save stopped midway never leaves a mix of two runs; a rerun leaves no stale files

def test_run_stopped_while_saving_is_refused_not_mixed(tiny_model, toy_suite, two_templates, tmp_path, monkeypatch,
                                                       capsys):
    out = tmp_path / "run"
    first = _run(tiny_model, toy_suite, two_templates, out, seed=1)
    assert (out / "manifest.json").is_file()
    assert pk.load(out).variants == first.variants

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "write_analysis", crash)  # after config, variants and results are written
    with pytest.raises(pk.PromptkitError, match="could not write the run directory"):
        _run(tiny_model, toy_suite, two_templates, out, seed=2)
    with pytest.raises(pk.PromptkitError, match="not completely written"):
        pk.load(out)
    assert main(["rank", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not completely written" in err and "Traceback" not in err


def test_files_of_another_run_are_refused(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    _run(tiny_model, toy_suite, two_templates, out, seed=1)
    (out / "config.json").write_text(json.dumps({"seed": 99}))  # e.g. an older promptkit writing into this directory
    with pytest.raises(pk.PromptkitError, match="config.json does not match"):
        pk.load(out)


def test_rerun_into_same_out_replaces_the_earlier_run(tiny_model, toy_suite, two_templates, tmp_path):
    out = tmp_path / "run"
    _run(tiny_model, toy_suite, two_templates, out, seed=1)
    (out / "transfer.csv").write_text("A,B\n")  # as a multi-model run would have left (its manifest lists them)
    (out / "transfer.json").write_text("{}")
    write_manifest(out)
    (out / "notes.txt").write_text("mine")  # not a run file: kept
    logged = []
    second = _run(tiny_model, toy_suite, two_templates, out, seed=2, log=logged.append)
    assert not (out / "transfer.csv").exists() and not (out / "transfer.json").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert any("holds an earlier run" in line and str(out) in line for line in logged)
    assert pk.load(out).config["seed"] == second.config["seed"] == 2


def test_run_directory_without_manifest_still_loads():
    loaded = pk.load(Path(__file__).parent / "data" / "run_v0_1")
    assert len(loaded.rows) > 0


# 2. render shows terminal escape sequences escaped, never raw

def test_render_escapes_control_characters(toy_suite, tmp_path, capsys):
    folder = tmp_path / "esc"
    folder.mkdir()
    (folder / "esc.yaml").write_text('name: esc\nprompt: "\\e[2J\\e]0;owned\\a{{ input }}\\nAnswer:\\tnow\\x7f"\n'
                                     "continuation: \" {{ choice }}\"\n")
    assert main(["render", "esc", "--templates", str(folder), "--suite", str(toy_suite), "--task", "capitals"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b[2J" in out and "\\x1b]0;owned\\x07" in out and "\nAnswer:\tnow\\x7f" in out


# 3. a model the user may not read is reported as unreadable, not as missing

def _as_nobody(fn) -> str:
    """Run fn() in a forked child that dropped root (root reads mode-000 files); its error message, or 'ok'."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            try:
                fn()
                message = "ok"
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.fixture()
def public_dir():
    import os
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="promptkit-hostile-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    for p in folder.rglob("*"):
        p.chmod(0o755)
    shutil.rmtree(folder)
    assert not os.path.exists(folder)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_unreadable_model_file_or_folder_is_permission_denied(public_dir):
    from promptkit.backends.acquire import resolve_model

    gguf = public_dir / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    gguf.chmod(0o000)
    message = _as_nobody(lambda: resolve_model(str(gguf), log=lambda m: None))
    assert message.startswith("ModelError") and "cannot be read (permission denied)" in message, message
    assert str(gguf) in message and "chmod" in message and "does not exist" not in message

    folder = public_dir / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "config.json").chmod(0o000)
    message = _as_nobody(lambda: resolve_model(str(folder), log=lambda m: None))
    assert message.startswith("ModelError") and "permission denied" in message and "config.json" in message, message
    folder.chmod(0o000)
    message = _as_nobody(lambda: resolve_model(str(folder), log=lambda m: None))
    assert message.startswith("ModelError") and "permission denied" in message, message


# 4. data-structure mistakes in examples are the data's fault, named before any render

def _files_task(tmp_path, rows, mapping="input: q, choices: opts, target: label") -> Path:
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\nselection:\n  - {{name: caps, source: files, path: d.jsonl, {mapping}}}\n")
    return suite


def _load(suite):
    from promptkit.tasks.suites import load_suite, load_tasks

    return load_tasks(load_suite(str(suite)))


def test_list_valued_input_is_refused(tmp_path, two_templates, capsys):
    rows = [{"q": "fine?", "opts": ["a", "b"], "label": 0}, {"q": ["x"], "opts": ["a", "b"], "label": 1}]
    suite = _files_task(tmp_path, rows)
    with pytest.raises(pk.SuiteError, match=r"d\.jsonl, row 2: task 'caps': `input:` .*gives a list, not text"):
        _load(suite)
    assert main(["render", "plain", "--templates", str(two_templates), "--suite", str(suite), "--task", "caps"]) == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "`input:`" in err and "['x']" in err and "Traceback" not in err


def test_oversized_input_or_choice_is_refused_as_data(tmp_path):
    from promptkit.prompts.budget import MAX_SIZE

    big = "w " * (MAX_SIZE // 2 + 10)
    suite = _files_task(tmp_path, [{"q": "ok?", "opts": ["a", "b"], "label": 0}, {"q": big, "opts": ["a", "b"], "label": 0}])
    with pytest.raises(pk.SuiteError, match=r"row 2: task 'caps': input is [\d,]+ characters, over the [\d,]+ a template"):
        _load(suite)
    suite = _files_task(tmp_path, [{"q": "ok?", "opts": ["a", big], "label": 0}])
    with pytest.raises(pk.SuiteError, match=r"row 1: task 'caps': choice 1 is [\d,]+ characters") as info:
        _load(suite)
    assert "sandbox" not in str(info.value) and "template was stopped" not in str(info.value)


# 5. templates cannot change the example's data (meta) that later renders show

@pytest.mark.parametrize("prompt", [
    "{{ meta.update({'x': 1}) }}", "{% set s = meta.setdefault('k', []) %}", "{{ meta.d.update({'q': 2}) }}",
    "{% set t = meta.tags %}{{ t.append('z') }}", "{{ meta | attr('update') }}",
    "{% for k in meta.d %}{{ meta.d.pop(k) }}{% endfor %}"])
def test_templates_cannot_mutate_meta(prompt):
    from promptkit.prompts.render import context, render
    from promptkit.prompts.templates import TemplateFamily
    from promptkit.prompts.variants import expand
    from promptkit.tasks.core import Example, Task

    example = Example("e1", "hi?", ["a", "b"], 0, {"row": 0, "tags": ["t"], "d": {"k": 1}})
    task = Task("t", [example], "")
    before = json.loads(json.dumps(example.meta))
    with pytest.raises(pk.TemplateSecurityError, match="family 'f'"):
        render(expand(TemplateFamily("f", prompt + "{{ input }}", " {{ choice }}", {}))[0], task, example)
    assert example.meta == before
    shown = render(expand(TemplateFamily("g", "{{ meta | tojson }} {{ meta.tags | join }}", " {{ choice }}", {}))[0],
                   task, example)
    assert json.loads(shown.prompt.rsplit(" ", 1)[0]) == before
    # the frozen copy a template gets raises even outside the sandbox, and shares nothing with the example
    meta = context(expand(TemplateFamily("g", "x", " {{ choice }}", {}))[0], task, example)["meta"]
    for mutate in (lambda: meta.update(x=1), lambda: meta["d"].setdefault("k", 2), lambda: meta["tags"].append(1)):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    dict.update(meta["d"], {"k": 99})  # even the C method reaches only the copy
    assert example.meta == before


# 6. templates nested past what Python compiles are a TemplateError naming file, family and key

def _deep(kind: str) -> str:
    if kind == "blocks":
        return "".join(f"{{% for x{i} in choices %}}" for i in range(21)) + "{{ input }}" + "{% endfor %}" * 21
    if kind == "parens":
        return "{{ " + "(" * 120 + "input" + ")" * 120 + " }}"
    return "{{ " + "-" * 5000 + "1 }}{{ input }}"


@pytest.mark.parametrize("kind", ["blocks", "parens", "unary"])
def test_deeply_nested_template_is_a_clear_error(kind, tmp_path, toy_suite, tiny_model, capsys):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "deep.yaml").write_text(f"name: deep\nprompt: {json.dumps(_deep(kind))}\ncontinuation: ' {{{{ choice }}}}'\n")
    expected = f"{folder / 'deep.yaml'}:2: template 'prompt' of template family 'deep' cannot be compiled"
    for argv in (["lint", str(folder)],
                 ["render", "deep", "--templates", str(folder), "--suite", str(toy_suite), "--task", "even"],
                 ["run", "--templates", str(folder), "--suite", str(toy_suite), "--model", tiny_model, "--quiet"]):
        assert main(argv) in (1, 2), argv
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "Traceback" not in text and expected.split(":2: ")[1] in text and str(folder / "deep.yaml") in text, (argv, text)
    with pytest.raises(pk.TemplateError, match="cannot be compiled"):
        from promptkit.prompts.templates import load_templates

        load_templates(str(folder))


def test_a_bigbench_task_path_that_is_a_fifo_or_dev_zero_is_refused_not_read(tmp_path):
    """A suite's `path:` to a BIG-bench task.json must be a regular file: a FIFO would block forever and a link
    to /dev/zero would fill memory."""
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "t.yaml").write_text("name: t\nprompt: 'Q: {{ input }}'\n")
    for name in ("fifo.json", "zero.json"):  # the link leads out of the suite's folder: allowed here, to reach the read
        (tmp_path / "suite.yaml").write_text(f"name: s\nallow_outside_data: true\nselection:\n"
                                             f"  - {{name: x, source: bigbench, path: {name}}}\n")
        proc = subprocess.run([sys.executable, "-m", "promptkit", "render", "t", "--templates", str(tmp_path / "t.yaml"),
                               "--suite", str(tmp_path / "suite.yaml"), "--task", "x"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert name in proc.stderr and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr
