"""A storefront as the API sees it: seeded checkouts (buyers, sellers, cards, declines) and an HTTP client."""

from __future__ import annotations

import http.client
import json
import random
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

SUCCEEDING_CARDS = ["pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit"]
DECLINING_CARDS = ["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds",
                   "pm_card_chargeDeclinedLostCard", "pm_card_chargeDeclinedExpiredCard"]
CURRENCIES = [("USD", 2), ("USD", 2), ("USD", 2), ("EUR", 2), ("JPY", 0)]


@dataclass
class Workload:
    checkouts: list[dict[str, Any]]

    @property
    def order_ids(self) -> list[str]:
        return [o["payment_order_id"] for c in self.checkouts for o in c["payment_orders"]]


def make_checkouts(count: int, seed: int = 1, decline_rate: float = 0.1, prefix: str = "chk",
                   sellers: int = 8, buyers: int = 20) -> Workload:
    """`count` checkouts of 2-3 orders each, the same for the same seed."""
    rng = random.Random(seed)
    checkouts = []
    for n in range(count):
        checkout_id = f"{prefix}_{seed}_{n:06d}"
        currency, exponent = rng.choice(CURRENCIES)
        card = rng.choice(DECLINING_CARDS) if rng.random() < decline_rate else rng.choice(SUCCEEDING_CARDS)
        orders = []
        for k, seller in enumerate(rng.sample(range(sellers), rng.choice([2, 3]))):
            minor = rng.randint(50, 50_000) if exponent else rng.randint(100, 50_000)
            amount = f"{minor // 100}.{minor % 100:02d}" if exponent == 2 else str(minor)
            orders.append({"seller_account": f"seller_{seller:02d}", "amount": amount, "currency": currency,
                           "payment_order_id": f"{checkout_id}_{k}"})
        buyer = rng.randrange(buyers)
        checkouts.append({
            "buyer_info": {"buyer_id": f"buyer_{buyer:03d}", "name": f"Buyer {buyer}",
                           "email": f"buyer{buyer}@example.com"},
            "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": card},
            "payment_orders": orders,
        })
    return Workload(checkouts)


class ApiClient:
    """Minimal keep-alive HTTP client for the payments API (one connection per thread)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        parsed = urlparse(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        payload = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(2):
            try:
                conn = self._conn()
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                answer_headers = {k.lower(): v for k, v in response.getheaders()}
                return response.status, (json.loads(raw) if raw else {}), answer_headers
            except (ConnectionError, http.client.HTTPException):
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_checkout(self, checkout: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("POST", "/v1/payments", checkout)

    def get_order(self, payment_order_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/payments/{payment_order_id}")

    def get_checkout(self, checkout_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self.request("GET", f"/v1/checkouts/{checkout_id}")
