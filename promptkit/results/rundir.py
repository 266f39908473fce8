"""The run directory, written by one writer for the library and the CLI alike: the config, versions, per-example
rows, rankings, the statistics files, the synthetic demonstrations and report.html; and its reader."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..analysis.analyze import AnalysisOptions
from ..errors import PromptkitError
from ..prompts.safe_read import MAX_DATA_BYTES
from .ownership import (ANALYSIS_FILES, MANIFEST_FILE, REPORT_FILE, ROWS_FILE, SYNTHETIC_DIR, TABLE_FILES,
                        TRANSFER_FILES, check_out, clear, locked,
                        open_file, planned, probe, run_files, valid_name, write_atomic)
from .timings import Stopwatch

MAX_TABLE_BYTES = 500_000_000  # one JSON table of a run directory (tasks, variants, config)


def check_writable(out: Path) -> list[Path]:
    """Fail now, before any scoring, if the run directory cannot be written. Returns the folders this created
    (outermost first), so a run that fails before writing anything can remove them again."""
    created = [p for p in [out, *out.parents] if not os.path.lexists(p)][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe(out)
    except OSError as exc:
        remove_empty(created)
        raise PromptkitError(f"{out}: cannot write the run directory here ({exc.strerror or exc}); "
                             "pick another with --out DIR") from None
    return created


@contextmanager
def claimed(out: str | Path | None):
    """The run directory for the duration of a run: checked before any scoring (writable; empty, new, or holding an
    earlier run of promptkit's own) and locked against a second run; if the run fails or is interrupted before
    anything was written there, the folders it created are removed again."""
    if out is None:
        yield
        return
    out = Path(out)
    check_out(out)
    created = check_writable(out)
    try:
        with locked(out):
            check_out(out)  # again, now that no other run can be changing it
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
    owned = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        owned = check_out(out)
        if owned and log is not None:
            log(f"{out} holds an earlier run; replacing it (only the files its manifest.json lists)")
        _write_json(out / MANIFEST_FILE, {"complete": False, "owned": sorted(owned | planned())})
        clear(out, owned)
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


def _run_paths(out: Path) -> list[str]:
    """The files the manifest covers: all but report.html, which `promptkit report` may regenerate in place."""
    names = [n for n in run_files() if n != REPORT_FILE and (out / n).is_file()]
    if (out / SYNTHETIC_DIR).is_dir() and not (out / SYNTHETIC_DIR).is_symlink():
        names += sorted(str((Path(root) / f).relative_to(out)) for root, _, files in os.walk(out / SYNTHETIC_DIR)
                        for f in files if (Path(root) / f).is_file())  # os.walk never descends into a linked folder
    return names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_file(path, 1 << 62) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out: Path) -> None:
    """manifest.json, written last: every file of the run and its sha256, and every name the run owns (what the
    next run into this folder may replace)."""
    files = {n: _sha256(out / n) for n in _run_paths(out)}
    owned = [n for n in run_files() if (out / n).is_file()] + ([SYNTHETIC_DIR + "/"] if (out / SYNTHETIC_DIR).is_dir() else [])
    _write_json(out / MANIFEST_FILE, {"complete": True, "files": files, "owned": sorted(owned)})


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
    if not all(valid_name(name) for name in files):
        bad = next(name for name in files if not valid_name(name))
        raise PromptkitError(f"{run_dir}: manifest.json lists {bad!r}, which is not a file of a run directory; {fix}")
    for name in sorted(set(files) | set(_run_paths(run_dir))):
        target = run_dir / name
        try:
            same = name in files and _sha256(target) == files[name]
        except OSError:
            same = False
        if not same:
            raise PromptkitError(f"{run_dir}: {name} does not match the run's manifest.json (it was changed, is "
                                 f"missing, or belongs to another run); {fix}")


def write_tables(results, out: Path) -> None:
    """config, tasks, variants, versions, per-example rows, ranking (CSV and JSON) and the held-out summary."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", results.config)
    _write_json(out / "tasks.json", results.tasks)
    _write_json(out / "variants.json", results.variants)
    _write_json(out / "versions.json", package_versions())
    write_atomic(out / ROWS_FILE, lambda tmp: results.rows.to_json(tmp, orient="records", lines=True))
    table = results.ranking()
    write_atomic(out / "ranking.csv", lambda tmp: table.to_csv(tmp, index=False))
    _write_json(out / "ranking.json", json.loads(table.to_json(orient="records")))
    _write_json(out / "held_out.json", results.held_out_summary())


def read_tables(run_dir: str | Path) -> tuple[pd.DataFrame, dict, dict, dict]:
    """(rows, tasks, variants, config) of a run directory, this version's or an earlier one's."""
    run_dir = Path(run_dir)
    check_manifest(run_dir)
    try:
        rows = pd.read_json(io.BytesIO(_read(run_dir / ROWS_FILE, MAX_DATA_BYTES)), orient="records", lines=True,
                            dtype={"example": str})
        tasks, variants, config = (json.loads(_read(run_dir / name, MAX_TABLE_BYTES))
                                   for name in ("tasks.json", "variants.json", "config.json"))
    except (OSError, ValueError) as exc:
        raise PromptkitError(f"{run_dir}: not a readable promptkit run directory ({exc})") from None
    return rows, tasks, variants, config


def _read(path: Path, limit: int) -> bytes:
    with open_file(path, limit) as f:
        return f.read(limit + 1)


def write_analysis(analysis, out: Path) -> None:
    """The statistics layer's tables: ranking with CIs, the protocol's folds, sensitivity, and a JSON summary."""
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("ranking_stats.csv", analysis.ranking), ("protocol.csv", analysis.folds),
                        ("sensitivity.csv", analysis.sensitivity), ("selection_rules.csv", analysis.rules)):
        write_atomic(out / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    f = analysis.friedman
    data = {"protocol": analysis.protocol, "summary": analysis.summary, "tied_with_best": analysis.tied_with_best(),
            "friedman": None if f is None else {"statistic": f.statistic, "p_value": f.p_value,
                                                 "critical_difference": f.critical_difference, "n_tasks": f.n_tasks}}
    _write_json(out / "analysis.json", data)


def write_transfer(transfer, out: Path) -> None:
    """A run with several models: the A→B matrix (transfer.csv) and τ, axis agreement and the cross-model
    prompt (transfer.json)."""
    write_atomic(out / "transfer.csv", lambda tmp: transfer.matrix.to_csv(tmp, index=False))
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
    text = json.dumps(data, indent=2, default=_jsonable, allow_nan=True)
    write_atomic(path, lambda tmp: tmp.write_text(text))


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
