"""The plugin's running state: export keys, the download-link key and the in-process runner."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from botcriptofy import Kernel, StashKey

from ._exports import ExportKeys, load_keys
from ._settings import LgpdSettings


@dataclass
class LgpdState:
    keys: ExportKeys
    link_key: bytes
    runner: object | None = None


STATE: StashKey[LgpdState] = StashKey()


def settings_of(kernel: Kernel) -> LgpdSettings:
    settings = kernel.current().settings_for("lgpd")
    return settings if isinstance(settings, LgpdSettings) else LgpdSettings()


def build_state(kernel: Kernel) -> LgpdState:
    settings = kernel.settings_for("lgpd") or LgpdSettings()
    keys = load_keys(settings, kernel.state_dir, production=kernel.env == "production")
    link_key = hashlib.sha256(b"botcriptofy.lgpd.download-link\x00" + keys.raw_active()).digest()
    return LgpdState(keys, link_key)


def state_of(kernel: Kernel) -> LgpdState:
    state = kernel.current().stash.get(STATE, None) or kernel.stash.get(STATE, None)
    if state is None:
        raise RuntimeError("the lgpd plugin has not started")
    return state
