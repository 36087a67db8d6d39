"""BotCriptoFy workflows: schedules, durable approvals, timers and retries for every plugin, on Temporal.

The entry point ``workflows`` is :data:`plugin`, a :class:`WorkflowsPlugin`. Other plugins never
import this package: they use the kernel's ``register_schedules`` and ``register_workflows`` hooks,
``kernel.workflows()`` and ``kernel.request_approval()``.
"""

from ._approvals import ApprovalOutcome
from ._plugin import WorkflowsPlugin
from ._report import DELIVER_ACTIVITY, REPORT_WORKFLOW
from ._settings import WorkflowsSettings

__version__ = "0.1.3"

plugin = WorkflowsPlugin()

__all__ = ["DELIVER_ACTIVITY", "REPORT_WORKFLOW", "ApprovalOutcome", "WorkflowsPlugin", "WorkflowsSettings", "__version__", "plugin"]
