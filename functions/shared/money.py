"""Money: integer minor units that always carry their currency.

Amounts cross the API as decimal strings in major units ("12.34"); inside they are `Money(minor, currency)`.
Conversion happens only here, quantized by the currency's ISO 4217 exponent. Floats are never accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of the currencies we accept. A currency not listed here is refused:
# guessing an exponent is how amounts get off by a factor of 100.
CURRENCY_EXPONENTS: dict[str, int] = {
    # exponent 2
    **{c: 2 for c in (
        "USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON",
        "BGN", "MXN", "BRL", "SGD", "HKD", "INR", "ZAR", "AED", "SAR", "ILS", "THB", "MYR", "PHP", "CNY",
        "TRY", "TWD",
    )},
    # exponent 0
    **{c: 0 for c in ("JPY", "KRW", "CLP", "VND", "ISK", "UGX", "XOF", "XAF", "PYG", "RWF")},
    # exponent 3
    **{c: 3 for c in ("KWD", "BHD", "JOD", "OMR", "TND", "LYD", "IQD")},
}

_MAJOR_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,14})(\.[0-9]+)?$")
_MINOR_AMOUNT = re.compile(r"^-?[0-9]{1,18}$")


class MoneyError(ValueError):
    """An amount or currency that cannot be money. `code` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CurrencyMismatchError(MoneyError):
    """Two amounts of different currencies were combined."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__("currency_mismatch", f"cannot combine {left} with {right}")


def normalize_currency(currency: str) -> str:
    """Upper-case ISO code, refused when unknown."""
    if not isinstance(currency, str):
        raise MoneyError("invalid_currency", "currency must be a string")
    code = currency.strip().upper()
    if code not in CURRENCY_EXPONENTS:
        raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
    return code


def currency_exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An exact amount: `minor` units of `currency` (cents for USD, yen for JPY, fils for KWD)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise MoneyError("invalid_amount", "minor units must be an integer")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def from_major(cls, amount: str, currency: str) -> Money:
        """Parse an API amount: a plain decimal string, no sign, no exponent, at most the currency's decimals."""
        code = normalize_currency(currency)
        if not isinstance(amount, str):
            raise MoneyError("invalid_amount", "amount must be a decimal string such as \"12.34\"")
        match = _MAJOR_AMOUNT.match(amount)
        if not match:
            raise MoneyError(
                "invalid_amount",
                f"amount {amount!r} must be a positive decimal string such as \"12.34\" (no sign, no exponent)",
            )
        fraction = match.group(2) or ""
        exponent = CURRENCY_EXPONENTS[code]
        if len(fraction) - 1 > exponent:
            raise MoneyError(
                "too_many_decimals", f"{code} allows {exponent} decimal places, got {amount!r}"
            )
        minor = int((Decimal(amount) * (10**exponent)).to_integral_exact())
        return cls(minor, code)

    @classmethod
    def from_decimal(cls, amount: Decimal | str, currency: str) -> Money:
        """Signed major units from a trusted file (settlement reports); exact, or MoneyError."""
        code = normalize_currency(currency)
        try:
            value = Decimal(str(amount).strip()) if not isinstance(amount, Decimal) else amount
        except InvalidOperation as exc:
            raise MoneyError("invalid_amount", f"{amount!r} is not a decimal amount") from exc
        if not value.is_finite():
            raise MoneyError("invalid_amount", f"{amount!r} is not a finite amount")
        scaled = value.scaleb(CURRENCY_EXPONENTS[code])
        if scaled != scaled.to_integral_value():
            raise MoneyError("too_many_decimals", f"{amount!r} has more decimals than {code} allows")
        return cls(int(scaled), code)

    @classmethod
    def from_minor_str(cls, minor: str, currency: str) -> Money:
        """Signed integer minor units given as text (PayPal files, DynamoDB numbers)."""
        text = str(minor).strip()
        if not _MINOR_AMOUNT.match(text):
            raise MoneyError("invalid_amount", f"{minor!r} is not an integer amount of minor units")
        return cls(int(text), currency)

    def to_major(self) -> str:
        """Decimal string in major units, exactly as many decimals as the currency has ("12.30", "1000")."""
        exponent = CURRENCY_EXPONENTS[self.currency]
        sign = "-" if self.minor < 0 else ""
        digits = str(abs(self.minor))
        if exponent == 0:
            return f"{sign}{digits}"
        digits = digits.rjust(exponent + 1, "0")
        return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(self.currency, other.currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.minor <= other.minor

    def is_positive(self) -> bool:
        return self.minor > 0

    def __str__(self) -> str:
        return f"{self.to_major()} {self.currency}"
