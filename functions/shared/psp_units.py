"""Stripe's units: what the integer `amount` of a Stripe request means per currency, and what Stripe refuses.

Our Money counts ISO 4217 minor units (money.py). Stripe counts most currencies the same way, but not all, and
it refuses amounts it cannot charge. From Stripe's "Supported currencies" (https://docs.stripe.com/currencies):
- #zero-decimal: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF are sent in whole units (500 JPY
  is 500). The page lists UGX there too, but its #special-cases row overrides that (see ISK, UGX below).
- #three-decimal: BHD JOD KWD OMR TND are sent in thousandths, and "the least-significant (last) digit must be
  0" (5.124 KWD cannot be charged; 5.120 can).
- #special-cases: ISK and UGX have no decimals in ISO 4217, but "backward compatibility requires you to
  represent it as a two-decimal value, where the decimal amount is always 00" (5 ISK is 500); other amounts
  are refused with invalid_charge_amount_no_decimal_compatible, see
  https://support.stripe.com/questions/deprecation-of-fractional-isk-charges-and-refunds. HUF and TWD are
  two-decimal for charges; their multiple-of-100 rule applies to manual payouts only, so not here.
  Every other currency Stripe presents is two-decimal ("two-decimal currencies unless otherwise specified").
- #minimum-and-maximum-charge-amounts: a minimum per settlement currency (MINIMUM_CHARGE below) and a maximum
  set by the digits of `amount`: 8 for every payment method in the currencies we accept, 9 for INR. Cards allow
  more for some brands, but the API cannot know the card's brand, so the limit every method meets is used.

Two limits of what can be checked here, without exchange rates: Stripe applies the minimum of the platform's
settlement currency after conversion, so a charge in another currency can still be refused (amount_too_small)
even though it passes here; and a currency with no listed minimum only has to be one chargeable unit.
Pure functions, no `stripe` import: the API validates with them and the Stripe adapter converts with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from functions.shared.errors import NotChargeableAtPsp
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Stripe's presentment currencies (docs.stripe.com/currencies#presentment-currencies and #three-decimal).
STRIPE_CURRENCIES = _codes("""
    USD AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BWP BYN BZD CAD CDF
    CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD GNF GTQ GYD HKD HNL HTG HUF
    IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP
    MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
    SCR SEK SGD SHP SLE SOS SRD STD SZL THB TJS TND TOP TRY TTD TWD TZS UAH UGX UYU UZS VND VUV WST XAF XCD XOF
    XPF YER ZAR ZMW
""")
# docs.stripe.com/payments/paypal/accept-a-payment: the currencies Stripe takes PayPal payments in.
PAYPAL_CURRENCIES = _codes("EUR GBP USD CHF CZK DKK NOK PLN SEK AUD CAD HKD NZD SGD")
ZERO_DECIMAL = _codes("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF")
THREE_DECIMAL = _codes("BHD JOD KWD OMR TND")
WHOLE_UNITS_AS_TWO_DECIMAL = _codes("ISK UGX")

# Minimum charge in major units, as Stripe lists it (ARS, COP, IDR and RUB are listed too; money.py refuses them).
# BGN is from an earlier version of the table; the current one no longer lists it.
MINIMUM_CHARGE: dict[str, str] = {
    "USD": "0.50", "AED": "2.00", "AUD": "0.50", "BGN": "1.00", "BRL": "0.50", "CAD": "0.50", "CHF": "0.50",
    "CZK": "15.00", "DKK": "2.50", "EUR": "0.50", "GBP": "0.30", "HKD": "4.00", "HUF": "175.00", "ILS": "0.50",
    "INR": "0.50", "JPY": "50", "KRW": "50", "MXN": "10", "MYR": "2.00", "NOK": "3.00", "NZD": "0.50",
    "PHP": "0.50", "PLN": "2.00", "RON": "2.00", "SEK": "3.00", "SGD": "0.50", "THB": "10", "ZAR": "0.50",
}
MAX_AMOUNT_DIGITS = 8
MAX_AMOUNT_DIGITS_BY_CURRENCY = {"INR": 9}


@dataclass(frozen=True, slots=True)
class StripeUnit:
    """How Stripe counts one currency: `amount` has `exponent` decimals and is a multiple of `step`."""

    currency: str
    exponent: int
    step: int
    minimum: int  # smallest chargeable `amount`
    maximum: int  # largest chargeable `amount`


def stripe_unit(currency: str) -> StripeUnit:
    """Stripe's unit of a currency, or NotChargeableAtPsp(currency_not_supported_by_psp)."""
    unit = _UNITS.get(currency.strip().upper()) if isinstance(currency, str) else None
    if unit is None:
        raise NotChargeableAtPsp(f"Stripe cannot charge in {currency!r}", code="currency_not_supported_by_psp")
    return unit


def _unit(code: str) -> StripeUnit:
    exponent, step = _exponent_and_step(code)
    digits_max = 10 ** MAX_AMOUNT_DIGITS_BY_CURRENCY.get(code, MAX_AMOUNT_DIGITS) - 1
    listed = MINIMUM_CHARGE.get(code)
    minimum = int(Decimal(listed).scaleb(exponent)) if listed else step
    return StripeUnit(code, exponent, step, minimum=max(minimum, step), maximum=digits_max - digits_max % step)


def _exponent_and_step(code: str) -> tuple[int, int]:
    if code in ZERO_DECIMAL:
        return 0, 1
    if code in THREE_DECIMAL:
        return 3, 10
    if code in WHOLE_UNITS_AS_TWO_DECIMAL:
        return 2, 100
    return 2, 1


_UNITS = {code: _unit(code) for code in STRIPE_CURRENCIES}


def to_stripe_amount(money: Money) -> int:
    """The `amount` Stripe expects for `money`; refused (NotChargeableAtPsp) when Stripe cannot represent it."""
    unit = stripe_unit(money.currency)
    amount = money.minor * 10 ** _decimals_added(unit)
    if amount % unit.step:
        raise _not_representable(money, unit)
    return amount


def representable(money: Money) -> bool:
    """Whether Stripe can move exactly this amount (a currency it does not know: no rule of ours to apply)."""
    if money.currency not in _UNITS:
        return True
    unit = _UNITS[money.currency]
    return (money.minor * 10 ** _decimals_added(unit)) % unit.step == 0


def minor_step(currency: str) -> int:
    """The smallest amount in ISO minor units that Stripe can move in `currency` (10 for KWD, BHD, JOD, OMR and
    TND, whose third decimal Stripe keeps at 0; 1 for the others)."""
    return next(k for k in (1, 10, 100, 1000) if representable(Money(k, currency)))


def from_stripe_amount(currency: str, amount: int) -> Money:
    """Money of a Stripe `amount` (PaymentIntents, balance transactions, settlement rows); signed amounts allowed.

    MoneyError when the amount has a part our ISO minor units cannot hold (fractional ISK from before 2023)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError("invalid_amount", f"a Stripe amount is an integer, got {amount!r}")
    unit = stripe_unit(currency)
    if unit.currency not in CURRENCY_EXPONENTS:
        raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
    minor, rest = divmod(amount, 10 ** _decimals_added(unit))
    if rest:
        raise MoneyError("too_many_decimals", f"Stripe amount {amount} {unit.currency} has a fraction of a unit")
    return Money(minor, unit.currency)


def _decimals_added(unit: StripeUnit) -> int:
    """Decimals Stripe counts beyond ISO 4217's: 2 for ISK and UGX, else 0 (never fewer, a test pins it)."""
    return unit.exponent - CURRENCY_EXPONENTS[unit.currency]


def check_chargeable(money: Money) -> int:
    """Refuse (NotChargeableAtPsp) what Stripe would refuse to charge; return the Stripe `amount` otherwise."""
    amount = to_stripe_amount(money)
    unit = stripe_unit(money.currency)
    if amount < unit.minimum:
        raise NotChargeableAtPsp(
            f"{money} is below Stripe's minimum charge of {_major(unit, unit.minimum)}",
            code="amount_below_psp_minimum")
    if amount > unit.maximum:
        raise NotChargeableAtPsp(
            f"{money} is above Stripe's maximum charge of {_major(unit, unit.maximum)}",
            code="amount_above_psp_maximum")
    return amount


def _major(unit: StripeUnit, amount: int) -> str:
    return str(from_stripe_amount(unit.currency, amount))


def _not_representable(money: Money, unit: StripeUnit) -> NotChargeableAtPsp:
    smallest = _major(unit, unit.step)
    return NotChargeableAtPsp(f"Stripe charges {unit.currency} only in multiples of {smallest}, not {money}",
                              code="amount_not_supported_by_psp")
