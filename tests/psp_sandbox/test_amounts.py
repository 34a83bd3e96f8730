"""Stripe's amount rules (minimum and maximum charge per currency, special cases) through the official SDK."""

from __future__ import annotations

import pytest
import stripe

from .conftest import pay


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (50, "usd"),
        (30, "gbp"),
        (50, "jpy"),
        (400, "hkd"),
        (17500, "huf"),
        (99_999_999, "usd"),
        (12_300, "isk"),  # 123 ISK, sent as two-decimal
        (5_120, "kwd"),
        (12_345, "twd"),  # two-decimal charges are fine; the multiple of 100 is for payouts
        (12_345, "ugx"),  # zero-decimal
    ],
)
def test_amounts_stripe_charges(client, sandbox, amount, currency):
    pi = pay(client, amount=amount, currency=currency, key=f"po_{currency}_{amount}")
    assert (pi.status, pi.amount, pi.currency) == ("succeeded", amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "code", "message"),
    [
        (49, "usd", "amount_too_small", "Amount must be at least $0.50 usd"),
        (29, "gbp", "amount_too_small", "Amount must be at least £0.30 gbp"),
        (49, "jpy", "amount_too_small", "Amount must be at least ¥50 jpy"),
        (399, "hkd", "amount_too_small", "Amount must be at least $4.00 hkd"),
        (17_499, "huf", "amount_too_small", "Amount must be at least 175.00 huf"),
        (100_000_000, "usd", "amount_too_large", "Amount must be no more than $999,999.99"),
        (100_000_000, "jpy", "amount_too_large", "Amount must be no more than ¥99,999,999"),
        (12_345, "isk", "invalid_charge_amount_no_decimal_compatible", None),
        (5_124, "kwd", "invalid_amount", None),
    ],
)
def test_amounts_stripe_refuses(client, sandbox, amount, currency, code, message):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, amount=amount, currency=currency, key="po_1")

    error = caught.value
    assert (error.http_status, error.code, error.param) == (400, code, "amount")
    if message is not None:
        assert str(error.error.message) == message
    assert sandbox.state.payment_intents == {} and sandbox.charges() == []


def test_isk_error_is_stripes_documented_answer(client, sandbox):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        pay(client, amount=150, currency="isk", key="po_1")
    assert str(caught.value.error.message).startswith(
        "Invalid amount. Currency ISK has become effectively zero-decimal and charged amounts must be evenly "
        "divisible by 100."
    )


def test_a_refused_amount_does_not_spend_the_token(client, sandbox):
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError):
        pay(client, pm.id, amount=10, key="charge:co_1:USD")

    pi = pay(client, pm.id, amount=1000, key="charge:co_1:USD")  # validation errors are not stored for the key

    assert pi.status == "succeeded"


def test_isk_refunds_must_be_whole_kronur(client, sandbox):
    pi = pay(client, amount=10_000, currency="isk", key="po_1")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 150})
    assert caught.value.code == "invalid_charge_amount_no_decimal_compatible"
    assert client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 200}).amount == 200
