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
    multiprocess_snapshot_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0,
        description="Under `botcriptofy serve`, how often each worker writes its in-memory metrics for the host-wide scrape.",
    )
    metrics_reuse_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        default=1.0,
        description=(
            "A worker answers /metrics scrapes arriving within this many seconds of its last render with that render "
            "(concurrent scrapes share one): at most one costly render per interval, whoever scrapes; 0 renders every scrape."
        ),
    )
    api_docs: bool = Field(default=True, description="Serve the interactive API reference (Swagger UI over /openapi.json) at /docs.")
    hook_timing: bool = Field(
        default=True, description="Time every plugin's hook implementations (botcriptofy_hook_duration_seconds); from the next generation."
    )
    tracing_endpoint: str = Field(
        default="",
        description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces; empty turns tracing off.",
    )
    tracing_headers: dict[str, str] = Field(default_factory=dict, description="Headers sent with every OTLP export (authentication).")
    tracing_sampling_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, description="Share of new traces sampled; a request with a sampled or unsampled parent follows its parent."
    )
    tracing_slow_hook_ms: Annotated[float, Field(ge=0)] = Field(
        default=10.0, description="A hook implementation slower than this gets a span of its own; 0 traces every hook call."
    )
    tracing_export_delay_ms: Annotated[float, Field(gt=0, le=60000)] = Field(
        default=1000.0, description="Longest time a finished span waits before it is exported."
    )

    @field_validator("tracing_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value

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
