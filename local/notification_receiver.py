"""A storefront's notification endpoint for local runs and tests: verifies each delivery's signature (as the
README tells a storefront to) and keeps the events it accepted.

    python -m local.notification_receiver --port 4000 --secret mpsec_...   # prints each verified event

Answers 200 to a delivery whose MarketPay-Signature verifies with the secret, 400 otherwise; `status` makes
it answer something else (a storefront that is down) without recording.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from functions.notify import signing
from functions.shared.names import EVENT_ID_HEADER, SIGNATURE_HEADER


@dataclass
class Receiver:
    secret: str
    port: int = 0
    status: int = 200  # what to answer a valid delivery; not 2xx: the delivery is not recorded
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why deliveries were refused (bad signature)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # each recorded event's request headers, by id
    attempts: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/marketpay/events"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                try:
                    signing.verify(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), body, time.time())
                    event = json.loads(body)
                    if event["id"] != self.headers.get(EVENT_ID_HEADER):
                        raise signing.SignatureInvalid("event id header differs from the body's")
                except (signing.SignatureInvalid, ValueError, KeyError) as error:
                    receiver.refused.append(str(error))
                    self._answer(400)
                    return
                if 200 <= receiver.status < 300:
                    receiver.events.append(event)
                    receiver.headers[event["id"]] = dict(self.headers.items())
                self._answer(receiver.status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="notification-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, event_type: str, key: str, timeout_s: float = 30) -> dict[str, Any]:
        """The first recorded event of `event_type` whose object has `key` as payment_order_id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["type"] == event_type and event["data"]["object"].get("payment_order_id") == key:
                    return event
            time.sleep(0.05)
        raise TimeoutError(f"no {event_type} for {key} within {timeout_s} s; got {[e['type'] for e in self.events]}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.notification_receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    receiver = Receiver(args.secret, args.port).start()
    print(f"listening on http://127.0.0.1:{args.port} (any path)", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            for event in receiver.events[seen:]:
                print(json.dumps(event), flush=True)
            seen = len(receiver.events)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
