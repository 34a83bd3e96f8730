"""Issue 15's API through HTTP only, against the local stack: sellers, release, balance, statement."""

from __future__ import annotations

import csv
import io
import urllib.request
import uuid

import pytest

from tests.support.waiting import wait_for
from verification.storefront import ApiClient

pytestmark = pytest.mark.xdist_group("e2e")

PAID_OUT = {"RELEASED", "TRANSFERRING"}  # the Transfer worker may have begun; without an account it waits


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def settled(api: ApiClient, seller: str, amount: str = "20.00") -> str:
    checkout_id = unique("chk")
    order_id = f"{checkout_id}_0"
    status, body, _ = api.post_checkout({
        "buyer_info": {"buyer_id": "buyer_1"}, "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [{"seller_account": seller, "amount": amount, "currency": "USD",
                            "payment_order_id": order_id}]})
    assert status == 202, body
    wait_for(lambda: api.get_order(order_id)[1].get("payment_order_status") == "SUCCESS", 30, f"{order_id} SUCCESS")
    wait_for(lambda: api.get_order(order_id)[1].get("payout_status") is not None, 10, f"{order_id} HELD")
    return order_id


def test_register_and_read_a_seller(api):
    seller = unique("seller")
    status, body, _ = api.request("PUT", f"/v1/sellers/{seller}", {"psp_account_id": "acct_1Test",
                                                                  "commission_bps": 1000})
    assert status == 200 and body["psp_account_id"] == "acct_1Test" and body["commission_bps"] == 1000
    assert api.request("GET", f"/v1/sellers/{seller}")[:2] == (200, body)
    status, refused, _ = api.request("PUT", f"/v1/sellers/{seller}", {"psp_account_id": "nope", "commission_bps": 1})
    assert (status, refused["error"]["code"]) == (422, "invalid_psp_account_id")
    status, refused, _ = api.request("PUT", f"/v1/sellers/{seller}", {"commission_bps": 10001})
    assert (status, refused["error"]["code"]) == (422, "invalid_commission")
    assert api.request("GET", f"/v1/sellers/{unique('nobody')}")[0] == 404


def test_release_is_202_then_200_and_the_order_shows_its_payout(api):
    seller = unique("seller")
    # no connected account: the pay-out waits for one (money available), whatever the worker does meanwhile
    assert api.request("PUT", f"/v1/sellers/{seller}", {"commission_bps": 1250})[0] == 200
    order_id = settled(api, seller)
    assert api.get_order(order_id)[1]["payout_status"] == "HELD"
    status, first, _ = api.request("POST", f"/v1/payments/{order_id}/release")
    assert status == 202
    assert (first["gross"], first["commission"], first["seller_net"]) == ("20.00", "2.50", "17.50")
    assert api.request("POST", f"/v1/payments/{order_id}/release")[:2] == (200, first)
    order = api.get_order(order_id)[1]
    assert order["payout_status"] in PAID_OUT and (order["commission"], order["seller_net"]) == ("2.50", "17.50")


def test_release_of_unknown_and_unsettled_orders(api):
    status, body, _ = api.request("POST", f"/v1/payments/{unique('po')}/release")
    assert (status, body["error"]["code"]) == (404, "payment_order_not_found")
    checkout_id = unique("chk")
    api.post_checkout({"buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
                       "credit_card_info": {"payment_method": "pm_card_chargeDeclined"},
                       "payment_orders": [{"seller_account": "s", "amount": "1.00", "currency": "USD",
                                           "payment_order_id": f"{checkout_id}_0"}]})
    wait_for(lambda: api.get_order(f"{checkout_id}_0")[1].get("payment_order_status") == "FAILED", 30, "declined")
    status, body, _ = api.request("POST", f"/v1/payments/{checkout_id}_0/release")
    assert (status, body["error"]["code"]) == (409, "order_not_settled")


def test_balance_and_statement_json_and_csv(api, stack):
    seller = unique("seller")
    order_id = settled(api, seller, "7.00")
    status, balance, _ = api.request("GET", f"/v1/sellers/{seller}/balance")
    assert status == 200 and balance["balances"]["USD"]["pending"] == "7.00"
    wait_for(lambda: api.request("GET", f"/v1/sellers/{seller}/statement")[1], 10, "statement index")
    status, lines, _ = api.request("GET", f"/v1/sellers/{seller}/statement")
    assert status == 200
    assert [(ln["kind"], ln["payment_order_id"], ln["pending"]) for ln in lines] == [("payin", order_id, "7.00")]
    request = urllib.request.Request(f"{stack.api_url}/v1/sellers/{seller}/statement",
                                     headers={"Accept": "text/csv", **stack.auth_headers})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(answer.read().decode())))
    assert [(r["kind"], r["payment_order_id"], r["pending"]) for r in rows] == [("payin", order_id, "7.00")]
    status, body, _ = api.request("GET", f"/v1/sellers/{seller}/statement?from=yesterday")
    assert (status, body["error"]["code"]) == (422, "invalid_time")
