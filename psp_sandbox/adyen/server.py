"""The Adyen sandbox's HTTP front: Checkout API v71 (`/payments`, `/payments/{pspReference}/refunds` (answered
`received`, then a signed REFUND notification: success, or a refusal when our reference contains FAIL; a payment
whose holderName is RECEIVED or RECEIVED_DECLINED is answered `Received` and decided by its AUTHORISATION),
`/payments/{pspReference}/cancels`, `/payments/details` (a 3-D Secure challenge's result: the card
4212 3456 7891 0006 is answered `ChallengeShopper`; books.complete_challenge plays the buyer's browser)) behind one
pipeline (X-API-Key → Idempotency-Key's length → faults → Idempotency-Key → endpoint → lost answers), and
`/_sandbox/` (health, faults, payments). The fault injector and the clock are the Stripe sandbox's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..clock import SimulatedClock
from ..faults import Fault, FaultConfigError, FaultInjector, RequestInfo
from ..server import _check_loopback
from .books import AdyenApiError, Books, Payment, fingerprint, invalid
from .notifications import Notifier

VERSION = "v71"
API_KEY = "sandbox_adyen_api_key"
MERCHANT_ACCOUNT = "MarketPayECOM"
MAX_KEY_CHARS = 64  # "a maximum of 64 characters" (docs.adyen.com/development-resources/api-idempotency)
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"  # hex, as Adyen's
# A refund whose reference (our refund_id) contains this is answered `received` like any other, then refused in its
# REFUND notification (success false): Adyen's way of failing a refund after accepting the request.
REFUND_FAILURE_TRIGGER = "FAIL"
REFUND_FAILURE_REASON = "Refund refused by the sandbox (reference contains FAIL)"
_MODIFICATION = re.compile(rf"^/{VERSION}/payments/([A-Za-z0-9]{{16}})/(refunds|cancels)$")
_log = logging.getLogger("psp_sandbox.adyen")


class AdyenSandbox:
    """Books, keys, faults, clock and notifications; usable without the HTTP server."""

    def __init__(self, *, seed: int | None = None, api_key: str = API_KEY, merchant_account: str = MERCHANT_ACCOUNT,
                 hmac_key: str = HMAC_KEY, notify_url: str = ""):
        self.api_key = api_key
        self.clock = SimulatedClock()
        self.faults = FaultInjector()
        self.stopping = threading.Event()
        self.books = Books(self.clock, merchant_account)
        self.notifier = Notifier(self.clock, self.faults, self.stopping, hmac_key=hmac_key,
                                 merchant_account=merchant_account, url=notify_url)
        if seed is not None:
            self.faults.configure(seed=seed, paths=[f"/{VERSION}/"])

    def reset(self) -> None:
        self.books.reset()
        self.notifier.reset()
        self.faults.reset()
        self.clock.reset()

    def advance_clock(self, seconds: float) -> int:
        """Move simulated time forward; returns how many idempotency keys that pruned."""
        self.clock.advance(seconds)
        return self.books.prune()

    def payments(self) -> list[dict[str, Any]]:
        return self.books.payment_records()

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Run one endpoint: (HTTP status, answer); AdyenApiError for a refusal."""
        if path == f"/{VERSION}/payments/details":  # a challenge's result: authorised or refused now
            payment = self.books.details(body)
            self._notify_authorisation(payment)
            return 200, payment.answer()
        if path == f"/{VERSION}/payments":
            payment = self.books.pay(body)
            answer = payment.answer()
            self.books.settle(payment)  # a Received payment: decided now, told only by the notification below
            self._notify_authorisation(payment)
            return 200, answer
        match = _MODIFICATION.match(path)
        if match is None:
            raise AdyenApiError(404, "sbx_not_found", f"no endpoint {path}", "configuration")
        reference, kind = match.groups()
        if kind == "refunds":
            payment, answer = self.books.refund(reference, body)
            failed = REFUND_FAILURE_TRIGGER in answer["reference"]
            if failed:  # Adyen received it, then refused it: nothing refunded
                self.books.refund_refused(payment, answer)
            self.notifier.emit("REFUND", psp_reference=answer["pspReference"], original_reference=reference,
                               merchant_reference=answer["reference"], value=answer["amount"]["value"],
                               currency=payment.currency, success=not failed,
                               reason=REFUND_FAILURE_REASON if failed else "")
            return 201, answer
        payment, answer, done = self.books.cancel(reference, body)
        self.notifier.emit("CANCELLATION", psp_reference=answer["pspReference"], original_reference=reference,
                           merchant_reference=answer["reference"], value=payment.value, currency=payment.currency,
                           success=done, reason="" if done else "the payment was refunded")
        return 201, answer

    def fail_capture(self, psp_reference: str) -> dict[str, Any]:
        """Test hook: Adyen could not capture an authorised payment (an expired authorisation, the issuer's
        refusal): its CAPTURE_FAILED notification (success true: the event happened), the signed item."""
        payment = self.books.payments[psp_reference]
        return self.notifier.emit("CAPTURE_FAILED", psp_reference=self.books.new_reference(),
                                  original_reference=psp_reference, merchant_reference=payment.reference,
                                  value=payment.value, currency=payment.currency, success=True,
                                  reason="Capture failed")

    def _notify_authorisation(self, payment: Payment) -> None:
        if payment.result_code in ("Authorised", "Refused"):
            self.notifier.emit("AUTHORISATION", psp_reference=payment.psp_reference,
                               merchant_reference=payment.reference, value=payment.value, currency=payment.currency,
                               success=payment.result_code == "Authorised", reason=payment.refusal_reason)


class AdyenSandboxServer:
    """A running sandbox: `url` (its Checkout base is `url + "/v71"`), `sandbox`; `stop()` when done."""

    def __init__(self, sandbox: AdyenSandbox, httpd: ThreadingHTTPServer, thread: threading.Thread):
        self.sandbox, self._httpd, self._thread = sandbox, httpd, thread
        host, port = httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.checkout_base = f"{self.url}/{VERSION}"

    def stop(self) -> None:
        self.sandbox.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> AdyenSandboxServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_adyen_sandbox(port: int = 0, host: str = "127.0.0.1", *, sandbox: AdyenSandbox | None = None,
                        **settings: Any) -> AdyenSandboxServer:
    """Serve an Adyen sandbox on a background thread (port 0 picks a free port)."""
    _check_loopback(host)
    sandbox = sandbox or AdyenSandbox(**settings)
    handler = type("BoundAdyenHandler", (_Handler,), {"sandbox": sandbox})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="adyen-sandbox", daemon=True)
    thread.start()
    return AdyenSandboxServer(sandbox, httpd, thread)


class _Finished(Exception):
    """Answered early, or the connection dropped (a fault)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "adyen-sandbox"
    sandbox: AdyenSandbox

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # no request log: nothing of a request body (card data) reaches a log

    def do_GET(self) -> None:
        with contextlib.suppress(_Finished):
            if self.path == "/_sandbox/health":
                self._send(200, {"ok": True})
            elif self.path == "/_sandbox/payments":
                self._send(200, {"data": self.sandbox.payments()})
            else:
                self._send(404, {"status": 404, "message": "not found"})

    def do_POST(self) -> None:
        with contextlib.suppress(_Finished):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path == "/_sandbox/faults":
                self._faults(raw)
            else:
                self._api(raw)

    def _faults(self, raw: bytes) -> None:
        try:
            self.sandbox.faults.load(json.loads(raw or b"{}"))
        except (ValueError, FaultConfigError) as error:
            self._send(400, {"error": str(error)})
            return
        self._send(200, self.sandbox.faults.describe())

    def _api(self, raw: bytes) -> None:
        sandbox = self.sandbox
        if self.headers.get("X-API-Key") != sandbox.api_key:
            self._error(AdyenApiError(401, "000", "HTTP Status Response - Unauthorized", "security"))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._error(invalid("Structure of the request body is not valid JSON", "702"))
        key = self.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            self._error(invalid(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters, got {len(key)}",
                                "sbx_idempotency_key_invalid"))
        fault = sandbox.faults.decide(RequestInfo("POST", self.path, key, {"reference": body.get("reference")}))
        if fault is not None:
            self._edge_fault(fault)
        scope = sandbox.api_key
        if key:
            if fault is not None and fault.kind == "key_expired":
                sandbox.books.complete(scope, key, None)
            try:
                stored = sandbox.books.begin(scope, key, fingerprint(self.path, body))
            except AdyenApiError as refused:
                self._error(refused)
            if stored is not None:
                self._send(*stored, extra={"Idempotency-Key": key})
        try:
            if fault is not None and fault.kind == "latency":
                sandbox.stopping.wait(fault.delay_ms / 1000)
            status, answer = sandbox.handle(self.path, body)
        except AdyenApiError as refused:  # validation: nothing done, the key is free again
            if key:
                sandbox.books.complete(scope, key, None)
            self._error(refused)
        except Exception:
            _log.exception("unexpected error serving %s", self.path)
            if key:
                sandbox.books.complete(scope, key, None)
            self._error(AdyenApiError(500, "905", "An unexpected error occurred in the sandbox", "internal"))
        if key:
            sandbox.books.complete(scope, key, (status, answer))
        if fault is not None and fault.kind == "timeout" and fault.after_processing:
            sandbox.stopping.wait(fault.hold_seconds)
            self._drop()
        if fault is not None and fault.kind == "lost_response":
            self._drop()
        self._send(status, answer, extra={"Idempotency-Key": key} if key else None)

    def _edge_fault(self, fault: Fault) -> None:
        """Faults that strike before Adyen processes anything: nothing is recorded."""
        if fault.kind == "connection_reset":
            self._drop()
        if fault.kind == "timeout" and not fault.after_processing:
            self.sandbox.stopping.wait(fault.hold_seconds)
            self._drop()
        if fault.kind == "rate_limit":
            self._error(AdyenApiError(429, "sbx_rate_limited", "Too many requests", "validation"),
                        extra={"Retry-After": str(fault.retry_after)})
        if fault.kind in ("http_500", "http_502", "http_503"):
            self._error(AdyenApiError(fault.status(), "905", f"The sandbox injected an HTTP {fault.status()}",
                                      "internal"))

    def _error(self, error: AdyenApiError, extra: dict[str, str] | None = None) -> None:
        self._send(error.status, error.body(), extra=extra)

    def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)
        raise _Finished

    def _drop(self) -> None:
        """Close the socket with a TCP reset and no answer."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        raise _Finished
