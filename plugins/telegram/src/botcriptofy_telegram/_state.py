"""The plugin's running state in ``kernel.stash``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot, Dispatcher

from botcriptofy import Kernel, StashKey

from ._sender import Sender
from ._settings import TelegramSettings

PLUGIN = "telegram"


@dataclass
class TelegramState:
    bot: Bot | None
    dispatcher: Dispatcher
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
