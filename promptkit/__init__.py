"""promptkit: find prompts that generalize across tasks.

The public API, loaded lazily: `import promptkit` imports no torch, transformers or pandas; each name
is imported from its module on first use.
"""

from __future__ import annotations

from importlib import import_module

from .errors import ModelError, PromptkitError, SuiteError, TemplateError, TemplateSecurityError  # noqa: F401

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "evaluate": "promptkit.run.evaluate",
    "RunOptions": "promptkit.run.options",
    "rank": "promptkit.analysis.ranking",
    "Request": "promptkit.prompts.render",
    "render": "promptkit.prompts.render",
    "Results": "promptkit.results.core",
    "Example": "promptkit.tasks.core",
    "Suite": "promptkit.tasks.core",
    "Task": "promptkit.tasks.core",
    "load_suite": "promptkit.tasks.suites",
    "load_tasks": "promptkit.tasks.suites",
    "TemplateFamily": "promptkit.prompts.templates",
    "load_templates": "promptkit.prompts.templates",
    "Variant": "promptkit.prompts.variants",
    "expand": "promptkit.prompts.variants",
    "expand_all": "promptkit.prompts.variants",
    "Backend": "promptkit.backends.base",
    "load_backend": "promptkit.backends.base",
}

__all__ = sorted([*_LAZY, "load", "ModelError", "PromptkitError", "SuiteError", "TemplateError", "TemplateSecurityError"])


def __getattr__(name: str):
    if name == "load":
        import_module("promptkit.run")  # registers the new-task scorer of Results.recommend(task=...)
        return import_module("promptkit.results.core").Results.load
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'promptkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
