"""A SEPA Direct Debit end to end (issue 17), over HTTP on the local stack: the PaymentMethod made from a test IBAN
as Stripe.js makes it, the buyer's mandate acceptance in the checkout, days of `processing` passed on the sandbox's
clock; the bank's answer comes as a webhook through the gateway and the processor, and the charge ends SUCCESS."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid

from psp_sandbox.state import DEBIT_PROCESSING_SECONDS
from tests.e2e.test_payout_flow import order_when
from tests.e2e.test_paypal_http import sandbox_post
from tests.support.waiting import wait_for

MANDATE = {"customer_acceptance": {"type": "online",
                                   "online": {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0"}}}


def test_a_sepa_checkout_is_processing_until_the_bank_answers_then_succeeds(stack, api):
    form = {"type": "sepa_debit", "sepa_debit[iban]": "AT611904300234573201", "billing_details[name]": "Jenny Rosen",
            "billing_details[email]": "jenny@example.com"}
    pm = sandbox_post(stack, "/v1/payment_methods", urllib.parse.urlencode(form).encode(),
                      "application/x-www-form-urlencoded", key="pk_test_sandbox")
    assert pm["type"] == "sepa_debit" and pm["sepa_debit"]["last4"] == "3201"
    checkout_id = f"chk_sepa_{uuid.uuid4().hex[:10]}"
    body = {"buyer_info": {"buyer_id": "buyer_sepa"}, "checkout_id": checkout_id,
            "payment_method": {"type": "sepa_debit", "token": pm["id"], "mandate_data": MANDATE},
            "payment_orders": [{"seller_account": "seller_sepa", "amount": "42.00", "currency": "EUR",
                                "payment_order_id": f"{checkout_id}_0"}]}
    status, answer, _ = api.post_checkout(body)
    assert status == 202, (status, answer)
    def processing() -> bool:
        with urllib.request.urlopen(f"{stack.psp_url}/_sandbox/charges", timeout=10) as answer:
            charges = json.loads(answer.read())["data"]
        return any(c["transfer_group"] == checkout_id and c["status"] == "pending" for c in charges)

    wait_for(processing, 30, f"{checkout_id}'s debit at the bank")
    status, order, _ = api.get_order(f"{checkout_id}_0")
    assert (status, order["payment_order_status"]) == (200, "EXECUTING")

    sandbox_post(stack, "/_sandbox/clock", json.dumps({"advance_seconds": DEBIT_PROCESSING_SECONDS + 1}).encode(),
                 "application/json")
    done = order_when(api, f"{checkout_id}_0", "payment_order_status", {"SUCCESS", "FAILED"}, timeout=60,
                      stack=stack)
    assert done["payment_order_status"] == "SUCCESS" and done["payout_status"] == "HELD"
