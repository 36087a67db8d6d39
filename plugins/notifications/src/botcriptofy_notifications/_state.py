"""The plugin's running state in ``kernel.stash``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botcriptofy import Kernel, NotificationChannel, StashKey

from ._settings import NotificationsSettings
from ._templates import Templates

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

PLUGIN = "notifications"


@dataclass
class NotificationsState:
    templates: Templates
    dispatcher: Dispatcher | None = None
    channels: dict[int, dict[str, NotificationChannel]] = field(default_factory=dict)
    background: set[Any] = field(default_factory=set)


STATE: StashKey[NotificationsState] = StashKey("notifications.state")


def settings_of(kernel: Kernel) -> NotificationsSettings:
    settings = kernel.settings_for(PLUGIN)
    assert isinstance(settings, NotificationsSettings)
    return settings


def state_of(kernel: Kernel) -> NotificationsState:
    return kernel.stash[STATE]


async def channels_of(kernel: Kernel) -> dict[str, NotificationChannel]:
    """The channels of ``kernel``'s generation by name (computed once per generation)."""
    state = state_of(kernel)
    found = state.channels.get(kernel.generation)
    if found is None:
        found = {}
        for contributed in (await kernel.broadcast("notification_channels", kernel=kernel)).values():
            for channel in contributed or ():
                found.setdefault(channel.name, channel)
        for old in [g for g in state.channels if g < kernel.generation - 2]:
            del state.channels[old]
        state.channels[kernel.generation] = found
    return found
