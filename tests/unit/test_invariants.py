"""The invariant checker catches each violation it claims to catch (and passes a consistent system)."""

import copy

import pytest

from verification.invariants import Snapshot, check


def consistent():
    return Snapshot(
        orders=[
            {"payment_order_id": "po_1", "payment_order_status": "SUCCESS", "amount_minor": 1000, "currency": "USD"},
            {"payment_order_id": "po_2", "payment_order_status": "FAILED", "amount_minor": 500, "currency": "USD"},
        ],
        ledger=[{"transaction_id": "payin#po_1", "kind": "payin", "reference": "po_1", "entries": [
            {"account": "psp_receivable:stripe", "amount_minor": 1000, "currency": "USD"},
            {"account": "seller_payable:s1", "amount_minor": -1000, "currency": "USD"}]}],
        wallet=[{"account_id": "s1", "sk": "BALANCE#USD", "currency": "USD", "pending_minor": 1000,
                 "available_minor": 0}],
        psp_charges=[
            {"charge_id": "ch_1", "status": "succeeded", "amount": 1000, "currency": "usd",
             "metadata": {"payment_order_id": "po_1"}},
            {"charge_id": "ch_2", "status": "failed", "amount": 500, "metadata": {"payment_order_id": "po_2"}},
        ],
        observed_statuses={"po_1": ["NOT_STARTED", "EXECUTING", "SUCCESS"]},
        accepted_order_ids=["po_1", "po_2"],
    )


def violated(snapshot):
    return {r.number for r in check(snapshot) if not r.ok}


def test_a_consistent_system_passes():
    assert violated(consistent()) == set()


def mutate(change):
    snap = copy.deepcopy(consistent())
    change(snap)
    return snap


@pytest.mark.parametrize(("change", "number"), [
    (lambda s: s.psp_charges.append({"charge_id": "ch_3", "status": "succeeded", "amount": 1000,
                                     "metadata": {"payment_order_id": "po_1"}}), 1),
    (lambda s: s.psp_charges[1].update(status="succeeded"), 1),
    (lambda s: s.psp_charges[0].update(currency="eur"), 1),  # same number, other currency
    (lambda s: s.orders.append({"payment_order_id": "po_3", "payment_order_status": "EXECUTING",
                                "amount_minor": 1}) or s.accepted_order_ids.append("po_3"), 2),
    (lambda s: s.ledger[0]["entries"][1].update(amount_minor=-999), 3),
    (lambda s: s.wallet[0].update(pending_minor=2000), 4),
    (lambda s: s.ledger.append({**s.ledger[0], "transaction_id": "payin#po_1b"}), 4),
    (lambda s: s.observed_statuses.update(po_1=["SUCCESS", "EXECUTING"]), 5),
    (lambda s: s.replays.append({"kind": "same", "checkout_id": "c", "first_status": 202, "second_status": 202,
                                 "first_body": {"a": 1}, "second_body": {"a": 2}, "replayed_header": True}), 6),
    (lambda s: s.replays.append({"kind": "conflict", "checkout_id": "c", "second_status": 202}), 6),
    (lambda s: s.unreadable_after_write.append("po_9"), 7),
])
def test_each_violation_is_reported_under_its_invariant(change, number):
    assert number in violated(mutate(change))
