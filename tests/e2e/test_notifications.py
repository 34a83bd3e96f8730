"""Notifications out on the local stack: a checkout placed through the API reaches the storefront's receiver as
signed events (the receiver verifies each signature as the README tells a storefront to)."""

from __future__ import annotations

import uuid

import pytest

from local.notification_receiver import Receiver

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def receiver(stack):
    running = Receiver("mpsec_e2e_" + uuid.uuid4().hex).start()
    answer = stack.set_notification_endpoint(running.url, running.secret)
    assert answer["url"] == running.url and "secret" not in answer  # a given secret is never echoed
    yield running
    running.stop()


def test_a_checkout_reaches_the_storefront_as_signed_events(api, receiver):
    checkout_id = f"chk_{uuid.uuid4().hex[:10]}"
    order_id = f"{checkout_id}_0"
    status, body, _ = api.post_checkout({
        "buyer_info": {"buyer_id": "buyer_1", "email": "ada@example.com"}, "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [{"seller_account": "seller_notify", "amount": "12.34", "currency": "USD",
                            "payment_order_id": order_id}]})
    assert status == 202, body

    success = receiver.wait_for("payment_order.success", order_id, timeout_s=60)
    held = receiver.wait_for("payout.held", order_id, timeout_s=30)

    assert not receiver.refused, receiver.refused  # every delivery verified
    assert success["id"].startswith("evt_") and success["data"]["previous_status"] == "EXECUTING"
    order = success["data"]["object"]
    assert (order["amount"], order["currency"], order["checkout_id"]) == ("12.34", "USD", checkout_id)
    assert order["psp_reference"].startswith("pi_")
    assert held["data"]["object"]["gross"] == "12.34"
    seen = [e for e in receiver.events if e["data"]["object"].get("payment_order_id") == order_id]
    assert {e["type"] for e in seen} >= {"payment_order.not_started", "payment_order.executing",
                                         "payment_order.success", "payout.held"}
    assert "ada@example.com" not in str(seen) and "pm_card_visa" not in str(seen)


def test_the_endpoint_is_read_back_without_its_secret(api, receiver):
    status, body, _ = api.request("GET", "/v1/notification_endpoint")
    assert status == 200 and body["url"] == receiver.url and "secret" not in body
    status, body, _ = api.request("PUT", "/v1/notification_endpoint", {"url": "http://shop.example/hooks"})
    assert status == 422 and body["error"]["code"] == "invalid_url"
