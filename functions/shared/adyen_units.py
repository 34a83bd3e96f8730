"""Adyen's units: what the integer `amount.value` of an Adyen request means per currency, and what the API checks
for a charge routed to Adyen. Pure (no `Adyen` import): the API validates with it, the adapter
(functions/shared/psp_adyen.py) converts with it. Stripe's are in functions/shared/psp_units.py.

Adyen's currency table (docs.adyen.com/development-resources/currency-codes) lists every currency our Money accepts
(functions/shared/money.py), with ISO 4217's decimals except CLP and ISK, sent with 2 (ISO: 0; the table's note).
JPY and KRW are 0, BHD, IQD, JOD, KWD, LYD, OMR and TND 3, as in ISO. (CVE, 0 at Adyen and 2 in ISO, is not a
currency we accept.) So every amount of ours is a whole number of Adyen's minor units: nothing is refused for its
unit, unlike Stripe's 3-decimal rule. Adyen publishes no general minimum or maximum for card payments; `value` is an
int64 in its API, which our amounts (at most 15 integer digits) never reach.
"""

from __future__ import annotations

from typing import Any

from functions.shared.errors import NotChargeableAtPsp
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError

ADYEN_EXPONENTS = {"CLP": 2, "ISK": 2}
MAX_VALUE = 2**63 - 1  # amount.value is an int64 (Checkout API)


def adyen_amount(money: Money) -> dict[str, Any]:
    """Our Money as Adyen's `amount` object, in Adyen's minor units."""
    shift = ADYEN_EXPONENTS.get(money.currency, CURRENCY_EXPONENTS[money.currency]) - CURRENCY_EXPONENTS[money.currency]
    return {"currency": money.currency, "value": money.minor * 10**shift}


def from_adyen_amount(amount: dict[str, Any]) -> Money:
    """Adyen's `amount` object back in our units; MoneyError if it is not a whole number of ours."""
    currency = str(amount.get("currency", ""))
    value = amount.get("value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError("invalid_amount", f"Adyen amount value {value!r} is not an integer")
    exponent = CURRENCY_EXPONENTS.get(currency.upper())
    if exponent is None:
        raise MoneyError("invalid_currency", f"unknown currency {currency!r}")
    step = 10 ** (ADYEN_EXPONENTS.get(currency.upper(), exponent) - exponent)
    if value % step:
        raise MoneyError("invalid_amount", f"{value} {currency} is not a whole number of our minor units")
    return Money(value // step, currency)


def check_chargeable(money: Money) -> int:
    """Refuse (NotChargeableAtPsp) what Adyen would refuse for its amount; return Adyen's `value` otherwise."""
    if not money.is_positive():
        raise NotChargeableAtPsp(f"{money} is not an amount Adyen can charge", code="amount_below_psp_minimum")
    value = int(adyen_amount(money)["value"])
    if value > MAX_VALUE:
        raise NotChargeableAtPsp(f"{money} is above what Adyen's amount can carry", code="amount_above_psp_maximum")
    return value
