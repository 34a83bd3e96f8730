import pytest

from functions.shared.pan import contains_card_number, luhn_valid


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        '{"credit_card_info": {"number": "5555555555554444"}}',
        '{"buyer_info": {"name": "card 378282246310005 amex"}}',
        "6011111111111117",
        "4000056655665556",
    ],
)
def test_card_numbers_are_found_wherever_they_hide(text):
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "pm_card_visa",
        "4242424242424241",  # fails Luhn
        "12.34",
        "chk_2026_11_25_000001",
        "000000000000000000",
        "1234",
        '{"amount": "1234567.00"}',
    ],
)
def test_ordinary_values_are_not_card_numbers(text):
    assert not contains_card_number(text)


def test_luhn():
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
