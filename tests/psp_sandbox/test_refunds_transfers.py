"""Refunds and balance transactions (fees in integers, round half up). Connect: test_connect.py."""

from __future__ import annotations

import pytest
import stripe

from psp_sandbox.models import stripe_fee

from .conftest import pay


@pytest.mark.parametrize(
    ("amount", "fee"),
    [
        (2500, 103),  # 72.5 → 73, + 30
        (1000, 59),  # 29.0 → 29, + 30
        (50, 31),  # 1.45 → 1, + 30
        (1500, 74),  # 43.5 → 44, + 30 (half rounds up)
        (1017, 59),  # 29.493 → 29, + 30
    ],
)
def test_stripe_fee_is_2_9_percent_plus_30_rounded_half_up(amount, fee):
    assert stripe_fee(amount) == fee


def test_charge_balance_transaction_carries_the_fee(client):
    pi = pay(client, amount=1500)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    txn = client.v1.balance_transactions.retrieve(charge.balance_transaction)

    assert isinstance(txn, stripe.BalanceTransaction)
    assert (txn.amount, txn.fee, txn.net, txn.type, txn.reporting_category) == (1500, 74, 1426, "charge", "charge")
    assert txn.source == charge.id
    assert txn.fee_details[0].type == "stripe_fee"
    assert txn.status == "pending"  # available two days later


def test_partial_then_full_refund_on_payment_intent(client):
    pi = pay(client, amount=2500)

    partial = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    assert isinstance(partial, stripe.Refund)
    assert (partial.amount, partial.status, partial.charge) == (1000, "succeeded", pi.latest_charge)
    rest = client.v1.refunds.create(params={"charge": pi.latest_charge})
    assert rest.amount == 1500

    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (2500, True)
    assert client.v1.refunds.retrieve(partial.id).amount == 1000
    assert {r.id for r in client.v1.refunds.list(params={"payment_intent": pi.id}).data} == {partial.id, rest.id}
    refund_txns = client.v1.balance_transactions.list(params={"type": "refund"}).data
    assert sorted(t.amount for t in refund_txns) == [-1500, -1000]
    assert all(t.fee == 0 for t in refund_txns)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1})
    assert caught.value.code == "charge_already_refunded"


def test_refund_beyond_the_charged_amount_is_refused(client, sandbox):
    pi = pay(client, amount=2500)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 2000})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 501})
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, "amount_too_large", "amount")
    assert "5.01" in str(caught.value) and "5.00" in str(caught.value)
    assert sandbox.state.charge(pi.latest_charge).amount_refunded == 2000


def test_refund_of_a_failed_payment_is_refused(client):
    with pytest.raises(stripe.CardError) as declined:
        pay(client, "pm_card_chargeDeclined")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": declined.value.error.payment_intent["id"]})
    assert caught.value.code == "charge_not_refundable"


def test_balance_transactions_one_per_money_movement(client):
    pi = pay(client, amount=2000)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 500})
    seller = client.v1.accounts.create(params={"type": "express", "capabilities": {"transfers": {"requested": True}}})
    client.v1.transfers.create(
        params={"amount": 1000, "currency": "usd", "destination": seller.id, "source_transaction": pi.latest_charge}
    )

    txns = client.v1.balance_transactions.list().data
    assert [t.type for t in txns] == ["transfer", "refund", "charge"]
    assert sum(t.net for t in txns) == 2000 - stripe_fee(2000) - 500 - 1000
