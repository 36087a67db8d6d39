"""The plugin's running state in ``kernel.stash``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botcriptofy import Kernel, StashKey

from ._sender import Sender
from ._settings import TelegramSettings

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher

PLUGIN = "telegram"
POLLER = "poller"  # the name of the lease of the one worker that polls Telegram


@dataclass
class TelegramState:
    bot: Bot | None  # None while the bot is off: aiogram is then never imported (about 150 MB per worker)
    dispatcher: Dispatcher | None
    sender: Sender
    worker: str
    tasks: set[Any] = field(default_factory=set)
    refused: dict[int, float] = field(default_factory=dict)
    menu: Any = None
    polling: bool = False


STATE: StashKey[TelegramState] = StashKey("telegram.state")


def settings_of(kernel: Kernel) -> TelegramSettings:
    settings = kernel.settings_for(PLUGIN)
    assert isinstance(settings, TelegramSettings)
    return settings


def state_of(kernel: Kernel) -> TelegramState:
    return kernel.stash[STATE]
