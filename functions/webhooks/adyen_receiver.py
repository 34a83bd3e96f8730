"""POST /v1/webhooks/adyen: Adyen's standard notifications (HMAC-signed), verified, queued, accepted.

No API key or authorizer on the route: each NotificationRequestItem's `additionalData.hmacSignature` (HMAC-SHA256
with our HMAC key, hex, from SSM) authenticates it, checked with Adyen's library (functions/shared/psp_adyen.py
`verified_notification`). An item not signed with our key (or a body that is not a notification) refuses the whole
request: 400 `invalid_signature`, nothing of the body logged (its length only). Items signed for another merchant
account of the company are acknowledged and dropped (Adyen would otherwise resend them for days) and counted.

Each of our items goes to WebhookQueue as its own event in the processor's shape (`id`, `type`, `created`,
`data.object`): id `adyen:<pspReference>:<eventCode>:<success>` (the processor's dedupe key), type
`adyen.<eventCode>`, the object only what Adyen signs (and the unsigned reason, as text). Then Adyen's required
answer, exactly `[accepted]` with a 200 ("Respond with HTTP 200 OK and [accepted] in the response body", Adyen's
webhook docs). Dying after some sends and before the answer: Adyen resends, the processor's dedupe drops repeats.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from functions.shared import psp, psp_adyen, queues
from functions.shared.config import settings
from functions.shared.errors import error_body
from functions.shared.names import ADYEN_EVENT_PREFIX, adyen_event_id
from functions.webhooks.receiver import logger, metrics  # the receiver function's own: flushed by its handler

ACCEPTED = "[accepted]"  # Adyen's required acknowledgement: anything else and Adyen retries the notification
MAX_ITEMS = 100  # Adyen batches at most a few items: a body with more is not Adyen's


def receive(raw: bytes) -> dict[str, Any]:
    merchant_account = settings().adyen_merchant_account
    try:
        body, others = psp_adyen.verified_notification(raw, psp.adyen_hmac_key(), merchant_account)
        if len(body["notificationItems"]) > MAX_ITEMS:
            raise psp.WebhookSignatureInvalid(f"more than {MAX_ITEMS} notification items")
    except psp.WebhookSignatureInvalid as refused:
        logger.warning("Adyen notification refused", extra={"reason": str(refused), "body_bytes": len(raw)})
        metrics.add_metric(name="WebhooksRefused", unit=MetricUnit.Count, value=1)
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"},
                "body": error_body("invalid_signature", "a notification item is not signed with our HMAC key")}
    if others:
        logger.warning("Adyen notification items for another merchant account dropped",
                       extra={"merchant_accounts": sorted(set(others)), "items": len(others)})
        metrics.add_metric(name="AdyenNotificationsOtherAccount", unit=MetricUnit.Count, value=len(others))
    now = int(time.time())
    for item in psp_adyen.notification_items(body, merchant_account):
        event_code = str(item.get("eventCode", ""))
        event_id = adyen_event_id(str(item.get("pspReference", "")), event_code, str(item.get("success", "")))
        event_type = f"{ADYEN_EVENT_PREFIX}{event_code}"
        queues.send_webhook_event(json.dumps({"id": event_id, "type": event_type, "created": now,
                                              "data": {"object": item}}), event_type)
        logger.info("Adyen notification queued", extra={"event_id": event_id, "event_type": event_type})
        metrics.add_metric(name="WebhooksReceived", unit=MetricUnit.Count, value=1)
    return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": ACCEPTED}
