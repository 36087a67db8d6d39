"""The plugin's running state: key ring and checkpoint policy, kept in ``kernel.stash``."""

from __future__ import annotations

from dataclasses import dataclass

from botcriptofy import Kernel, StashKey

from ._chain import Checkpointing
from ._settings import AuditSettings
from ._signing import KeyRing, load_keyring


@dataclass
class AuditState:
    keyring: KeyRing
    policy: Checkpointing


STATE: StashKey[AuditState] = StashKey()


def settings_of(kernel: Kernel) -> AuditSettings:
    settings = kernel.settings_for("audit")
    return settings if isinstance(settings, AuditSettings) else AuditSettings()


def build_state(kernel: Kernel) -> AuditState:
    settings = settings_of(kernel)
    keyring = load_keyring(settings, kernel.state_dir, production=kernel.env == "production")
    return AuditState(keyring, Checkpointing(settings.checkpoint_every, settings.checkpoint_interval))


def state_of(kernel: Kernel) -> AuditState:
    state = kernel.current().stash.get(STATE, None) or kernel.stash.get(STATE, None)
    if state is None:
        raise RuntimeError("the audit plugin has not started")
    return state
