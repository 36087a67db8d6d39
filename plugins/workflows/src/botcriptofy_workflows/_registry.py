"""What the enabled plugins contribute: workflows, activities, schedules and approval actions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botcriptofy import Activity, ApprovalAction, Schedule, Workflow

if TYPE_CHECKING:
    from botcriptofy import Kernel

log = logging.getLogger("botcriptofy.workflows")


class NotRegistered(LookupError):
    """No enabled plugin registers the name; the task is retried until one does."""


@dataclass
class Registry:
    """One generation's contributions, keyed by their global names; each with its owning plugin."""

    generation: int = 0
    workflows: dict[str, tuple[str, Workflow]] = field(default_factory=dict)
    activities: dict[str, tuple[str, Activity]] = field(default_factory=dict)
    schedules: dict[str, tuple[str, Schedule]] = field(default_factory=dict)
    actions: dict[str, tuple[str, ApprovalAction]] = field(default_factory=dict)
    plugins: dict[str, Any] = field(default_factory=dict)

    def activity(self, name: str) -> tuple[str, Activity]:
        try:
            return self.activities[name]
        except KeyError:
            raise NotRegistered(f"no enabled plugin registers the activity '{name}'") from None

    def schedule(self, schedule_id: str) -> tuple[str, Schedule]:
        try:
            return self.schedules[schedule_id]
        except KeyError:
            raise NotRegistered(f"no enabled plugin registers the schedule '{schedule_id}'") from None

    def action(self, name: str) -> tuple[str, ApprovalAction]:
        try:
            return self.actions[name]
        except KeyError:
            raise NotRegistered(f"no enabled plugin registers the approval action '{name}'") from None

    def owners(self) -> set[str]:
        """Plugins that need a worker: those contributing anything."""
        found = {owner for owner, _ in self.workflows.values()}
        found |= {owner for owner, _ in self.activities.values()}
        found |= {owner for owner, _ in self.schedules.values()}
        found |= {owner for owner, _ in self.actions.values()}
        return found


def _claim(table: dict[str, tuple[str, Any]], name: str, plugin: str, item: Any, hook: str) -> None:
    known = table.get(name)
    if known is not None and known[0] != plugin:
        log.error(
            "plugin '%s', hook '%s': '%s' is already registered by plugin '%s'; ignoring the second one",
            plugin,
            hook,
            name,
            known[0],
            extra={"plugin": plugin, "hook": hook},
        )
        return
    table[name] = (plugin, item)


async def collect(kernel: Kernel) -> Registry:
    """Ask every enabled plugin of ``kernel`` what it contributes (one failing plugin does not stop the others)."""
    registry = Registry(generation=kernel.generation)
    for plugin, items in (await kernel.broadcast("register_workflows", kernel=kernel)).items():
        for item in items or ():
            if isinstance(item, Workflow):
                _claim(registry.workflows, item.name, plugin, item, "register_workflows")
            elif isinstance(item, Activity):
                _claim(registry.activities, item.name, plugin, item, "register_workflows")
            else:
                log.error("plugin '%s', hook 'register_workflows': %r is neither a Workflow nor an Activity", plugin, item)
    for plugin, items in (await kernel.broadcast("register_schedules", kernel=kernel)).items():
        for item in items or ():
            if isinstance(item, Schedule):
                _claim(registry.schedules, f"{plugin}.{item.id}", plugin, item, "register_schedules")
            else:
                log.error("plugin '%s', hook 'register_schedules': %r is not a Schedule", plugin, item)
    for plugin, items in (await kernel.broadcast("register_approval_actions", kernel=kernel)).items():
        for item in items or ():
            if isinstance(item, ApprovalAction):
                _claim(registry.actions, item.name, plugin, item, "register_approval_actions")
            else:
                log.error("plugin '%s', hook 'register_approval_actions': %r is not an ApprovalAction", plugin, item)
    registry.plugins = {name: kernel.plugins[name].plugin for name in registry.owners() if name in kernel.plugins}
    return registry
