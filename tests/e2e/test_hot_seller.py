"""Issue 15 "Hot seller" on the local stack: 300 checkouts to one seller at once all end SUCCESS, nothing is
dead-lettered, and the seller's wallet (summed over its shards) equals the sum of the orders and the ledger."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from functions.shared.tables import WalletTable, batch_get
from tests.support.waiting import wait_for
from verification.invariants import check, collect, peek_queue
from verification.storefront import ApiClient

pytestmark = pytest.mark.xdist_group("e2e")

ORDERS = 300
SELLER = f"seller_hot_{uuid.uuid4().hex[:6]}"


def checkout(n: int) -> dict[str, Any]:
    checkout_id = f"chk_hot_{uuid.uuid4().hex[:10]}"
    return {
        "buyer_info": {"buyer_id": f"buyer_{n % 17}", "name": "Ada Buyer", "email": "ada@example.com"},
        "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [{"seller_account": SELLER, "amount": f"{5 + n % 40}.{n % 100:02d}", "currency": "USD",
                            "payment_order_id": f"{checkout_id}_0"}],
    }


def post(api: ApiClient, body: dict[str, Any]) -> int:
    """As a storefront does: a 5xx or a dropped connection is retried with the same body."""
    status = 0
    for _ in range(5):
        try:
            status, _, _ = api.post_checkout(body)
        except OSError:
            continue
        if status < 500:
            break
    return status


class _StackWallet(WalletTable):
    client: Any

    @property
    def _db(self) -> Any:
        return self.client


def test_300_concurrent_orders_to_one_seller_all_succeed_and_the_wallet_is_their_sum(stack, api):
    # Given 300 checkouts of one order each, all to the same seller
    bodies = [checkout(n) for n in range(ORDERS)]
    expected_minor = sum(int(b["payment_orders"][0]["amount"].replace(".", "")) for b in bodies)

    # When the storefront posts them at once
    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda body: post(api, body), bodies))
    assert statuses == [202] * ORDERS

    # Then every order ends SUCCESS
    order_ids = [b["payment_orders"][0]["payment_order_id"] for b in bodies]

    db = stack.client("dynamodb")

    def all_final() -> dict[str, str] | None:
        orders = batch_get(db, stack.outputs["PaymentOrdersTableName"], "payment_order_id", order_ids,
                           ["payment_order_id", "payment_order_status"])
        seen = {order_id: orders.get(order_id, {}).get("payment_order_status") for order_id in order_ids}
        return seen if set(seen.values()) <= {"SUCCESS", "FAILED"} else None

    seen = wait_for(all_final, 300, "300 orders final", interval=2.0)
    assert set(seen.values()) == {"SUCCESS"}
    # with no dead letter
    sqs = stack.client("sqs")
    for output in ("WorkflowDlqUrl", "OrdersDlqUrl"):
        assert peek_queue(sqs, stack.outputs[output]) == [], output
    # and the seller's wallet is the sum of the orders, spread over shards, and agrees with the ledger
    wallet = _StackWallet(stack.outputs["WalletTableName"])
    wallet.client = db
    assert wallet.balances(SELLER) == {"USD": {"pending_minor": expected_minor, "available_minor": 0,
                                               "transferred_minor": 0, "owed_minor": 0}}
    statement = wallet.movements(SELLER, "2000-01-01", "2100-01-01")
    assert sorted(m["reference"] for m in statement) == sorted(order_ids)
    assert len({m["statement_key"] for m in statement}) > 16
    snapshot = collect(stack, stack.outputs, stack.sandbox.charges())
    [wallet_equals_ledger] = [r for r in check(snapshot) if r.number == 4]
    assert wallet_equals_ledger.ok, wallet_equals_ledger.violations[:5]
