"""promptkit: find prompts that generalize across tasks."""

from .errors import ModelError, PromptkitError, SuiteError, TemplateError, TemplateSecurityError
from .pipeline import evaluate
from .ranking import rank
from .render import Request, render
from .results import Results
from .tasks import Example, Suite, Task, load_suite, load_tasks
from .templates import TemplateFamily, load_templates
from .variants import Variant, expand, expand_all

load = Results.load

__all__ = [
    "Example", "ModelError", "PromptkitError", "Request", "Results", "Suite", "SuiteError", "Task",
    "TemplateError", "TemplateFamily", "TemplateSecurityError", "Variant", "evaluate", "expand", "expand_all", "load",
    "load_suite", "load_tasks", "load_templates", "rank", "render",
]
__version__ = "0.1.0"
