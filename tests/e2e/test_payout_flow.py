"""Issue 15 end to end, over HTTP against the local stack: a checkout placed and charged, its seller registered with
a connected account created at the PSP sandbox, the delivery confirmed, the seller's net share transferred; the
order, the seller's balance and statement say so, and the sandbox holds exactly that transfer."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.waiting import wait_for
from verification.payouts import Connect
from verification.storefront import ApiClient

pytestmark = pytest.mark.xdist_group("e2e")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def place(api: ApiClient, orders: list[tuple[str, str, str]], card: str = "pm_card_visa") -> list[str]:
    """POST one checkout (the seed's body); the ids of its payment orders."""
    checkout_id = unique("chk_payout")
    body = {"buyer_info": {"buyer_id": "buyer_001", "name": "Ada Buyer", "email": "ada@example.com"},
            "checkout_id": checkout_id, "credit_card_info": {"payment_method": card},
            "payment_orders": [{"seller_account": seller, "amount": amount, "currency": currency,
                                "payment_order_id": f"{checkout_id}_{n}"}
                               for n, (seller, amount, currency) in enumerate(orders)]}
    status, answer, _ = api.post_checkout(body)
    assert status == 202, (status, answer)
    return [o["payment_order_id"] for o in body["payment_orders"]]


def order_when(api: ApiClient, order_id: str, field: str, values: set[str], timeout: float = 30.0,
               stack: Any = None) -> dict[str, Any]:
    """The order once `field` is one of `values`; the sweeper is run meanwhile (its schedule is a minute)."""
    def reached() -> dict[str, Any] | None:
        status, body, _ = api.get_order(order_id)
        assert status == 200, (status, body)
        if body.get(field) in values:
            return body
        if stack is not None:
            stack.events.fire(stack.events.schedules[0].rule_logical_id)
        return None

    return wait_for(reached, timeout, f"{order_id} {field} in {values}", interval=0.3)


def balance(api: ApiClient, seller: str) -> dict[str, dict[str, str]]:
    status, body, _ = api.balance(seller)
    assert status == 200, (status, body)
    assert body["seller_account"] == seller
    return body["balances"]


def test_a_released_order_is_transferred_once_and_the_balance_and_statement_show_it(stack, api):
    started = datetime.now(UTC) - timedelta(seconds=1)
    seller, other = unique("seller"), unique("seller")
    order_id, other_id = place(api, [(seller, "20.00", "USD"), (other, "5.00", "USD")])
    order = order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"})
    assert order["payment_order_status"] == "SUCCESS" and order["payout_status"] == "HELD"

    # The seller onboards: an Express account at the PSP, registered with a 10% commission
    account = Connect(stack.psp_url).create_account()
    status, registered, _ = api.put_seller(seller, {"psp_account_id": account, "commission_bps": 1000})
    assert status in (200, 201), registered
    status, read, _ = api.get_seller(seller)
    assert status == 200 and read["psp_account_id"] == account and read["commission_bps"] == 1000

    # The storefront confirms the delivery: 202, then the same answer with 200
    first = api.release(order_id)
    assert first[0] == 202, first
    again = api.release(order_id)
    assert again[0] == 200 and again[1] == first[1], again

    done = order_when(api, order_id, "payout_status", {"TRANSFERRED", "FAILED"}, stack=stack)
    assert done["payout_status"] == "TRANSFERRED", done
    assert (done["commission"], done["seller_net"]) == ("2.00", "18.00")
    assert done["transfer_id"].startswith("tr_")

    # The PSP's own record: one transfer for the order, of the net, to the seller's account, funded by the charge
    transfers = [t for t in Connect(stack.psp_url).transfers()
                 if t["metadata"].get("payment_order_id") == order_id]
    assert [(t["id"], t["amount"], t["currency"], t["destination"]) for t in transfers] == [
        (done["transfer_id"], 1800, "usd", account)]
    charged = [c["charge_id"] for c in stack.sandbox.charges()
               if c["metadata"].get("checkout_id") == order["checkout_id"] and c["status"] == "succeeded"]
    assert [transfers[0]["source_transaction"]] == charged
    assert Connect(stack.psp_url).account_balances()[account] == {"usd": 1800}

    # Balance: nothing pending or available any more, 18.00 transferred; the other order still HELD and pending
    assert balance(api, seller)["USD"] == {
        "pending": "0.00", "available": "0.00", "transferred": "18.00", "owed": "0.00"}
    assert balance(api, other)["USD"]["pending"] == "5.00"
    status, other_order, _ = api.get_order(other_id)
    assert other_order["payout_status"] == "HELD"

    # Statement: pay-in, release, transfer, with the order, gross, commission, net and transfer id
    end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds")
    status, statement, _ = api.statement(seller, started.isoformat(timespec="seconds"), end)
    assert status == 200, statement
    rows = [(m["kind"], m["payment_order_id"], m.get("gross"), m.get("commission"), m.get("net"),
             m.get("transfer_id")) for m in statement]
    assert rows == [("payin", order_id, "20.00", None, None, None),
                    ("release", order_id, "20.00", "2.00", "18.00", None),
                    ("transfer", order_id, None, None, "18.00", done["transfer_id"])], rows
    status, _, text = api.statement(seller, started.isoformat(timespec="seconds"), end, csv=True)
    lines = list(csv.DictReader(io.StringIO(text)))
    assert status == 200 and [line["kind"] for line in lines] == ["payin", "release", "transfer"]
    assert lines[2]["transfer_id"] == done["transfer_id"]


def test_a_seller_without_an_account_is_transferred_once_registered(stack, api):
    seller = unique("seller")
    (order_id,) = place(api, [(seller, "7.00", "EUR")])
    assert order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"})["payment_order_status"] \
        == "SUCCESS"
    assert api.release(order_id)[0] == 202
    # No account yet: released and waiting, its net available (the default commission for an unregistered one)
    waiting = order_when(api, order_id, "payout_status", {"RELEASED"})
    assert waiting["seller_net"] == "7.00" and not waiting.get("transfer_id")
    assert balance(api, seller)["EUR"]["available"] == "7.00"

    account = Connect(stack.psp_url).create_account()
    assert api.put_seller(seller, {"psp_account_id": account, "commission_bps": 500})[0] in (200, 201)
    done = order_when(api, order_id, "payout_status", {"TRANSFERRED", "FAILED"}, stack=stack)
    assert done["payout_status"] == "TRANSFERRED" and done["seller_net"] == "7.00"  # frozen at release
    assert Connect(stack.psp_url).account_balances()[account] == {"eur": 700}


def test_release_refuses_unknown_and_unsettled_orders(stack, api):
    assert api.release(unique("po_missing"))[0] == 404
    (declined,) = place(api, [(unique("seller"), "3.00", "USD")], card="pm_card_chargeDeclined")
    assert order_when(api, declined, "payment_order_status", {"SUCCESS", "FAILED"})["payment_order_status"] \
        == "FAILED"
    status, body, _ = api.release(declined)
    assert status == 409 and body["error"]["code"] == "order_not_settled", body


def test_a_seller_with_auto_release_days_0_is_released_by_the_sweeper_and_transferred(stack, api):
    seller = unique("seller")
    account = Connect(stack.psp_url).create_account()
    assert api.put_seller(seller, {"psp_account_id": account, "commission_bps": 0, "auto_release_days": 0})[0] \
        in (200, 201)
    (order_id,) = place(api, [(seller, "4.00", "USD")])
    assert order_when(api, order_id, "payment_order_status", {"SUCCESS", "FAILED"})["payment_order_status"] \
        == "SUCCESS"
    done = order_when(api, order_id, "payout_status", {"TRANSFERRED", "FAILED"}, stack=stack)  # no release call
    assert done["payout_status"] == "TRANSFERRED" and done["seller_net"] == "4.00"
