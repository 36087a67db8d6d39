"""The plugin's state on a kernel generation, and how a route or hook reaches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botcriptofy import StashKey

from ._plans import CATALOG, Catalog
from ._settings import BillingSettings
from ._stripe import StripeGateway, not_configured

if TYPE_CHECKING:
    from botcriptofy import Kernel


@dataclass
class BillingState:
    settings: BillingSettings
    gateway: StripeGateway | None
    catalog: Catalog = CATALOG
    warned_no_database: bool = field(default=False)

    def stripe(self) -> StripeGateway:
        """The Stripe gateway, or a 503 problem when no secret key is configured."""
        if self.gateway is None:
            raise not_configured()
        return self.gateway


STATE: StashKey[BillingState] = StashKey("billing")


def state_of(kernel: Kernel) -> BillingState:
    return kernel.stash[STATE]
