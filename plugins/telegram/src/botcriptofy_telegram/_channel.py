"""The ``telegram`` notification channel: department chats for department addresses, linked private chats for people."""

from __future__ import annotations

import html

from botcriptofy import Delivery, DeliveryRefused, Kernel

from . import _store as store
from ._settings import TelegramSettings
from ._state import settings_of, state_of


class TelegramChannel:
    name = "telegram"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def _settings(self) -> TelegramSettings:
        return settings_of(self.kernel.current())

    def route(self, address: str) -> str | None:
        kind, _, rest = address.partition(":")
        if kind == "department":
            return "address" if rest.partition(":")[0] in self._settings().departments else "person"
        return "person" if kind == "user" else None

    async def send(self, delivery: Delivery) -> None:
        kernel = self.kernel.current()
        if state_of(kernel).bot is None:
            raise DeliveryRefused("the Telegram bot is off (no telegram.bot_token)")
        from ._bot import keyboard, send

        topic = None
        if delivery.recipient is None:
            group = self._settings().departments.get(delivery.address.split(":")[1])
            if group is None:
                raise DeliveryRefused(f"no chat is configured for {delivery.address}")
            chat_id, topic = group.chat_id, group.topic_id
        else:
            found = await store.chat_of(kernel, delivery.recipient.user_id)
            if found is None:
                raise DeliveryRefused("the person has not linked a Telegram account")
            chat_id = found
        text = f"<b>{html.escape(delivery.subject)}</b>\n{delivery.html}" if delivery.subject else delivery.html
        await send(kernel, chat_id, text, topic_id=topic, markup=keyboard(delivery.notification.actions))
