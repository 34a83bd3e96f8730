"""Notifications out: signatures, event ids, and the mapping of stream images to events (no AWS)."""

import hashlib
import hmac
import json

import pytest
from boto3.dynamodb.types import TypeSerializer

from functions.notify import signing
from functions.notify.deliverer import backoff_s
from functions.notify.endpoints import InvalidEndpointUrl, validate_url
from functions.notify.events import SOURCES, event_of, source_of
from functions.shared.config import Settings, reload_settings, settings

CONFIG = Settings(payment_events_table="e", payment_orders_table="orders-t", wallet_table="w", ledger_table="l",
                  payouts_table="payouts-t")
ORDERS, PAYOUTS, REFUNDS = SOURCES[:3]
_ser = TypeSerializer()


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    """The API's order view reads the settings (whether pay-outs exist)."""
    for name, value in {"PAYMENT_EVENTS_TABLE": "e", "PAYMENT_ORDERS_TABLE": "orders-t", "WALLET_TABLE": "w",
                        "LEDGER_TABLE": "l", "PAYOUTS_TABLE": "payouts-t"}.items():
        monkeypatch.setenv(name, value)
    reload_settings()
    yield
    monkeypatch.undo()
    settings.cache_clear()


def image(values):
    return {k: _ser.serialize(v) for k, v in values.items()}


def record(source_table, old, new, event_name="MODIFY", sequence="100"):
    images = {"SequenceNumber": sequence}
    if old is not None:
        images["OldImage"] = image(old)
    if new is not None:
        images["NewImage"] = image(new)
    return {"eventName": event_name, "dynamodb": images,
            "eventSourceARN": f"arn:aws:dynamodb:us-east-1:123456789012:table/{source_table}/stream/2026-12-05T00:00"}


ORDER = {"payment_order_id": "po_1", "checkout_id": "chk_1", "seller_account": "seller_a", "amount_minor": 1234,
         "currency": "USD", "payment_method": "pm_card_visa", "payment_order_status": "EXECUTING",
         "created_at": "2026-12-05T10:00:00.000Z", "updated_at": "2026-12-05T10:00:01.000Z"}


# --- signatures -------------------------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_stripes_format():
    header = signing.signature_header("mpsec_abc", 1700000000, b'{"a":1}')
    expected = hmac.new(b"mpsec_abc", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify("mpsec_abc", header, b'{"a":1}', now_s=1700000010) == 1700000000


@pytest.mark.parametrize("secret, body, now", [
    ("mpsec_other", b'{"a":1}', 1700000000),  # another secret
    ("mpsec_abc", b'{"a":2}', 1700000000),  # another body
    ("mpsec_abc", b'{"a":1}', 1700000000 + 301),  # too old: a replay
])
def test_verification_refuses_another_secret_a_changed_body_and_an_old_timestamp(secret, body, now):
    header = signing.signature_header("mpsec_abc", 1700000000, b'{"a":1}')
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(secret, header, body, now_s=now)


@pytest.mark.parametrize("header", ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage"])
def test_a_malformed_header_is_refused(header):
    with pytest.raises(signing.SignatureInvalid):
        signing.verify("s", header, b"{}", now_s=1)


def test_any_of_several_v1_signatures_may_match():
    good = signing.compute("s", 5, b"{}")
    assert signing.verify("s", f"t=5,v1=deadbeef,v1={good}", b"{}", now_s=5) == 5


# --- stream images -> events ------------------------------------------------------------------------------------


def test_a_status_change_of_an_order_is_an_event_with_the_api_view_and_no_payment_method():
    new = {**ORDER, "payment_order_status": "SUCCESS", "psp_reference": "pi_1",
           "updated_at": "2026-12-05T10:00:05.000Z"}
    source = source_of(record("orders-t", ORDER, new)["eventSourceARN"], CONFIG)
    event = event_of(record("orders-t", ORDER, new), source)
    assert source is ORDERS
    assert event["type"] == "payment_order.success" and event["object"] == "event"
    assert event["id"].startswith("evt_") and len(event["id"]) == 36
    assert event["created"] == "2026-12-05T10:00:05.000Z"
    assert event["data"]["previous_status"] == "EXECUTING"
    payload = event["data"]["object"]
    assert payload["amount"] == "12.34" and payload["currency"] == "USD" and payload["psp_reference"] == "pi_1"
    assert "payment_method" not in json.dumps(event) and "payout_status" not in payload


def test_the_event_id_is_stable_for_a_redelivered_record_and_differs_for_another_change():
    new = {**ORDER, "payment_order_status": "SUCCESS", "updated_at": "2026-12-05T10:00:05.000Z"}
    first = event_of(record("orders-t", ORDER, new, sequence="1"), ORDERS)
    again = event_of(record("orders-t", ORDER, new, sequence="1"), ORDERS)
    assert first == again
    failed = event_of(record("orders-t", ORDER, {**new, "payment_order_status": "FAILED"}), ORDERS)
    later = event_of(record("orders-t", ORDER, {**new, "updated_at": "2026-12-05T11:00:00.000Z"}), ORDERS)
    assert len({first["id"], failed["id"], later["id"]}) == 3


def test_no_event_when_the_status_did_not_change_or_for_a_removal():
    touched = {**ORDER, "wallet_updated": True, "updated_at": "2026-12-05T10:00:09.000Z"}
    assert event_of(record("orders-t", ORDER, touched), ORDERS) is None  # EXECUTING -> EXECUTING
    assert event_of(record("orders-t", ORDER, None, event_name="REMOVE"), ORDERS) is None


def test_an_insert_is_the_first_status():
    event = event_of(record("orders-t", None, {**ORDER, "payment_order_status": "NOT_STARTED"}, "INSERT"), ORDERS)
    assert event["type"] == "payment_order.not_started" and event["data"]["previous_status"] is None


def test_a_payout_event_has_its_amounts_as_decimal_strings():
    held = {"payment_order_id": "po_1", "checkout_id": "chk_1", "seller_account": "seller_a", "currency": "JPY",
            "gross_minor": 5000, "payout_status": "HELD", "updated_at": "2026-12-05T10:00:00.000Z"}
    released = {**held, "payout_status": "RELEASED", "commission_minor": 500, "net_minor": 4500,
                "released_at": "2026-12-05T12:00:00.000Z", "updated_at": "2026-12-05T12:00:00.000Z"}
    rec = record("payouts-t", held, released)
    assert source_of(rec["eventSourceARN"], CONFIG) is PAYOUTS
    event = event_of(rec, PAYOUTS)
    assert event["type"] == "payout.released"
    payload = event["data"]["object"]
    assert (payload["gross"], payload["commission"], payload["seller_net"]) == ("5000", "500", "4500")
    assert (payload["netted"], payload["transferred"]) == (None, None)  # nothing sent yet

    # A transfer that kept back 300 of the seller's debt: the event says what was sent, not only the net
    netted = {**released, "payout_status": "TRANSFERRED", "transfer_id": "tr_1", "netted_minor": 300,
              "updated_at": "2026-12-05T13:00:00.000Z"}
    payload = event_of(record("payouts-t", released, netted), PAYOUTS)["data"]["object"]
    assert (payload["seller_net"], payload["netted"], payload["transferred"]) == ("4500", "300", "4200")


def test_a_stream_of_another_table_is_not_watched():
    assert source_of("arn:aws:dynamodb:us-east-1:1:table/wallet-t/stream/x", CONFIG) is None


# --- retries and endpoint URLs ----------------------------------------------------------------------------------


def test_the_wait_grows_until_its_cap_and_is_the_same_for_the_same_event():
    waits = [backoff_s(n, "evt_1", CONFIG) for n in range(1, 16)]
    assert waits == [backoff_s(n, "evt_1", CONFIG) for n in range(1, 16)]
    assert all(a < b for a, b in zip(waits[:9], waits[1:10], strict=True))
    assert max(waits) <= CONFIG.notification_backoff_max_s and waits[-1] == CONFIG.notification_backoff_max_s
    assert 22 <= waits[0] <= 38


@pytest.mark.parametrize("url", ["https://shop.example/hooks", "http://127.0.0.1:4000/x", "http://localhost/x",
                                 "https://shop.example:8443/a?b=c"])
def test_https_urls_and_plain_http_to_this_machine_are_accepted(url):
    assert validate_url(url) == url


@pytest.mark.parametrize("url", ["http://shop.example/hooks", "ftp://shop.example", "shop.example/hooks",
                                 "https://user:pw@shop.example/", "https://shop.example/#x", "https:///x",
                                 "https://shop.example:99999/"])
def test_other_urls_are_refused_with_invalid_url(url):
    with pytest.raises(InvalidEndpointUrl) as refused:
        validate_url(url)
    assert refused.value.code == "invalid_url" and refused.value.http_status == 422


def test_the_readmes_verification_snippet_accepts_a_delivery_and_refuses_a_forged_one():
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("# verify a MarketPay notification\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the README's own code, as a storefront would paste it
    verify = namespace["verify"]
    body = b'{"id":"evt_1","type":"payment_order.success"}'
    header = signing.signature_header("mpsec_readme", int(time.time()), body)
    assert verify("mpsec_readme", header, body)
    assert not verify("mpsec_other", header, body)
    assert not verify("mpsec_readme", header, body + b" ")
    old = signing.signature_header("mpsec_readme", int(time.time()) - 301, body)
    assert not verify("mpsec_readme", old, body)


def test_a_dispute_status_change_is_an_event():
    from functions.notify.events import dispute_payload

    item = {"dispute_id": "dp_1", "dispute_status": "WON", "currency": "USD", "amount_minor": 500,
            "reason": "fraudulent", "parts": {"po_1": {"seller_account": "s", "amount_minor": 500}}, "updated_at": "t"}
    assert dispute_payload(item)["amount"] == "5.00" and dispute_payload(item)["orders"][0]["amount"] == "5.00"
    assert SOURCES[3].name == "dispute" and SOURCES[3].status == "dispute_status"
