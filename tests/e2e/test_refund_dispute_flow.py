"""Issue 16 end to end, over HTTP against the local stack: a checkout paid; a partial refund through the API whose
outcome the PSP decides later (pending, then succeeded, told by its webhook); the order released and transferred;
then the cardholder's bank disputes what remains (the sandbox's admin call), the storefront is told (signed
notifications, verified as the README shows), the dispute is lost: the seller owes its share, the balance and the
statement agree, and the debt is netted from the seller's next transfer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from local.notification_receiver import Receiver
from tests.e2e.test_payout_flow import balance, order_when, place, unique
from tests.support.waiting import wait_for
from verification.disputes import SandboxAdmin
from verification.payouts import Connect

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def receiver(stack):
    running = Receiver("mpsec_e2e_" + uuid.uuid4().hex).start()
    stack.set_notification_endpoint(running.url, running.secret)
    yield running
    running.stop()


def notified(receiver: Receiver, event_type: str, dispute_id: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        return next((e for e in list(receiver.events) if e["type"] == event_type
                     and e["data"]["object"].get("dispute_id") == dispute_id), None)
    return wait_for(seen, 30, f"{event_type} of {dispute_id}", interval=0.1)


def test_a_refund_then_a_lost_dispute_end_to_end(stack, api, receiver):
    started = datetime.now(UTC) - timedelta(seconds=1)
    admin = SandboxAdmin(stack.psp_url)
    seller = unique("seller_dp")
    account = Connect(stack.psp_url).create_account()
    assert api.put_seller(seller, {"psp_account_id": account, "commission_bps": 1000})[0] in (200, 201)
    [order_id] = place(api, [(seller, "20.00", "USD")])
    order = order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"})
    assert order["payment_order_status"] == "SUCCESS"

    # A partial refund while HELD; the PSP answers pending and decides later (its webhook tells us)
    assert admin.post("/_sandbox/refunds", {"pending_seconds": 3600})[0] == 200
    refund_id = unique("rf")
    status, refund, _ = api.request("POST", f"/v1/payments/{order_id}/refunds",
                                    {"refund_id": refund_id, "amount": "5.00", "reason": "damaged"})
    assert status == 202 and refund["status"] == "PENDING" and refund["amount"] == "5.00", refund

    def refund_is(states: set[str], need_psp_id: bool = False) -> dict[str, Any] | None:
        status, body, _ = api.request("GET", f"/v1/refunds/{refund_id}")
        assert status == 200, body
        return body if body["status"] in states and (body.get("psp_refund_id") or not need_psp_id) else None

    pending = wait_for(lambda: refund_is({"PENDING"}, need_psp_id=True), 30, "the refund sent", interval=0.2)
    assert admin.post(f"/_sandbox/refunds/{pending['psp_refund_id']}/resolve", {"outcome": "succeeded"})[0] == 200
    done = wait_for(lambda: refund_is({"SUCCEEDED", "FAILED"}), 30, "the refund final", interval=0.2)
    assert (done["status"], done["timing"]) == ("SUCCEEDED", "held"), done
    assert api.get_order(order_id)[1]["refunded"] == "5.00"

    # Released and transferred: 15.00 left, 10% commission, 13.50 to the seller
    assert api.release(order_id)[0] == 202
    transferred = order_when(api, order_id, "payout_status", {"TRANSFERRED", "FAILED"}, stack=stack)
    assert transferred["payout_status"] == "TRANSFERRED" and transferred["seller_net"] == "13.50", transferred

    # The bank disputes all that remains (15.00) through the sandbox's admin call; the storefront is told
    [charge] = [c for c in stack.sandbox.charges() if c["payment_intent"] == order["psp_reference"]]
    status, dispute = admin.open(charge["charge_id"])
    assert status == 200 and dispute["amount"] == 1500, dispute
    opened = notified(receiver, "dispute.open", dispute["id"])
    assert opened["data"]["object"]["amount"] == "15.00"
    assert opened["data"]["object"]["orders"] == [{"payment_order_id": order_id, "seller_account": seller,
                                                   "amount": "15.00"}]
    # transferred already: the seller owes its share at once
    assert balance(api, seller)["USD"] == {"pending": "0.00", "available": "0.00", "transferred": "13.50",
                                          "owed": "13.50"}

    # Lost: nothing comes back; the seller bears its share (still owed), the commission share is our loss
    status, closed = admin.decide(dispute["id"], "lost")
    assert status == 200 and closed["status"] == "lost"
    lost = notified(receiver, "dispute.lost", dispute["id"])
    assert lost["data"]["object"]["dispute_status"] == "LOST"
    assert not receiver.refused, receiver.refused  # every delivery's signature verified
    status, read, _ = api.get_order(order_id)
    assert [(d["dispute_id"], d["status"], d["amount"]) for d in read["disputes"]] == [(dispute["id"], "LOST", "15.00")]
    assert balance(api, seller)["USD"]["owed"] == "13.50"

    # The seller's next sale pays the debt: 20.00 less 10% is 18.00, 13.50 of it netted, 4.50 sent
    [second] = place(api, [(seller, "20.00", "USD")])
    assert order_when(api, second, "payment_order_status", {"SUCCESS", "FAILED"})["payment_order_status"] == "SUCCESS"
    assert api.release(second)[0] == 202
    paid = order_when(api, second, "payout_status", {"TRANSFERRED", "FAILED"}, stack=stack)
    assert (paid["payout_status"], paid["netted"], paid["transferred"]) == ("TRANSFERRED", "13.50", "4.50"), paid
    after = balance(api, seller)["USD"]
    assert after == {"pending": "0.00", "available": "0.00", "transferred": "18.00", "owed": "0.00"}, after

    # The statement (the ledger's view of the seller) adds up to the same
    end = (datetime.now(UTC) + timedelta(seconds=5)).isoformat(timespec="seconds")
    status, statement, _ = api.statement(seller, started.isoformat(timespec="seconds"), end)
    assert status == 200, statement
    mine = [row for row in statement if row["payment_order_id"] in (order_id, second)]
    assert [(row["kind"], row["payment_order_id"]) for row in mine] == [
        ("payin", order_id), ("refund", order_id), ("release", order_id), ("transfer", order_id),
        ("dispute", order_id), ("payin", second), ("netting", second), ("release", second), ("transfer", second)]
    assert mine[4]["owed"] == "13.50" and mine[6]["owed"] == "-13.50"
    for bucket in ("pending", "available", "transferred", "owed"):
        assert f"{sum(Decimal(row[bucket]) for row in mine):.2f}" == after[bucket], bucket
