"""POST /v1/webhooks/adyen and the processor's Adyen handlers, on moto and the Adyen sandbox: the sandbox's signed
REFUND notifications (Adyen's HMAC, computed by the sandbox independently of the library that verifies them) reach
the receiver, which answers exactly `[accepted]` and queues each item; the processor finishes the refund through the
refund path. Success, refusal, duplicates, reordering, a forged signature, another merchant account, unknown codes."""

import base64
import json

import pytest

from functions.executor import refund as worker
from functions.shared.config import settings
from functions.shared.names import ADYEN_WEBHOOK_PATH
from functions.shared.tables import PaymentTables, RefundsTable
from functions.webhooks import processor, receiver
from psp_sandbox.adyen.notifications import sign
from psp_sandbox.adyen.server import HMAC_KEY
from tests.integration.test_adyen_checkout import routed  # noqa: F401 - the fixture
from tests.integration.test_adyen_refunds import ORDER, charged, eur, notified, refund, run  # noqa: F401
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_refunds import invariants_hold
from tests.support.aws import drain
from tests.support.events import FakeContext, http_event

MARKER = "4111-BODY-MARKER-must-not-be-logged"


def body_of(*items) -> bytes:
    return json.dumps({"live": "false",
                       "notificationItems": [{"NotificationRequestItem": item} for item in items]}).encode()


def post(raw: bytes, *, base64_body=False):
    event = http_event("POST", ADYEN_WEBHOOK_PATH, None)
    event["headers"] = {"content-type": "application/json"}
    if base64_body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    else:
        event["body"], event["isBase64Encoded"] = raw.decode(), False
    return receiver.handler(event, FakeContext())


def processed():
    """The processor on every queued event; their outcomes."""
    return [processor.process(body) for body in drain(settings().webhook_queue_url)]


def resigned(item, **changes):
    """An item changed and signed again with our HMAC key (what Adyen would send for that event)."""
    item = {**item, **changes}
    item["additionalData"] = {"hmacSignature": sign(item, HMAC_KEY)}
    return item


@pytest.fixture
def pending(charged):  # noqa: F811 - the fixture imported above
    """A 5.00 EUR refund of an Adyen-charged order, received by Adyen: PENDING; its REFUND notification signed."""
    refund(amount="5.00")
    assert run()[0] == worker.AWAITING_NOTIFICATION
    [item] = notified(charged, "rf_a1")
    return item


def test_a_refund_notification_is_accepted_queued_and_finishes_the_refund(pending):
    answer = post(body_of(pending))
    assert (answer["statusCode"], answer["body"]) == (200, "[accepted]")  # exactly Adyen's acknowledgement
    [body] = drain(settings().webhook_queue_url)
    queued = json.loads(body)
    assert (queued["id"], queued["type"]) == (f"adyen:{pending['pspReference']}:REFUND:true", "adyen.REFUND")
    assert "additionalData" not in queued["data"]["object"]  # only what Adyen signs goes on (and the reason, as text)
    assert processor.process(body) == "succeeded"
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["timing"]) == ("SUCCEEDED", "held")
    assert eur()["pending_minor"] == 734
    # Adyen resends it (no answer reached it): accepted again, deduplicated, nothing moves twice
    assert post(body_of(pending))["body"] == "[accepted]"
    assert processed() == [processor.DUPLICATE]
    assert eur()["pending_minor"] == 734
    invariants_hold()


def test_a_base64_body_is_decoded_before_it_is_verified(pending):
    assert post(body_of(pending), base64_body=True)["body"] == "[accepted]"
    assert processed() == ["succeeded"]


def test_a_refusal_fails_the_refund_and_a_late_success_changes_nothing(pending):
    refused = resigned(pending, success="false", reason="Insufficient balance on payment")
    assert post(body_of(refused))["body"] == "[accepted]"
    assert processed() == ["failed"]
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["failure_code"], stored["failure_reason"]) == (
        "FAILED", "adyen_refund_refused", "Insufficient balance on payment")
    assert PaymentTables.from_settings().get_order(ORDER)["refunded_minor"] == 0  # the money back in our books
    assert eur()["pending_minor"] == 1234
    # reordered: the success arrives after the refusal (a different event id): the status machine keeps FAILED
    post(body_of(pending))
    assert processed() == ["failed"]
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "FAILED"
    invariants_hold()


@pytest.mark.parametrize("code", ["REFUND_FAILED", "REFUNDED_REVERSED"])
def test_refund_failed_and_reversed_undo_a_pending_refund_and_alarm_a_succeeded_one(pending, code):
    undone = resigned(pending, eventCode=code, success="true")
    post(body_of(undone))
    assert processed() == ["failed"]
    assert RefundsTable.from_settings().get("rf_a1")["failure_code"] == f"adyen_{code.lower()}"
    assert PaymentTables.from_settings().get_order(ORDER)["refunded_minor"] == 0


def test_a_refund_failed_after_success_is_counted_for_a_human_never_moved_back(pending):
    post(body_of(pending))
    assert processed() == ["succeeded"]
    post(body_of(resigned(pending, eventCode="REFUND_FAILED")))
    assert processed() == ["failed_after_success"]
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "SUCCEEDED"
    assert eur()["pending_minor"] == 734
    reviews = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert [r["category"] for r in reviews] == ["refund_failed_after_success"]


def test_the_notification_may_come_before_the_worker_recorded_adyens_answer(charged, monkeypatch):  # noqa: F811
    """Adyen's notification can overtake the worker (its answer lost, its record not written yet): the refund is
    finished by the notification, and the worker's redelivery finds it SUCCEEDED and asks Adyen nothing more."""
    refund(amount="5.00")
    real = RefundsTable.record_psp_refund
    monkeypatch.setattr(RefundsTable, "record_psp_refund", lambda *a, **k: (_ for _ in ()).throw(
        TimeoutError("killed before the record")))
    with pytest.raises(TimeoutError):
        run()
    monkeypatch.setattr(RefundsTable, "record_psp_refund", real)
    [item] = notified(charged, "rf_a1")
    post(body_of(item))
    assert processed() == ["succeeded"]
    assert run()[0] == "succeeded"
    assert len([m for m in charged.sandbox.books.modifications if m["type"] == "refund"]) == 1
    assert RefundsTable.from_settings().get("rf_a1")["psp_refund_id"] == item["pspReference"]


@pytest.mark.parametrize("forge", ["no_signature", "wrong_key", "amount_changed", "not_json", "empty"])
def test_a_bad_signature_is_a_400_and_nothing_of_the_body_is_logged(pending, capfd, caplog, forge):
    item = {**pending, "reason": MARKER}
    if forge == "no_signature":
        item.pop("additionalData")
        raw = body_of(item)
    elif forge == "wrong_key":
        raw = body_of({**item, "additionalData": {"hmacSignature": sign(item, "00" * 32)}})
    elif forge == "amount_changed":
        raw = body_of({**item, "amount": {"currency": "EUR", "value": 1}})
    elif forge == "not_json":
        raw = f"not json {MARKER}".encode()
    else:
        raw = json.dumps({"live": "false", "notificationItems": [], "x": MARKER}).encode()
    answer = post(raw)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"]["code"] == "invalid_signature"
    assert drain(settings().webhook_queue_url) == []
    out = capfd.readouterr()
    assert MARKER not in out.out + out.err + caplog.text
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"


def test_one_forged_item_refuses_the_whole_notification(pending):
    forged = {**pending, "pspReference": "SBX9999999999999"}  # its signature no longer matches
    assert post(body_of(pending, forged))["statusCode"] == 400
    assert drain(settings().webhook_queue_url) == []


def test_an_item_for_another_merchant_account_is_accepted_and_dropped(pending):
    other = resigned(pending, merchantAccountCode="OtherECOM")
    assert post(body_of(other))["body"] == "[accepted]"  # else Adyen resends it for days
    assert drain(settings().webhook_queue_url) == []
    # in one notification with ours: ours is queued, the other dropped
    assert post(body_of(other, pending))["body"] == "[accepted]"
    assert processed() == ["succeeded"]


def test_unknown_codes_are_acknowledged_and_an_authorisation_of_a_final_charge_changes_nothing(pending, charged):  # noqa: F811, E501
    [authorisation] = [i for i in charged.sandbox.notifier.emitted if i["eventCode"] == "AUTHORISATION"]
    report = resigned(pending, eventCode="REPORT_AVAILABLE", pspReference="SBX0000000000777")
    assert post(body_of(authorisation, report))["body"] == "[accepted]"
    assert sorted(processed()) == ["already_final", "unknown_type"]
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"


def test_a_refund_notification_naming_no_refund_of_ours_or_another_amount_goes_to_review(pending):
    stranger = resigned(pending, merchantReference="made_in_the_customer_area", pspReference="SBX0000000000888")
    more = resigned(pending, amount={"currency": "EUR", "value": 600}, pspReference="SBX0000000000999")
    post(body_of(stranger, more))
    assert processed() == ["review", "review"]
    reviews = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert sorted(r["category"] for r in reviews) == ["refund_amount_mismatch", "refund_not_ours"]
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"
