"""The sandbox's webhooks through the unmodified stripe SDK: endpoints as Stripe makes them (the secret once),
events signed exactly as Stripe signs (the SDK's own construct_event accepts them), retried until answered,
and duplicated / reordered under random faults."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from psp_sandbox.server import start_sandbox
from psp_sandbox.webhooks import signature_header


class Receiver:
    """A storefront-side HTTP endpoint that records what it gets; answers `fail_first` requests with 500."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[bytes, str]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                failing = outer.fail_first > 0
                outer.fail_first -= 1
                if not failing:
                    outer.received.append((body, self.headers.get("Stripe-Signature", "")))
                self.send_response(500 if failing else 200)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def events(self) -> list[dict]:
        return [json.loads(body) for body, _ in self.received]


@pytest.fixture
def sandbox():
    server = start_sandbox(port=0)
    yield server
    server.stop()


@pytest.fixture
def client(sandbox):
    return stripe.StripeClient("sk_test_local", base_addresses={"api": sandbox.url})


def endpoint(client, url, events=("*",)):
    return client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": list(events)})


def test_an_endpoint_shows_its_secret_once_and_can_be_listed_and_deleted(client):
    created = endpoint(client, "http://127.0.0.1:1/hook", ["payment_intent.succeeded"])
    assert created.secret.startswith("whsec_") and created.status == "enabled"
    fetched = client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in fetched and fetched.enabled_events == ["payment_intent.succeeded"]
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [created.id]
    assert client.v1.webhook_endpoints.delete(created.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.retrieve(created.id)


@pytest.mark.parametrize("params", [{"url": "http://x/y"}, {"enabled_events": ["*"]},
                                    {"url": "not a url", "enabled_events": ["*"]},
                                    {"url": "http://x/y", "enabled_events": ["payment_intent.exploded"]}])
def test_what_stripe_refuses_is_refused(client, params):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.create(params=params)


def test_a_charge_is_delivered_signed_as_stripe_signs_and_the_sdk_accepts_it(sandbox, client):
    receiver = Receiver()
    secret = endpoint(client, receiver.url, ["payment_intent.succeeded", "payment_intent.created"]).secret
    intent = client.v1.payment_intents.create(params={
        "amount": 1234, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
        "payment_method_types": ["card"], "metadata": {"charge_key": "chk_1#USD"}})

    assert sandbox.sandbox.webhooks.wait_idle()
    types = [e["type"] for e in receiver.events()]
    assert types == ["payment_intent.created", "payment_intent.succeeded"]
    body, header = receiver.received[1]
    event = stripe.Webhook.construct_event(body, header, secret)
    assert event.data.object.id == intent.id and event.data.object.metadata["charge_key"] == "chk_1#USD"
    timestamp = int(header.split(",")[0][2:])
    assert header == signature_header(body, secret, timestamp)
    assert client.v1.events.retrieve(event.id).type == "payment_intent.succeeded"
    assert [e.type for e in client.v1.events.list(params={"type": "payment_intent.succeeded"}).data] == [
        "payment_intent.succeeded"]


def test_a_failed_delivery_is_retried_until_answered(sandbox, client):
    receiver = Receiver(fail_first=2)
    endpoint(client, receiver.url, ["account.updated"])
    account = client.v1.accounts.create(params={"type": "express",
                                                "capabilities": {"transfers": {"requested": True}}})
    sandbox.sandbox.state.restrict_account(account.id)

    assert sandbox.sandbox.webhooks.wait_idle(15)
    [event] = receiver.events()
    assert event["type"] == "account.updated" and event["data"]["object"]["capabilities"]["transfers"] == "inactive"
    attempts = [d["status"] for d in sandbox.sandbox.webhooks.delivered]
    assert attempts == [500, 500, 200]


def test_a_decline_and_a_cancel_are_sent_too(sandbox, client):
    receiver = Receiver()
    endpoint(client, receiver.url, ["payment_intent.payment_failed", "payment_intent.canceled"])
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.create(params={"amount": 999, "currency": "usd", "confirm": True,
                                                 "payment_method": "pm_card_chargeDeclined",
                                                 "payment_method_types": ["card"]})
    pending = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd",
                                                       "payment_method_types": ["card"]})
    client.v1.payment_intents.cancel(pending.id)
    assert sandbox.sandbox.webhooks.wait_idle()
    assert sorted(e["type"] for e in receiver.events()) == ["payment_intent.canceled",
                                                             "payment_intent.payment_failed"]


def test_under_random_faults_deliveries_come_twice_and_out_of_order(sandbox, client):
    sandbox.faults.configure(seed=7, rates={"latency": 0.0001}, params={"latency": {"delay_ms": 1}})
    receiver = Receiver()
    endpoint(client, receiver.url, ["payment_intent.created"])
    for n in range(12):
        client.v1.payment_intents.create(params={"amount": 500 + n, "currency": "usd",
                                                 "payment_method_types": ["card"]})
    assert sandbox.sandbox.webhooks.wait_idle(15)
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) > len(set(ids)) == 12  # some twice
    created_order = [e["id"] for e in sorted(receiver.events(), key=lambda e: e["data"]["object"]["amount"])]
    assert list(dict.fromkeys(ids)) != list(dict.fromkeys(created_order))  # not in the order they happened
