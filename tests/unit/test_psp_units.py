"""Stripe's units per currency, and the amounts Stripe refuses, at their boundaries."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.shared import psp_units
from functions.shared.errors import NotChargeableAtPsp
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError
from functions.shared.psp_units import check_chargeable, from_stripe_amount, to_stripe_amount

CHARGEABLE_CURRENCIES = sorted(set(CURRENCY_EXPONENTS) & psp_units.STRIPE_CURRENCIES)


def major(amount, currency):
    return Money.from_major(amount, currency)


def refused(money):
    with pytest.raises(NotChargeableAtPsp) as caught:
        check_chargeable(money)
    assert caught.value.http_status == 422
    return caught.value.code


@pytest.mark.parametrize(("amount", "currency", "stripe_amount"), [
    ("12.34", "USD", 1234),          # two-decimal: same unit as ISO
    ("500", "JPY", 500),             # zero-decimal: unchanged
    ("1500", "KRW", 1500),
    ("100", "ISK", 10000),           # ISO has no decimals; Stripe takes ISK as two-decimal
    ("5", "UGX", 500),               # listed as zero-decimal by Stripe, but a two-decimal special case
    ("10.45", "HUF", 1045),          # HUF and TWD: two-decimal for charges (the whole-unit rule is for payouts)
    ("800.45", "TWD", 80045),
    ("1.230", "KWD", 1230),          # three-decimal, last digit 0
    ("5.120", "BHD", 5120),
])
def test_stripe_amount_per_currency(amount, currency, stripe_amount):
    money = major(amount, currency)
    assert to_stripe_amount(money) == stripe_amount
    assert from_stripe_amount(currency.lower(), stripe_amount) == money


@pytest.mark.parametrize(("amount", "currency"), [("1.234", "KWD"), ("5.124", "BHD"), ("0.001", "JOD"),
                                                  ("9.999", "OMR"), ("1.005", "TND")])
def test_three_decimal_amounts_not_ending_in_zero_are_refused(amount, currency):
    with pytest.raises(NotChargeableAtPsp) as caught:
        to_stripe_amount(major(amount, currency))
    assert caught.value.code == "amount_not_supported_by_psp"
    assert f"multiples of 0.010 {currency}" in caught.value.message


@pytest.mark.parametrize(("currency", "minimum", "below"), [
    ("USD", "0.50", "0.49"), ("EUR", "0.50", "0.49"), ("GBP", "0.30", "0.29"), ("JPY", "50", "49"),
    ("HUF", "175.00", "174.99"), ("CZK", "15.00", "14.99"), ("MXN", "10.00", "9.99"), ("HKD", "4.00", "3.99"),
    ("KRW", "50", "49"),
])
def test_exactly_the_minimum_passes_and_one_minor_unit_below_is_refused(currency, minimum, below):
    assert check_chargeable(major(minimum, currency)) == to_stripe_amount(major(minimum, currency))
    assert refused(major(below, currency)) == "amount_below_psp_minimum"


@pytest.mark.parametrize(("currency", "smallest", "below"), [("ISK", "1", "0"), ("KWD", "0.010", "0"),
                                                            ("XOF", "1", "0"), ("SAR", "0.01", "0")])
def test_without_a_listed_minimum_one_chargeable_unit_is_the_floor(currency, smallest, below):
    check_chargeable(major(smallest, currency))
    assert refused(Money(0, currency)) == "amount_below_psp_minimum"


@pytest.mark.parametrize(("currency", "maximum", "above"), [
    ("USD", "999999.99", "1000000.00"), ("JPY", "99999999", "100000000"), ("INR", "9999999.99", "10000000.00"),
    ("ISK", "999999", "1000000"), ("KWD", "99999.990", "100000.000"),
])
def test_exactly_the_maximum_passes_and_above_is_refused(currency, maximum, above):
    check_chargeable(major(maximum, currency))
    assert refused(major(above, currency)) == "amount_above_psp_maximum"


def test_usd_maximum_is_eight_digits_at_stripe():
    assert check_chargeable(Money(99_999_999, "USD")) == 99_999_999
    assert refused(Money(100_000_000, "USD")) == "amount_above_psp_maximum"


def test_messages_name_the_amount_and_stripes_limit():
    with pytest.raises(NotChargeableAtPsp) as caught:
        check_chargeable(major("0.40", "USD"))
    assert caught.value.message == "0.40 USD is below Stripe's minimum charge of 0.50 USD"


@pytest.mark.parametrize("currency", ["LYD", "IQD"])
def test_a_currency_stripe_does_not_present_is_refused_with_its_own_code(currency):
    assert refused(major("10.000", currency)) == "currency_not_supported_by_psp"
    with pytest.raises(NotChargeableAtPsp) as caught:
        to_stripe_amount(major("10.000", currency))
    assert caught.value.code == "currency_not_supported_by_psp"


def test_reading_back_a_stripe_amount_refuses_what_iso_units_cannot_hold():
    with pytest.raises(MoneyError) as caught:
        from_stripe_amount("isk", 4010)  # 40.10 ISK, a fractional krona from before 2023
    assert caught.value.code == "too_many_decimals"
    with pytest.raises(MoneyError):
        from_stripe_amount("usd", 12.5)
    with pytest.raises(MoneyError):
        from_stripe_amount("usd", True)


def test_reading_back_keeps_the_sign_of_settlement_amounts():
    assert from_stripe_amount("isk", -50000) == Money(-500, "ISK")
    assert from_stripe_amount("kwd", -1235) == Money(-1235, "KWD")  # a fee need not end in 0


def test_every_currency_money_accepts_has_a_stripe_rule_or_is_refused():
    assert set(CURRENCY_EXPONENTS) - psp_units.STRIPE_CURRENCIES == {"LYD", "IQD"}
    assert psp_units.ZERO_DECIMAL | psp_units.THREE_DECIMAL | psp_units.WHOLE_UNITS_AS_TWO_DECIMAL \
        <= psp_units.STRIPE_CURRENCIES
    assert set(psp_units.MINIMUM_CHARGE) <= set(CHARGEABLE_CURRENCIES)


def test_stripe_counts_no_currency_we_accept_in_a_coarser_unit_than_iso():
    added = {c: psp_units.stripe_unit(c).exponent - CURRENCY_EXPONENTS[c] for c in CHARGEABLE_CURRENCIES}
    assert {c: n for c, n in added.items() if n} == {"ISK": 2, "UGX": 2}
    assert min(added.values()) == 0


@given(currency=st.sampled_from(CHARGEABLE_CURRENCIES), minor=st.integers(-(10**15), 10**15))
def test_to_stripe_then_from_stripe_gives_the_same_money(currency, minor):
    money = Money(minor, currency)
    try:
        amount = to_stripe_amount(money)
    except NotChargeableAtPsp as error:
        assert error.code == "amount_not_supported_by_psp"
        assert currency in psp_units.THREE_DECIMAL and minor % 10
        return
    assert from_stripe_amount(currency.lower(), amount) == money


@given(currency=st.sampled_from(CHARGEABLE_CURRENCIES), units=st.integers(0, 10**9))
def test_every_chargeable_stripe_amount_reads_back_and_converts_to_itself(currency, units):
    unit = psp_units.stripe_unit(currency)
    amount = units * unit.step
    assert to_stripe_amount(from_stripe_amount(currency, amount)) == amount
