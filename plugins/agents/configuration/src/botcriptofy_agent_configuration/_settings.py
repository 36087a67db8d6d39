"""The ``[agent_configuration]`` section: the common agent keys plus the configuration thresholds."""

from __future__ import annotations

from pydantic import Field

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("notify", "open_incident", "rollback_config")


class ConfigurationSettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("rollback_config",), description="Actions that wait for approval.")
    cpu_threshold: float = Field(80.0, ge=1, le=100, description="CPU percent above which a sustained sample counts.")
    cpu_critical: float = Field(95.0, ge=1, le=100, description="Sustained CPU percent at or above which an incident opens.")
    memory_threshold: float = Field(90.0, ge=1, le=100, description="Memory percent above which a sustained sample counts.")
    memory_critical: float = Field(97.0, ge=1, le=100, description="Sustained memory percent at or above which an incident opens.")
    sustained_samples: int = Field(4, ge=1, description="Consecutive samples above the threshold that make it sustained.")
    readiness_failures: int = Field(3, ge=1, description="Consecutive failed readiness samples that alert.")
    rollback_window: float = Field(
        600.0, ge=0, description="Seconds after a configuration change in which failing readiness proposes rolling it back."
    )
    sample_interval: float = Field(
        15.0, gt=0, description="Seconds between samples of CPU, memory, readiness and refused configurations (not live)."
    )


SCHEMA = agent_settings_schema(
    ConfigurationSettings,
    live=frozenset(
        {
            "cpu_threshold",
            "cpu_critical",
            "memory_threshold",
            "memory_critical",
            "sustained_samples",
            "readiness_failures",
            "rollback_window",
        }
    ),
)
