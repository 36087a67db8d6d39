"""Sending within Telegram's limits: about 30 messages a second per bot, 1 a second per private chat,
20 a minute per group. Each chat's messages go out one at a time and in order; a 429 answer's
``retry_after`` is slept and the message tried again; text past 4,096 characters is split.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

log = logging.getLogger("botcriptofy.telegram")

LIMIT = 4096
T = TypeVar("T")


def split_html(text: str, limit: int = LIMIT) -> list[str]:
    """Split at line ends where possible; never inside an HTML entity such as ``&amp;``."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
            entity = text.rfind("&", cut - 10, cut)
            if entity != -1 and ";" not in text[entity:cut]:
                cut = entity
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    parts.append(text)
    return parts


class Pacer:
    """Spaces calls at least ``interval`` seconds apart, in arrival order."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = asyncio.Lock()
        self.last = float("-inf")

    async def wait(self) -> None:
        async with self.lock:
            loop = asyncio.get_running_loop()
            delay = self.last + self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.last = loop.time()


class Sender:
    def __init__(self, *, per_second: float, private_interval: float, group_per_minute: float, max_retries: int) -> None:
        self.global_pacer = Pacer(1.0 / per_second)
        self.private_interval = private_interval
        self.group_interval = 60.0 / group_per_minute
        self.max_retries = max_retries
        self.chats: dict[int, tuple[asyncio.Lock, Pacer]] = {}

    def _chat(self, chat_id: int) -> tuple[asyncio.Lock, Pacer]:
        found = self.chats.get(chat_id)
        if found is None:
            found = (asyncio.Lock(), Pacer(self.group_interval if chat_id < 0 else self.private_interval))
            self.chats[chat_id] = found
        return found

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        from aiogram.exceptions import TelegramRetryAfter  # here: only a running bot makes calls

        """Run one Bot API call under the global pace, honouring 429's retry_after."""
        for attempt in range(self.max_retries + 1):
            await self.global_pacer.wait()
            try:
                return await make()
            except TelegramRetryAfter as error:
                if attempt >= self.max_retries:
                    raise
                log.warning("Telegram asked to wait %s s (429)", error.retry_after)
                await asyncio.sleep(error.retry_after)
        raise AssertionError("unreachable")

    async def to_chat(self, chat_id: int, make: Callable[[str], Awaitable[Any]], text: str) -> list[Any]:
        """Send ``text`` (split as needed) to one chat, in order with that chat's other messages."""
        lock, pacer = self._chat(chat_id)
        sent = []
        async with lock:
            for part in split_html(text):
                await pacer.wait()
                sent.append(await self.call(lambda part=part: make(part)))  # type: ignore[misc]
        return sent
