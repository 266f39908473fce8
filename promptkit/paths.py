"""Where promptkit keeps converted models and extracted tasks (the user cache directory), and where
its built-in template and suite files are."""

import os
from pathlib import Path

import platformdirs

from .errors import PromptkitError


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the promptkit cache; `PROMPTKIT_CACHE` overrides the root."""
    root = os.environ.get("PROMPTKIT_CACHE") or platformdirs.user_cache_dir("promptkit")
    path = Path(root, *parts)
    where = "PROMPTKIT_CACHE" if os.environ.get("PROMPTKIT_CACHE") else "the user cache directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PromptkitError(f"{path}: cannot create promptkit's cache folder here ({exc.strerror or exc}; {where} is "
                             f"{root}); set PROMPTKIT_CACHE to a folder you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PromptkitError(f"{path}: promptkit's cache folder is not writable ({where} is {root}); set "
                             "PROMPTKIT_CACHE to a folder you can write")
    return path


_PACKAGE = Path(__file__).parent
# The template library lives in `templates/` at the repository root, where users read and edit it.
# pyproject.toml ships that folder inside the wheel as the package `promptkit._templates`, so an
# installed promptkit finds it next to this file; a checkout (PYTHONPATH or `pip install -e`) has
# no promptkit/_templates and reads the repository's folder.
_INSTALLED_TEMPLATES = _PACKAGE / "_templates"
_CHECKOUT_TEMPLATES = _PACKAGE.parent / "templates"


def builtin_dir(kind: str) -> Path:
    """The folder of built-in files of one kind: 'templates' or 'suites'."""
    if kind == "templates":
        return _INSTALLED_TEMPLATES if _INSTALLED_TEMPLATES.is_dir() else _CHECKOUT_TEMPLATES
    return _PACKAGE / "data" / kind
