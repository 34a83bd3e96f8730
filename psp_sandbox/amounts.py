"""Stripe's rules for a charge amount (integer, in Stripe's units for the currency), refused as Stripe refuses them.

Sources:
- docs.stripe.com/currencies#minimum-and-maximum-charge-amounts: the minimum per settlement currency (USD 0.50 ...);
  "the amount value supports up to eight digits (e.g., a value of 99999999 for a USD charge of $999,999.99)".
- docs.stripe.com/currencies#special-cases and support.stripe.com/questions/deprecation-of-fractional-isk-charges-
  and-refunds: ISK stays two-decimal in the API but charged amounts must be evenly divisible by 100
  (400 `invalid_charge_amount_no_decimal_compatible`); three-decimal currencies need a last digit of 0; HUF and TWD
  take two-decimal charges (their multiple-of-100 rule is for payouts only); UGX is zero-decimal.
"""

from __future__ import annotations

from . import errors
from .models import THREE_DECIMAL, currency_exponent

# Minimum charge in Stripe's units, per currency (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
# A currency missing from Stripe's table gets 50 units here: Stripe converts "$0.50 US or equivalent" at the day's
# rate, which the sandbox does not know.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500, "dkk": 250,
    "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300,
    "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip
DEFAULT_MINIMUM = 50
MAXIMUM_CHARGE = 99_999_999  # eight digits
WHOLE_UNITS_ONLY = frozenset({"isk"})  # two-decimal in the API, no fractions charged
_SYMBOLS = {"usd": "$", "aud": "$", "cad": "$", "nzd": "$", "sgd": "$", "hkd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}


def minimum_charge(currency: str) -> int:
    return MINIMUM_CHARGE.get(currency, DEFAULT_MINIMUM)


def check_charge_amount(amount: int, currency: str) -> None:
    """Raise Stripe's 400 for an amount it would not charge in `currency` (lower-case ISO code)."""
    if amount < minimum_charge(currency):
        raise errors.invalid_request(
            f"Amount must be at least {shown_amount(minimum_charge(currency), currency)} {currency}",
            param="amount",
            code="amount_too_small",
        )
    if amount > MAXIMUM_CHARGE:
        raise errors.invalid_request(
            f"Amount must be no more than {shown_amount(MAXIMUM_CHARGE, currency)}",
            param="amount",
            code="amount_too_large",
        )
    check_amount_units(amount, currency)


def check_amount_units(amount: int, currency: str) -> None:
    """The special cases that apply to charges and refunds alike."""
    if currency in WHOLE_UNITS_ONLY and amount % 100:
        raise errors.invalid_request(
            f"Invalid amount. Currency {currency.upper()} has become effectively zero-decimal and charged amounts "
            "must be evenly divisible by 100. See https://stripe.com/docs/currencies#special-cases for more "
            "information.",
            param="amount",
            code="invalid_charge_amount_no_decimal_compatible",
        )
    if currency in THREE_DECIMAL and amount % 10:
        # Stripe documents the rule (round to the nearest ten) but not its error's wording: this one is the sandbox's.
        raise errors.invalid_request(
            f"Invalid amount. Amounts in {currency.upper()} must end in 0 (round to the nearest ten).",
            param="amount",
            code="invalid_amount",
        )


def shown_amount(amount: int, currency: str) -> str:
    """`50, "usd"` → `$0.50`; `99999999, "usd"` → `$999,999.99` (Stripe's wording in these errors)."""
    exponent = currency_exponent(currency)
    major, minor = divmod(amount, 10**exponent)
    text = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    return _SYMBOLS.get(currency, "") + text
