"""User-facing errors: every message names the file, task, field or row and says what to do."""


class PromptkitError(Exception):
    """A problem with the user's input (template, suite, model, data), explained in words."""


class TemplateError(PromptkitError):
    """A template family file is malformed, or one of its templates fails to render."""


class TemplateSecurityError(TemplateError):
    """A template tried to leave the sandbox, or to loop or expand without bound."""


class SuiteError(PromptkitError):
    """A suite file, a task definition or a data row is malformed."""


class ModelError(PromptkitError):
    """A model cannot be found or loaded."""
