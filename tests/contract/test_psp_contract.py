"""One contract for every PSP adapter (functions/shared/psp_port.py), each against its own sandbox served in-process:
Stripe's PspClient against psp_sandbox, AdyenPsp against psp_sandbox.adyen. The sandboxes' own books are the
witness (how many payments, how much refunded), never the adapter's word. Signed webhooks are received by a small
HTTP server, as a real endpoint would receive them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.shared.errors import PspTransientError
from functions.shared.models import ChargeWork
from functions.shared.psp import PspClient
from functions.shared.psp_adyen import AdyenPsp, adyen_amount
from functions.shared.psp_port import FAILED, PENDING, REFUND_REFUSED, SUCCEEDED, PspPort, WebhookSignatureInvalid
from psp_sandbox.adyen import start_adyen_sandbox
from psp_sandbox.adyen.server import API_KEY, HMAC_KEY, MERCHANT_ACCOUNT
from psp_sandbox.server import start_sandbox

STRIPE_KEY = "sk_test_contract"


class Receiver:
    """An HTTP endpoint that answers 200 (Adyen's `[accepted]`) and keeps each delivery's body and headers."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[bytes, dict[str, str]]] = []
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append((self.rfile.read(int(self.headers["Content-Length"])), dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(b"[accepted]")

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/webhooks"

    def wait_for(self, test: Callable[[bytes], bool], timeout_s: float = 5.0) -> tuple[bytes, dict[str, str]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for body, headers in list(self.deliveries):
                if test(body):
                    return body, headers
            time.sleep(0.02)
        raise AssertionError("no such delivery arrived")

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Harness:
    """One adapter, its sandbox, and how that sandbox shows what happened."""

    name: str
    psp: PspPort
    approved: str  # payment methods: charged, declined, left waiting for the buyer (cancellable)
    declined: str
    to_cancel: str
    secret: str
    payments: Callable[[str], list[dict[str, Any]]]  # the sandbox's payments of one charge: {amount, currency}
    refunded: Callable[[str], int]  # by the payment's psp reference, in the sandbox's units
    cancelled: Callable[[str], bool]
    lose_next_charge_answer: Callable[[], None]
    signature_of: Callable[[dict[str, str]], str | None]


def _adyen_card(holder: str = "J Smith") -> str:
    return json.dumps({"type": "scheme", "encryptedCardNumber": "test_4111111111111111",
                       "encryptedExpiryMonth": "test_03", "encryptedExpiryYear": "test_2030",
                       "encryptedSecurityCode": "test_737", "holderName": holder})


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stripe_harness(receiver: Receiver) -> Iterator[Harness]:
    server = start_sandbox(port=0)
    secret = server.sandbox.webhooks.create_endpoint({"url": receiver.url, "enabled_events": ["*"]})["secret"]
    state = server.sandbox.state
    yield Harness(
        "stripe", PspClient(STRIPE_KEY, server.url), "pm_card_visa", "pm_card_chargeDeclined",
        "pm_card_authenticationRequired", secret,
        payments=lambda key: [{"amount": c["amount"], "currency": c["currency"].upper()} for c in server.charges()
                              if c["metadata"].get("charge_key") == key and c["status"] == "succeeded"],
        refunded=lambda ref: sum(c["amount_refunded"] for c in server.charges() if c["payment_intent"] == ref),
        cancelled=lambda ref: state.payment_intents[ref].status == "canceled",
        lose_next_charge_answer=lambda: server.faults.push("lost_response", match={"path": "/v1/payment_intents"}),
        signature_of=lambda headers: headers.get("Stripe-Signature"),
    )
    server.stop()


@pytest.fixture(scope="module")
def adyen_harness(receiver: Receiver) -> Iterator[Harness]:
    server = start_adyen_sandbox(notify_url=receiver.url)
    books = server.sandbox.books
    yield Harness(
        "adyen", AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base, timeout_s=3),
        _adyen_card(), _adyen_card("DECLINED"), _adyen_card(), HMAC_KEY,
        payments=lambda key: [{"amount": p.value, "currency": p.currency} for p in books.payments.values()
                              if p.reference == key and p.result_code == "Authorised"],
        refunded=lambda ref: books.payments[ref].refunded,
        cancelled=lambda ref: books.payments[ref].cancelled,
        lose_next_charge_answer=lambda: server.sandbox.faults.push("lost_response", match={"path": "/v71/payments"}),
        signature_of=lambda _headers: None,
    )
    server.stop()


@pytest.fixture(params=["stripe", "adyen"])
def psp(request: pytest.FixtureRequest) -> Harness:
    return request.getfixturevalue(f"{request.param}_harness")


def _work(payment_method: str, minor: int = 2500, currency: str = "USD") -> ChargeWork:
    checkout = f"chk_{uuid.uuid4().hex[:12]}"
    order = {"payment_order_id": f"po_{checkout}", "seller_account": "acct_1", "amount_minor": minor}
    return ChargeWork(charge_key=f"{checkout}#{currency}", checkout_id=checkout, currency=currency,
                      amount_minor=minor, payment_method=payment_method, orders=[order])


def _refund(work: ChargeWork, minor: int) -> dict[str, Any]:
    return {"refund_id": f"rf_{uuid.uuid4().hex[:12]}", "amount_minor": minor, "currency": work.currency,
            "payment_order_id": work.orders[0].payment_order_id, "reason": "contract"}


def test_both_adapters_are_the_port(psp: Harness):
    assert isinstance(psp.psp, PspPort)


def test_a_charge_succeeds_once(psp: Harness):
    work = _work(psp.approved)
    result = psp.psp.charge(work)
    assert (result.outcome, bool(result.psp_reference)) == (SUCCEEDED, True)
    assert psp.payments(work.charge_key) == [{"amount": 2500, "currency": "USD"}]


def test_a_decline_fails_with_a_reason(psp: Harness):
    work = _work(psp.declined)
    result = psp.psp.charge(work)
    assert result.outcome == FAILED and result.failure_code and result.failure_reason
    assert psp.payments(work.charge_key) == []


def test_the_same_key_sent_twice_charges_once(psp: Harness):
    work = _work(psp.approved)
    first, second = psp.psp.charge(work), psp.psp.charge(work)
    assert first.psp_reference == second.psp_reference
    assert len(psp.payments(work.charge_key)) == 1


def test_a_lost_answer_is_resolved_by_the_look_up_to_the_one_payment(psp: Harness):
    work = _work(psp.approved)
    psp.lose_next_charge_answer()
    with pytest.raises(PspTransientError):
        psp.psp.charge(work)
    assert len(psp.payments(work.charge_key)) == 1  # charged, the answer lost
    found = psp.psp.look_up(work)
    assert found is not None and found.outcome == SUCCEEDED
    assert len(psp.payments(work.charge_key)) == 1


def test_partial_refunds_then_one_past_the_remainder_is_refused(psp: Harness):
    work = _work(psp.approved, 1000)
    charged = psp.psp.charge(work)
    order = {"psp_reference": charged.psp_reference, "charge_id": charged.charge_id}
    first = psp.psp.refund(_refund(work, 300), order, look_up_first=False)
    second = psp.psp.refund(_refund(work, 500), order, look_up_first=False)
    past = psp.psp.refund(_refund(work, 201), order, look_up_first=False)
    assert REFUND_REFUSED not in (first.status, second.status) and first.psp_refund_id != second.psp_refund_id
    assert past.status == REFUND_REFUSED and past.failure_code
    assert psp.refunded(charged.psp_reference) == 800


def test_the_same_refund_sent_twice_refunds_once(psp: Harness):
    work = _work(psp.approved, 1000)
    charged = psp.psp.charge(work)
    order = {"psp_reference": charged.psp_reference, "charge_id": charged.charge_id}
    refund = _refund(work, 400)
    first = psp.psp.refund(refund, order, look_up_first=False)
    again = psp.psp.refund(refund, order, look_up_first=True)
    assert first.psp_refund_id == again.psp_refund_id
    assert psp.refunded(charged.psp_reference) == 400


def test_a_cancel(psp: Harness):
    work = _work(psp.to_cancel)
    charged = psp.psp.charge(work)
    assert charged.outcome in (SUCCEEDED, PENDING)
    psp.psp.cancel_abandoned(charged.psp_reference, work)
    assert psp.cancelled(charged.psp_reference)


def _about(reference: str) -> Callable[[bytes], bool]:
    return lambda body: reference.encode() in body


def test_a_webhook_is_verified_and_refused_when_changed(psp: Harness, receiver: Receiver):
    work = _work(psp.approved, 1234)
    charged = psp.psp.charge(work)
    body, headers = receiver.wait_for(_about(charged.psp_reference))
    signature = psp.signature_of(headers)
    event = psp.psp.verify_webhook(body, signature, psp.secret)
    assert charged.psp_reference in json.dumps(event)

    changed = body.replace(b"1234", b"1235")
    assert changed != body
    with pytest.raises(WebhookSignatureInvalid):
        psp.psp.verify_webhook(changed, signature, psp.secret)
    with pytest.raises(WebhookSignatureInvalid):
        psp.psp.verify_webhook(body, signature, "00" * 32 if psp.name == "adyen" else "whsec_other")


def test_a_refunds_outcome_comes_in_a_signed_webhook_naming_our_refund(psp: Harness, receiver: Receiver):
    """Stripe's refund events carry metadata.refund_id, Adyen's REFUND notification our refund_id as its
    merchantReference: either way the webhook path (apply_psp_refund) finds our refund from a verified event."""
    work = _work(psp.approved, 1000)
    charged = psp.psp.charge(work)
    refund = _refund(work, 250)
    made = psp.psp.refund(refund, {"psp_reference": charged.psp_reference, "charge_id": charged.charge_id},
                          look_up_first=False)
    assert made.status != REFUND_REFUSED
    body, headers = receiver.wait_for(_about(refund["refund_id"]))
    event = psp.psp.verify_webhook(body, psp.signature_of(headers), psp.secret)
    assert refund["refund_id"] in json.dumps(event) and made.psp_refund_id in json.dumps(event)


@pytest.mark.parametrize(("currency", "minor"), [("USD", 1999), ("EUR", 1050), ("JPY", 5000)])
def test_amounts_in_usd_eur_jpy(psp: Harness, currency: str, minor: int):
    work = _work(psp.approved, minor, currency)
    assert psp.psp.charge(work).outcome == SUCCEEDED
    assert psp.payments(work.charge_key) == [{"amount": minor, "currency": currency}]  # JPY: 5000 yen, not 500000


def test_adyen_minor_units_follow_adyens_table():
    from functions.shared.money import Money

    assert adyen_amount(Money(5000, "JPY")) == {"currency": "JPY", "value": 5000}
    assert adyen_amount(Money(1234, "KWD")) == {"currency": "KWD", "value": 1234}  # 3 decimals, as ISO
    assert adyen_amount(Money(5000, "CLP")) == {"currency": "CLP", "value": 500000}  # 2 at Adyen, 0 in ISO
