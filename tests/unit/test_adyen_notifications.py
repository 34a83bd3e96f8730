"""Adyen's notifications without AWS: what the HMAC check accepts and refuses (Adyen's library over the sandbox's
independent signature), what an item is reduced to before it is queued, its event id, and which handler each
eventCode reaches (unknown codes: none, so the registry acknowledges and counts them)."""

import json

import pytest

from functions.shared.names import adyen_event_id
from functions.shared.psp_adyen import SIGNED_FIELDS, notification_items, verified_notification
from functions.shared.psp_port import WebhookSignatureInvalid
from functions.webhooks import adyen, registry
from psp_sandbox.adyen.notifications import sign

KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ACCOUNT = "MarketPayECOM"


def item(**changes):
    base = {"amount": {"currency": "EUR", "value": 500}, "eventCode": "REFUND", "eventDate": "2026-12-07T10:00:00Z",
            "merchantAccountCode": ACCOUNT, "merchantReference": "rf_1", "originalReference": "SBX0000000000001",
            "pspReference": "SBX0000000000002", "reason": "", "success": "true", **changes}
    base["additionalData"] = {"hmacSignature": sign(base, KEY), "cardSummary": "1111", "expiryDate": "03/2030"}
    return base


def raw(*items):
    return json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in items]}).encode()


def test_a_signed_item_is_verified_and_reduced_to_what_adyen_signs():
    body, others = verified_notification(raw(item()), KEY, ACCOUNT)
    assert others == []
    [queued] = notification_items(body, ACCOUNT)
    assert set(queued) <= {*SIGNED_FIELDS, "reason"}  # no additionalData: card details never go on
    assert queued["merchantReference"] == "rf_1" and queued["amount"] == {"currency": "EUR", "value": 500}


@pytest.mark.parametrize("payload", [
    b"", b"[]", b"{}", b'{"notificationItems": []}', b'{"notificationItems": [1]}',
    raw({**item(), "additionalData": {}}),  # no signature
    raw({**item(), "success": "false"}),  # a signed field changed
    raw({**item(), "additionalData": {"hmacSignature": "not base64 !"}}),
])
def test_anything_not_signed_with_our_key_is_refused(payload):
    with pytest.raises(WebhookSignatureInvalid):
        verified_notification(payload, KEY, ACCOUNT)


def test_the_wrong_key_is_refused():
    with pytest.raises(WebhookSignatureInvalid):
        verified_notification(raw(item()), "00" * 32, ACCOUNT)


def test_items_of_another_merchant_account_are_named_and_left_out():
    body, others = verified_notification(raw(item(merchantAccountCode="OtherECOM"), item()), KEY, ACCOUNT)
    assert others == ["OtherECOM"]
    assert [i["merchantAccountCode"] for i in notification_items(body, ACCOUNT)] == [ACCOUNT]


def test_the_event_id_is_stable_per_reference_code_and_success():
    assert adyen_event_id("SBX2", "REFUND", "true") == "adyen:SBX2:REFUND:true"
    assert adyen_event_id("SBX2", "REFUND", "false") != adyen_event_id("SBX2", "REFUND", "true")


@pytest.mark.parametrize(("code", "handler"), [
    ("REFUND", adyen.refund_notification), ("REFUND_FAILED", adyen.refund_undone),
    ("REFUNDED_REVERSED", adyen.refund_undone), ("AUTHORISATION", adyen.authorisation),
    ("CANCELLATION", None), ("REPORT_AVAILABLE", None), ("CHARGEBACK", None),
])
def test_each_event_code_reaches_its_handler_and_unknown_ones_none(code, handler):
    assert registry.HANDLERS.get(f"adyen.{code}") is handler
