"""Disputes: the admin calls open, win and lose; the SDK reads Dispute objects; the platform balance loses the
amount and the 15.00 fee at once and gets the amount (not the fee) back when won; the events are emitted."""

from __future__ import annotations

import pytest
import requests
import stripe

from .conftest import pay


def admin(sandbox, path, body=None):
    return requests.post(f"{sandbox.url}/_sandbox/{path}", json=body or {}, timeout=5)


def available_and_pending(sandbox):
    available, pending = sandbox.state.platform_balance()
    return available.get("usd", 0) + pending.get("usd", 0)


def event_types(client):
    return [e.type for e in reversed(client.v1.events.list(params={"limit": 100}).data) if "dispute" in e.type]


def test_open_then_win_withdraws_amount_and_fee_and_reinstates_the_amount(sandbox, client):
    pi = pay(client, amount=5000)
    before = available_and_pending(sandbox)
    answer = admin(sandbox, f"charges/{pi.latest_charge}/dispute", {"amount": 3000, "reason": "fraudulent"})
    assert answer.status_code == 200, answer.text
    opened = answer.json()
    assert opened["id"].startswith("dp_") and opened["status"] == "needs_response"
    assert (opened["charge"], opened["payment_intent"], opened["amount"]) == (pi.latest_charge, pi.id, 3000)
    assert available_and_pending(sandbox) == before - 3000 - 1500
    [withdrawal] = opened["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["type"], withdrawal["reporting_category"]) == (
        -3000, 1500, "adjustment", "dispute")

    dispute = client.v1.disputes.retrieve(opened["id"])
    assert isinstance(dispute, stripe.Dispute) and dispute.reason == "fraudulent"
    assert [d.id for d in client.v1.disputes.list(params={"charge": pi.latest_charge}).data] == [opened["id"]]

    won = admin(sandbox, f"disputes/{opened['id']}/win").json()
    assert won["status"] == "won" and len(won["balance_transactions"]) == 2
    assert available_and_pending(sandbox) == before - 1500  # Stripe keeps the fee
    assert event_types(client) == ["charge.dispute.created", "charge.dispute.funds_withdrawn",
                                   "charge.dispute.funds_reinstated", "charge.dispute.closed"]
    again = admin(sandbox, f"disputes/{opened['id']}/lose")
    assert again.status_code == 400 and again.json()["error"]["code"] == "dispute_already_closed"


def test_lost_keeps_everything_and_refunds_are_refused(sandbox, client):
    pi = pay(client, amount=2000)
    before = available_and_pending(sandbox)
    opened = admin(sandbox, f"charges/{pi.latest_charge}/dispute").json()
    assert opened["amount"] == 2000 and opened["reason"] == "general"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 100})
    assert refused.value.code == "charge_disputed"
    lost = admin(sandbox, f"disputes/{opened['id']}/lose").json()
    assert lost["status"] == "lost" and len(lost["balance_transactions"]) == 1
    assert available_and_pending(sandbox) == before - 2000 - 1500
    assert event_types(client) == ["charge.dispute.created", "charge.dispute.funds_withdrawn",
                                   "charge.dispute.closed"]


@pytest.mark.parametrize(("body", "code"), [({"amount": 2001}, 400), ({"amount": 0}, 400), ({"amount": "5"}, 400),
                                            ({"reason": "boredom"}, 400)])
def test_what_stripe_refuses_is_refused(sandbox, client, body, code):
    pi = pay(client, amount=2000)
    assert admin(sandbox, f"charges/{pi.latest_charge}/dispute", body).status_code == code


def test_one_dispute_per_charge_and_none_of_a_refunded_amount(sandbox, client):
    pi = pay(client, amount=2000)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 500})
    assert admin(sandbox, f"charges/{pi.latest_charge}/dispute", {"amount": 1600}).status_code == 400
    assert admin(sandbox, f"charges/{pi.latest_charge}/dispute").json()["amount"] == 1500
    second = admin(sandbox, f"charges/{pi.latest_charge}/dispute")
    assert second.status_code == 400 and second.json()["error"]["code"] == "charge_disputed"
    assert admin(sandbox, "charges/ch_nope/dispute").status_code == 404
    assert admin(sandbox, "disputes/dp_nope/win").status_code == 404
