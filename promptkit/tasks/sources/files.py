"""Local JSON, JSONL and CSV files, read through `datasets` (offline)."""

from __future__ import annotations

import codecs
import logging
import tempfile
from pathlib import Path
from typing import Callable

from ...errors import SuiteError
from ...prompts.safe_read import MAX_DATA_BYTES, check_regular, open_regular

FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv"}


def _check_text(path: Path, where: str) -> None:
    """The file is UTF-8 and not blank, read a megabyte at a time (a data file may be large)."""
    decoder, blank, offset = codecs.getincrementaldecoder("utf-8")(), True, 0
    with open_regular(path, MAX_DATA_BYTES, "data file", SuiteError) as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise SuiteError(f"{path}: not valid UTF-8 (byte {offset + exc.start}); re-save the file as UTF-8") from None
            blank = blank and not chunk.strip()
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not valid UTF-8 (it ends inside a character); re-save the file as UTF-8") from None
    if blank:
        raise SuiteError(f"{where}: data file {path} is empty; it needs at least one example row")


def rows(spec, pick: Callable[[int], list[int]]):
    """Return ([(row_index, row), ...], total_rows, origin) for a `files` task."""
    import datasets

    path = Path(spec.options["path"])
    if not path.exists() and not path.is_symlink():
        raise SuiteError(f"{spec.where}: data file {path} does not exist; fix `path:` (relative paths start at the suite file's folder)")
    check_regular(path, MAX_DATA_BYTES, "data file", SuiteError)  # not a FIFO, a device, or past MAX_DATA_BYTES
    fmt = spec.options.get("format") or FORMATS.get(path.suffix.lower())
    if fmt not in ("json", "csv"):
        raise SuiteError(f"{spec.where}: cannot tell the format of {path}; name it .json, .jsonl or .csv, or set `format: json|csv`")
    _check_text(path, spec.where)
    kwargs = {"field": spec.options["field"]} if spec.options.get("field") else {}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a local file loads in moments; its progress bar is noise
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a parse failure becomes our one message below, not a logged traceback too
    # `datasets` keys its cache by path and mtime, so a file rewritten within the same mtime would be served
    # stale: build each local file afresh in a private, throwaway cache and keep the table in memory
    scratch = tempfile.TemporaryDirectory(prefix="promptkit-data-")
    try:
        data = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=scratch.name,
                                     keep_in_memory=True, **kwargs)
    except Exception as exc:  # datasets raises many types for malformed files
        raise SuiteError(f"{path}: could not read it as {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        scratch.cleanup()
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
    indices = pick(len(data))
    return [(i, data[i]) for i in indices], len(data), str(path)
