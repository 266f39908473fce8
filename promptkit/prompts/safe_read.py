"""Reading the files promptkit is handed: regular files only, of bounded size, and YAML with bounded aliases.

A shared template or suite can be hostile in ways that have nothing to do with Jinja: a link to
`/dev/zero` (read until memory runs out), a FIFO (a read that blocks forever), or a few lines of
YAML anchors and aliases that expand to gigabytes once a value is printed ("billion laughs").
Every template, suite and data file is read through here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

MAX_YAML_BYTES = 1_000_000  # a template family or suite file
MAX_DATA_BYTES = 2_000_000_000  # a local data file (JSON, JSONL, CSV)
MAX_ALIAS_WEIGHT = 10_000  # values + characters that YAML aliases may add to one file


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: Path, mode: int, what: str, error: type[Exception]) -> Exception:
    link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return error(f"{path}{link} is {_kind(mode)}, not a regular file; promptkit reads {what}s only from "
                 "regular files (point it at the file itself)")


def _too_big(path: Path, size: int, limit: int, what: str, error: type[Exception]) -> Exception:
    return error(f"{path} is {size:,} bytes, over the {limit:,}-byte limit for a {what}; "
                 f"is it the right file? (split it if it really is a {what})")


def check_regular(path: Path, limit: int, what: str, error: type[Exception]) -> os.stat_result:
    """stat() a path (following links) and refuse anything but a regular file of at most `limit` bytes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode, what, error)
    if st.st_size > limit:
        raise _too_big(path, st.st_size, limit, what, error)
    return st


def open_regular(path: Path, limit: int, what: str, error: type[Exception]):
    """Open a regular file of at most `limit` bytes for binary reading. It is opened without blocking and
    checked on its descriptor, so a FIFO or a device is never read (nor a file swapped in after a check)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        f.close()
        raise _refuse(path, st.st_mode, what, error) if not stat.S_ISREG(st.st_mode) else _too_big(path, st.st_size, limit, what, error)
    return f


def read_regular(path: Path, limit: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_regular)."""
    with open_regular(path, limit, what, error) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_big(path, len(data), limit, what, error)
    return data


class AliasError(yaml.composer.ComposerError):
    """YAML aliases that repeat too much, or refer to a value they are inside of."""


class BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing aliases once they would add more than MAX_ALIAS_WEIGHT values and
    characters to the document (and any alias that refers to a value it is inside of)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._alias_weight = 0
        self._weights: dict[int, int] = {}
        self._open: set[str] = set()  # anchors of collections still being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
            if event.anchor in self._open:
                raise AliasError(None, None, f"the alias *{event.anchor} refers to a value it is "
                                                  "inside of; promptkit files may not be recursive", event.start_mark)
            self._alias_weight += self._weight(self.anchors[event.anchor])
            if self._alias_weight > MAX_ALIAS_WEIGHT:
                raise AliasError(
                    None, None, f"the alias *{event.anchor} takes the values that aliases repeat past "
                    f"{MAX_ALIAS_WEIGHT:,} (values and characters); write the values out instead of "
                    "aliasing them (aliases are limited because a few lines of them can expand to gigabytes)",
                    event.start_mark)
        anchor = getattr(event, "anchor", None) if isinstance(event, yaml.CollectionStartEvent) else None
        if anchor:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)

    def _weight(self, node) -> int:
        """Values + characters under a (fully composed) node, counting shared parts each time they appear."""
        key = id(node)
        if key in self._weights:
            return self._weights[key]
        if isinstance(node, yaml.ScalarNode):
            total = 1 + len(node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(self._weight(child) for child in node.value)
        else:
            total = 1 + sum(self._weight(k) + self._weight(v) for k, v in node.value)
        self._weights[key] = total = min(total, MAX_ALIAS_WEIGHT + 1)
        return total
