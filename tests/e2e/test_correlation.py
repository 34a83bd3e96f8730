"""One correlation id per checkout through the local stack (README "Correlation id"): the storefront's
X-Correlation-Id comes back in the API's answer, is on every log line of the executor, in the PaymentIntent's
metadata at the PSP and on the notification the storefront receives (header and envelope field); the checkout's
pay-outs and disputes carry it too, a refund the id of the request that asked for it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from local.notification_receiver import Receiver
from tests.e2e.conftest import start_stack
from tests.e2e.test_payout_flow import order_when, unique
from tests.support.waiting import wait_for
from verification.disputes import SandboxAdmin
from verification.payouts import Connect

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def stack():
    running = start_stack(log_level="INFO")
    yield running
    ungranted = running.ungranted_calls()
    running.stop()
    assert not ungranted, f"AWS calls the calling function's role does not grant: {ungranted}"


@pytest.fixture
def executor_lines() -> Iterator[list[dict]]:
    """Every record the executor's logger (Powertools, service "executor") writes meanwhile, as the JSON it writes."""
    lines: list[dict] = []
    emit = logging.StreamHandler.emit

    def recording(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
        text = handler.format(record)
        if record.name == "executor" and text.startswith("{"):  # pytest's own capture formats as text
            lines.append(json.loads(text))
        emit(handler, record)

    # The local runtime's first environment runs the handler module this test process imported, maybe earlier
    # under another stack's settings (the template's WARNING for the hot path): its Logger goes back to the level it
    # was built with at every invocation. This stack logs at INFO, so that module's Logger does too meanwhile.
    from functions.executor import handler

    built_with = handler.logger.initial_log_level
    handler.logger.initial_log_level = logging.INFO
    logging.StreamHandler.emit = recording  # type: ignore[method-assign]
    try:
        yield lines
    finally:
        logging.StreamHandler.emit = emit  # type: ignore[method-assign]
        handler.logger.initial_log_level = built_with


def checkout(checkout_id: str) -> dict:
    return {"buyer_info": {"buyer_id": "buyer_c"}, "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": "pm_card_visa"},
            "payment_orders": [{"seller_account": "seller_corr", "amount": "7.00", "currency": "USD",
                                "payment_order_id": f"{checkout_id}_0"}]}


def test_one_correlation_id_from_the_api_to_the_psp_and_the_notification(stack, api, executor_lines):
    receiver = Receiver("mpsec_corr_" + uuid.uuid4().hex).start()
    try:
        stack.set_notification_endpoint(receiver.url, receiver.secret)
        correlation_id = f"shop-req-{uuid.uuid4().hex}"
        checkout_id = f"chk_{uuid.uuid4().hex[:10]}"
        status, body, headers = api.request("POST", "/v1/payments", checkout(checkout_id),
                                            headers={"X-Correlation-Id": correlation_id})
        assert status == 202, body
        assert headers["x-correlation-id"] == correlation_id
        success = receiver.wait_for("payment_order.success", f"{checkout_id}_0", timeout_s=60)
    finally:
        receiver.stop()

    assert success["correlation_id"] == correlation_id
    assert receiver.headers[success["id"]]["X-Correlation-Id"] == correlation_id
    [intent] = [c for c in stack.sandbox.charges() if c["metadata"].get("checkout_id", "").endswith(checkout_id)]
    assert intent["metadata"]["correlation_id"] == correlation_id
    mine = [line for line in executor_lines if checkout_id in json.dumps(line)]
    assert mine and all(line.get("correlation_id") == correlation_id for line in mine), mine
    assert any(line["message"] == "charge outcome" for line in mine)


def test_without_a_usable_id_the_api_makes_one_and_answers_it(api):
    for sent in ({}, {"X-Correlation-Id": "bad id with spaces"}):
        status, body, headers = api.request("POST", "/v1/payments", checkout(f"chk_{uuid.uuid4().hex[:10]}"),
                                            headers=sent)
        assert status == 202, body
        made = headers["x-correlation-id"]
        assert len(made) == 32 and made != sent.get("X-Correlation-Id")
    status, _, headers = api.request("GET", "/v1/payments/nope", headers={"X-Correlation-Id": "shop-req-00000001"})
    assert status == 404 and headers["x-correlation-id"] == "shop-req-00000001"  # errors carry it too


def test_the_pay_out_refund_and_dispute_of_a_checkout_carry_a_correlation_id(stack, api):
    """The pay-out and the dispute carry the checkout's id (they follow from it); a refund the id of the request
    that asked for it. Each in its notifications and in the PSP object's metadata."""
    receiver = Receiver("mpsec_corr_" + uuid.uuid4().hex).start()
    try:
        stack.set_notification_endpoint(receiver.url, receiver.secret)
        seller = unique("seller_corr")
        account = Connect(stack.psp_url).create_account()
        assert api.put_seller(seller, {"psp_account_id": account, "commission_bps": 1000})[0] in (200, 201)
        placed_with, refunded_with = f"shop-chk-{uuid.uuid4().hex}", f"shop-rfd-{uuid.uuid4().hex}"
        checkout_id = f"chk_{uuid.uuid4().hex[:10]}"
        body = checkout(checkout_id)
        body["payment_orders"][0].update(seller_account=seller, amount="20.00")
        assert api.request("POST", "/v1/payments", body, headers={"X-Correlation-Id": placed_with})[0] == 202
        order_id = f"{checkout_id}_0"
        order = order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"})
        assert order["payment_order_status"] == "SUCCESS", order
        assert api.request("POST", f"/v1/payments/{order_id}/release",
                           headers={"X-Correlation-Id": f"shop-rel-{uuid.uuid4().hex}"})[0] == 202
        assert order_when(api, order_id, "payout_status", {"TRANSFERRED", "FAILED"},
                          stack=stack)["payout_status"] == "TRANSFERRED"
        refund_id = f"rf_{uuid.uuid4().hex[:10]}"
        status, refund, headers = api.request("POST", f"/v1/payments/{order_id}/refunds",
                                              {"refund_id": refund_id, "amount": "5.00"},
                                              headers={"X-Correlation-Id": refunded_with})
        assert status == 202 and headers["x-correlation-id"] == refunded_with, refund
        refunded = receiver.wait_for("refund.succeeded", order_id)
        [charge] = [c for c in stack.sandbox.charges() if c["payment_intent"] == order["psp_reference"]]
        status, dispute = SandboxAdmin(stack.psp_url).open(charge["charge_id"])
        assert status == 200, dispute
        opened = wait_for(lambda: next((e for e in list(receiver.events) if e["type"] == "dispute.open"
                                        and e["data"]["object"]["dispute_id"] == dispute["id"]), None),
                          30, "dispute.open", interval=0.1)
    finally:
        receiver.stop()

    payouts = [e for e in receiver.events if e["type"].startswith("payout.")
               and e["data"]["object"]["payment_order_id"] == order_id]
    assert {e["type"] for e in payouts} >= {"payout.released", "payout.transferred"}
    assert {e["correlation_id"] for e in payouts} == {placed_with}
    assert refunded["correlation_id"] == refunded_with
    assert receiver.headers[refunded["id"]]["X-Correlation-Id"] == refunded_with
    assert opened["correlation_id"] == placed_with
    [transfer] = [t for t in stack.sandbox.transfers() if t["metadata"].get("payment_order_id", "").endswith(order_id)]
    assert transfer["metadata"]["correlation_id"] == placed_with
    _, shown, _ = api.request("GET", f"/v1/refunds/{refund_id}")
    assert stack.sandbox.state.refund(shown["psp_refund_id"]).metadata["correlation_id"] == refunded_with
