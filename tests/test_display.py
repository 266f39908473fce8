"""Results people look at: plots, the notebook display, the HTML report in a real kernel and a real browser."""

import re
import shutil
import subprocess

import pytest
from matplotlib.figure import Figure

import promptkit as pk
from promptkit.results.report import write_report


@pytest.fixture(scope="module")
def run(tiny_backend, tmp_path_factory):
    from conftest import write_bigbench_task

    base = tmp_path_factory.mktemp("display")
    for name, n in (("alpha", 6), ("beta", 5), ("gamma", 4), ("delta", 4)):
        write_bigbench_task(base / name / "task.json", name, n)
    (base / "suite.yaml").write_text(
        "name: four\nselection:\n  - {name: alpha, source: bigbench, path: alpha/task.json}\n"
        "  - {name: beta, source: bigbench, path: beta/task.json}\n  - {name: gamma, source: bigbench, path: gamma/task.json}\n"
        "held_out:\n  - {name: delta, source: bigbench, path: delta/task.json}\n")
    res = pk.evaluate(None, base / "suite.yaml", tiny_backend, max_variants=6, seed=0, progress=False, out=base / "run")
    return res, base / "run"


def test_plots_return_figures(run):
    res, _ = run
    for kind in ("heatmap", "cd", "sensitivity", "selection_vs_held_out", "axes"):
        fig = res.plot(kind)
        assert isinstance(fig, Figure) and fig.axes, kind
    with pytest.raises(pk.PromptkitError, match="unknown plot"):
        res.plot("pie")


def test_results_helpers_and_html_repr(run):
    res, run_dir = run
    assert res.best(2)["variant"].tolist() == res.ranking()["variant"].tolist()[:2]
    html = res._repr_html_()
    assert "<table class='ranking'>" in html and "statistically tied" in html and "Best prompt" in html
    assert html.count("<tr class=") == 6
    assert "Results(6 variants × 4 tasks" in repr(res)
    again = pk.load(run_dir)
    assert again.variants[res.ranking()["variant"].iloc[0]]["sample"]["prompt"]


def test_report_is_self_contained(run):
    res, run_dir = run
    path = write_report(res, run_dir)
    text = path.read_text()
    assert path.name == "report.html"
    assert "http://" not in text and "https://" not in text  # no CDN, no network
    assert text.count("src='data:image/png;base64,") == 5
    for section in ("Ranking", "Plots", "The top variants, as the model sees them", "Sensitivity", "Per task", "Run configuration"):
        assert f">{section}</h2>" in text


def _chromium(args, timeout=90):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is needed for the report test: apt-get install chromium (.ci/run does this)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_report_in_headless_chromium(run, tmp_path):
    res, run_dir = run
    path = write_report(res, run_dir)
    proc = _chromium([f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()])
    dom = proc.stdout
    assert "CONSOLE" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(r'data-images="5"', dom) and re.search(r'data-images-decoded="5"', dom), dom[:500]
    table = dom.split("<table class=\"ranking\">", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr class=", table)
    assert len(rows) == 6
    assert res.ranking()["variant"].iloc[0] in table or res.summary_analysis().ranking["variant"].iloc[0] in table
    # the console check does catch a broken page
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notDefinedAnywhere()</script></body></html>")
    proc = _chromium([f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", broken.as_uri()])
    assert "CONSOLE" in proc.stderr and "notDefinedAnywhere" in proc.stderr


def test_footer_of_a_run_scored_by_a_server_names_the_backend(tmp_path):
    """A server backend's description has no dtype: the footer printed after every CLI run must not fail on it
    (it raised KeyError: 'dtype' after the run directory was written)."""
    from types import SimpleNamespace

    from promptkit.results.text import footer

    engine = {"unique": 12, "cache_hits": 0, "generations": 0}
    config = {"n_variants": 1, "n_requests": 6, "forward_tokens": 0, "wall_seconds": 3.2, "engine": engine,
              "model": {"model": "gemma-3-270m", "backend": "openai-compatible", "endpoint": "http://127.0.0.1:1/v1"}}
    line = footer(SimpleNamespace(config=config, tasks={"t": {}}), tmp_path)
    assert "openai-compatible, 3 s. Run directory: " in line
    config["model"] = {"dtype": "float32"}
    assert "float32, 3 s." in footer(SimpleNamespace(config=config, tasks={"t": {}}), tmp_path)


def test_demo_sources_table_prints_prompts_that_lack_a_comparison():
    """A sampled set of variants can leave a prompt without one demonstration source: its CI is NaN in the
    table, which the terminal view tried to unpack (TypeError: cannot unpack non-iterable float object)."""
    from types import SimpleNamespace

    import pandas as pd

    from promptkit.results.text import format_demo_sources

    table = pd.DataFrame([
        {"prompt": "a", "selection_none": 0.5, "selection_synthetic": 0.6, "selection_synthetic_vs_none": 0.1,
         "selection_synthetic_vs_none_ci": (0.0, 0.2)},
        {"prompt": "b", "selection_none": 0.4},
    ])
    text = format_demo_sources(SimpleNamespace(demo_sources=lambda n_boot: table))
    assert "synthetic−none +0.100 [0.000, +0.200]" in text and "\n    b " in text and "nan" not in text
