"""POST /v1/webhooks/stripe: Stripe's signature over the exact bytes decides; a refused body is never logged.

The signatures here are computed as Stripe documents them (HMAC-SHA256 of "<t>.<body>" with the endpoint's
secret, header `t=...,v1=...`), independently of the SDK the receiver verifies with."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from functions.shared import psp
from functions.shared.config import reload_settings
from functions.webhooks import receiver
from tests.support.aws import drain
from tests.support.events import FakeContext, http_event

SECRET = "whsec_test_receiver"
MARKER = "4242-BODY-MARKER-must-not-be-logged"


def stripe_event(event_id="evt_1", event_type="payment_intent.succeeded") -> bytes:
    body = {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
            "api_version": "2024-06-20", "livemode": False, "account": None,
            "data": {"object": {"id": "pi_1", "object": "payment_intent", "metadata": {"note": MARKER}}}}
    return json.dumps(body, separators=(",", ":")).encode()


def signature(body: bytes, secret: str = SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def request(body: bytes, header: str | None, *, base64_body: bool = False) -> dict:
    event = http_event("POST", "/v1/webhooks/stripe", None)
    event["headers"] = {"content-type": "application/json"}
    if header is not None:
        event["headers"]["Stripe-Signature"] = header
    if base64_body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"], event["isBase64Encoded"] = body.decode(), False
    return event


@pytest.fixture
def webhook_env(aws_env, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    reload_settings()
    yield aws_env
    reload_settings()


def call(event):
    return receiver.handler(event, FakeContext())


def test_a_good_signature_queues_the_exact_event_and_answers_200(webhook_env):
    body = stripe_event("evt_good")
    answer = call(request(body, signature(body)))
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"received": True}
    assert drain(webhook_env["WEBHOOK_QUEUE_URL"]) == [body.decode()]


def test_a_base64_body_is_decoded_before_it_is_verified(webhook_env):
    body = stripe_event("evt_b64")
    assert call(request(body, signature(body), base64_body=True))["statusCode"] == 200
    assert drain(webhook_env["WEBHOOK_QUEUE_URL"]) == [body.decode()]


def test_the_secret_is_read_from_its_ssm_parameter(webhook_env, monkeypatch):
    import boto3

    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/marketpay/stripe/webhook-secret", Value="whsec_from_ssm", Type="SecureString")
    monkeypatch.delenv("WEBHOOK_SECRET")
    monkeypatch.setenv("WEBHOOK_SECRET_PARAMETER", "/marketpay/stripe/webhook-secret")
    reload_settings()
    body = stripe_event("evt_ssm")
    assert call(request(body, signature(body, "whsec_from_ssm")))["statusCode"] == 200
    assert call(request(body, signature(body)))["statusCode"] == 400  # the old test secret no longer signs


@pytest.mark.parametrize("case", ["tampered_body", "wrong_secret", "stale", "missing_header", "garbage_header",
                                  "bad_base64"])
def test_a_bad_signature_is_a_400_and_nothing_of_the_body_is_logged(webhook_env, capfd, caplog, case):
    body = stripe_event(f"evt_{case}")
    header: str | None = signature(body)
    sent, base64_body = body, False
    if case == "tampered_body":
        sent = body.replace(b'"pi_1"', b'"pi_2"')
    elif case == "wrong_secret":
        header = signature(body, "whsec_someone_else")
    elif case == "stale":
        header = signature(body, at=int(time.time()) - psp.WEBHOOK_TOLERANCE_S - 5)
    elif case == "missing_header":
        header = None
    elif case == "garbage_header":
        header = "v1=deadbeef"
    event = request(sent, header, base64_body=base64_body)
    if case == "bad_base64":
        event["body"], event["isBase64Encoded"] = "%%% not base64 " + MARKER, True

    answer = call(event)

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"]["code"] == "invalid_signature"
    assert drain(webhook_env["WEBHOOK_QUEUE_URL"]) == []
    logged = capfd.readouterr()
    everything = logged.out + logged.err + caplog.text + repr([vars(r) for r in caplog.records])
    assert "webhook refused" in everything
    assert MARKER not in everything
    assert "pi_1" not in everything
