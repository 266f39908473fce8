"""BIG-bench JSON tasks, found in one of four places, tried in this order:

(a) a local copy named by `PROMPTKIT_BIGBENCH` (or the older `PROMPTKIT_BIGBENCH_SDIST`): a BIG-bench
    git checkout, its `bigbench/benchmark_tasks` folder, or the bigbench-1.0.0.tar.gz sdist;
(b) task files cached by an earlier run (`cache_dir("bigbench", "tasks")`);
(c) the Hugging Face Hub's parquet copy through `datasets` (bigbench_hub), converted to the task.json
    shape and cached;
(d) the package index's bigbench-1.0.0 sdist, downloaded once (the index no longer lists it, but may again).

Every task keeps where its examples came from (`Task.origin`); a cached task's origin is recorded in a
`.origin` file next to it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...errors import SuiteError
from ...paths import cache_dir
from ..core import DEMO_POOL, Task
from ...prompts.safe_read import MAX_DATA_BYTES, read_regular
from . import bigbench_hub
from .bigbench_json import task_from_json

SDIST = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TIMEOUT_S = 60  # per network read; the whole download is bounded by the file's size
WAYS = {"a": "local copy", "b": "cache", "c": "Hub", "d": "package index"}


@dataclass(frozen=True)
class Found:
    """A task file on disk and a short sentence saying where its examples came from."""

    path: Path
    origin: str


Answer = tuple[dict[str, Found], dict[str, str]]  # what a way found, and why it found nothing for the rest
_WRITTEN: set[tuple[Path, str]] = set()  # (task file, origin) cached by this process: found again, it keeps that origin


def task_file(name: str) -> Path:
    return cache_dir("bigbench", "tasks") / (name.replace("/", "__") + ".json")


def _origin_file(name: str) -> Path:
    return task_file(name).with_suffix(".origin")


def _index_file() -> Path:
    return cache_dir("bigbench") / "index.json"


def _say(message: str) -> None:
    """A progress line on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def _write(path: Path, data: bytes) -> None:
    """Replace `path` whole (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _cache(name: str, data: bytes, origin: str) -> Found:
    """Store a task file and its origin in the task cache."""
    _write(task_file(name), data)
    _write(_origin_file(name), origin.encode("utf-8"))
    _WRITTEN.add((task_file(name), origin))
    return Found(task_file(name), origin)


def _recorded_origin(name: str) -> str:
    try:
        return _origin_file(name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


# ---------------------------------------------------------------------------- the resolver


def ensure_cached(names: list[str]) -> dict[str, Found]:
    """Find every named task, trying the four ways in order (a task the first way has is not looked for
    further). Raises one SuiteError, before any model loads, naming the missing tasks and each way's reason."""
    wanted = sorted(set(names))
    found: dict[str, Found] = {}
    tried: list[tuple[str, dict[str, str]]] = []
    ways: list[tuple[str, Callable[[list[str]], Answer]]] = [
        ("a", _from_local), ("b", _from_cache), ("c", _from_hub), ("d", _from_index)]
    for letter, way in ways:
        missing = [n for n in wanted if n not in found]
        if not missing:
            break
        if letter == "c":
            check_known(missing)
        got, reasons = way(missing)
        found.update(got)
        tried.append((letter, reasons))
    missing = [n for n in wanted if n not in found]
    if missing:
        raise SuiteError(_not_found(missing, tried))
    return found


def _not_found(missing: list[str], tried: list[tuple[str, dict[str, str]]]) -> str:
    """The message when no way has some tasks: which, why for each way, and what to do."""
    lines = [f"BIG-bench task(s) not available: {', '.join(missing)}. Tried, in order:"]
    for letter, reasons in tried:
        lines.append(f"  ({letter}) {WAYS[letter]}: {_grouped({n: reasons.get(n, '?') for n in missing})}")
    lines.append(
        "To fix, do one of: set PROMPTKIT_BIGBENCH to a BIG-bench checkout (git clone "
        "https://github.com/google/BIG-bench) or to a copy of bigbench-1.0.0.tar.gz; let `datasets` reach the "
        "Hugging Face Hub once (unset HF_HUB_OFFLINE; the tasks are then cached for offline runs), or set "
        "PROMPTKIT_BIGBENCH_HUB to a local copy of the Hub dataset; or use a suite that needs no BIG-bench."
    )
    return "\n".join(lines)


def _grouped(reasons: dict[str, str]) -> str:
    """One reason once, or 'task, task: reason; task: reason' when they differ."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        by_reason.setdefault(reason, []).append(name)
    if len(by_reason) == 1:
        return next(iter(by_reason))
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())


def _known_tasks() -> list[str]:
    """Task names listed by the last full pass over an sdist (empty if none was made)."""
    try:
        return json.loads(_index_file().read_text())
    except (OSError, ValueError):
        return []


def check_known(names: list[str]) -> None:
    """A name that the listing of BIG-bench does not have is a typo: say so before asking the Hub or index."""
    known = _known_tasks()
    unknown = [n for n in names if known and n not in known]
    if unknown:
        _raise_unknown(unknown[0], known)


def _raise_unknown(name: str, known: list[str]) -> None:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise SuiteError(f"unknown BIG-bench task '{name}': not in bigbench 1.0.0.{hint} (tasks with subtasks are named 'task/subtask')")


# ---------------------------------------------------------------------------- (a) a local copy


def _local_setting() -> tuple[str, str]:
    """(variable, value) of the local copy the user names; PROMPTKIT_BIGBENCH wins over the older name."""
    for var in ("PROMPTKIT_BIGBENCH", "PROMPTKIT_BIGBENCH_SDIST"):
        if os.environ.get(var):
            return var, os.environ[var]
    return "PROMPTKIT_BIGBENCH", ""


def _tasks_folder(path: Path) -> Path | None:
    """The benchmark_tasks folder of a checkout (or of its `bigbench` folder), or the folder itself if it is one."""
    for folder in (path / "bigbench" / "benchmark_tasks", path / "benchmark_tasks", path):
        if folder.is_dir() and folder.name == "benchmark_tasks":
            return folder
    return None


def _from_local(names: list[str]) -> Answer:
    """(a) The checkout, task folder or sdist tarball that PROMPTKIT_BIGBENCH names."""
    var, value = _local_setting()
    if not value:
        return {}, dict.fromkeys(names, "PROMPTKIT_BIGBENCH is not set")
    path = Path(value).expanduser().resolve()
    folder = _tasks_folder(path) if path.is_dir() else None
    if folder is not None:
        return _from_folder(folder, names)
    if path.is_file():
        return _from_sdist(path, names, f"bigbench sdist {path}")
    reason = (f"{var}={value} does not exist" if not path.exists() else
              f"{var}={value} is neither a BIG-bench checkout (no bigbench/benchmark_tasks inside) nor {SDIST}")
    _say(f"promptkit: {reason}; looking for the BIG-bench tasks elsewhere")
    return {}, dict.fromkeys(names, reason)


def _from_folder(folder: Path, names: list[str]) -> Answer:
    """Task files read in place from a checkout's benchmark_tasks folder."""
    checkout = folder.parent.parent if folder.parent.name == "bigbench" else folder
    found, reasons = {}, {}
    for name in names:
        file = folder / name / "task.json"
        if file.is_file():
            found[name] = Found(file, f"bigbench checkout {checkout}")
        else:
            reasons[name] = f"{folder} has no {name}/task.json"
    return found, reasons


def _from_sdist(sdist: Path, names: list[str], origin: str) -> Answer:
    """Task files from an sdist tarball, extracted into the cache in one pass; a task cached from this
    same tarball before is not extracted again."""
    found = {n: Found(task_file(n), origin) for n in names
             if task_file(n).is_file() and _recorded_origin(n) == origin}
    rest = [n for n in names if n not in found]
    if not rest:
        return found, {}
    _say(f"promptkit: extracting {len(rest)} BIG-bench task file(s) from {sdist.name} into "
         f"{cache_dir('bigbench', 'tasks')} (one pass over the whole archive, about 15 s)")
    try:
        listed = _extract(sdist, rest, origin)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return found, dict.fromkeys(rest, f"{sdist} could not be read as a .tar.gz ({exc})")
    _write(_index_file(), json.dumps(sorted(listed)).encode())
    found.update({n: Found(task_file(n), origin) for n in rest if n in listed})
    return found, {n: f"{sdist} has no task {n}" for n in rest if n not in listed}


def _extract(sdist: Path, names: list[str], origin: str) -> list[str]:
    """Copy the named tasks' task.json members into the cache; return every task name the archive has."""
    listed: list[str] = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith("/task.json") or "/benchmark_tasks/" not in member.name:
                continue
            name = member.name.split("/benchmark_tasks/", 1)[1].rsplit("/task.json", 1)[0]
            listed.append(name)
            if name in names and member.isfile() and member.size <= MAX_DATA_BYTES:
                _cache(name, tar.extractfile(member).read(), origin)
    return listed


# ---------------------------------------------------------------------------- (b) the cache


def _from_cache(names: list[str]) -> Answer:
    """(b) Task files an earlier run cached, with the origin it recorded (a file this process fetched keeps
    the origin of that fetch: suites resolve every task, then load each one)."""
    found, reasons = {}, {}
    for name in names:
        file = task_file(name)
        if file.is_file():
            recorded = _recorded_origin(name)
            if (file, recorded) not in _WRITTEN:
                recorded = f"bigbench cache {file} (from {recorded or 'an earlier run; source not recorded'})"
            found[name] = Found(file, recorded)
        else:
            reasons[name] = f"not in {file.parent}"
    return found, reasons


# ---------------------------------------------------------------------------- (c) the Hub


def _from_hub(names: list[str]) -> Answer:
    """(c) Each task from the Hub's parquet copy (bigbench_hub), cached as a task.json. When the Hub does
    not answer, it is not asked for the rest."""
    hub = bigbench_hub.hub_id()
    blocked = bigbench_hub.blocked(hub)
    found, reasons = {}, {}
    for name in names:
        try:
            bigbench_hub.check_name(name)
            if blocked:
                raise bigbench_hub.Unavailable(blocked)
            data, origin = bigbench_hub.fetch(hub, name)
            found[name] = _cache(name, json.dumps(data).encode("utf-8"), origin)
        except bigbench_hub.HubDown as exc:
            reasons.update(dict.fromkeys([n for n in names if n not in found], f"{hub}: {exc}"))
            break
        except bigbench_hub.Unavailable as exc:
            reasons[name] = f"{hub}: {exc}"
    return found, reasons


# ---------------------------------------------------------------------------- (d) the package index


def _from_index(names: list[str]) -> Answer:
    """(d) The sdist from the package index (downloaded once into the cache), then extracted like (a)."""
    try:
        sdist = sdist_path()
    except SuiteError as exc:
        return {}, dict.fromkeys(names, str(exc))
    return _from_sdist(sdist, names, f"bigbench sdist {sdist} (from the package index)")


def sdist_path() -> Path:
    """The package index's BIG-bench sdist in the cache, downloaded the first time it is needed."""
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
    tmp = path.with_suffix(".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{index}/bigbench/", headers=headers), timeout=TIMEOUT_S) as r:
            files = json.load(r)["files"]
        url = next((f["url"] for f in files if f["filename"] == SDIST), None)
        if url is None:
            raise SuiteError(f"the index lists no file {SDIST} for the project bigbench")
        url = urllib.parse.urljoin(f"{index}/bigbench/", url)  # PEP 691 allows relative links
        _say(f"promptkit: downloading {SDIST} (~360 MB, once) from {index} into {path.parent}")
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
            f"PROMPTKIT_BIGBENCH=/path/to/{SDIST}, or put it in {path.parent}"
        ) from None
    if digest.hexdigest() != SDIST_SHA256:
        tmp.unlink(missing_ok=True)
        raise SuiteError(f"downloaded {SDIST} has sha256 {digest.hexdigest()}, expected {SDIST_SHA256}; try again")
    tmp.replace(path)


# ---------------------------------------------------------------------------- loading


def load(spec, limit: int | None, seed: int, pool: int = DEMO_POOL) -> Task:
    """Load a BIG-bench task (by `task:` name through the resolver, or a local `path:` task.json); the
    Task's `origin` says where its examples came from."""
    if spec.options.get("path"):
        path = Path(spec.options["path"])
        if not path.exists() and not path.is_symlink():
            raise SuiteError(f"{spec.where}: BIG-bench task file {path} does not exist")
        origin = str(path)
    else:
        found = ensure_cached([spec.options["task"]])[spec.options["task"]]
        path, origin = found.path, found.origin
    try:
        # a regular file of bounded size only: a FIFO or a link to /dev/zero is refused, never read
        data = json.loads(read_regular(path, MAX_DATA_BYTES, "BIG-bench task file", SuiteError).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: not a valid BIG-bench task.json ({exc})") from None
    task = task_from_json(data, spec.name, str(path), limit, seed, pool, spec.options.get("kind"))
    task.origin = origin
    return task
