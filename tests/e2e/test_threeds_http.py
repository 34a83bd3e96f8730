"""3-D Secure end to end (issue 17): a checkout paid with a card that needs a challenge, over HTTP on the local
stack. The checkout shows next_action with the client secret; the buyer's challenge is completed through the
sandbox's admin call, whose webhook goes through the gateway, the receiver and the processor; the sweeper's run
takes the charge on to SUCCESS through the usual finalize."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

from tests.e2e.test_payout_flow import order_when
from tests.support.waiting import wait_for


def test_a_3ds_checkout_shows_next_action_and_succeeds_once_the_challenge_is_completed(stack, api):
    checkout_id = f"chk_3ds_{uuid.uuid4().hex[:10]}"
    body = {"buyer_info": {"buyer_id": "buyer_3ds"}, "checkout_id": checkout_id,
            "payment_method": {"type": "card", "token": "pm_card_threeDSecure2Required", "wallet": "apple_pay"},
            "payment_orders": [{"seller_account": "seller_3ds", "amount": "25.00", "currency": "EUR",
                                "payment_order_id": f"{checkout_id}_0"}]}
    status, answer, _ = api.post_checkout(body)
    assert status == 202, (status, answer)

    def waiting() -> dict[str, Any] | None:
        status, checkout, _ = api.get_checkout(checkout_id)
        assert status == 200, (status, checkout)
        return checkout if checkout.get("next_action") else None

    checkout = wait_for(waiting, 20, f"{checkout_id} next_action")
    [order] = checkout["payment_orders"]
    assert order["payment_order_status"] == "EXECUTING" and order["wallet"] == "apple_pay"
    assert checkout["next_action"]["type"] == "use_stripe_sdk"
    assert checkout["next_action"]["client_secret"].startswith(order["psp_reference"] + "_secret_")

    # The buyer completes the challenge (Stripe.js's handleNextAction; here the sandbox's admin call)
    request = urllib.request.Request(
        f"{stack.psp_url}/_sandbox/payment_intents/{order['psp_reference']}/resolve",
        data=json.dumps({"outcome": "succeeded"}).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer_:
        assert json.loads(answer_.read())["status"] == "succeeded"

    done = order_when(api, order["payment_order_id"], "payment_order_status", {"SUCCESS", "FAILED"}, timeout=60,
                      stack=stack)
    assert done["payment_order_status"] == "SUCCESS" and done["payout_status"] == "HELD"
    assert done["next_action"] is None and done["wallet"] == "apple_pay"
    status, checkout, _ = api.get_checkout(checkout_id)
    assert checkout["is_payment_done"] is True and checkout["next_action"] is None
