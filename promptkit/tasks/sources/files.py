"""Local JSON, JSONL and CSV files, read through `datasets` (offline)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ...errors import SuiteError

FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv"}


def rows(spec, pick: Callable[[int], list[int]]):
    """Return ([(row_index, row), ...], total_rows, origin) for a `files` task."""
    import datasets

    path = Path(spec.options["path"])
    if not path.is_file():
        raise SuiteError(f"{spec.where}: data file {path} does not exist; fix `path:` (relative paths start at the suite file's folder)")
    fmt = spec.options.get("format") or FORMATS.get(path.suffix.lower())
    if fmt not in ("json", "csv"):
        raise SuiteError(f"{spec.where}: cannot tell the format of {path}; name it .json, .jsonl or .csv, or set `format: json|csv`")
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8") from None
    if not path.read_bytes().strip():
        raise SuiteError(f"{spec.where}: data file {path} is empty; it needs at least one example row")
    kwargs = {"field": spec.options["field"]} if spec.options.get("field") else {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file loads in moments; its progress bar is noise
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a parse failure becomes our one message below, not a logged traceback too
    try:
        data = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # datasets raises many types for malformed files
        raise SuiteError(f"{path}: could not read it as {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
    indices = pick(len(data))
    return [(i, data[i]) for i in indices], len(data), str(path)
