"""Money: an exact amount in integer minor units that always travels with its currency."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

# ISO 4217 minor-unit exponents that differ from 2 (the currencies Stripe settles in that matter here).
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "TND": 3}


def exponent(currency: str) -> int:
    """Return how many decimal places the currency's minor unit has (BRL: 2)."""
    return _EXPONENTS.get(currency.upper(), 2)


class Money(BaseModel):
    """An amount of money: ``amount_minor`` integer minor units (centavos for BRL) and an ISO currency code.

    Arithmetic and comparison refuse to mix currencies. ``amount`` is the exact decimal string.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    amount_minor: int = Field(description="The amount in the currency's minor unit (2900 is BRL 29.00).")
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code, upper case (BRL).")

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        """Build from a decimal amount in major units: ``Money.of("29.00", "BRL")``; refuses fractions of a minor unit."""
        try:
            value = Decimal(str(amount))
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {amount!r}") from None
        scaled = value.scaleb(exponent(currency))
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} has more decimal places than {currency.upper()} allows")
        return cls(amount_minor=int(scaled), currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount_minor=0, currency=currency)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amount(self) -> str:
        """The exact amount in major units as a decimal string ("29.00")."""
        return str(self.decimal)

    @property
    def decimal(self) -> Decimal:
        places = exponent(self.currency)
        return (Decimal(self.amount_minor).scaleb(-places)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)

    @property
    def stripe_currency(self) -> str:
        """The currency as Stripe spells it (lower case)."""
        return self.currency.lower()

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount_minor=self.amount_minor + other.amount_minor, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount_minor=self.amount_minor - other.amount_minor, currency=self.currency)

    def __mul__(self, factor: int) -> Money:
        if not isinstance(factor, int) or isinstance(factor, bool):
            raise TypeError("Money multiplies only by an integer; convert rates explicitly")
        return Money(amount_minor=self.amount_minor * factor, currency=self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount_minor <= other.amount_minor

    def __bool__(self) -> bool:
        return self.amount_minor != 0

    def __str__(self) -> str:
        return f"{self.currency} {self.decimal:,}"
