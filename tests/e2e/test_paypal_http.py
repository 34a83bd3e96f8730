"""PayPal through Stripe end to end (issue 17), over HTTP on the local stack: the PayPal PaymentMethod is created as
Stripe.js creates it (POST /v1/payment_methods type=paypal at the sandbox); the checkout shows where to send the
buyer; their approval on PayPal's page is the sandbox's admin call, whose webhook takes the charge to SUCCESS."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

from tests.e2e.test_payout_flow import order_when
from tests.support.waiting import wait_for

RETURN_URL = "https://shop.example/checkout/return"


def sandbox_post(stack, path: str, data: bytes, content_type: str, key: str = "") -> dict[str, Any]:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{stack.psp_url}{path}", data=data, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_a_paypal_checkout_redirects_the_buyer_and_succeeds_once_approved(stack, api):
    pm = sandbox_post(stack, "/v1/payment_methods", urllib.parse.urlencode({"type": "paypal"}).encode(),
                      "application/x-www-form-urlencoded", key="pk_test_sandbox")
    assert pm["type"] == "paypal" and pm["id"].startswith("pm_")
    checkout_id = f"chk_pp_{uuid.uuid4().hex[:10]}"
    body = {"buyer_info": {"buyer_id": "buyer_pp"}, "checkout_id": checkout_id,
            "payment_method": {"type": "paypal", "token": pm["id"], "return_url": RETURN_URL},
            "payment_orders": [{"seller_account": "seller_pp", "amount": "19.90", "currency": "EUR",
                                "payment_order_id": f"{checkout_id}_0"}]}
    status, answer, _ = api.post_checkout(body)
    assert status == 202, (status, answer)

    def waiting() -> dict[str, Any] | None:
        status, checkout, _ = api.get_checkout(checkout_id)
        assert status == 200, (status, checkout)
        return checkout if checkout.get("next_action") else None

    checkout = wait_for(waiting, 20, f"{checkout_id} next_action")
    [order] = checkout["payment_orders"]
    assert order["payment_order_status"] == "EXECUTING"
    action = checkout["next_action"]
    assert action["type"] == "redirect_to_url" and action["return_url"] == RETURN_URL
    assert action["url"].startswith("https://") and action["client_secret"] is None

    approved = sandbox_post(stack, f"/_sandbox/payment_intents/{order['psp_reference']}/resolve",
                            json.dumps({"outcome": "succeeded"}).encode(), "application/json")
    assert approved["status"] == "succeeded"
    done = order_when(api, order["payment_order_id"], "payment_order_status", {"SUCCESS", "FAILED"}, timeout=60,
                      stack=stack)
    assert done["payment_order_status"] == "SUCCESS" and done["payout_status"] == "HELD"
    assert done["next_action"] is None
