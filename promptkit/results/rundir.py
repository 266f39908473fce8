"""The run directory, written by one writer for the library and the CLI alike: the config, versions, per-example
rows, rankings, the statistics files, the synthetic demonstrations and report.html; and its reader."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..analysis.analyze import AnalysisOptions
from ..errors import PromptkitError
from .timings import Stopwatch

ROWS_FILE = "results.jsonl"
TABLE_FILES = ("config.json", "tasks.json", "variants.json", "versions.json", ROWS_FILE, "ranking.csv", "ranking.json",
               "held_out.json")
ANALYSIS_FILES = ("ranking_stats.csv", "protocol.csv", "sensitivity.csv", "analysis.json", "selection_rules.csv")
TRANSFER_FILES = ("transfer.csv", "transfer.json")  # runs with several models
REPORT_FILE = "report.html"
SYNTHETIC_DIR = "synthetic"
MANIFEST_FILE = "manifest.json"  # written last: the files of a complete run and their sha256


def check_writable(out: Path) -> list[Path]:
    """Fail now, before any scoring, if the run directory cannot be written. Returns the folders this created
    (outermost first), so a run that fails before writing anything can remove them again."""
    created = [p for p in [out, *out.parents] if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".promptkit-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        remove_empty(created)
        raise PromptkitError(f"{out}: cannot write the run directory here ({exc.strerror or exc}); "
                             "pick another with --out DIR") from None
    return created


@contextmanager
def claimed(out: str | Path | None):
    """The run directory for the duration of a run: checked writable on entry; if the run fails or is
    interrupted before anything was written there, the folders it created are removed again."""
    created = check_writable(Path(out)) if out is not None else []
    try:
        yield
    except BaseException:
        remove_empty(created)
        raise


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders that are still empty, innermost first (never one that holds anything)."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def write_run(full, out: str | Path, analysis: AnalysisOptions | dict | None = None, report: bool = True,
              log=None, timings: Stopwatch | None = None) -> Path:
    """Write everything about a finished run to `out`: the tables, the synthetic demonstrations (if any), and,
    except for a budgeted search (whose variants saw different examples), the statistics and report.html.
    A run with noise conditions is ranked by `analysis.rank_by`.

    An earlier run in `out` is replaced as a whole: manifest.json is first marked incomplete, every file of the
    earlier run is removed, the new files are written, and manifest.json (each file's sha256) is written last, so
    a run stopped mid-save leaves a directory that read_tables refuses rather than a mix of two runs.

    `timings` (the run's Stopwatch) also times the tables, the statistics and the report, and its seconds per stage
    go into config.json under `timings` (and into `full.config`)."""
    out = Path(out)
    options = analysis if isinstance(analysis, AnalysisOptions) else AnalysisOptions.from_dict(analysis)
    out.mkdir(parents=True, exist_ok=True)
    if log is not None and any((out / name).exists() for name in (MANIFEST_FILE, "config.json", ROWS_FILE)):
        log(f"warning: {out} holds an earlier run; replacing it")
    _write_json(out / MANIFEST_FILE, {"complete": False})
    clear_run(out)
    watch = timings or Stopwatch()
    _write_body(full, out, options, report, watch)
    if timings is not None:  # the statistics and the report are done: config.json again, with every stage
        full.config["timings"] = timings.as_dict()
        _write_json(out / "config.json", full.config)
    write_manifest(out)
    return out


def _write_body(full, out: Path, options: AnalysisOptions, report: bool, watch: Stopwatch) -> None:
    with watch.stage("collect"):
        write_tables(full, out)
        if full.config.get("synthetic"):
            write_synthetic(full.config["synthetic"], out)
    if "search" in full.config:
        return
    with watch.stage("statistics"):
        ranked = full.view(options.rank_by, options.across, options.model)
        result = ranked.analyze(**options.analyze_kwargs())
        write_analysis(result, out)
        if full.models:
            write_transfer(full.transfer_analysis(options.aggregate, options.mode, options.cross_model, options.bootstrap,
                                                  options.seed), out)
    if report:
        from .report import write_report

        with watch.stage("report"):
            write_report(ranked, out, result, full)


def run_files() -> tuple[str, ...]:
    return TABLE_FILES + ANALYSIS_FILES + TRANSFER_FILES + (REPORT_FILE,)


def clear_run(out: Path) -> None:
    """Remove every file an earlier run left in `out` (never anything else), so none outlives the new run."""
    for name in run_files():
        (out / name).unlink(missing_ok=True)
        (out / (name + ".tmp")).unlink(missing_ok=True)
    if (out / SYNTHETIC_DIR).is_dir():
        shutil.rmtree(out / SYNTHETIC_DIR)


def _run_paths(out: Path) -> list[str]:
    """The files the manifest covers: all but report.html, which `promptkit report` may regenerate in place."""
    names = [n for n in run_files() if n != REPORT_FILE and (out / n).is_file()]
    if (out / SYNTHETIC_DIR).is_dir():
        names += sorted(str(p.relative_to(out)) for p in (out / SYNTHETIC_DIR).rglob("*") if p.is_file())
    return names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out: Path) -> None:
    """manifest.json, written last: every file of the run and its sha256."""
    _write_json(out / MANIFEST_FILE, {"complete": True, "files": {n: _sha256(out / n) for n in _run_paths(out)}})


def check_manifest(run_dir: Path) -> None:
    """Refuse a run directory whose files are not the ones its manifest lists (a save that was stopped, or files
    of two runs mixed). A directory without a manifest (written by an earlier version) is accepted."""
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        return
    fix = "rerun `promptkit run` with this --out (cached scores make that quick) or use another run directory"
    try:
        manifest = json.loads(path.read_text())
        files = manifest.get("files") if manifest.get("complete") is True else None
    except (OSError, ValueError, AttributeError):
        files = None
    if not isinstance(files, dict):
        raise PromptkitError(f"{run_dir}: this run directory was not completely written (the run stopped while "
                             f"saving it); {fix}")
    for name in sorted(set(files) | set(_run_paths(run_dir))):
        target = run_dir / name
        if name not in files or not target.is_file() or _sha256(target) != files[name]:
            raise PromptkitError(f"{run_dir}: {name} does not match the run's manifest.json (it was changed, is "
                                 f"missing, or belongs to another run); {fix}")


def write_tables(results, out: Path) -> None:
    """config, tasks, variants, versions, per-example rows, ranking (CSV and JSON) and the held-out summary."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", results.config)
    _write_json(out / "tasks.json", results.tasks)
    _write_json(out / "variants.json", results.variants)
    _write_json(out / "versions.json", package_versions())
    tmp = out / (ROWS_FILE + ".tmp")
    results.rows.to_json(tmp, orient="records", lines=True)
    tmp.replace(out / ROWS_FILE)
    table = results.ranking()
    table.to_csv(out / "ranking.csv", index=False)
    _write_json(out / "ranking.json", json.loads(table.to_json(orient="records")))
    _write_json(out / "held_out.json", results.held_out_summary())


def read_tables(run_dir: str | Path) -> tuple[pd.DataFrame, dict, dict, dict]:
    """(rows, tasks, variants, config) of a run directory, this version's or an earlier one's."""
    run_dir = Path(run_dir)
    check_manifest(run_dir)
    try:
        rows = pd.read_json(run_dir / ROWS_FILE, orient="records", lines=True, dtype={"example": str})
        tasks = json.loads((run_dir / "tasks.json").read_text())
        variants = json.loads((run_dir / "variants.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise PromptkitError(f"{run_dir}: not a readable promptkit run directory ({exc})") from None
    return rows, tasks, variants, config


def write_analysis(analysis, out: Path) -> None:
    """The statistics layer's tables: ranking with CIs, the protocol's folds, sensitivity, and a JSON summary."""
    out.mkdir(parents=True, exist_ok=True)
    analysis.ranking.to_csv(out / "ranking_stats.csv", index=False)
    analysis.folds.to_csv(out / "protocol.csv", index=False)
    analysis.sensitivity.to_csv(out / "sensitivity.csv", index=False)
    analysis.rules.to_csv(out / "selection_rules.csv", index=False)
    f = analysis.friedman
    data = {"protocol": analysis.protocol, "summary": analysis.summary, "tied_with_best": analysis.tied_with_best(),
            "friedman": None if f is None else {"statistic": f.statistic, "p_value": f.p_value,
                                                 "critical_difference": f.critical_difference, "n_tasks": f.n_tasks}}
    _write_json(out / "analysis.json", data)


def write_transfer(transfer, out: Path) -> None:
    """A run with several models: the A→B matrix (transfer.csv) and τ, axis agreement and the cross-model
    prompt (transfer.json)."""
    transfer.matrix.to_csv(out / "transfer.csv", index=False)
    _write_json(out / "transfer.json", {
        "models": transfer.models, "aggregate": transfer.aggregate, "cross_model": transfer.how,
        "cross_model_prompt": transfer.chosen, "kendall_tau": transfer.tau.to_dict("records"),
        "axes": transfer.axes.to_dict("records"), "cross_model_cost": transfer.cross.to_dict("records")})


def write_synthetic(info: dict, out: Path) -> Path:
    """Every synthetic demonstration the run wrote (kept or not, and why) as a `datasets.Dataset` in
    `out/synthetic` (load it with datasets.load_from_disk), plus the counts per filter in counts.json."""
    import datasets

    rows = [{"task": c["task"], "id": c["id"], "answer": c["answer"], "input": c["input"], "choices": c["choices"] or [],
             "target": json.dumps(c["target"]), "kept": not c["dropped_by"], "dropped_by": c["dropped_by"]}
            for c in info["candidates"]]
    folder = out / "synthetic"
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    finally:
        if bars:
            datasets.enable_progress_bars()
    (folder / "counts.json").write_text(json.dumps(info["counts"], indent=2))
    return folder


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable, allow_nan=True))
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def package_versions() -> dict:
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("promptkit", "torch", "transformers", "datasets", "jinja2", "pandas", "gguf", "accelerate", "evaluate"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
