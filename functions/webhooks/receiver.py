"""POST /v1/webhooks/stripe: verify Stripe's signature over the exact body, queue the event, answer 200 fast.
POST /v1/webhooks/adyen (the same function; functions/webhooks/adyen_receiver.py): Adyen's HMAC-signed
notifications, each item queued as its own event, answered `[accepted]`.

No API key or authorizer on the route: the signature (HMAC-SHA256 with the endpoint's `whsec_` secret, read from
SSM and cached) authenticates it. A missing, malformed, stale (past 300 s) or wrong signature is a 400
`invalid_signature` and nothing of the body is logged (only its length): an unauthenticated body may carry
anything. API Gateway may hand the body base64-encoded (`isBase64Encoded`): the bytes Stripe signed are decoded
first. Dying after the send and before the answer: Stripe retries, the processor's dedupe drops the repeat.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import psp, queues
from functions.shared.errors import error_body
from functions.shared.names import ADYEN_WEBHOOK_PATH
from functions.shared.observability import service_metrics

logger = Logger(service="webhooks")
metrics = service_metrics()

SIGNATURE_HEADER = "stripe-signature"


def _raw_body(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return b""  # then no signature matches: refused like any other forged body
    return body.encode("utf-8")


def _answer(status: int, body: str) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": body}


def receive(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("rawPath") == ADYEN_WEBHOOK_PATH:
        from functions.webhooks import adyen_receiver  # imports Adyen's library: only on Adyen's route

        return adyen_receiver.receive(_raw_body(event))
    raw = _raw_body(event)
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    try:
        verified = psp.verify_webhook(raw, headers.get(SIGNATURE_HEADER), psp.webhook_secret())
    except psp.WebhookSignatureInvalid as refused:
        logger.warning("webhook refused", extra={"reason": str(refused), "body_bytes": len(raw)})
        metrics.add_metric(name="WebhooksRefused", unit=MetricUnit.Count, value=1)
        return _answer(400, error_body("invalid_signature", "the Stripe-Signature header does not sign this body"))
    event_type = str(verified.get("type", ""))
    queues.send_webhook_event(raw.decode("utf-8"), event_type)
    logger.info("webhook queued", extra={"event_id": verified.get("id"), "event_type": event_type})
    metrics.add_metric(name="WebhooksReceived", unit=MetricUnit.Count, value=1)
    return _answer(200, json.dumps({"received": True}))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return receive(event)
