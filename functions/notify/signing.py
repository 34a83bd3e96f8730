"""Signing of outgoing notifications, as Stripe signs its webhooks.

Header `MarketPay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. A receiver
recomputes v1 over the raw bytes it received, compares in constant time, and refuses a `t` older than its
tolerance (a replayed capture). Several `v1=` entries may appear (a receiver accepts any that matches).
"""

from __future__ import annotations

import hashlib
import hmac

DEFAULT_TOLERANCE_S = 300


class SignatureInvalid(Exception):
    """The header is malformed, no v1 matches, or its timestamp is outside the tolerance."""


def compute(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def parse(header: str) -> tuple[int, list[str]]:
    """(t, [v1 signatures]) of a header; SignatureInvalid when it has no t or no v1."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureInvalid("signature header needs t=<unix seconds> and v1=<hex>")
    return timestamp, signatures


def verify(secret: str, header: str, body: bytes, now_s: float, tolerance_s: int = DEFAULT_TOLERANCE_S) -> int:
    """Check a delivery; returns its timestamp, or raises SignatureInvalid."""
    timestamp, signatures = parse(header)
    expected = compute(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureInvalid("no v1 signature matches the body")
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureInvalid(f"timestamp {timestamp} is more than {tolerance_s} s from now")
    return timestamp
