"""Checks and money orders end to end (issue 17), over HTTP on the local stack: the checkout shows where to send
the check and its reference; a storefront key may not record funds; the operator's key records them (a replay
answers the same) and the sweeper's run finalizes the order SUCCESS with its pay-out HELD."""

from __future__ import annotations

import os
import uuid

from functions.auth.keys import issue
from functions.shared.names import ENV_API_KEYS_TABLE
from functions.shared.tables import ApiKeysTable
from tests.e2e.test_payout_flow import order_when
from verification.storefront import ApiClient


def test_a_check_is_recorded_by_the_operator_and_the_order_succeeds(stack, api):
    checkout_id = f"chk_check_{uuid.uuid4().hex[:10]}"
    order_id = f"{checkout_id}_0"
    body = {"buyer_info": {"buyer_id": "buyer_check"}, "checkout_id": checkout_id,
            "payment_method": {"type": "check"},
            "payment_orders": [{"seller_account": "seller_check", "amount": "45.00", "currency": "USD",
                                "payment_order_id": order_id}]}
    status, answer, _ = api.post_checkout(body)
    assert status == 202, (status, answer)
    [instructions] = answer["instructions"]
    assert (instructions["amount"], instructions["currency"], instructions["method"]) == ("45.00", "USD", "check")
    assert instructions["reference"].startswith("MP-") and instructions["pay_to"]
    status, checkout, _ = api.get_checkout(checkout_id)
    assert checkout["instructions"] == [instructions]
    assert checkout["payment_orders"][0]["payment_order_status"] == "EXECUTING"

    receipt = {"amount": "45.00", "currency": "USD", "reference": instructions["reference"]}
    path = f"/v1/checkouts/{checkout_id}/offline_payments"
    storefront = ApiClient(stack.api_url, issue(ApiKeysTable(os.environ[ENV_API_KEYS_TABLE]), "default"))
    status, refused, _ = storefront.request("POST", path, receipt)
    assert (status, refused["error"]["code"]) == (403, "insufficient_scope")
    status, wrong, _ = api.request("POST", path, {**receipt, "amount": "40.00"})
    assert (status, wrong["error"]["code"]) == (422, "offline_amount_mismatch")

    status, recorded, headers = api.request("POST", path, receipt)  # the development key has every scope
    assert (status, recorded["status"]) == (202, "recorded") and "idempotent-replayed" not in headers
    status, again, headers = api.request("POST", path, receipt)
    assert (status, again, headers.get("idempotent-replayed")) == (202, recorded, "true")

    done = order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"}, timeout=60, stack=stack)
    assert (done["payment_order_status"], done["payout_status"], done["offline_funds"]) == (
        "SUCCESS", "HELD", "received")
    status, checkout, _ = api.get_checkout(checkout_id)
    assert checkout["is_payment_done"] is True and checkout["instructions"] is None
