"""Issue [local] §Tests: the flows of the design through HTTP only, against the local stack of this module.

Faults are injected with the local runtime's `before_invoke` hook; dead letters are read from the queues the
stack outputs name, as an on-call engineer would. Every wait is bounded (the whole module runs in about a minute).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from local.event_sources import EventSources, sqs_mappings
from local.lambda_runtime import Invocation
from local.stack import LocalStack
from tests.support.waiting import wait_for
from verification.invariants import peek_queue
from verification.storefront import ApiClient

pytestmark = pytest.mark.xdist_group("e2e")

FINAL = {"SUCCESS", "FAILED"}


class WalletBroken(Exception):
    """Injected by the tests. Not in the workflow's Retry list, so the first failure goes to the Catch."""


class StarterBroken(Exception):
    """Injected by the tests into the OrderStarter."""


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def checkout_body(checkout_id: str, card: str = "pm_card_visa",
                  orders: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """A request shaped as in the design: buyer_info, checkout_id, credit_card_info, payment_orders[]."""
    orders = orders or [("seller_01", "12.34", "USD"), ("seller_02", "5.00", "USD")]
    return {
        "buyer_info": {"buyer_id": "buyer_001", "name": "Ada Buyer", "email": "ada@example.com"},
        "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": card},
        "payment_orders": [
            {"seller_account": seller, "amount": amount, "currency": currency,
             "payment_order_id": f"{checkout_id}_{n}"}
            for n, (seller, amount, currency) in enumerate(orders)
        ],
    }


def wait_final(api: ApiClient, order_id: str, timeout: float = 15.0) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status, body, _ = api.get_order(order_id)
        assert status == 200, (status, body)
        return body if body["payment_order_status"] in FINAL else None

    return wait_for(final, timeout, f"{order_id} final")


def dead_letters_for(stack: LocalStack, output: str, checkout_id: str) -> list[dict[str, Any]]:
    """The dead letters about the checkout's charges (a charge key is <checkout_id>#<CURRENCY>)."""
    return [m for m in peek_queue(stack.client("sqs"), stack.outputs[output])
            if m.get("checkout_id") == checkout_id]


def intents_of(stack: LocalStack, checkout_id: str) -> list[dict[str, Any]]:
    """The charges the PSP sandbox made for the checkout (its own records, not ours)."""
    assert stack.sandbox is not None
    return [c for c in stack.sandbox.charges() if c["metadata"].get("checkout_id") == checkout_id]


@contextmanager
def failing(stack: LocalStack, function: str, name: str, error: type[Exception]) -> Iterator[list[str]]:
    """Make `function` raise `error` whenever its event names `name`; yields the request ids it failed."""
    failed: list[str] = []

    def hook(invocation: Invocation) -> None:
        if function in invocation.function_name and name in str(invocation.event):
            failed.append(invocation.context.aws_request_id)
            raise error(f"injected failure of {function} for {name}")

    assert stack.runtime is not None
    stack.runtime.before_invoke.append(hook)
    try:
        yield failed
    finally:
        stack.runtime.before_invoke.remove(hook)


@contextmanager
def orders_queue_visibility(stack: LocalStack, seconds: int) -> Iterator[None]:
    """Shorten the OrdersQueue's visibility timeout (180 s in the template) so redeliveries come in seconds.

    The pollers read the timeout when they are built, so they are rebuilt from the changed queue, and again
    from the restored one afterwards.
    """
    sqs = stack.client("sqs")
    queue_url = stack.outputs["OrdersQueueUrl"]
    original = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])["Attributes"]

    def rebuild() -> None:
        assert stack.events is not None and stack.deployed is not None
        old = stack.events
        old.stop()
        stack.events = EventSources(stack.aws_url, sqs_mappings(stack.deployed, stack.aws_url), old.schedules,
                                    schedule_interval=old.schedule_interval)
        stack.events.start()

    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(seconds)})
    rebuild()
    try:
        yield
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=original)
        rebuild()


# --- the happy path, declines, idempotency, not found ---------------------------------------------------------


def test_a_checkout_as_designed_reaches_success_within_seconds(stack, api):
    # Given a checkout of two orders to two sellers
    body = checkout_body(unique("chk_ok"))
    started = time.monotonic()

    # When the storefront posts it
    status, answer, headers = api.post_checkout(body)

    # Then it is accepted with every order NOT_STARTED or later, not marked as a replay, and readable at once
    assert status == 202, answer
    assert answer["checkout_id"] == body["checkout_id"]
    assert [o["payment_order_id"] for o in answer["payment_orders"]] == \
        [o["payment_order_id"] for o in body["payment_orders"]]
    assert "idempotent-replayed" not in headers
    # And each order reaches SUCCESS within seconds, with its PSP reference, wallet and ledger done,
    # both orders sharing the checkout's one PaymentIntent (one currency)
    for sent in body["payment_orders"]:
        order = wait_final(api, sent["payment_order_id"], timeout=15)
        assert order["payment_order_status"] == "SUCCESS", order
        assert (order["amount"], order["currency"], order["seller_account"]) == \
            (sent["amount"], sent["currency"], sent["seller_account"])
        assert order["psp_reference"] and order["wallet_updated"] and order["ledger_updated"]
        assert order["failure_code"] is None
    assert time.monotonic() - started < 15
    [intent] = intents_of(stack, body["checkout_id"])
    assert (intent["amount"], intent["currency"], intent["status"]) == (1734, "usd", "succeeded")
    # And the checkout is done once all its orders are final
    checkout = wait_for(lambda: (c := api.get_checkout(body["checkout_id"])[1]).get("is_payment_done") and c,
                        5, "is_payment_done")
    assert {o["payment_order_status"] for o in checkout["payment_orders"]} == {"SUCCESS"}


def test_a_multi_seller_multi_currency_checkout_is_charged_once_per_currency(stack, api):
    # Given two sellers paid in USD and one in EUR, with one card token
    body = checkout_body(unique("chk_multi"), orders=[("seller_07", "12.34", "USD"), ("seller_08", "5.00", "USD"),
                                                      ("seller_09", "7.50", "EUR")])
    checkout_id = body["checkout_id"]

    assert api.post_checkout(body)[0] == 202

    # Then every order succeeds, sharing its currency's PaymentIntent
    orders = [wait_final(api, o["payment_order_id"]) for o in body["payment_orders"]]
    assert [o["payment_order_status"] for o in orders] == ["SUCCESS"] * 3
    assert all(o["wallet_updated"] and o["ledger_updated"] for o in orders)
    assert orders[0]["psp_reference"] == orders[1]["psp_reference"] != orders[2]["psp_reference"]
    # And the PSP made exactly two charges, each for the sum of its currency's orders
    intents = intents_of(stack, checkout_id)
    assert sorted((c["currency"], c["amount"], c["status"]) for c in intents) == [
        ("eur", 750, "succeeded"), ("usd", 1734, "succeeded")]
    assert {c["metadata"]["charge_key"] for c in intents} == {f"{checkout_id}#USD", f"{checkout_id}#EUR"}
    assert {c["payment_intent"] for c in intents} == {o["psp_reference"] for o in orders}
    # And the wallet and the ledger took each order once, for its own share
    ledger = stack.client("dynamodb")
    for sent in body["payment_orders"]:
        item = ledger.get_item(TableName=stack.outputs["LedgerTableName"], ConsistentRead=True,
                               Key={"transaction_id": {"S": f"payin#{sent['payment_order_id']}"}})["Item"]
        amounts = sorted(int(e["M"]["amount_minor"]["N"]) for e in item["entries"]["L"])
        share = int(sent["amount"].replace(".", ""))
        assert amounts == [-share, share]
    checkout = wait_for(lambda: (c := api.get_checkout(checkout_id)[1]).get("is_payment_done") and c, 5,
                        "is_payment_done")
    assert len(checkout["payment_orders"]) == 3


@pytest.mark.parametrize(("card", "failure_code"), [
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_chargeDeclinedLostCard", "lost_card"),
])
def test_a_declined_card_fails_every_order_of_the_charge_with_its_reason(stack, api, card, failure_code):
    body = checkout_body(unique("chk_decl"), card=card, orders=[("seller_03", "42.00", "EUR"),
                                                                ("seller_10", "8.00", "EUR")])

    status, answer, _ = api.post_checkout(body)

    assert status == 202, answer
    for sent in body["payment_orders"]:
        order = wait_final(api, sent["payment_order_id"])
        assert order["payment_order_status"] == "FAILED", order
        assert order["failure_code"] == failure_code
        assert order["failure_reason"]
        assert not order["wallet_updated"] and not order["ledger_updated"]
    [intent] = intents_of(stack, body["checkout_id"])  # one attempt, for the sum
    assert (intent["amount"], intent["status"]) == (5000, "failed")


def test_a_replay_returns_the_same_answer_marked_as_replayed(api):
    body = checkout_body(unique("chk_replay"))
    first_status, first, first_headers = api.post_checkout(body)

    second_status, second, second_headers = api.post_checkout(copy.deepcopy(body))

    assert (first_status, second_status) == (202, 202)
    assert second == first
    assert "idempotent-replayed" not in first_headers
    assert second_headers.get("idempotent-replayed") == "true"


def test_a_conflicting_replay_is_409_and_changes_nothing(api):
    body = checkout_body(unique("chk_conflict"))
    assert api.post_checkout(body)[0] == 202
    changed = copy.deepcopy(body)
    changed["payment_orders"][0]["amount"] = "99.99"

    status, answer, _ = api.post_checkout(changed)

    assert status == 409, answer
    assert answer["error"]["code"] == "checkout_id_conflict"
    order = api.get_order(body["payment_orders"][0]["payment_order_id"])[1]
    assert order["amount"] == "12.34"
    assert wait_final(api, order["payment_order_id"])["payment_order_status"] == "SUCCESS"


def test_unknown_ids_are_404(api):
    status, answer, _ = api.get_order(unique("po_unknown"))
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"
    assert api.get_checkout(unique("chk_unknown"))[0] == 404


# --- dead letters --------------------------------------------------------------------------------------------


def test_an_order_whose_wallet_step_keeps_failing_ends_in_the_workflow_dlq_and_never_succeeds(stack, api):
    body = checkout_body(unique("chk_wallet_dlq"), orders=[("seller_04", "7.50", "USD")])
    checkout_id = body["checkout_id"]
    order_id = body["payment_orders"][0]["payment_order_id"]

    with failing(stack, "Wallet", order_id, WalletBroken) as failures:
        assert api.post_checkout(body)[0] == 202
        letters = wait_for(lambda: dead_letters_for(stack, "WorkflowDlqUrl", checkout_id), 20,
                           "WorkflowDlq message")
        order = api.get_order(order_id)[1]

    assert failures, "the Wallet hook never ran"
    letter = letters[0]
    assert (letter["charge_key"], letter["payment_order_ids"]) == (f"{checkout_id}#USD", [order_id])
    assert letter["error"]["Error"] == "WalletBroken"
    assert order_id in letter["error"]["Cause"]
    assert letter["execution"].startswith(f"{checkout_id}-USD-")
    assert letter["attempts"] == 1
    # The PSP charged it, the wallet never took it: the order waits for a human (redrive), never SUCCESS.
    assert order["payment_order_status"] == "EXECUTING", order
    assert not order["wallet_updated"] and not order["ledger_updated"]
    assert [c["status"] for c in intents_of(stack, checkout_id)] == ["succeeded"]


def test_the_workflow_dead_letter_names_the_failed_step(stack, api):
    body = checkout_body(unique("chk_wallet_step"), orders=[("seller_05", "3.00", "USD")])
    order_id = body["payment_orders"][0]["payment_order_id"]
    with failing(stack, "Wallet", order_id, WalletBroken):
        assert api.post_checkout(body)[0] == 202
        letter = wait_for(lambda: dead_letters_for(stack, "WorkflowDlqUrl", body["checkout_id"]), 20,
                          "WorkflowDlq message")[0]
    assert letter["step"] == "CreditWallet", letter


def test_an_order_whose_starter_keeps_failing_ends_in_the_orders_dlq_after_max_receives(stack, api):
    body = checkout_body(unique("chk_start_dlq"), orders=[("seller_06", "1.00", "USD")])
    checkout_id = body["checkout_id"]
    order_id = body["payment_orders"][0]["payment_order_id"]

    with orders_queue_visibility(stack, 1), failing(stack, "OrderStarter", checkout_id, StarterBroken) as failures:
        assert api.post_checkout(body)[0] == 202
        letters = wait_for(lambda: dead_letters_for(stack, "OrdersDlqUrl", checkout_id), 40, "OrdersDlq message",
                           interval=0.5)

    assert len(letters) == 1
    assert letters[0]["charge_key"] == f"{checkout_id}#USD"
    assert len(failures) == 5  # maxReceiveCount of the OrdersQueue's redrive policy
    order = api.get_order(order_id)[1]
    assert order["payment_order_status"] == "NOT_STARTED", order
