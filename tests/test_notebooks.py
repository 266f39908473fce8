"""The notebooks in examples/ run, top to bottom, in a real Jupyter kernel (python3, this interpreter), on tiny models
and small suites: each notebook's first cell reads PROMPTKIT_MODEL, PROMPTKIT_MODELS, PROMPTKIT_SUITE,
PROMPTKIT_LIMIT and PROMPTKIT_MAX_VARIANTS, which the test sets. They are committed without outputs, and a failing
cell stops the notebook with its own message."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from test_docs import build_chat_model

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds for one cell


def run(nb, folder: Path):
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def chat_model(tiny_model, tmp_path_factory) -> str:
    return str(build_chat_model(tiny_model, tmp_path_factory.mktemp("tiny-chat")))


@pytest.fixture()
def tiny_env(tiny_model, chat_model, toy_suite, tmp_path, monkeypatch):
    """The kernel inherits these: tiny models, the toy suite, a few examples and variants, a private cache."""
    monkeypatch.setenv("PROMPTKIT_MODEL", tiny_model)
    monkeypatch.setenv("PROMPTKIT_MODELS", f"{tiny_model},{chat_model}")
    monkeypatch.setenv("PROMPTKIT_SUITE", str(toy_suite))
    monkeypatch.setenv("PROMPTKIT_LIMIT", "3")
    monkeypatch.setenv("PROMPTKIT_MAX_VARIANTS", "4")
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_there_are_the_three_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "choose_a_prompt.ipynb", "compare_models.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} (Jupyter: Edit > Clear All Outputs) before committing"
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "os.environ.get(\"PROMPTKIT_" in first.source, f"{path.name}: the first code cell reads its settings from the environment"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tiny_env):
    nb = run(nbformat.read(path, as_version=4), tiny_env)
    out = outputs(nb)
    assert not [o for o in out if o.get("output_type") == "error"]
    assert all(cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code")  # every cell ran
    if path.name == "quickstart.ipynb":
        assert any("<table class='ranking'>" in o.get("data", {}).get("text/html", "") for o in out)
        assert (tiny_env / "runs" / "quickstart" / "report.html").is_file()
        assert sum("image/png" in o.get("data", {}) for o in out) >= 2  # the notebook's figures
    if path.name == "choose_a_prompt.ipynb":
        text = "".join(o.get("text", "") for o in out)
        assert "use " in text and "expected accuracy" in text
        assert (tiny_env / "runs" / "my_task" / "manifest.json").is_file()
    if path.name == "compare_models.ipynb":
        assert sum("image/png" in o.get("data", {}) for o in out) >= 1  # the transfer heatmap
        assert any("the prompt that holds across models" in o.get("text", "") for o in out)


def test_the_first_failure_stops_the_notebook_with_its_message(tiny_env):
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    code[1].source = 'raise RuntimeError("the suite file is missing")\n' + code[1].source
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="the suite file is missing"):
        run(nb, tiny_env)
    assert code[0].get("execution_count") and not any(cell.get("outputs") for cell in code[2:])
