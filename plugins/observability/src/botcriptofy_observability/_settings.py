"""The ``[observability]`` settings section."""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import Field, field_validator

from botcriptofy import PluginSettings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ObservabilitySettings(PluginSettings):
    """Every key has a default and every key is live: a change applies without restarting the plugin."""

    json_logs: bool = Field(default=False, description="Write every log record as one JSON object per line.")
    log_level: str = Field(
        default="INFO", description="Level of the root logger while the plugin runs: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    slow_request_ms: Annotated[float, Field(ge=0)] = Field(
        default=1000.0, description="Log a warning for every request slower than this many milliseconds; 0 turns it off."
    )
    generations_kept: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="Request series are labelled with the kernel generation; series of older generations are dropped."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        if isinstance(value, str):
            upper = value.strip().upper()
            if upper not in LEVELS:
                raise ValueError(f"must be one of {', '.join(LEVELS)}")
            return upper
        return value

    @property
    def level_number(self) -> int:
        return logging.getLevelName(self.log_level)  # type: ignore[no-any-return]


LIVE_KEYS = frozenset(ObservabilitySettings.model_fields)
