"""Hostile templates: a catalogue of known Jinja server-side template injection payloads, and
templates that loop or expand without bound. Every one must stop with a TemplateSecurityError
that names the template file and family; none may read a file or an environment variable or run code."""

from __future__ import annotations

import time

import jinja2
import pytest
import yaml

import promptkit as pk
from promptkit.prompts.templates import family_from_dict
from promptkit.prompts.templates import load_family

SECRET_ENV, SECRET_FILE = "PK-CANARY-ENV-5e1f", "PK-CANARY-FILE-9b2c"

# (payload, what it achieves in an unsandboxed Jinja environment: exec = creates MARK, env, file, walk = reaches
# Python internals, flask = needs Flask's globals)
CATALOGUE = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "walk"),
    ("{{ ().__class__.__base__.__subclasses__() }}", "walk"),
    ("{{ [].__class__.__base__.__subclasses__()[0].__init__.__globals__ }}", "walk"),
    ("{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
     "{{ c()._module.__builtins__['open']('secret.txt').read() }}{% endif %}{% endfor %}", "file"),
    ("{{ lipsum.__globals__['os'].popen('touch MARK').read() }}", "exec"),
    ("{{ lipsum.__globals__['__builtins__']['__import__']('os').popen('touch MARK').read() }}", "exec"),
    ("{{ cycler.__init__.__globals__.os.environ['PK_CANARY'] }}", "env"),
    ("{{ joiner.__init__.__globals__.os.popen('touch MARK').read() }}", "exec"),
    ("{{ namespace.__init__.__globals__.os.environ['PK_CANARY'] }}", "env"),
    ("{{ self.__init__.__globals__.__builtins__.open('secret.txt').read() }}", "file"),
    ("{{ self._TemplateReference__context.cycler.__init__.__globals__.os.environ['PK_CANARY'] }}", "env"),
    ("{{ (lipsum|attr('\\x5f\\x5fglobals\\x5f\\x5f'))['os'].environ['PK_CANARY'] }}", "env"),
    ("{{ (namespace|attr('__init__')|attr('__globals__'))['os'].environ['PK_CANARY'] }}", "env"),
    ("{{ (input|attr(['_', '_class_', '_']|join)|attr(['_', '_mro_', '_']|join))[1] }}", "walk"),
    ("{{ input[('_' * 2) ~ 'class' ~ ('_' * 2)] }}", "walk"),
    ("{{ input['__class__'] }}", "walk"),
    ("{{ '{0.__class__.__mro__}'.format(input) }}", "walk"),
    ("{{ '{x.__class__}'.format_map({'x': input}) }}", "walk"),
    ("{{ '%s' % input.__class__ }}", "walk"),
    ("{{ dict.__base__.__subclasses__() }}", "walk"),
    ("{{ choices|map(attribute='__class__')|list }}", "walk"),
    ("{{ choices|selectattr('__class__')|list }}", "walk"),
    ("{{ choices|sort(attribute='__class__.__name__')|join }}", "walk"),
    ("{% set x = input.__class__ %}{{ x }}", "walk"),
    ("{% with k = meta.__class__ %}{{ k }}{% endwith %}", "walk"),
    ("{% import 'os' as os %}{{ os }}", "walk"),
    ("{% include 'secret.txt' %}", "file"),  # with a loader, as a tool that renders files would configure
    ("{{ config.__class__.__init__.__globals__['os'].popen('touch MARK').read() }}", "flask"),
    ("{{ request.application.__globals__.__builtins__.__import__('os').popen('touch MARK').read() }}", "flask"),
    ("{{ url_for.__globals__.os.environ['PK_CANARY'] }}", "flask"),
    ("{{ get_flashed_messages.__globals__.__builtins__.open('secret.txt').read() }}", "flask"),
    ("{{ choices.append('x') }}{{ choices }}", "walk"),  # mutating the example the engine scores
]

# templates that would hang or exhaust memory without bounds
RUNAWAY = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 'a' * 1000000000 }}",
    "{{ choices * 100000000 }}",
    "{{ 10 ** (10 ** 10) }}",
    "{{ (2 ** 64) ** 64 ** 64 }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}",
    "{% set ns = namespace(x=['a']) %}{% for i in range(64) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ '%1000000000d' % 1 }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ ('a' * 90000)|replace('a', 'bbbbbbbbbb') }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for x in choices recursive %}{{ loop(choices) }}{% endfor %}",
    "{{ range(1000000000)|list|length }}",
]

CONTEXT = {"input": "hi", "choices": ["a", "b"], "id": "1", "instruction": "", "meta": {}}


@pytest.fixture
def hostile_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PK_CANARY", SECRET_ENV)
    (tmp_path / "secret.txt").write_text(SECRET_FILE)
    return tmp_path


def _family_file(directory, i, payload):
    path = directory / f"payload_{i:02d}.yaml"
    path.write_text(yaml.safe_dump({"name": f"hostile_{i:02d}", "prompt": payload, "continuation": " {{ choice }}"}))
    return path


def _attempt(path):
    """Load the family and render its prompt; return the TemplateSecurityError (or fail the test)."""
    context = {**CONTEXT, "choices": list(CONTEXT["choices"])}
    with pytest.raises(pk.TemplateSecurityError) as info:
        load_family(path).render("prompt", context)
    assert context["choices"] == ["a", "b"], "the template changed the example"
    return info.value


def test_the_catalogue_is_real_outside_the_sandbox(hostile_env):
    """The payloads do what they say in a plain Jinja environment, so blocking them proves something."""
    live = 0
    for payload, effect in CATALOGUE:
        if effect in ("flask", "walk"):
            continue
        (hostile_env / "MARK").unlink(missing_ok=True)
        out = jinja2.Environment(loader=jinja2.FileSystemLoader(str(hostile_env))).from_string(payload).render(CONTEXT)
        achieved = {"exec": (hostile_env / "MARK").exists(), "env": SECRET_ENV in out, "file": SECRET_FILE in out}[effect]
        assert achieved, payload
        live += 1
    assert live >= 10


@pytest.mark.parametrize("i", range(len(CATALOGUE)))
def test_injection_payload_is_refused_and_named(hostile_env, i):
    payload, _ = CATALOGUE[i]
    path = _family_file(hostile_env, i, payload)
    error = _attempt(path)
    message = str(error)
    assert str(path) in message and f"hostile_{i:02d}" in message
    assert SECRET_ENV not in message and SECRET_FILE not in message
    assert not (hostile_env / "MARK").exists()
    assert "\n" not in message and "Traceback" not in message


def test_catalogue_size():
    assert len(CATALOGUE) >= 20


@pytest.mark.parametrize("i", range(len(RUNAWAY)))
def test_unbounded_templates_stop_quickly(hostile_env, i):
    path = _family_file(hostile_env, 100 + i, RUNAWAY[i])
    start = time.perf_counter()
    error = _attempt(path)
    assert time.perf_counter() - start < 20
    assert str(path) in str(error)


def test_ordinary_templates_still_work():
    family = family_from_dict({
        "name": "fine", "prompt": "{{ instruction }}{% for c in choices %}\n{{ loop.index0|letter }}. {{ c|casing('upper') }}{% endfor %}"
                                  "\n{{ '%s (%d)' % (input, choices|length) }} {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ input ~ '?' }}",
        "continuation": " {{ index|letter }}"})
    assert family.render("prompt", {**CONTEXT, "instruction": "Pick."}) == "Pick.\nA. A\nB. B\nhi (2) ababab 1024 hi?"


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path):
    path = tmp_path / "tagged.yaml"
    path.write_text("name: tagged\nprompt: !!python/object/apply:os.system ['touch MARK']\n")
    with pytest.raises(pk.TemplateError, match=r"tagged.yaml:2: YAML syntax error"):
        load_family(path)
    assert not (tmp_path / "MARK").exists()


def test_remote_code_is_off_unless_asked(tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: seen.append(k) or real_model(*a, **k))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: seen.append(k) or real_tok(*a, **k))
    from promptkit.backends.hf import HFBackend

    backend = HFBackend(tiny_model, dtype="float32", device="cpu", log=lambda *_: None)
    assert not seen  # the files are read, nothing is loaded until it is used
    backend.load_weights(), backend.tokenizer
    assert len(seen) == 2 and all(k.get("trust_remote_code") is False for k in seen)
    seen.clear()
    trusted = HFBackend(tiny_model, dtype="float32", device="cpu", trust_remote_code=True, log=lambda *_: None)
    trusted.load_weights(), trusted.tokenizer
    assert len(seen) == 2 and all(k.get("trust_remote_code") is True for k in seen)
