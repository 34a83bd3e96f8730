"""Adyen's standard notifications (webhooks): AUTHORISATION, REFUND and CANCELLATION, HMAC-signed, POSTed to a
configured URL.

Each delivery is one `{"live": "false", "notificationItems": [{"NotificationRequestItem": {...}}]}`; the item's
`additionalData.hmacSignature` is Base64(HMAC-SHA256(hex key, "pspReference:originalReference:merchantAccountCode:
merchantReference:value:currency:eventCode:success")), Adyen's signature (`Adyen.util.generate_notification_sig`
computes the same). A delivery not answered with a 2xx is retried with growing pauses. With random faults configured
(the shared FaultInjector), deliveries also come twice and out of order, drawn from its seed, as in
psp_sandbox/webhooks.py: Adyen promises at least once, in any order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from ..clock import SimulatedClock
from ..faults import FaultInjector

_log = logging.getLogger("psp_sandbox.adyen.notifications")

DELIVERY_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 8
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 30.0
DUPLICATE_RATE = 0.25  # under random faults: a delivery sent twice
REORDER_WINDOW_S = 1.5  # under random faults: each delivery held back up to this long
_SIGNED = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference", "value", "currency",
           "eventCode", "success")


def sign(item: dict[str, Any], hmac_key: str) -> str:
    fields = {**item, "value": item["amount"]["value"], "currency": item["amount"]["currency"]}
    text = ":".join(str(fields.get(name, "")) for name in _SIGNED)
    return base64.b64encode(hmac.new(binascii.a2b_hex(hmac_key), text.encode(), hashlib.sha256).digest()).decode()


class Notifier:
    def __init__(self, clock: SimulatedClock, faults: FaultInjector, stopping: threading.Event, *,
                 hmac_key: str, merchant_account: str, url: str = ""):
        self.clock, self.faults, self.stopping = clock, faults, stopping
        self.hmac_key, self.merchant_account, self.url = hmac_key, merchant_account, url
        self._cv = threading.Condition()
        self._queue: list[tuple[float, int, bytes, int]] = []  # (due, seq, body, attempt)
        self._seq = itertools.count()
        self.emitted: list[dict[str, Any]] = []  # every item, signed, in the order emitted
        self.delivered: list[dict[str, Any]] = []  # every delivery a receiver accepted (duplicates included)
        self._thread = threading.Thread(target=self._run, name="adyen-notifications", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._cv:
            self._queue.clear()
            self.emitted.clear()
            self.delivered.clear()

    def emit(self, event_code: str, *, psp_reference: str, merchant_reference: str, value: int, currency: str,
             success: bool, original_reference: str = "", reason: str = "") -> dict[str, Any]:
        item: dict[str, Any] = {
            "amount": {"currency": currency, "value": value}, "eventCode": event_code,
            "eventDate": datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "merchantAccountCode": self.merchant_account, "merchantReference": merchant_reference,
            "pspReference": psp_reference, "reason": reason, "success": "true" if success else "false",
        }
        if original_reference:
            item["originalReference"] = original_reference
        item["additionalData"] = {"hmacSignature": sign(item, self.hmac_key)}
        body = json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}).encode()
        with self._cv:
            self.emitted.append(item)
            if self.url:
                for delay in self._draws(psp_reference, event_code):
                    heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), body, 1))
                self._cv.notify()
        return item

    def _draws(self, psp_reference: str, event_code: str) -> list[float]:
        """When to send: at once, or under random faults held back (reordered) and maybe twice."""
        seed = self.faults.webhook_chaos_seed()
        if seed is None:
            return [0.0]
        draw = random.Random(f"{seed}|{psp_reference}|{event_code}")
        delays = [draw.uniform(0, REORDER_WINDOW_S)]
        if draw.random() < DUPLICATE_RATE:
            delays.append(draw.uniform(0, REORDER_WINDOW_S))
        return delays

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self._cv:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    if self.stopping.is_set():
                        return
                    self._cv.wait(0.05 if not self._queue else max(0.0, self._queue[0][0] - time.monotonic()))
                _due, _seq, body, attempt = heapq.heappop(self._queue)
            if self._post(body):
                with self._cv:
                    self.delivered.append(json.loads(body)["notificationItems"][0]["NotificationRequestItem"])
            elif attempt < MAX_ATTEMPTS:
                pause = min(FIRST_PAUSE_S * 2 ** (attempt - 1), MAX_PAUSE_S)
                with self._cv:
                    heapq.heappush(self._queue, (time.monotonic() + pause, next(self._seq), body, attempt + 1))

    def _post(self, body: bytes) -> bool:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_S) as answer:  # noqa: S310 - configured URL
                return 200 <= answer.status < 300
        except (OSError, urllib.error.URLError) as error:
            _log.info("notification delivery failed: %s", type(error).__name__)
            return False
