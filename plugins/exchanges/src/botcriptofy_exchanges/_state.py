"""The plugin's state in the kernel's stash: its settings and the ccxt clients."""

from __future__ import annotations

from dataclasses import dataclass

from botcriptofy import Kernel, StashKey

from ._ccxt import Clients
from ._settings import ExchangesSettings


@dataclass
class ExchangesState:
    settings: ExchangesSettings
    clients: Clients


STATE: StashKey[ExchangesState] = StashKey("exchanges.state")


def state_of(kernel: Kernel) -> ExchangesState:
    return kernel.stash[STATE]
