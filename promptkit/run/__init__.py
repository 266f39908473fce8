"""The run: options → plan → render → execute → collect (evaluate), budgeted search, synthetic demonstrations,
and adapting the choice to a new task (recommend; importing the package registers it with Results)."""

from ..results import core as _core
from . import recommend as _recommend

_core.TASK_SCORER[:] = [_recommend.recommend_for_task]
