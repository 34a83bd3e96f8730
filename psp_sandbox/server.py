"""HTTP front of the sandbox: one request pipeline (auth → transport faults → idempotency → endpoint →
lost answers) in front of the Stripe API and the `/_sandbox/` admin API; `start_sandbox` for in-process use."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import errors
from .admin import AdminApi
from .api import ApiRequest
from .card_input import mask_card_number
from .clock import SimulatedClock
from .faults import Fault, FaultInjector, RequestInfo
from .forms import decode_form
from .idempotency import StoredResponse, fingerprint
from .sandbox import Sandbox
from .state import SandboxState

_JSON = "application/json"
_log = logging.getLogger("psp_sandbox")


class SandboxServer:
    """A running sandbox: `url`, `state`, `faults`, `clock`, `sandbox`; `stop()` when done."""

    def __init__(self, sandbox: Sandbox, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.sandbox = sandbox
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host, self.port = str(host), int(port)
        self.url = f"http://{self.host}:{self.port}"

    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def faults(self) -> FaultInjector:
        return self.sandbox.faults

    @property
    def clock(self) -> SimulatedClock:
        return self.sandbox.clock

    def charges(self) -> list[dict[str, Any]]:
        return self.sandbox.charges()

    def transfers(self) -> list[dict[str, Any]]:
        return self.sandbox.transfers()

    def reset(self, seed: int | None = None) -> None:
        self.sandbox.reset(seed)

    def advance_clock(self, seconds: float) -> int:
        return self.sandbox.advance_clock(seconds)

    def stop(self) -> None:
        self.sandbox.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the sandbox binds to loopback addresses only, not {host!r}")


def start_sandbox(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    seed: int | None = None,
    sandbox: Sandbox | None = None,
    log_requests: bool = False,
) -> SandboxServer:
    """Serve a sandbox on a background thread (port 0 picks a free port)."""
    _check_loopback(host)
    sandbox = sandbox or Sandbox(seed=seed)
    sandbox.stopping.clear()
    handler = type(
        "BoundHandler",
        (_Handler,),
        {"sandbox": sandbox, "admin": AdminApi(sandbox), "log_requests": log_requests},
    )
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, name="psp-sandbox", daemon=True)
    thread.start()
    return SandboxServer(sandbox, httpd, thread)


class _Finished(Exception):
    """The request was answered early or its connection dropped (a fault): stop here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "psp-sandbox"
    sys_version = ""
    sandbox: Sandbox
    admin: AdminApi
    log_requests: bool

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        if self.log_requests:
            super().log_message(format, *args)

    def _serve(self, method: str) -> None:
        self.close_connection = True
        self.request_id = self.sandbox.next_request_id()
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            if url.path.startswith("/_sandbox/"):
                status, payload, content_type = self.admin.handle(method, url.path, url.query, body)
                self._send(status, payload, content_type=content_type)
            else:
                self._stripe(method, url.path, url.query, body)
        except _Finished:
            pass

    # ---- the Stripe pipeline ------------------------------------------------------------------------------

    def _stripe(self, method: str, path: str, query: str, body: str) -> None:
        sandbox = self.sandbox
        params = decode_form(query if method == "GET" else body)
        try:
            api_key = self._api_key(method, path, params)
        except errors.StripeApiError as exc:
            self._send_error(exc)
            return
        masked = mask_card_number(params)  # the faults and the idempotency store never see a card number
        key = self.headers.get("Idempotency-Key") if method == "POST" else None
        fault = sandbox.faults.decide(RequestInfo(method, path, key, masked))
        scope = (api_key, self.headers.get("Stripe-Account") or "")

        if fault is not None:
            self._edge_fault(fault)  # answers or drops, or returns when the fault acts later
            if fault.kind == "key_expired" and key:
                sandbox.idempotency.expire(scope, key)

        fp = fingerprint(method, path, masked)
        if key:
            try:
                stored = sandbox.idempotency.begin(scope, key, fp)
            except errors.StripeApiError as exc:
                self._send_error(exc)
                return
            if stored is not None:
                self._send(
                    stored.status,
                    stored.body,
                    extra={
                        "Idempotent-Replayed": "true",
                        "Original-Request": stored.request_id,
                        "Idempotency-Key": key,
                    },
                )
                return
        try:
            if fault is not None and fault.kind == "latency":
                sandbox.stopping.wait(fault.delay_ms / 1000)
            status, payload, headers, storable = self._execute(ApiRequest(method, path, params, key), fault)
            if key:
                if storable:
                    sandbox.idempotency.complete(scope, key, StoredResponse(status, payload, self.request_id))
                else:
                    sandbox.idempotency.release(scope, key)
        except BaseException:
            if key:
                sandbox.idempotency.release(scope, key)
            raise
        if fault is not None and fault.kind == "lost_response":
            self._drop()
        if fault is not None and fault.kind == "timeout" and fault.after_processing:
            self._hold_then_drop(fault)
        if key:
            headers["Idempotency-Key"] = key
        self._send(status, payload, extra=headers)

    def _execute(self, request: ApiRequest, fault: Fault | None) -> tuple[int, bytes, dict[str, str], bool]:
        """Run the endpoint: (status, body, headers, whether the idempotency layer stores it)."""
        if fault is not None and fault.kind == "http_500" and fault.stored:
            exc = errors.api_error()
            return exc.status, self._json(exc.body()), self._retry_header(fault), True
        try:
            return 200, self._json(self.sandbox.api.handle(request)), {}, True
        except errors.StripeApiError as exc:
            return exc.status, self._json(exc.body()), dict(exc.headers), exc.stored
        except Exception:  # a bug in the sandbox: Stripe answers 500 and stores it
            _log.exception("unexpected error serving %s %s", request.method, request.path)
            exc = errors.api_error()
            return exc.status, self._json(exc.body()), {}, True

    def _edge_fault(self, fault: Fault) -> None:
        """Faults that strike before the API runs: they answer (or drop) here, nothing is recorded."""
        if fault.kind == "connection_reset":
            self._drop()
        if fault.kind == "timeout" and not fault.after_processing:
            self._hold_then_drop(fault)
        if fault.kind in ("http_502", "http_503", "rate_limit") or (fault.kind == "http_500" and not fault.stored):
            if fault.kind == "rate_limit":
                exc = errors.StripeApiError(
                    429,
                    "invalid_request_error",
                    "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
                    code="rate_limit",
                    headers={"Retry-After": str(fault.retry_after)},
                )
            else:
                exc = errors.api_error(
                    f"The sandbox injected an HTTP {fault.status()} ({fault.kind}).", status=fault.status()
                )
            exc.headers.update(self._retry_header(fault))
            self._send_error(exc)
            raise _Finished  # answered; nothing else happens for this request

    @staticmethod
    def _retry_header(fault: Fault) -> dict[str, str]:
        if fault.should_retry is None:
            return {}
        return {"Stripe-Should-Retry": "true" if fault.should_retry else "false"}

    def _api_key(self, method: str, path: str, params: dict[str, Any]) -> str:
        """The secret key of the request; a publishable key (`pk_test_`, as a Bearer or as Stripe.js's `key`
        parameter) only for creating a PaymentMethod, as at Stripe."""
        api_key = self._header_key() or str(params.get("key") or "")
        if api_key.startswith("pk_test_"):
            if (method, path) != ("POST", "/v1/payment_methods"):
                raise errors.authentication_error(
                    "This API call cannot be made with a publishable API key. Please use a secret API key. You can "
                    "find a list of your API keys at https://dashboard.stripe.com/account/apikeys."
                )
            return api_key
        if not api_key:
            raise errors.authentication_error(
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
        if not api_key.startswith(("sk_test_", "rk_test_")):
            raise errors.authentication_error(f"Invalid API Key provided: {api_key[:8]}****")
        return api_key

    def _header_key(self) -> str:
        header = self.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            api_key = header[len("Bearer ") :].strip()
        elif header.startswith("Basic "):
            try:
                api_key = base64.b64decode(header[len("Basic ") :]).decode().split(":", 1)[0]
            except ValueError:
                api_key = ""
        else:
            api_key = ""
        return api_key

    # ---- answers -----------------------------------------------------------------------------------------

    @staticmethod
    def _json(payload: Any) -> bytes:
        return json.dumps(payload, indent=2, sort_keys=False).encode()

    def _send_error(self, exc: errors.StripeApiError) -> None:
        self._send(exc.status, self._json(exc.body()), extra=dict(exc.headers))

    def _send(
        self,
        status: int,
        payload: bytes | dict[str, Any] | str,
        *,
        content_type: str = _JSON,
        extra: dict[str, str] | None = None,
    ) -> None:
        if isinstance(payload, dict):
            payload = self._json(payload)
        elif isinstance(payload, str):
            payload = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", self.request_id)
        self.send_header("Connection", "close")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client went away (its own timeout)
            self.wfile.write(payload)

    def _hold_then_drop(self, fault: Fault) -> None:
        self.sandbox.stopping.wait(fault.hold_seconds)
        self._drop()

    def _drop(self) -> None:
        """Close the socket with a TCP reset and no answer."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass
        raise _Finished


def wait_until_ready(url: str, timeout: float = 5.0) -> None:
    """Poll `/_sandbox/health` (for a sandbox started as a separate process)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
