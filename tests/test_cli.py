import subprocess
import sys

import pytest

from promptkit.cli import main


def test_run_prints_ranking_and_held_out_summary(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--limit", "3", "--max-variants", "3", "--seed", "1", "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "sel_mean" in text and "(chance)" in text and "even2*" in text
    assert "held-out summary" in text and "regret" in text
    assert text.count("plain.") + text.count("listed.") >= 3
    assert (out / "ranking.csv").read_text().count("\n") == 4  # header + 3 variants


def test_run_times_its_stages_into_config_json_and_one_line(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    import json

    import promptkit as pk
    from promptkit.results.timings import STAGES

    out = tmp_path / "run"
    args = ["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates), "--limit", "3",
            "--max-variants", "3", "--out", str(out), "--quiet", "--bootstrap", "50"]
    assert main(args) == 0
    text = capsys.readouterr().out
    timings = json.loads((out / "config.json").read_text())["timings"]
    assert set(timings) == {*STAGES, "total"}
    assert all(isinstance(v, (int, float)) and v >= 0 for v in timings.values()), timings
    assert sum(timings[s] for s in STAGES) <= timings["total"]
    # model_load is only reading the model's files now (the weights load inside scoring): for the tiny model that can
    # round to 0.000 s
    assert all(timings[s] > 0 for s in ("startup", "task_load", "scoring", "statistics", "report")), timings
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("time: start-up ") and " · scoring " in last and " · report " in last
    assert last.endswith(f"total {timings['total']:.2f} s") or last.endswith(f"total {timings['total']:.1f} s")
    assert pk.load(out).config["timings"] == timings  # written before the manifest: the run directory still checks out


def test_stopwatch_stages_never_add_up_past_the_total():
    import time

    from promptkit.results.timings import Stopwatch, format_timings

    watch = Stopwatch(startup=1.5)
    with watch.stage("scoring"):
        with watch.stage("model_load"):  # a stage inside another counts for itself only
            time.sleep(0.2)
        time.sleep(0.01)
    t = watch.as_dict()
    assert t["startup"] == 1.5 and t["model_load"] >= 0.2 and 0.01 <= t["scoring"] < 0.15 and t["report"] == 0
    assert sum(v for k, v in t.items() if k != "total") <= t["total"]
    assert format_timings(t).startswith("time: start-up 1.50 s · model load ")
    with pytest.raises(ValueError, match="unknown stage"):
        with watch.stage("nope"):
            pass


def test_render_prints_prompt_and_continuations(toy_suite, two_templates, capsys):
    code = main(["render", "plain", "--templates", str(two_templates), "--suite", str(toy_suite), "--task", "capitals", "--example", "c1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Question: Capital number 1?\nAnswer:" in text
    assert "[1] ' Rome'  <- correct" in text and "[0] ' Paris'" in text
    assert "has 4 variants" in text


def test_render_by_variant_id_and_unknown_name(toy_suite, two_templates, capsys):
    from promptkit import expand, load_templates

    vid = [v.id for f in load_templates(two_templates) for v in expand(f) if f.name == "listed"][1]
    assert main(["render", vid, "--templates", str(two_templates), "--suite", str(toy_suite), "--task", "even", "--example", "2"]) == 0
    assert "Answer the question.\nIs 2 even?\nyes, no\nAnswer:" in capsys.readouterr().out
    assert main(["render", "nope", "--templates", str(two_templates), "--suite", str(toy_suite), "--task", "even"]) == 2
    assert "no template family or variant 'nope'" in capsys.readouterr().err


def test_lint_builtin_files_are_clean(capsys):
    from promptkit.paths import builtin_dir

    assert main(["lint", str(builtin_dir("templates")), str(builtin_dir("suites"))]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


def test_lint_reports_problems_with_file_and_line(tmp_path, capsys):
    (tmp_path / "vars.yaml").write_text(
        "name: vars\naxes:\n  used: [a]\n  unused: [b, c]\nprompt: '{{ used }} {{ question }}'\ncontinuation: ' {{ choice }} {{ labl }}'\n")
    (tmp_path / "syntax.yaml").write_text("name: syntax\nprompt: |\n  ok\n  {% for x in %}\n")
    (tmp_path / "yaml.yaml").write_text("name: y\nprompt: 'x\n")
    (tmp_path / "suite.yaml").write_text("selection:\n  - {source: hf}\n")
    code = main(["lint", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 1
    assert f"{tmp_path / 'vars.yaml'}:5: error: 'prompt' uses variable 'question'" in text
    assert f"{tmp_path / 'vars.yaml'}:6: error: 'continuation' uses variable 'labl'" in text
    assert f"{tmp_path / 'vars.yaml'}:4: warning: axis 'unused' is declared but never used" in text  # the axis's own line
    assert f"{tmp_path / 'syntax.yaml'}:4: error: Jinja syntax error" in text
    assert f"{tmp_path / 'yaml.yaml'}:" in text and "YAML syntax error" in text
    assert "an hf task needs `dataset:`" in text
    assert "4 error(s)" in text or "5 error(s)" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--suite", "no_such_suite"], "unknown suite 'no_such_suite'"),
        (["run", "--templates", "/no/such/dir"], "no such template file or directory"),
        (["run", "--model", "/no/such/model", "--limit", "1", "--max-variants", "1"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_message(args, message, capsys, toy_suite):
    if "--suite" not in args:
        args = args + ["--suite", str(toy_suite)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "promptkit", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "run" in proc.stdout and "lint" in proc.stdout


def test_rank_rereads_a_run_and_prints_ties(tiny_model, toy_suite, two_templates, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                 "--out", str(out), "--quiet", "--bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert "chosen prompt (mean_norm" in text and "regret vs hindsight-best" in text
    assert "statistically tied with the top variant" in text
    assert (out / "analysis.json").is_file() and (out / "ranking_stats.csv").is_file()
    assert main(["rank", str(out), "--protocol", "loto", "--aggregate", "mean_rank", "--bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert "protocol loto (3 folds, mean_rank" in text and "mean regret" in text
    assert "Friedman test over 3 tasks" in text and "statistically tied with the top variant" in text
    assert "sensitivity per task" in text and "template families (MaxP, AvgP, CPS)" in text
    assert "scoring modes ranked like variants" in text and "per_char" in text
    variants = (out / "ranking.csv").read_text().splitlines()[1:3]
    a, b = (line.split(",")[1] for line in variants)
    assert main(["rank", str(out), "--compare", a, b, "--bootstrap", "100"]) == 0
    assert "paired comparison" in capsys.readouterr().out
    assert main(["rank", str(out), "--mode", "calibrated"]) == 2
    assert "--calibrate" in capsys.readouterr().err


def test_bad_batch_tokens_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--batch-tokens", "lots"])
    assert exit_.value.code == 2
    assert "expected 'auto' or a number of tokens" in capsys.readouterr().err


def test_render_names_the_position_and_the_id_and_takes_both(toy_suite, two_templates, capsys):
    base = ["render", "plain", "--templates", str(two_templates), "--suite", str(toy_suite), "--task", "capitals"]
    assert main(base) == 0  # the default is the first evaluated example, whatever its id
    first = capsys.readouterr().out
    assert "example #0 (id c" in first
    assert main(base + ["--example", "#1"]) == 0
    second = capsys.readouterr().out
    assert "example #1 (id c" in second and second != first
    assert main(base + ["--example", "c3"]) == 0
    assert "(id c3)" in capsys.readouterr().out
    assert main(base + ["--example", "#99"]) == 2
    assert "evaluates 5 examples, #0 to #4" in capsys.readouterr().err


def test_a_run_that_fails_before_scoring_removes_the_run_directory_it_created(toy_suite, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprompt: '{{ nope }}'\n")
    out = tmp_path / "runs" / "new"
    assert main(["run", "--templates", str(bad), "--suite", str(toy_suite), "--out", str(out), "--quiet"]) == 2
    assert "undefined" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # both folders it made are gone
    kept = tmp_path / "mine"
    kept.mkdir()
    assert main(["run", "--templates", str(bad), "--suite", str(toy_suite), "--out", str(kept), "--quiet"]) == 2
    assert kept.is_dir()  # a folder the user made stays


def test_an_undefined_name_points_at_its_own_line_in_a_block(toy_suite, tmp_path, capsys):
    family = tmp_path / "lines.yaml"
    family.write_text("name: lines\n"                 # 1
                      "prompt: |-\n"                  # 2
                      "  {{ instruction }}\n"         # 3
                      "  Q: {{ input }}\n"            # 4
                      "  Hint: {{ hint }}\n"          # 5
                      "  A:\n"                        # 6
                      "continuation: ' {{ choice }}'\n")
    assert main(["render", "lines", "--templates", str(family), "--suite", str(toy_suite), "--task", "even"]) == 2
    err = capsys.readouterr().err
    assert f"{family}:5:" in err and "'hint' is undefined" in err


RERUN = """
import sys
from promptkit.cli import main
code = main(sys.argv[1:])
print("imported:", "torch" in sys.modules, "transformers" in sys.modules)
sys.exit(code)
"""


def test_a_fully_cached_rerun_loads_neither_the_model_nor_torch(tiny_model, toy_suite, two_templates, tmp_path):
    """The result cache is keyed by the model's files, so a run whose every request is cached needs no weights,
    no tokenizer, and neither torch nor transformers (a second of imports each)."""
    import json

    def run(out):
        args = ["run", "--model", tiny_model, "--suite", str(toy_suite), "--templates", str(two_templates),
                "--limit", "3", "--max-variants", "3", "--out", str(tmp_path / out), "--cache", str(tmp_path / "c.sqlite"),
                "--device", "cpu", "--quiet", "--bootstrap", "50"]
        done = subprocess.run([sys.executable, "-c", RERUN, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1], json.loads((tmp_path / out / "config.json").read_text())

    first, computed = run("first")
    assert first == "imported: True True"
    again, cached = run("again")
    assert again == "imported: False False"
    assert cached["engine"]["cache_hits"] > 0 and cached["engine"]["forward_tokens"] == 0
    # the run records the same model either way
    assert cached["model"] == computed["model"] and cached["model"]["class"] == "LlamaForCausalLM"
    assert (tmp_path / "first" / "ranking.csv").read_text() == (tmp_path / "again" / "ranking.csv").read_text()


def test_the_command_exits_at_once_with_everything_written(tiny_model, toy_suite, two_templates, tmp_path):
    """`promptkit` ends with os._exit after main(): its output still arrives whole, through a pipe, and so do its files."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "promptkit", "run", "--model", tiny_model, "--suite", str(toy_suite),
                           "--templates", str(two_templates), "--limit", "3", "--max-variants", "3", "--out", str(out),
                           "--bootstrap", "50", "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("time: start-up ")
    assert "sel_mean" in done.stdout and (out / "report.html").read_text().rstrip().endswith("</html>")
    bad = subprocess.run([sys.executable, "-m", "promptkit", "run", "--templates", str(tmp_path / "missing.yaml"),
                          "--suite", str(toy_suite)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr
