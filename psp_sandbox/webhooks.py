"""Stripe's webhooks: endpoints (`/v1/webhook_endpoints`), events (`/v1/events`), and signed delivery.

`emit(type, object)` (SandboxState.emit calls it for every object the sandbox changes) records an Event and
queues one delivery per enabled endpoint that subscribed to its type (or to `*`). A background sender POSTs the
event's JSON with `Stripe-Signature: t=<unix>,v1=<hex>`, v1 = HMAC-SHA256(endpoint secret, "<t>.<body>"), exactly
as Stripe signs; t is the wall clock at sending (the receiver's tolerance is measured against it), the event's
`created` the sandbox clock. A delivery answered with anything but 2xx, or not at all, is retried with growing
pauses (MAX_ATTEMPTS, as Stripe retries for up to three days). With random faults configured (faults.py
`configure(seed=..., rates=...)`) deliveries also come twice and out of order, drawn from the seed, as Stripe
promises no better: at least once, in any order.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .clock import SimulatedClock
from .faults import FaultInjector

_log = logging.getLogger("psp_sandbox.webhooks")

API_VERSION = "2024-06-20"
DELIVERY_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 8  # pauses of 0.5 s doubling up to 30 s: about two minutes of retries, then the delivery is dropped
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 30.0
MAX_ENDPOINTS = 16  # Stripe allows 16 webhook endpoints per account
DUPLICATE_RATE = 0.25  # under random faults: a delivery sent twice
REORDER_WINDOW_S = 1.5  # under random faults: each delivery held back up to this long, so later events overtake it

# The types the sandbox emits and the ones MarketPay listens to (Stripe refuses a type it does not know).
EVENT_TYPES = frozenset({
    "payment_intent.created", "payment_intent.succeeded", "payment_intent.payment_failed",
    "payment_intent.canceled", "payment_intent.processing", "payment_intent.requires_action",
    "charge.refunded", "charge.refund.updated", "refund.created", "refund.updated", "refund.failed",
    "charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed", "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated", "transfer.created", "transfer.updated", "transfer.reversed",
    "account.updated", "payout.created", "payout.paid", "payout.failed",
})
_ENDPOINT_CREATE = frozenset({"url", "enabled_events", "description", "metadata", "api_version", "connect"})


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's signature of `payload` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class WebhookEndpoint:
    id: str
    url: str
    enabled_events: list[str]
    secret: str
    created: int
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "enabled"

    def subscribed(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)

    def to_stripe(self, *, with_secret: bool = False) -> dict[str, Any]:
        answer = {"id": self.id, "object": "webhook_endpoint", "api_version": API_VERSION, "application": None,
                  "created": self.created, "description": self.description, "enabled_events": list(self.enabled_events),
                  "livemode": False, "metadata": dict(self.metadata), "status": self.status, "url": self.url}
        if with_secret:  # as at Stripe: only the create answer carries it
            answer["secret"] = self.secret
        return answer


@dataclass
class Event:
    id: str
    type: str
    created: int
    obj: dict[str, Any]
    account: str | None = None
    pending_webhooks: int = 0

    def to_stripe(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id, "object": "event", "api_version": API_VERSION, "created": self.created,
            "data": {"object": self.obj}, "livemode": False, "pending_webhooks": self.pending_webhooks,
            "request": {"id": None, "idempotency_key": None}, "type": self.type}
        if self.account:
            answer["account"] = self.account
        return answer


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    event_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class Webhooks:
    """Endpoints, events and the sender. Thread-safe; the sender thread starts with the first delivery."""

    def __init__(self, clock: SimulatedClock, faults: FaultInjector, new_id: Callable[[str], str],
                 stopping: threading.Event) -> None:
        self.clock, self.faults, self.new_id, self.stopping = clock, faults, new_id, stopping
        self.endpoints: dict[str, WebhookEndpoint] = {}
        self.events: dict[str, Event] = {}
        self.delivered: list[dict[str, Any]] = []  # ground truth: every delivery attempt and its answer
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sending = 0  # deliveries taken off the queue and not recorded yet

    def reset(self) -> None:
        with self._lock:
            self.endpoints.clear()
            self.events.clear()
            self.delivered.clear()
            self._queue.clear()

    # ---- emitting ---------------------------------------------------------------------------------------

    def emit(self, event_type: str, obj: dict[str, Any], account: str | None = None) -> Event:
        """Record the event of `obj` (its Stripe JSON) and queue its deliveries."""
        event_id = self.new_id("evt")  # before our lock: new_id takes the state's (one lock order: state, ours)
        with self._lock:
            event = Event(event_id, event_type, self.clock.timestamp(), obj, account)
            self.events[event.id] = event
            targets = [e for e in self.endpoints.values() if e.subscribed(event_type)]
            event.pending_webhooks = len(targets)
            now = time.monotonic()
            seed = self.faults.webhook_chaos_seed()
            for endpoint in targets:
                copies, delay = 1, 0.0
                if seed is not None:
                    draw = random.Random(f"{seed}|webhook|{event.id}|{endpoint.id}")
                    copies = 2 if draw.random() < DUPLICATE_RATE else 1
                    delay = draw.random() * REORDER_WINDOW_S
                for copy in range(copies):
                    self._push(_Delivery(now + delay + copy * delay / 2, next(self._seq), endpoint.id, event.id))
            if targets:
                self._start()
                self._lock.notify_all()
            return event

    def _push(self, delivery: _Delivery) -> None:
        heapq.heappush(self._queue, delivery)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="psp-sandbox-webhooks", daemon=True)
            self._thread.start()

    # ---- sending ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self._lock:
                if not self._queue:
                    self._lock.wait(timeout=0.5)
                    continue
                wait = self._queue[0].due - time.monotonic()
                if wait > 0:
                    self._lock.wait(timeout=min(wait, 0.5))
                    continue
                delivery = heapq.heappop(self._queue)
                endpoint = self.endpoints.get(delivery.endpoint_id)
                event = self.events.get(delivery.event_id)
                if endpoint is None or event is None or endpoint.status != "enabled":
                    continue  # deleted or disabled meanwhile: Stripe drops it too
                self._sending += 1
            status = self._send(endpoint, event)
            with self._lock:
                self._sending -= 1
                self.delivered.append({"endpoint": endpoint.id, "event": event.id, "type": event.type,
                                       "attempt": delivery.attempt, "status": status})
                if 200 <= status < 300:
                    event.pending_webhooks = max(0, event.pending_webhooks - 1)
                elif delivery.attempt < MAX_ATTEMPTS:
                    pause = min(FIRST_PAUSE_S * 2 ** (delivery.attempt - 1), MAX_PAUSE_S)
                    self._push(_Delivery(time.monotonic() + pause, next(self._seq), endpoint.id, event.id,
                                         delivery.attempt + 1))
                else:
                    _log.warning("webhook %s to %s dropped after %d attempts", event.id, endpoint.url, MAX_ATTEMPTS)

    def _send(self, endpoint: WebhookEndpoint, event: Event) -> int:
        """POST the signed event; its HTTP status, or 0 when no answer came."""
        body = json.dumps(event.to_stripe()).encode()
        request = urllib.request.Request(endpoint.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": signature_header(body, endpoint.secret, int(time.time()))})
        try:
            with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_S) as answer:  # noqa: S310 - loopback
                return int(answer.status)
        except urllib.error.HTTPError as refused:
            return int(refused.code)
        except (urllib.error.URLError, OSError, TimeoutError):
            return 0

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """True once no delivery is queued or on the wire (tests and tools)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._sending:
                    return True
            time.sleep(0.02)
        return False

    # ---- the API ----------------------------------------------------------------------------------------

    def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - _ENDPOINT_CREATE - {"expand"}
        if unknown:
            name = sorted(unknown)[0]
            raise errors.invalid_request(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise errors.missing_param("url")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise errors.invalid_request(f"Invalid URL: {url}", param="url", code="url_invalid")
        wanted = params.get("enabled_events")
        if not isinstance(wanted, list) or not wanted or not all(isinstance(t, str) for t in wanted):
            raise errors.missing_param("enabled_events")
        for event_type in wanted:
            if event_type != "*" and event_type not in EVENT_TYPES:
                raise errors.invalid_request(f"Invalid enabled_events: {event_type} is not a valid event type",
                                             param="enabled_events")
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise errors.invalid_request("Invalid metadata: must be a hash of strings", param="metadata")
        endpoint_id = self.new_id("we")
        with self._lock:
            if len(self.endpoints) >= MAX_ENDPOINTS:
                raise errors.invalid_request(f"You have reached the maximum of {MAX_ENDPOINTS} test webhook "
                                             "endpoints.", param="url")
            endpoint = WebhookEndpoint(endpoint_id, url, list(dict.fromkeys(wanted)),
                                       "whsec_" + secrets.token_hex(24), self.clock.timestamp(),
                                       params.get("description") or None, dict(metadata))
            self.endpoints[endpoint.id] = endpoint
        return endpoint.to_stripe(with_secret=True)

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        with self._lock:
            if endpoint_id not in self.endpoints:
                raise errors.no_such("webhook_endpoint", endpoint_id)
            return self.endpoints[endpoint_id]

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        with self._lock:
            self.endpoint(endpoint_id)
            del self.endpoints[endpoint_id]
        return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}

    def event(self, event_id: str) -> Event:
        with self._lock:
            if event_id not in self.events:
                raise errors.no_such("event", event_id)
            return self.events[event_id]
