"""The ``[default.telegram]`` settings section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from botcriptofy import PluginSettings, SettingsSchema

DEPARTMENTS = ("ceo", "finance", "marketing", "sales", "security", "support", "audit", "documents", "configuration", "subscriptions")


class DepartmentChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: int = Field(description="The group's numeric chat id (negative for groups).")
    topic_id: int | None = Field(None, description="A forum topic (message_thread_id) inside the group.")


class TelegramSettings(PluginSettings):
    bot_token: str = Field("", description="SECRET. The bot's token from @BotFather. Empty: the bot stays off.")
    mode: Literal["polling", "webhook", "off"] = Field("polling", description="How updates arrive.")
    api_base: str = Field("", description="Base URL of a Bot API server (empty: Telegram's). Tests point it at a local server.")
    webhook_secret: str = Field("", description="SECRET. Expected X-Telegram-Bot-Api-Secret-Token in webhook mode (required there).")
    webhook_url: str = Field("", description="Public URL of POST /v1/telegram/webhook given to setWebhook at start-up (empty: not set).")
    bot_username: str = Field("", description="The bot's @username, for t.me deep links in link codes.")
    departments: dict[str, DepartmentChat] = Field(default_factory=dict, description="Department to its group chat (and topic).")
    link_code_ttl: int = Field(300, ge=1, le=3600, description="Seconds a link code stays valid.")
    per_second: float = Field(30.0, gt=0, description="Messages per second for the whole bot (Telegram: about 30).")
    private_interval: float = Field(1.0, ge=0, description="Seconds between two messages to one private chat (Telegram: about 1).")
    group_per_minute: float = Field(20.0, gt=0, description="Messages per minute to one group (Telegram: 20).")
    max_retries: int = Field(8, ge=0, description="429 answers honoured (sleeping retry_after) before a send fails.")
    poll_timeout: int = Field(25, ge=0, le=50, description="Long-poll seconds of getUpdates.")
    lease_ttl: float = Field(30.0, gt=0, description="Seconds of the poller lease; one worker polls at a time.")
    refusal_window: float = Field(
        300.0, gt=0, description="Seconds during which a refused person gets no second reply and no second security event."
    )
    menu_interval: float = Field(2.0, gt=0, description="Seconds between checks that the command menus still match the commands.")

    @field_validator("departments")
    @classmethod
    def _known(cls, value: dict[str, DepartmentChat]) -> dict[str, DepartmentChat]:
        for name in value:
            if name not in DEPARTMENTS:
                raise ValueError(f"unknown department '{name}'; use one of {', '.join(DEPARTMENTS)}")
        return value


LIVE = frozenset({"departments", "link_code_ttl", "refusal_window", "max_retries", "bot_username"})
SCHEMA = SettingsSchema(model=TelegramSettings, live=LIVE)
