"""The Adyen sandbox (psp_sandbox/adyen/) over plain HTTP: what it refuses as Adyen does, its idempotency, faults
and notifications; and the Adyen adapter's reading of those faults."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from Adyen.util import is_valid_hmac_notification
from pydantic import ValidationError

from functions.shared import clock
from functions.shared.config import Settings
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.models import ChargeWork
from functions.shared.psp_adyen import KEY_SAFE_AGE, MAX_KEY_CHARS, AdyenPsp, checkout_base_for, result_of, wire_key
from functions.shared.psp_port import REFUND_REFUSED, WebhookForAnotherAccount, WebhookSignatureInvalid
from psp_sandbox.adyen import AdyenSandboxServer, start_adyen_sandbox
from psp_sandbox.adyen.books import KEY_LIFETIME_S, complete_challenge, complete_redirect
from psp_sandbox.adyen.notifications import sign
from psp_sandbox.adyen.server import API_KEY, HMAC_KEY, MERCHANT_ACCOUNT

CARD = {"type": "scheme", "encryptedCardNumber": "test_4111111111111111", "encryptedExpiryMonth": "test_03",
        "encryptedExpiryYear": "test_2030", "encryptedSecurityCode": "test_737", "holderName": "J Smith"}


@pytest.fixture
def server() -> Iterator[AdyenSandboxServer]:
    server = start_adyen_sandbox()
    yield server
    server.stop()


def _payment(reference: str = "chk_1#USD", value: int = 1000, **changes: Any) -> dict[str, Any]:
    return {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": value},
            "reference": reference, "paymentMethod": CARD, "returnUrl": "https://shop.example/return"} | changes


def _post(server: AdyenSandboxServer, path: str, body: dict[str, Any], key: str | None = None,
          api_key: str = API_KEY) -> requests.Response:
    headers = {"X-API-Key": api_key} | ({"Idempotency-Key": key} if key else {})
    return requests.post(f"{server.checkout_base}{path}", json=body, headers=headers, timeout=5)


def test_a_missing_or_wrong_api_key_is_401(server: AdyenSandboxServer):
    answer = _post(server, "/payments", _payment(), api_key="wrong")
    assert answer.status_code == 401 and answer.json()["errorType"] == "security"
    assert server.sandbox.payments() == []


def test_another_merchant_account_is_refused(server: AdyenSandboxServer):
    assert _post(server, "/payments", _payment(merchantAccount="Other")).status_code == 403


def test_the_same_key_is_replayed_and_the_same_key_with_another_body_refused(server: AdyenSandboxServer):
    first = _post(server, "/payments", _payment(), key="charge:chk_1:USD")
    again = _post(server, "/payments", _payment(), key="charge:chk_1:USD")
    other = _post(server, "/payments", _payment(value=2000), key="charge:chk_1:USD")
    assert first.json() == again.json() and again.headers["Idempotency-Key"] == "charge:chk_1:USD"
    assert other.status_code == 422
    assert len(server.sandbox.payments()) == 1


def test_a_key_past_its_lifetime_is_forgotten(server: AdyenSandboxServer):
    _post(server, "/payments", _payment(), key="k1")
    assert server.sandbox.advance_clock(KEY_LIFETIME_S + 1) == 1
    _post(server, "/payments", _payment(), key="k1")
    assert len(server.sandbox.payments()) == 2  # what an adapter must never do past the lifetime (KEY_SAFE_AGE)


def test_a_refused_request_does_not_keep_the_key(server: AdyenSandboxServer):
    assert _post(server, "/payments", _payment(returnUrl=""), key="k1").status_code == 422
    assert _post(server, "/payments", _payment(), key="k1").json()["resultCode"] == "Authorised"


@pytest.mark.parametrize(("holder", "code", "reason"), [("DECLINED", "Refused", "Refused"),
                                                         ("CARD_EXPIRED", "Refused", "Expired Card"),
                                                         ("ERROR", "Error", "Acquirer Error")])
def test_test_holder_names_give_adyens_outcomes(server: AdyenSandboxServer, holder: str, code: str, reason: str):
    answer = _post(server, "/payments", _payment(paymentMethod=CARD | {"holderName": holder})).json()
    assert (answer["resultCode"], answer["refusalReason"]) == (code, reason)


def test_only_test_encrypted_values_are_taken_and_no_card_number_is_kept(server: AdyenSandboxServer, caplog):
    caplog.set_level(logging.DEBUG)
    plain = _post(server, "/payments", _payment(paymentMethod=CARD | {"encryptedCardNumber": "4111111111111111"}))
    bad_luhn = _post(server, "/payments",
                     _payment(paymentMethod=CARD | {"encryptedCardNumber": "test_4111111111111112"}))
    assert (plain.status_code, bad_luhn.status_code) == (422, 422)
    ok = _post(server, "/payments", _payment()).json()
    assert ok["additionalData"]["cardSummary"] == "1111"
    kept = json.dumps(server.sandbox.payments()) + json.dumps(server.sandbox.notifier.emitted) + caplog.text
    assert "4111111111111111" not in kept and "411111111111" not in kept


def test_a_refund_above_what_remains_is_refused(server: AdyenSandboxServer):
    reference = _post(server, "/payments", _payment(value=1000)).json()["pspReference"]
    refund = {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": 700}, "reference": "rf_1"}
    assert _post(server, f"/payments/{reference}/refunds", refund).status_code == 201
    over = _post(server, f"/payments/{reference}/refunds", refund | {"reference": "rf_2"})
    other_currency = _post(server, f"/payments/{reference}/refunds",
                           refund | {"amount": {"currency": "EUR", "value": 1}})
    assert (over.status_code, other_currency.status_code) == (422, 422)
    assert server.sandbox.books.payments[reference].refunded == 700


def test_a_refund_is_received_and_decided_by_its_signed_refund_notification(server: AdyenSandboxServer):
    """Answered `received`; the REFUND notification says success, or (our reference contains FAIL) a refusal,
    after which the amount is refundable again."""
    reference = _post(server, "/payments", _payment(value=1000)).json()["pspReference"]
    refund = {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": 600}, "reference": "rf_ok"}
    made = _post(server, f"/payments/{reference}/refunds", refund)
    refused = _post(server, f"/payments/{reference}/refunds", refund | {"reference": "rf_FAIL_1", "amount": {
        "currency": "USD", "value": 400}})
    assert (made.status_code, made.json()["status"], refused.status_code, refused.json()["status"]) == (
        201, "received", 201, "received")
    notes = {i["merchantReference"]: i for i in server.sandbox.notifier.emitted if i["eventCode"] == "REFUND"}
    assert (notes["rf_ok"]["success"], notes["rf_FAIL_1"]["success"]) == ("true", "false")
    assert notes["rf_FAIL_1"]["originalReference"] == reference and notes["rf_FAIL_1"]["reason"]
    assert all(is_valid_hmac_notification(item, HMAC_KEY) for item in notes.values())
    assert server.sandbox.books.payments[reference].refunded == 600  # the refused one gave its amount back
    over = _post(server, f"/payments/{reference}/refunds", refund | {"reference": "rf_3", "amount": {
        "currency": "USD", "value": 401}})
    assert over.status_code == 422  # over the captured amount less what was refunded


def test_a_refund_of_a_refused_or_unknown_payment_is_refused(server: AdyenSandboxServer):
    refused = _post(server, "/payments", _payment(paymentMethod=CARD | {"holderName": "DECLINED"})).json()
    refund = {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": 1}, "reference": "rf"}
    for reference in (refused["pspReference"], "SBX9999999999999"):
        assert _post(server, f"/payments/{reference}/refunds", refund).status_code == 422


def test_notifications_are_signed_as_adyen_signs_them(server: AdyenSandboxServer):
    reference = _post(server, "/payments", _payment()).json()["pspReference"]
    _post(server, f"/payments/{reference}/refunds",
          {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": 100}, "reference": "rf"})
    _post(server, f"/payments/{reference}/cancels", {"merchantAccount": MERCHANT_ACCOUNT, "reference": "c"})
    items = server.sandbox.notifier.emitted
    assert [(i["eventCode"], i["success"]) for i in items] == [
        ("AUTHORISATION", "true"), ("REFUND", "true"), ("CANCELLATION", "false")]  # refunded: not cancellable
    assert all(is_valid_hmac_notification(item, HMAC_KEY) for item in items)


class _Receiver:
    def __init__(self) -> None:
        got: list[dict[str, Any]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"


def test_under_random_faults_notifications_come_twice_and_out_of_order():
    receiver = _Receiver()
    with start_adyen_sandbox(notify_url=receiver.url) as server:
        server.sandbox.faults.configure(seed=3, rates={"latency": 0.0001}, paths=["/v71/"])
        references = [_post(server, "/payments", _payment(f"chk_{n}#USD")).json()["pspReference"]
                      for n in range(20)]
        deadline = time.monotonic() + 10
        while len({d["notificationItems"][0]["NotificationRequestItem"]["pspReference"] for d in receiver.got}) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.6)  # REORDER_WINDOW_S: any duplicate held back has arrived
    receiver.httpd.shutdown()
    arrived = [d["notificationItems"][0]["NotificationRequestItem"]["pspReference"] for d in receiver.got]
    assert len(arrived) > 20  # duplicates
    assert arrived[:20] != references  # reordered


# -- the adapter's reading of the sandbox's faults ------------------------------------------------------------

def _work() -> ChargeWork:
    return ChargeWork(charge_key="chk_f#USD", checkout_id="chk_f", currency="USD", amount_minor=1000,
                      payment_method=json.dumps(CARD),
                      orders=[{"payment_order_id": "po_f", "seller_account": "acct_1", "amount_minor": 1000}])


@pytest.mark.parametrize("kind", ["http_500", "http_503", "rate_limit", "connection_reset"])
def test_5xx_429_and_resets_are_transient_and_charge_nothing(server: AdyenSandboxServer, kind: str):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base, timeout_s=2)
    server.sandbox.faults.push(kind, match={"path": "/v71/payments"})
    with pytest.raises(PspTransientError):
        psp.charge(_work())
    assert server.sandbox.payments() == []
    assert psp.charge(_work()).outcome == "succeeded"


def test_a_timeout_after_processing_is_transient_and_the_replay_finds_the_one_payment(server: AdyenSandboxServer):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base, timeout_s=1)
    server.sandbox.faults.push("timeout", match={"path": "/v71/payments"}, after_processing=True, hold_seconds=2)
    with pytest.raises(PspTransientError):
        psp.charge(_work())
    assert psp.look_up(_work()).outcome == "succeeded"
    assert len(server.sandbox.payments()) == 1


def test_an_acquirer_error_is_a_certain_failure_and_a_wrong_key_refused_for_good(server: AdyenSandboxServer):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base)
    error_card = json.dumps(CARD | {"holderName": "ERROR"})
    failed = psp.charge(_work().model_copy(update={"payment_method": error_card}))
    assert (failed.outcome, failed.psp_status, failed.failure_reason) == ("failed", "Error", "Acquirer Error")
    other = _work().model_copy(update={"amount_minor": 2000})
    with pytest.raises(PspPermanentError):  # the same key (same checkout and currency), another body
        psp.charge(other)


def test_result_code_error_without_a_refusal_reason_is_for_a_human():
    refused = result_of({"resultCode": "Error", "pspReference": "P", "refusalReason": "Acquirer Error"})
    assert refused.outcome == "failed"
    with pytest.raises(PspOutcomeUnknown):
        result_of({"resultCode": "Error", "pspReference": "P"})


# -- review fixes (docs/decisions.md 2026-12-06, the Adyen review) --------------------------------------------------

def _charged(server: AdyenSandboxServer, psp: AdyenPsp, checkout: str = "chk_r") -> dict[str, Any]:
    work = _work().model_copy(update={"checkout_id": checkout, "charge_key": f"{checkout}#USD"})
    return {"psp_reference": psp.charge(work).psp_reference}


def _refund_item(refund_id: str = "rf_r", minor: int = 300, **extra: Any) -> dict[str, Any]:
    return {"refund_id": refund_id, "amount_minor": minor, "currency": "USD", "payment_order_id": "po_f"} | extra


def test_a_refund_past_the_keys_safe_age_is_unknown_and_sends_nothing(server: AdyenSandboxServer):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base)
    order = _charged(server, psp)
    first_tried = clock.iso(clock.now() - KEY_SAFE_AGE - timedelta(minutes=1))
    with pytest.raises(PspOutcomeUnknown):
        psp.refund(_refund_item(psp_attempted_at=first_tried), order, look_up_first=False)
    assert server.sandbox.books.payments[order["psp_reference"]].refunded == 0
    recent = clock.iso(clock.now() - KEY_SAFE_AGE + timedelta(hours=1))
    assert psp.refund(_refund_item(psp_attempted_at=recent), order, look_up_first=False).status == "received"


def test_a_refund_refused_on_a_retry_is_unknown_never_refused(server: AdyenSandboxServer):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base)
    order = _charged(server, psp)
    too_much = _refund_item("rf_big", 1001)
    with pytest.raises(PspOutcomeUnknown):  # a look-up
        psp.refund(too_much, order, look_up_first=True)
    with pytest.raises(PspOutcomeUnknown):  # an earlier attempt recorded on the refund
        psp.refund(too_much | {"psp_attempted_at": clock.iso()}, order, look_up_first=False)
    first = psp.refund(too_much, order, look_up_first=False)  # the first attempt: certain
    assert first.status == REFUND_REFUSED and first.failure_code == "adyen_sbx_refund_exceeds_remainder"


class _NotAdyen:
    """An HTTP endpoint answering every POST with a bare 404 (no errorCode): a proxy or a wrong path."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"] or 0))
                self.send_response(404)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"not found")

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v71"


def test_a_404_without_an_adyen_error_code_is_transient_never_refused():
    not_adyen = _NotAdyen()
    try:
        psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=not_adyen.url, timeout_s=2)
        with pytest.raises(PspTransientError):
            psp.refund(_refund_item(), {"psp_reference": "SBX0000000000001"}, look_up_first=False)
        with pytest.raises(PspTransientError):
            psp.charge(_work())
    finally:
        not_adyen.httpd.shutdown()


def test_idempotency_keys_are_derived_short_and_per_merchant_account(server: AdyenSandboxServer):
    key = "charge:" + "c" * 80 + ":USD"
    derived = wire_key("test", MERCHANT_ACCOUNT, key)
    assert len(derived) <= MAX_KEY_CHARS and derived == wire_key("test", MERCHANT_ACCOUNT, key)
    assert derived not in (wire_key("test", "OtherAccount", key), wire_key("live", MERCHANT_ACCOUNT, key))
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base)
    long_checkout = "chk_" + "x" * 70  # our key for it is 84 characters
    work = _work().model_copy(update={"checkout_id": long_checkout, "charge_key": f"{long_checkout}#USD"})
    first, again = psp.charge(work), psp.charge(work)
    assert first.outcome == "succeeded" and first.psp_reference == again.psp_reference
    assert len(server.sandbox.payments()) == 1


def test_the_sandbox_refuses_a_key_longer_than_64_characters(server: AdyenSandboxServer):
    answer = _post(server, "/payments", _payment(), key="k" * 65)
    assert answer.status_code == 422 and answer.json()["errorType"] == "validation"
    assert set(answer.json()) == {"status", "errorCode", "message", "errorType"}
    assert server.sandbox.payments() == []
    assert _post(server, "/payments", _payment(), key="k" * 64).status_code == 200


def test_the_environment_is_configuration_with_test_by_default():
    assert checkout_base_for("test") == "https://checkout-test.adyen.com/v71"
    assert checkout_base_for("live", "1797a841fbb37ca7-AdyenDemo") == (  # the live prefix's shape in Adyen's docs
        "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71")
    assert AdyenPsp(API_KEY, MERCHANT_ACCOUNT)._payments.baseUrl == "https://checkout-test.adyen.com/v71"
    for environment, prefix in (("live", ""), ("live", "a/b"), ("prod", "x"), ("", "")):
        with pytest.raises(ValueError):
            AdyenPsp(API_KEY, MERCHANT_ACCOUNT, environment=environment, live_prefix=prefix)
        with pytest.raises(ValidationError):  # the same settings fail the function's cold start
            Settings.model_validate(_TABLES | {"adyen_environment": environment, "adyen_live_prefix": prefix})
    assert Settings.model_validate(_TABLES).adyen_environment == "test"


_TABLES = {name: "t" for name in ("payment_events_table", "payment_orders_table", "wallet_table", "ledger_table")}


def test_a_refund_answer_without_an_amount_is_unknown_not_a_money_error(server: AdyenSandboxServer, monkeypatch):
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT, checkout_base=server.checkout_base)
    order = _charged(server, psp)
    handle = server.sandbox.handle

    def without_amount(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, answer = handle(path, body)
        return status, {k: v for k, v in answer.items() if k != "amount"}

    monkeypatch.setattr(server.sandbox, "handle", without_amount)
    with pytest.raises(PspOutcomeUnknown):
        psp.refund(_refund_item(), order, look_up_first=False)


def _notification(merchant_account: str) -> bytes:
    item = {"amount": {"currency": "USD", "value": 1000}, "eventCode": "AUTHORISATION", "success": "true",
            "merchantAccountCode": merchant_account, "merchantReference": "chk_n#USD", "pspReference": "SBX1",
            "eventDate": "2026-12-06T12:00:00+00:00", "reason": ""}
    item["additionalData"] = {"hmacSignature": sign(item, HMAC_KEY)}
    return json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}).encode()


def test_a_notification_for_another_merchant_account_is_refused():
    psp = AdyenPsp(API_KEY, MERCHANT_ACCOUNT)
    assert psp.verify_webhook(_notification(MERCHANT_ACCOUNT), None, HMAC_KEY)["notificationItems"]
    with pytest.raises(WebhookForAnotherAccount):
        psp.verify_webhook(_notification("OtherAccount"), None, HMAC_KEY)
    assert issubclass(WebhookForAnotherAccount, WebhookSignatureInvalid)  # refused wherever a bad signature is


# -- 3-D Secure 2: ChallengeShopper, then /payments/details -------------------------------------------------------

CHALLENGED = CARD | {"encryptedCardNumber": "test_4212345678910006"}


BROWSER_INFO = {"acceptHeader": "text/html", "colorDepth": 24, "javaEnabled": False, "language": "nl-NL",
                "screenHeight": 900, "screenWidth": 1440, "timeZoneOffset": -60, "userAgent": "Mozilla/5.0"}
NATIVE = {"authenticationData": {"threeDSRequestData": {"nativeThreeDS": "preferred"}}, "channel": "Web",
          "origin": "https://shop.example", "browserInfo": BROWSER_INFO}


def _challenged(server: AdyenSandboxServer, holder: str = "J Smith", native: bool = True) -> dict[str, Any]:
    body = _payment(paymentMethod=CHALLENGED | {"holderName": holder}) | (NATIVE if native else {})
    answer = _post(server, "/payments", body, key="c3ds")
    assert answer.status_code == 200
    return answer.json()


def _authorisations(server: AdyenSandboxServer) -> list[tuple[str, str]]:
    return [(i["pspReference"], i["success"]) for i in server.sandbox.notifier.emitted
            if i["eventCode"] == "AUTHORISATION"]


def test_the_3ds2_card_is_challenged_and_nothing_is_authorised_without_details(server: AdyenSandboxServer):
    answer = _challenged(server)
    assert answer["resultCode"] == "ChallengeShopper"
    action = answer["action"]
    assert {k: action[k] for k in ("type", "subtype", "paymentMethodType")} == {
        "type": "threeDS2", "subtype": "challenge", "paymentMethodType": "scheme"}
    assert action["token"] and action["authorisationToken"]
    [payment] = server.sandbox.payments()
    assert payment["resultCode"] == "ChallengeShopper" and _authorisations(server) == []
    # a refund or cancel of it is refused: it is not authorised
    assert _post(server, f"/payments/{answer['pspReference']}/refunds",
                 {"merchantAccount": MERCHANT_ACCOUNT, "amount": {"currency": "USD", "value": 1000},
                  "reference": "r1"}).status_code == 422


@pytest.mark.parametrize("authenticated, code, reason", [(True, "Authorised", None),
                                                        (False, "Refused", "3D Not Authenticated")])
def test_details_decide_the_challenged_payment_and_its_authorisation_is_emitted(
        server: AdyenSandboxServer, authenticated: bool, code: str, reason: str | None):
    answer = _challenged(server)
    details = {"details": {"threeDSResult": complete_challenge(answer["action"], authenticated)}}
    decided = _post(server, "/payments/details", details, key="d3ds")
    assert decided.status_code == 200
    body = decided.json()
    assert (body["resultCode"], body.get("refusalReason")) == (code, reason)
    assert body["pspReference"] == answer["pspReference"] and body["amount"] == {"currency": "USD", "value": 1000}
    assert _authorisations(server) == [(answer["pspReference"], "true" if authenticated else "false")]
    # the same key replays the answer; the same details under another key are refused: the token is used
    assert _post(server, "/payments/details", details, key="d3ds").json() == body
    assert _post(server, "/payments/details", details, key="other").status_code == 422
    assert len(_authorisations(server)) == 1


def test_a_challenged_payment_authenticated_still_takes_its_holder_names_refusal(server: AdyenSandboxServer):
    answer = _challenged(server, holder="DECLINED")
    details = {"details": {"threeDSResult": complete_challenge(answer["action"])}}
    assert _post(server, "/payments/details", details).json()["resultCode"] == "Refused"


@pytest.mark.parametrize("details", [
    {}, {"details": {}}, {"details": {"threeDSResult": "not base64!"}},
    {"details": {"threeDSResult": complete_challenge({"token": "unknown"})}}])
def test_details_not_awaited_or_malformed_are_refused_and_change_nothing(server: AdyenSandboxServer,
                                                                         details: dict[str, Any]):
    _challenged(server)
    answer = _post(server, "/payments/details", details, key="bad")
    assert answer.status_code == 422 and answer.json()["errorCode"].startswith("sbx_details")
    assert [p["resultCode"] for p in server.sandbox.payments()] == ["ChallengeShopper"]


def test_details_for_a_payment_not_awaiting_them_are_refused(server: AdyenSandboxServer):
    answer = _challenged(server)
    action = answer["action"]
    assert _post(server, "/payments/details",
                 {"details": {"threeDSResult": complete_challenge(action)}}).status_code == 200
    # decided: the same token again (another request) is refused, the outcome stays
    assert _post(server, "/payments/details",
                 {"details": {"threeDSResult": complete_challenge(action, False)}}).status_code == 422
    assert [p["resultCode"] for p in server.sandbox.payments()] == ["Authorised"]


@pytest.mark.parametrize("authenticated, code", [(True, "Authorised"), (False, "Refused")])
def test_the_redirect_flow_is_decided_by_the_redirect_result_once(server: AdyenSandboxServer, authenticated: bool,
                                                                   code: str):
    answer = _challenged(server, holder="REDIRECT")
    action = answer["action"]
    assert answer["resultCode"] == "RedirectShopper" and _authorisations(server) == []
    assert {k: action[k] for k in ("type", "method", "paymentMethodType")} == {
        "type": "redirect", "method": "GET", "paymentMethodType": "scheme"}
    assert action["url"].startswith("https://") and "token" not in action
    # a threeDSResult does not answer a redirect, whatever it carries
    wrong = {"details": {"threeDSResult": complete_redirect(action)}}
    assert _post(server, "/payments/details", wrong, key="w1").status_code == 422
    details = {"details": {"redirectResult": complete_redirect(action, authenticated)}}
    decided = _post(server, "/payments/details", details, key="r1").json()
    assert decided["resultCode"] == code and decided["pspReference"] == answer["pspReference"]
    assert _authorisations(server) == [(answer["pspReference"], "true" if authenticated else "false")]
    assert _post(server, "/payments/details", details, key="r1").json() == decided  # replayed
    assert _post(server, "/payments/details", details, key="r2").status_code == 422  # the result is used


@pytest.mark.parametrize("holder", ["J Smith", "IDENTIFY"])
def test_without_asking_for_native_3ds_a_challenged_card_takes_the_redirect_flow(server: AdyenSandboxServer,
                                                                                  holder: str):
    answer = _challenged(server, holder=holder, native=False)
    assert (answer["resultCode"], answer["action"]["type"]) == ("RedirectShopper", "redirect")
    details = {"details": {"redirectResult": complete_redirect(answer["action"])}}
    assert _post(server, "/payments/details", details).json()["resultCode"] == "Authorised"


def test_a_redirect_result_does_not_answer_a_native_challenge(server: AdyenSandboxServer):
    answer = _challenged(server)
    wrong = {"details": {"redirectResult": complete_challenge(answer["action"])}}
    assert _post(server, "/payments/details", wrong).status_code == 422
    assert [p["resultCode"] for p in server.sandbox.payments()] == ["ChallengeShopper"]


def test_a_fingerprint_is_answered_with_a_challenge_of_its_own_token(server: AdyenSandboxServer):
    answer = _challenged(server, holder="IDENTIFY")
    assert (answer["resultCode"], answer["action"]["subtype"]) == ("IdentifyShopper", "fingerprint")
    fingerprinted = {"details": {"threeDSResult": complete_challenge(answer["action"])}}
    challenge = _post(server, "/payments/details", fingerprinted, key="f1").json()
    assert (challenge["resultCode"], challenge["action"]["subtype"]) == ("ChallengeShopper", "challenge")
    assert challenge["action"]["token"] != answer["action"]["token"] and _authorisations(server) == []
    # the fingerprint's token is used; a challenge result is not a fingerprint's
    assert _post(server, "/payments/details", fingerprinted, key="f2").status_code == 422
    decided = _post(server, "/payments/details",
                    {"details": {"threeDSResult": complete_challenge(challenge["action"])}}, key="c1").json()
    assert decided["resultCode"] == "Authorised"
    assert _authorisations(server) == [(answer["pspReference"], "true")]


@pytest.mark.parametrize(("without", "code"), [
    ({"browserInfo": None}, "sbx_browser_info_required"),
    ({"browserInfo": {k: v for k, v in BROWSER_INFO.items() if k != "userAgent"}}, "sbx_browser_info_required"),
    ({"origin": None}, "sbx_origin_required"), ({"origin": "http://shop.example"}, "sbx_origin_required"),
    ({"channel": "iOS"}, "sbx_channel_invalid")])
def test_native_3ds_asked_without_the_buyers_browser_is_refused_and_nothing_is_made(server: AdyenSandboxServer,
                                                                                   without: dict, code: str):
    body = {k: v for k, v in (_payment(paymentMethod=CHALLENGED) | NATIVE | without).items() if v is not None}
    answer = _post(server, "/payments", body, key="n1")
    assert (answer.status_code, answer.json()["errorCode"]) == (422, code)
    assert server.sandbox.payments() == []
