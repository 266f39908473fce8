"""Where promptkit keeps converted models and extracted tasks (the user cache directory)."""

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the promptkit cache; `PROMPTKIT_CACHE` overrides the root."""
    root = os.environ.get("PROMPTKIT_CACHE") or platformdirs.user_cache_dir("promptkit")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def builtin_dir(kind: str) -> Path:
    """The folder of built-in files of one kind: 'templates' or 'suites'."""
    return Path(__file__).parent / "data" / kind
