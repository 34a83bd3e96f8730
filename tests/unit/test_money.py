from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.shared.money import CURRENCY_EXPONENTS, CurrencyMismatchError, Money, MoneyError


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("12.34", "USD", 1234), ("12.3", "USD", 1230), ("12", "USD", 1200), ("0.01", "usd", 1),
     ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("0.5", "KWD", 500)],
)
def test_major_strings_become_exact_minor_units(amount, currency, minor):
    assert Money.from_major(amount, currency) == Money(minor, currency.upper())


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        (12.34, "USD", "invalid_amount"),  # a float
        ("1e3", "USD", "invalid_amount"),  # an exponent
        ("-1.00", "USD", "invalid_amount"),
        ("+1.00", "USD", "invalid_amount"),
        ("1.001", "USD", "too_many_decimals"),
        ("1.5", "JPY", "too_many_decimals"),
        ("1.0001", "KWD", "too_many_decimals"),
        ("", "USD", "invalid_amount"),
        (" 1.00", "USD", "invalid_amount"),
        ("01.00", "USD", "invalid_amount"),
        ("1.", "USD", "invalid_amount"),
        ("NaN", "USD", "invalid_amount"),
        ("1.00", "XYZ", "unsupported_currency"),
        ("1.00", "", "unsupported_currency"),
    ],
)
def test_bad_amounts_are_refused_with_a_code(amount, currency, code):
    with pytest.raises(MoneyError) as caught:
        Money.from_major(amount, currency)
    assert caught.value.code == code


def test_zero_parses_but_is_not_positive():
    # The API refuses zero through is_positive(); Money itself can be zero (balances).
    assert not Money.from_major("0.00", "USD").is_positive()


def test_different_currencies_never_add():
    with pytest.raises(CurrencyMismatchError):
        Money(100, "USD") + Money(100, "EUR")
    with pytest.raises(CurrencyMismatchError):
        assert Money(100, "USD") < Money(100, "EUR")


def test_minor_units_must_be_integers():
    with pytest.raises(MoneyError):
        Money(12.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Money(True, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(("minor", "currency", "text"),
                         [(1234, "USD", "12.34"), (5, "USD", "0.05"), (-50, "USD", "-0.50"),
                          (1500, "JPY", "1500"), (1, "KWD", "0.001"), (0, "EUR", "0.00")])
def test_to_major_has_exactly_the_currency_decimals(minor, currency, text):
    assert Money(minor, currency).to_major() == text


def test_signed_file_amounts():
    assert Money.from_decimal("-0.5", "usd") == Money(-50, "USD")
    assert Money.from_decimal(Decimal("25"), "USD") == Money(2500, "USD")
    with pytest.raises(MoneyError):
        Money.from_decimal("0.001", "USD")
    with pytest.raises(MoneyError):
        Money.from_decimal("abc", "USD")
    assert Money.from_minor_str(" 5200 ", "USD") == Money(5200, "USD")


@given(st.integers(min_value=1, max_value=10**14), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_round_trip_between_api_text_and_minor_units(minor, currency):
    money = Money(minor, currency)
    assert Money.from_major(money.to_major(), currency) == money


@given(st.lists(st.integers(min_value=-10**12, max_value=10**12), min_size=1, max_size=20))
def test_sums_are_exact(values):
    total = Money.zero("USD")
    for value in values:
        total = total + Money(value, "USD")
    assert total.minor == sum(values)
