"""Data sets named by a Hugging Face `datasets` hub id (needs the Hub; the path users take online)."""

from __future__ import annotations

from typing import Callable

from ...errors import SuiteError


def rows(spec, pick: Callable[[int], list[int]]):
    """Return ([(row_index, row), ...], total_rows, origin) for an `hf` task."""
    import datasets

    o = spec.options
    split = o.get("split", "test")
    origin = f"{o['dataset']}" + (f"/{o['config']}" if o.get("config") else "") + f"[{split}]"
    try:
        data = datasets.load_dataset(o["dataset"], o.get("config"), split=split, revision=o.get("revision"))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SuiteError(
            f"{spec.where}: could not load dataset {origin}: {type(exc).__name__}: {first}. "
            "Check the hub id, `config:` and `split:`, and that the Hub is reachable (or use a local file with `source: files`)."
        ) from None
    indices = pick(len(data))
    return [(i, data[i]) for i in indices], len(data), origin
