"""The report fits a laptop window and its figures lay out without matplotlib's warnings, on hand-built runs with
long variant ids (no model needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import pytest
from test_verdicts import results

from promptkit.results import plots
from promptkit.results.report import write_report

LONG = "qa_colon.separator=newline,choices=letters,instruction=on,k="  # ids as long as the built-in families make


def long_run(n_variants: int = 7, n_tasks: int = 5):
    tasks = [f"bigbench/logical_deduction_{i}" for i in range(n_tasks)]  # task names cut to 18 characters
    acc = {f"{LONG}{j}": {t: (j * 3 + i) % 10 for i, t in enumerate(tasks)} for j in range(n_variants)}
    return results(acc, held=(tasks[-1],))


def test_the_rules_table_fits_a_1280_pixel_window(tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("headless Chromium is needed for the report test: apt-get install chromium (.ci/run does this)")
    run = long_run()
    path = write_report(run, tmp_path / "run")
    html = path.read_text()
    assert "<table class='rules'>" in html and "mean_prob of 5:<br>" in html
    proc = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                           path.as_uri()], capture_output=True, text=True, timeout=90)
    right = re.search(r'data-rules-right="(\d+)"', proc.stdout)
    assert right, proc.stdout[:500]
    assert int(right.group(1)) <= 1280


@pytest.mark.parametrize("shape", [(2, 2), (2, 6), (6, 2), (40, 3), (3, 30)])
def test_the_plots_lay_out_without_warnings(shape, tmp_path):
    n_variants, n_tasks = shape
    run = long_run(n_variants, n_tasks)
    a = run.analyze(protocol="split", n_boot=20)
    figures = [plots.heatmap(run), plots.heatmap(run, normalized=True), plots.cd_diagram(a), plots.sensitivity(run),
               plots.selection_vs_held_out(run), plots.axis_effects(a)]
    for fig in figures:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig.savefig(tmp_path / "figure.png", dpi=60)
