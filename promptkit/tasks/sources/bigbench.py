"""BIG-bench JSON tasks, read from the `bigbench==1.0.0` source distribution on PyPI and cached."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import sys
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

from ...errors import SuiteError
from ...paths import cache_dir
from ..core import DEMO_POOL, Example, Task
from ..sampling import demo_indices, pick_indices
from ...prompts.safe_read import MAX_DATA_BYTES, read_regular

SDIST = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TIMEOUT_S = 60  # per network read; the whole download is bounded by the file's size


def _task_file(name: str) -> Path:
    return cache_dir("bigbench", "tasks") / (name.replace("/", "__") + ".json")


def _index_file() -> Path:
    return cache_dir("bigbench") / "index.json"


def sdist_path() -> Path:
    """The local BIG-bench sdist: `PROMPTKIT_BIGBENCH_SDIST`, or the cached copy, downloaded once."""
    override = os.environ.get("PROMPTKIT_BIGBENCH_SDIST")
    if override:
        if not Path(override).is_file():
            raise SuiteError(f"PROMPTKIT_BIGBENCH_SDIST={override} does not exist; point it at {SDIST}")
        return Path(override)
    path = cache_dir("bigbench") / SDIST
    if not path.is_file():
        download_sdist(path)
    return path


def download_sdist(path: Path) -> None:
    """Fetch the sdist from the package index (PEP 691 JSON API), checking its sha256; a progress bar on
    stderr counts the bytes (against Content-Length when the server sends it).

    `pip download` cannot be used: it builds the package's metadata, and bigbench 1.0.0
    declares a direct-URL dependency that modern pip refuses.
    """
    from tqdm.auto import tqdm

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
    _say(f"promptkit: downloading {SDIST} (~360 MB, once) from {index} into {path.parent}")
    tmp = path.with_suffix(".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{index}/bigbench/", headers=headers), timeout=TIMEOUT_S) as r:
            files = json.load(r)["files"]
        url = next((f["url"] for f in files if f["filename"] == SDIST), None)
        if url is None:
            raise SuiteError(f"the index lists no file {SDIST} for the project bigbench")
        url = urllib.parse.urljoin(f"{index}/bigbench/", url)  # PEP 691 allows relative links
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, tmp.open("wb") as out:
            size = r.headers.get("Content-Length")
            # a bar on a terminal; elsewhere (logs, CI) a line every 10 s and at the end
            interactive = sys.stderr.isatty()
            with tqdm(total=int(size) if size and size.isdigit() else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=SDIST, file=sys.stderr, disable=False, dynamic_ncols=interactive,
                      mininterval=0.5 if interactive else 10) as bar:
                while block := r.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        reason = str(exc) or type(exc).__name__
        raise SuiteError(
            f"could not download {SDIST} from {index}: {reason}. Download it by hand and set "
            f"PROMPTKIT_BIGBENCH_SDIST=/path/to/{SDIST}, or put it in {path.parent}"
        ) from None
    if digest.hexdigest() != SDIST_SHA256:
        tmp.unlink(missing_ok=True)
        raise SuiteError(f"downloaded {SDIST} has sha256 {digest.hexdigest()}, expected {SDIST_SHA256}; try again")
    tmp.replace(path)


def _say(message: str) -> None:
    """A progress line on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def ensure_cached(names: list[str]) -> None:
    """Extract the named tasks' task.json files from the sdist into the cache (one pass)."""
    missing = sorted({n for n in names if not _task_file(n).is_file()})
    if not missing:
        return
    index = _known_tasks()
    unknown = [n for n in missing if index and n not in index]
    if unknown:
        _raise_unknown(unknown[0], index)
    found: list[str] = []
    sdist = sdist_path()
    _say(f"promptkit: extracting {len(missing)} BIG-bench task file(s) from {sdist.name} into {cache_dir('bigbench', 'tasks')} "
         "(one pass over the whole archive, about 15 s)")
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith("/task.json") or "/benchmark_tasks/" not in member.name:
                continue
            name = member.name.split("/benchmark_tasks/", 1)[1].rsplit("/task.json", 1)[0]
            found.append(name)
            if name in missing:
                data = tar.extractfile(member).read()
                tmp = _task_file(name).with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(_task_file(name))
    if not index:
        _index_file().write_text(json.dumps(sorted(found)))
    for name in missing:
        if not _task_file(name).is_file():
            _raise_unknown(name, found)


def _known_tasks() -> list[str]:
    try:
        return json.loads(_index_file().read_text())
    except (OSError, ValueError):
        return []


def _raise_unknown(name: str, known: list[str]) -> None:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SuiteError(f"unknown BIG-bench task '{name}': not in bigbench 1.0.0.{hint} (tasks with subtasks are named 'task/subtask')")


def load(spec, limit: int | None, seed: int, pool: int = DEMO_POOL) -> Task:
    """Load a BIG-bench task (by `task:` name from the cache, or a local `path:` task.json)."""
    if spec.options.get("path"):
        path = Path(spec.options["path"])
        if not path.exists() and not path.is_symlink():
            raise SuiteError(f"{spec.where}: BIG-bench task file {path} does not exist")
    else:
        ensure_cached([spec.options["task"]])
        path = _task_file(spec.options["task"])
    try:
        # a regular file of bounded size only: a FIFO or a link to /dev/zero is refused, never read
        data = json.loads(read_regular(path, MAX_DATA_BYTES, "BIG-bench task file", SuiteError).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: not a valid BIG-bench task.json ({exc})") from None
    return task_from_json(data, spec.name, str(path), limit, seed, pool, spec.options.get("kind"))


def task_from_json(data: dict, name: str, origin: str, limit: int | None = None, seed: int = 0,
                   pool: int = DEMO_POOL, kind: str | None = None) -> Task:
    """Normalize a BIG-bench task.json: `target_scores` → choices + target index; `target` → references.
    Examples that are not evaluated form the demonstration pool (up to `pool` of them). An example with
    both is multiple choice unless `kind` is "generation"."""
    raw = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{origin}: BIG-bench task '{name}' has no examples; it needs a non-empty `examples` list")
    evaluated = pick_indices(len(raw), limit, seed, name)
    examples = [_example(raw[i], i, name, origin, kind) for i in evaluated]
    demos = [_example(raw[i], i, name, origin, kind) for i in demo_indices(len(raw), evaluated, seed, name, pool)]
    instruction = str(data.get("task_prefix", "") or "").strip()
    return Task(name, examples, instruction, source="bigbench", demos=demos)


def _example(row: dict, i: int, name: str, origin: str, kind: str | None = None) -> Example:
    where = f"{origin}: task '{name}', example {i}"
    if not isinstance(row, dict) or not isinstance(row.get("input"), str):
        raise SuiteError(f"{where}: every example needs a string `input`")
    if kind == "generation" and "target" not in row:
        raise SuiteError(f"{where}: the suite asks for `kind: generation`, but this example has no `target` (reference answer)")
    if kind == "multiple_choice" and "target_scores" not in row:
        raise SuiteError(f"{where}: the suite asks for `kind: multiple_choice`, but this example has no `target_scores`")
    if "target_scores" in row and kind != "generation":
        scores = row["target_scores"]
        if not isinstance(scores, dict) or len(scores) < 2:
            raise SuiteError(f"{where}: `target_scores` must map at least 2 choices to scores")
        choices = [str(c) for c in scores]
        for choice, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SuiteError(f"{where}: `target_scores` gives choice {choice!r} the score {v!r}; every score must "
                                 "be a number (1 for a correct choice, 0 for a wrong one); fix the task file")
        values = [float(v) for v in scores.values()]
        best = max(values)
        if best <= 0:
            raise SuiteError(f"{where}: no choice in `target_scores` has a positive score, so none is correct")
        correct = [j for j, v in enumerate(values) if v == best]
        meta = {"correct": correct} if len(correct) > 1 else {}
        return Example(str(i), row["input"], choices, correct[0], meta)
    if "target" in row:
        target = row["target"]
        refs = [target] if isinstance(target, str) else [str(t) for t in target] if isinstance(target, list) else []
        if not refs or not all(r.strip() for r in refs):
            raise SuiteError(f"{where}: generation example has no reference answer (`target` is {target!r}); "
                             "give it a non-empty string or list of strings")
        return Example(str(i), row["input"], None, refs, {})
    raise SuiteError(f"{where}: needs `target_scores` (multiple choice) or `target` (generation)")
