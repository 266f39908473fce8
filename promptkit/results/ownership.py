"""What a run directory holds and what a run may do there.

A run writes into a folder the user names (`--out`), which may already hold things. The rules:

- a run only ever removes or replaces what an earlier promptkit run wrote there, as listed by that run's
  manifest.json; a non-empty folder without one is refused before any scoring, naming what is in it;
- a file name a run would write that exists but is not the earlier run's (or is a link, or not a regular file)
  is refused too: nothing is ever written through a link planted in the folder;
- files are written to a fresh temporary name created exclusively and renamed into place;
- one run at a time writes a folder: a lock file held for the run's duration refuses a second run;
- a run directory is read back only from regular files named by the run's own file names (never a link, a FIFO or
  a device, never a path outside the folder).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ..errors import PromptkitError

try:  # POSIX; elsewhere runs are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

ROWS_FILE = "results.jsonl"
TABLE_FILES = ("config.json", "tasks.json", "variants.json", "versions.json", ROWS_FILE, "ranking.csv", "ranking.json",
               "held_out.json")
ANALYSIS_FILES = ("ranking_stats.csv", "protocol.csv", "sensitivity.csv", "analysis.json", "selection_rules.csv")
TRANSFER_FILES = ("transfer.csv", "transfer.json")  # runs with several models
REPORT_FILE = "report.html"
SYNTHETIC_DIR = "synthetic"
MANIFEST_FILE = "manifest.json"  # written last: the files of a complete run and their sha256
LOCK_FILE = ".promptkit.lock"  # held (flock) while a run writes the folder
TMP_PREFIX = ".promptkit-tmp-"  # a file being written; renamed into place when complete
MAX_MANIFEST_BYTES = 10_000_000
OTHER_WAY = "use a new or empty folder for --out (or Results.save), or move those files away"

_held: dict[str, int] = {}  # folders this process holds the lock of: resolved path -> descriptor


def run_files() -> tuple[str, ...]:
    return TABLE_FILES + ANALYSIS_FILES + TRANSFER_FILES + (REPORT_FILE,)


def planned() -> set[str]:
    """Every name a run may write ("synthetic/" stands for the whole folder)."""
    return set(run_files()) | {SYNTHETIC_DIR + "/"}


def valid_name(name) -> bool:
    """A name a manifest may list: one of the run's own files, or a relative path inside synthetic/."""
    if not isinstance(name, str):
        return False
    if name in run_files() or name == SYNTHETIC_DIR + "/":
        return True
    parts = PurePosixPath(name).parts
    return (len(parts) >= 2 and parts[0] == SYNTHETIC_DIR and not name.startswith("/") and "\\" not in name
            and all(p not in ("", ".", "..") for p in parts))


@contextmanager
def locked(out: Path):
    """Hold the folder's lock while the block runs; a second run on the same folder is refused. Re-entrant
    within one process (evaluate holds it while write_run takes it again)."""
    key = str(out.resolve())
    if fcntl is None or key in _held:
        yield
        return
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise PromptkitError(f"{path}: cannot create the run directory's lock file ({exc.strerror or exc}); "
                             f"if it is a link, remove it; or {OTHER_WAY}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise PromptkitError(f"{out}: another promptkit run (process {holder}) is writing this run directory right now; "
                             "wait for it to finish, or give this run another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held[key] = fd
    try:
        yield
    finally:
        del _held[key]
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def new_run_dir(parent: Path) -> Path:
    """A new, empty folder `parent/run-YYYYMMDD-HHMMSS`, created exclusively: a run started in the same second
    gets `-2`, `-3`, … rather than sharing it."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("run-%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise PromptkitError(f"{parent}: a thousand runs started this second already; give this one --out DIR")


@contextmanager
def removed_if_unused(folder: Path, fresh: bool):
    """A folder made for a run (new_run_dir) is removed again when the run fails before writing anything there."""
    try:
        yield
    except BaseException:
        if fresh:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def earlier_run(out: Path) -> set[str] | None:
    """The names an earlier run in `out` wrote (its manifest.json's), or None when the folder holds no manifest."""
    path = out / MANIFEST_FILE
    if not os.path.lexists(path):
        return None
    try:
        with open_file(path, MAX_MANIFEST_BYTES) as f:
            manifest = json.loads(f.read(MAX_MANIFEST_BYTES + 1))
    except (OSError, ValueError) as exc:
        raise PromptkitError(f"{path}: not a manifest promptkit can read ({exc}); {OTHER_WAY}") from None
    if not isinstance(manifest, dict):
        raise PromptkitError(f"{path}: not a promptkit manifest; {OTHER_WAY}")
    names = manifest.get("owned")
    if not isinstance(names, list):  # written before manifests listed what a run owns
        files = manifest.get("files")
        names = [*files, REPORT_FILE] if isinstance(files, dict) else []
    return {n for n in names if valid_name(n)}


def check_out(out: Path) -> set[str]:
    """Refuse a folder a run must not write into; return the names the earlier run there owns (empty if none)."""
    if not os.path.lexists(out):
        return set()
    if not out.is_dir():
        raise PromptkitError(f"{out}: exists and is not a folder; {OTHER_WAY}")
    entries = sorted(e for e in os.listdir(out) if e != LOCK_FILE)
    if not entries:
        return set()
    owned = earlier_run(out)
    if owned is None:
        shown = ", ".join(entries[:3]) + (f", … ({len(entries)} in all)" if len(entries) > 3 else "")
        raise PromptkitError(f"{out}: holds files no promptkit run wrote ({shown}); a run only replaces an earlier run "
                             f"of its own (one with a manifest.json); {OTHER_WAY}")
    synthetic_owned = any(n.startswith(SYNTHETIC_DIR + "/") for n in owned)
    for name in (*run_files(), MANIFEST_FILE, SYNTHETIC_DIR):
        path = out / name
        if not os.path.lexists(path):
            continue
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise PromptkitError(f"{path}: is a link; promptkit never writes through a link in a run directory; "
                                 f"remove it, or {OTHER_WAY}")
        if name == SYNTHETIC_DIR:
            if not (stat.S_ISDIR(mode) and synthetic_owned):
                raise PromptkitError(f"{path}: is not the earlier run's (its manifest.json does not list it); {OTHER_WAY}")
        elif not stat.S_ISREG(mode) or (name != MANIFEST_FILE and name not in owned):
            raise PromptkitError(f"{path}: is not a file of the earlier run in {out} (its manifest.json does not list "
                                 f"it); {OTHER_WAY}")
    return owned


def clear(out: Path, owned: set[str]) -> None:
    """Remove what the earlier run owned (never anything else), and temporary files a stopped save left."""
    for name in sorted(owned):
        path = out / name
        if name == SYNTHETIC_DIR + "/":
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
        elif os.path.lexists(path) and not os.path.isdir(path):
            path.unlink()
    synthetic = out / SYNTHETIC_DIR
    if synthetic.is_dir() and not synthetic.is_symlink():  # folders the listed files leave empty
        for folder in sorted((p for p in synthetic.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            _rmdir(folder)
        _rmdir(synthetic)
    for entry in os.listdir(out):
        if entry.startswith(TMP_PREFIX) and stat.S_ISREG(os.lstat(out / entry).st_mode):
            (out / entry).unlink()


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def probe(out: Path) -> None:
    """Write and remove a file of a fresh name (never one that could be a planted link)."""
    fd, name = tempfile.mkstemp(dir=out, prefix=TMP_PREFIX + "write-test-")
    os.close(fd)
    os.unlink(name)


def write_atomic(path: Path, write) -> None:
    """`write(tmp_path)`, then rename into `path`: the temporary name is created exclusively (never a link followed)
    and the rename replaces a directory entry (a link at `path` is replaced, its target never touched)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}-")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_file(path: Path, limit: int):
    """A run directory's file for binary reading: a regular file (not a link, FIFO or device) of at most `limit`
    bytes, checked on the open descriptor."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        link = " (a link: run directories are read from regular files only)" if os.path.islink(path) else ""
        raise OSError(exc.errno, f"{exc.strerror}{link}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file")
    if st.st_size > limit:
        os.close(fd)
        raise OSError(f"{path.name} is {st.st_size:,} bytes, over the {limit:,}-byte limit")
    return os.fdopen(fd, "rb")
