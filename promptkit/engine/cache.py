"""The result cache: SQLite in WAL mode, keyed by (model fingerprint, exact request), committed as results arrive."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import time
import sqlite3
from pathlib import Path

from ..errors import PromptkitError
from ..paths import cache_dir

def default_cache_path() -> Path:
    """The shared result cache: results.sqlite in the user cache directory (PROMPTKIT_CACHE moves the root)."""
    return cache_dir("results") / "results.sqlite"


SCHEMA = """
CREATE TABLE IF NOT EXISTS loglikelihood (
    fingerprint TEXT NOT NULL,
    request TEXT NOT NULL,          -- sha256 of prompt + NUL + continuation
    logprob REAL NOT NULL,
    n_tokens INTEGER NOT NULL,
    n_chars INTEGER NOT NULL,
    greedy INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, request)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generation (
    fingerprint TEXT NOT NULL,
    request TEXT NOT NULL,          -- sha256 of prompt + NUL + the generation spec (stop sequences, token limit)
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, request)
) WITHOUT ROWID;
"""


APPLICATION_ID = 0x706B7263  # "pkrc": PRAGMA application_id of a promptkit result cache
COLUMNS = {  # the exact tables of a promptkit cache (caches made before the marker are recognised by these)
    "loglikelihood": ["fingerprint", "request", "logprob", "n_tokens", "n_chars", "greedy"],
    "generation": ["fingerprint", "request", "text", "n_tokens"],
}


def check_cache_path(path: Path) -> None:
    """Refuse, before any model loads, a cache path that is not a file or cannot become one (a device, a folder,
    a FIFO; a folder without write access), without advising to delete what is there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise PromptkitError(f"result cache {path}: cannot be used ({exc.strerror}); pick another file with --cache PATH, "
                             "or run with --no-cache") from None
    if mode is not None and not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise PromptkitError(f"result cache {path}: is {what}; give --cache the path of a file (new or a promptkit "
                             "cache), or run with --no-cache")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PromptkitError(f"result cache {path}: {folder} is not writable (SQLite writes a journal next to the "
                             "file); pick another file with --cache PATH, or run with --no-cache")


def _what_to_do(path: Path) -> str:
    return f"delete {path} (it is only a cache), pick another file with --cache PATH, or run with --no-cache"


def _busy(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def check_cache_file(db: sqlite3.Connection, path: Path) -> bool:
    """Before anything is written: the file is empty (a new cache; returns True), or promptkit's (marked, or an
    older cache with exactly promptkit's tables), and its pages are sound. Anything else is refused untouched."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {name: [c[1] for c in db.execute(f"PRAGMA table_info('{name}')")]
                  for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
    except sqlite3.DatabaseError as exc:
        if _busy(exc):  # another process is creating or writing it: the caller waits and looks again
            raise
        raise PromptkitError(f"result cache {path} cannot be used: it cannot be read ({exc}); {_what_to_do(path)}") from None
    if app_id not in (0, APPLICATION_ID) or app_id == 0 and tables and not (
            set(tables) <= set(COLUMNS) and all(tables[t] == COLUMNS[t] for t in tables)):
        held = ", ".join(sorted(tables)) or "none"
        raise PromptkitError(f"{path} is not a promptkit result cache (application_id {app_id}, tables: {held}); "
                             "promptkit will not add its tables to another program's database: pick another file "
                             "with --cache PATH, or run with --no-cache")
    if not tables:
        return True
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        if _busy(exc):
            raise
        problems = [str(exc)]
    if problems != ["ok"]:
        raise PromptkitError(f"result cache {path} is damaged (database disk image is malformed: "
                             f"{'; '.join(problems)}); {_what_to_do(path)}")
    return False


def request_key(prompt: str, continuation: str) -> str:
    """The exact request: two requests with the same text are the same request."""
    return hashlib.sha256(prompt.encode("utf-8") + b"\x00" + continuation.encode("utf-8")).hexdigest()


def generation_key(prompt: str, stop: tuple[str, ...], max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> str:
    """The exact generation request: the prompt, the stop sequences, the token limit (and for sampling,
    the temperature and the seed)."""
    sampled = [float(temperature), int(seed)] if temperature > 0 else []
    spec = json.dumps(["generate", list(stop), max_new_tokens, *sampled])
    return hashlib.sha256(prompt.encode("utf-8") + b"\x00" + spec.encode("utf-8")).hexdigest()


class ResultCache:
    """Scores of (prompt, continuation) pairs for one model fingerprint.

    A different fingerprint (other weights, dtype, tokenizer or backend version) never sees
    these rows. Writes commit per batch, so a killed run loses at most the batch in flight.
    """

    def __init__(self, path: str | Path, fingerprint: str, timeout_s: float = 60.0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.written = 0
        self.write_error: str | None = None
        check_cache_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise PromptkitError(f"result cache {self.path} cannot be used ({exc}); {_what_to_do(self.path)}") from None
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._set_up(timeout_s)
        except (sqlite3.DatabaseError, OSError) as exc:
            self.db.close()
            todo = ("another process held it past the wait; let it finish, pick another file with --cache PATH, or run "
                    "with --no-cache") if _busy(exc) else _what_to_do(self.path)
            raise PromptkitError(f"result cache {self.path} cannot be used ({exc}); {todo}") from None
        except PromptkitError:
            self.db.close()
            raise

    def _set_up(self, timeout_s: float) -> None:
        """WAL mode and the tables. Switching a new file to WAL does not wait on SQLite's busy handler:
        while another process holds a lock on the file (two runs creating one cache at once) it fails
        at once with 'database is locked', so it is retried here until `timeout_s` has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                check_cache_file(self.db, self.path)  # refused before WAL or any table touches the file
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")  # waits on the busy handler, unlike a read that turns into a write
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.05)

    def get_many(self, keys: list[str], table: str = "loglikelihood") -> dict[str, tuple]:
        """Stored rows by key: (logprob, n_tokens, n_chars, greedy) scores, or (text, n_tokens) generations."""
        columns = "logprob, n_tokens, n_chars, greedy" if table == "loglikelihood" else "text, n_tokens"
        found: dict[str, tuple] = {}
        try:
            self._lookup(keys, table, columns, found)
        except sqlite3.DatabaseError as exc:  # damaged after it was opened: go on without it, losing nothing
            self.write_error = self.write_error or (
                f"result cache {self.path} could not be read ({exc}); the run went on without it. "
                f"{_what_to_do(self.path)[0].upper()}{_what_to_do(self.path)[1:]}")
            return {}
        return found

    def _lookup(self, keys: list[str], table: str, columns: str, found: dict) -> None:
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT request, {columns} FROM {table} "
                f"WHERE fingerprint = ? AND request IN ({marks})", [self.fingerprint, *chunk])
            for key, *values in rows:
                found[key] = (*values[:3], bool(values[3])) if table == "loglikelihood" else tuple(values)

    def put_many(self, items: list[tuple], table: str = "loglikelihood") -> None:
        """Insert scores in one transaction (committed before returning).

        A write that fails (disk full, file turned read-only, database locked past the timeout)
        does not stop the run: the scores stay in memory, later writes are skipped, and
        `write_error` says what happened so the run can report it."""
        if self.write_error is not None:
            return
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                if table == "loglikelihood":
                    self.db.executemany(
                        "INSERT OR REPLACE INTO loglikelihood VALUES (?, ?, ?, ?, ?, ?)",
                        [(self.fingerprint, k, lp, n, chars, int(greedy)) for k, lp, n, chars, greedy in items])
                else:
                    self.db.executemany("INSERT OR REPLACE INTO generation VALUES (?, ?, ?, ?)",
                                        [(self.fingerprint, k, text, n) for k, text, n in items])
            self.written += len(items)
        except sqlite3.Error as exc:
            self.write_error = (f"result cache {self.path} stopped accepting writes ({exc}) after {self.written:,} new "
                                "scores; the run went on without caching the rest. Free space or fix the file, then rerun "
                                "to fill the cache, or pick another with --cache PATH")

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM loglikelihood WHERE fingerprint = ?", [self.fingerprint]).fetchone()[0]

    def close(self) -> None:
        self.db.close()


def count_rows(path: str | Path) -> int:
    """Scores stored in a cache file (all models); 0 when it cannot be read."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("loglikelihood", "generation")
                       if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", [t]).fetchone())
    except sqlite3.Error:
        return 0


def resume_hint(cache) -> str:
    """What an interrupted or failed run kept, and how to resume it (`cache` as RunOptions.cache takes it)."""
    if cache is False:
        return "Nothing was kept (--no-cache); a new run starts over."
    path = default_cache_path() if cache is True else Path(cache)
    return (f"Every finished batch is in the result cache {path} ({count_rows(path):,} scores). Run the same "
            "command again to resume: only what is missing will be computed.")
