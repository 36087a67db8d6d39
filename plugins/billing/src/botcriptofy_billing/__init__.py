"""BotCriptoFy billing: plans as data, Stripe Checkout and portal, verified webhooks, entitlements and quotas.

The entry point ``billing`` is :data:`plugin`, a :class:`BillingPlugin`.
"""

from ._events import PaymentFailed, PaymentSucceeded, QuotaExhausted, QuotaWarning, Refunded, SubscriptionChanged, TrialEnding
from ._money import Money
from ._plans import CATALOG, QUOTAS, Catalog, Interval, Plan
from ._plugin import BillingPlugin
from ._settings import BillingSettings
from ._signature import sign

__version__ = "0.5.1"

plugin = BillingPlugin()

__all__ = [
    "CATALOG",
    "QUOTAS",
    "BillingPlugin",
    "BillingSettings",
    "Catalog",
    "Interval",
    "Money",
    "PaymentFailed",
    "PaymentSucceeded",
    "Plan",
    "QuotaExhausted",
    "QuotaWarning",
    "Refunded",
    "SubscriptionChanged",
    "TrialEnding",
    "__version__",
    "plugin",
    "sign",
]
