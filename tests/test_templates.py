
import pytest

import promptkit as pk
from promptkit.prompts.render import render
from promptkit.tasks.core import Example, Task
from promptkit.prompts.templates import family_from_dict, load_family
from promptkit.prompts.variants import expand, expand_all, variant_id

TASK = Task("demo", [Example("e0", "Is the sky blue?", ["yes", "no", "maybe"], 0)], instruction="Answer it.")


def test_builtin_library_has_four_families_and_enough_variants():
    families = pk.load_templates()
    assert len(families) >= 4
    variants = expand_all(families)
    assert len(variants) >= 48
    assert len({v.id for v in variants}) == len(variants)
    # every built-in variant renders on a multiple-choice example
    for v in variants:
        request = render(v, TASK, TASK.examples[0])
        assert "Is the sky blue?" in request.prompt
        assert len(request.continuations) == 3


def test_builtin_axes_cover_the_promised_dimensions():
    axes = {a for f in pk.load_templates() for a in f.axes}
    assert {"preamble", "labels", "casing", "separator", "enumeration"} <= axes


def test_variant_id_is_stable_and_depends_on_family_and_values():
    # a literal: this must not change between runs, machines or Python versions
    assert variant_id("qa", {"sep": "\n", "label": "Q:"}) == variant_id("qa", {"label": "Q:", "sep": "\n"})
    assert variant_id("qa", {"label": "Q:"}) == "qa.617f0972"
    assert variant_id("qa", {"label": "Q:"}) != variant_id("qa2", {"label": "Q:"})
    assert variant_id("qa", {"label": "Q:"}) != variant_id("qa", {"label": "Question:"})


def test_render_exact_text(two_templates):
    families = {f.name: f for f in pk.load_templates(two_templates)}
    variants = {tuple(v.values.values()): v for v in expand(families["plain"])}
    request = render(variants[("Q:", " ")], TASK, TASK.examples[0])
    assert request.prompt == "Q: Is the sky blue? Answer:"
    assert request.continuations == (" yes", " no", " maybe")
    listed = [v for v in expand(families["listed"]) if v.values["style"] == "letters"][0]
    assert render(listed, TASK, TASK.examples[0]).prompt == "Answer it.\nIs the sky blue?\nA. yes\nB. no\nC. maybe\nAnswer:"


def test_seeded_sampling_is_reproducible_and_spread_over_families():
    families = pk.load_templates()
    a = [v.id for v in expand_all(families, max_variants=8, seed=1)]
    b = [v.id for v in expand_all(families, max_variants=8, seed=1)]
    c = [v.id for v in expand_all(families, max_variants=8, seed=2)]
    assert a == b and a != c and len(a) == 8
    assert len({i.split(".")[0] for i in a}) == len(families)  # every family represented


def test_undefined_variable_names_file_and_variable(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nprompt: '{{ inptu }} Answer:'\n")
    variant = expand(load_family(path))[0]
    with pytest.raises(pk.TemplateError) as err:
        render(variant, TASK, TASK.examples[0])
    message = str(err.value)
    assert str(path) in message and "inptu" in message and "axes" in message


def test_jinja_syntax_error_points_at_the_file_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\naxes:\n  x: [a]\nprompt: |-\n  line one {{ x }}\n  line two {% if %}\n")
    with pytest.raises(pk.TemplateError) as err:
        load_family(path)
    assert f"{path}:6:" in str(err.value)
    assert "Jinja syntax error" in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nprompt: 'x'\naxes: [unclosed\n")
    with pytest.raises(pk.TemplateError, match=rf"{path}:\d+: YAML syntax error"):
        load_family(path)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": "x"}, "missing required field"),
        ({"name": "a b", "prompt": "x"}, "without spaces"),
        ({"name": "a", "prompt": "x", "axes": {"x": []}}, "non-empty list"),
        ({"name": "a", "prompt": "x", "axes": {"input": ["a"]}}, "shadows a canonical field"),
        ({"name": "a", "prompt": "x", "promt": "y"}, "unknown field"),
        ({"name": "a", "prompt": "x", "axes": {"x": ["a", "a"]}}, "same value twice"),
    ],
)
def test_malformed_family_fields(data, message):
    with pytest.raises(pk.TemplateError, match=message):
        family_from_dict(data, "f.yaml")


def test_duplicate_family_names_are_rejected(tmp_path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text("name: same\nprompt: '{{ input }}'\n")
    with pytest.raises(pk.TemplateError, match="also used by"):
        pk.load_templates(tmp_path)


def test_empty_continuation_is_an_error(tmp_path):
    family = family_from_dict({"name": "e", "prompt": "{{ input }}", "continuation": "{{ '' }}"}, "e.yaml")
    with pytest.raises(pk.PromptkitError, match="empty continuation"):
        render(expand(family)[0], TASK, TASK.examples[0])


def test_metadata_must_be_a_mapping(tmp_path):
    """Found by tests/fuzz_loaders.py: a scalar `metadata:` raised a bare ValueError."""
    path = tmp_path / "meta.yaml"
    path.write_text("name: meta\nmetadata: zero-shot\nprompt: '{{ input }}'\n")
    with pytest.raises(pk.TemplateError, match=r"meta.yaml:2: `metadata` must be a mapping"):
        load_family(path)


def test_non_string_keys_are_reported_not_crashed_on(tmp_path):
    """Found by the loader fuzzer in CI: YAML keys such as `true:` or `~:` made the message itself fail."""
    path = tmp_path / "keys.yaml"
    path.write_text("name: keys\nprompt: '{{ input }}'\ntrue: 1\n~: 2\nzz: 3\n")
    with pytest.raises(pk.TemplateError, match=r"unknown field\(s\) None, True, zz"):
        load_family(path)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nselection: ['bigbench:x']\n1: a\nfalse: b\n")
    with pytest.raises(pk.SuiteError, match=r"unknown field\(s\) 1, False"):
        pk.load_suite(suite)
