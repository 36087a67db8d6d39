"""BotCriptoFy e-mail plugin: the ``email`` notification channel over SMTP (aiosmtplib).

Hook implementations only; the logic lives in ``_channel``.
"""

from __future__ import annotations

from botcriptofy import Kernel, NotificationChannel, SettingsSchema, hookimpl

from ._settings import SCHEMA, EmailSettings

__all__ = ["EmailSettings", "notification_channels", "plugin_settings_schema"]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def notification_channels(kernel: Kernel) -> list[NotificationChannel]:
    from ._channel import EmailChannel, settings_of

    return [EmailChannel(kernel)] if settings_of(kernel).host else []
