"""The whole webhook loop on the local stack: `make run` registers an endpoint at the sandbox for the gateway's
/v1/webhooks/stripe and stores its secret where the receiver reads it; a real charge makes the sandbox send signed
events, the receiver queues them, the processor handles each once; a forged one is refused at the door."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from local.moto_server import free_port
from local.stack import REPO_ROOT, LocalStack, Ports
from tests.support.waiting import wait_for

TEMPLATE = REPO_ROOT / "cdk.out" / "MarketPay.template.json"


@pytest.fixture(scope="module")
def stack():
    if not TEMPLATE.exists():
        pytest.fail("cdk.out is missing: run `make synth` (make test does it first)")
    running = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
                         extra_env={"POWERTOOLS_LOG_LEVEL": "WARNING"}).start()
    yield running
    running.stop()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"{}")


def _events_of(stack: LocalStack, payment_intent: str) -> list[dict]:
    """The sandbox's events of one PaymentIntent (GET /v1/events, as a Stripe client reads them)."""
    request = urllib.request.Request(f"{stack.psp_url}/v1/events?limit=100",
                                     headers={"Authorization": "Bearer sk_test_local"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        events = json.loads(answer.read())["data"]
    return [e for e in events if e["data"]["object"].get("id") == payment_intent]


def test_the_sandbox_sends_a_signed_event_for_a_real_charge_and_the_processor_handles_it(stack):
    # Given the endpoint registered at start, and its secret in the receiver's parameter
    assert stack.webhook_endpoint_id
    # When a checkout is charged through the API
    order = {"seller_account": "seller_wh", "amount": "12.34", "currency": "USD", "payment_order_id": "po_wh_1"}
    status, _ = _post(f"{stack.api_url}/v1/payments", json.dumps({
        "buyer_info": {"buyer_id": "b_wh"}, "checkout_id": "chk_wh_1",
        "credit_card_info": {"payment_method": "pm_card_visa"}, "payment_orders": [order]}).encode(),
        {"Content-Type": "application/json", **stack.auth_headers})
    assert status == 202

    def settled() -> dict | None:
        read = urllib.request.Request(f"{stack.api_url}/v1/payments/po_wh_1", headers=stack.auth_headers)
        with urllib.request.urlopen(read, timeout=10) as answer:
            found = json.loads(answer.read())
        return found if found["payment_order_status"] == "SUCCESS" else None

    payment_intent = wait_for(settled, 30, "order SUCCESS")["psp_reference"]

    # Then the sandbox's payment_intent.succeeded for it reaches the processor, which records it DONE, once
    [succeeded] = wait_for(lambda: [e for e in _events_of(stack, payment_intent)
                                    if e["type"] == "payment_intent.succeeded"], 10, "event at the sandbox")
    table = stack.outputs["WebhookEventsTableName"]
    dynamodb = stack.client("dynamodb")

    def processed() -> dict | None:
        item = dynamodb.get_item(TableName=table, Key={"event_id": {"S": succeeded["id"]}}).get("Item")
        return item if item and item["event_status"]["S"] == "DONE" else None

    item = wait_for(processed, 30, "event processed")
    assert item["event_type"]["S"] == "payment_intent.succeeded"
    assert item["outcome"]["S"] in ("already_final", "in_flight")  # the charge's own path decided it
    assert item["attempts"]["N"] == "1"
    receivers = [i for i in stack.runtime.invocations if "WebhookReceiver" in i.function_name]
    assert receivers and all(i.outcome == "ok" for i in receivers)
    assert stack.ungranted_calls().get(next(n for n in stack.runtime.calls if "WebhookProcessor" in n), []) == []


def test_a_forged_event_is_refused_with_the_json_error(stack):
    status, body = _post(f"{stack.api_url}/v1/webhooks/stripe", b'{"id":"evt_forged","type":"payout.paid"}',
                         {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"})
    assert status == 400 and body["error"]["code"] == "invalid_signature"


def test_a_sellers_bank_payout_at_the_psp_is_recorded_on_the_seller(stack):
    # Given a seller registered with a connected account that holds money (a transfer to it, made at the sandbox)
    form = b"type=express&capabilities[transfers][requested]=true"
    status, account = _post(f"{stack.psp_url}/v1/accounts", form, {"Authorization": "Bearer sk_test_local"})
    assert status == 200
    assert _put_seller(stack, "seller_bank", account["id"]) == 200
    stack.sandbox.sandbox.state.accounts[account["id"]].balance["usd"] = 1_000
    # When the account pays 5.00 USD out to its bank (the sandbox's admin API): a payout.paid Connect event
    status, _ = _post(f"{stack.psp_url}/_sandbox/accounts/{account['id']}/payout",
                      json.dumps({"amount": 500, "currency": "usd"}).encode(), {"Content-Type": "application/json"})
    assert status == 200
    # Then the seller carries it
    sellers, dynamodb = stack.outputs["SellersTableName"], stack.client("dynamodb")

    def recorded() -> dict | None:
        item = dynamodb.get_item(TableName=sellers, Key={"seller_account": {"S": "seller_bank"}})["Item"]
        return item.get("last_bank_payout")

    payout = wait_for(recorded, 30, "bank payout recorded")["M"]
    assert (payout["status"]["S"], payout["amount_minor"]["N"], payout["currency"]["S"]) == ("paid", "500", "USD")


def _put_seller(stack: LocalStack, seller: str, account: str) -> int:
    request = urllib.request.Request(f"{stack.api_url}/v1/sellers/{seller}", method="PUT",
                                     data=json.dumps({"psp_account_id": account, "commission_bps": 0}).encode(),
                                     headers={"Content-Type": "application/json", **stack.auth_headers})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status
