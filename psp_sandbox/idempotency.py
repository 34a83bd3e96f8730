"""Idempotent requests as Stripe documents them (docs.stripe.com/api/idempotent_requests).

- A key is scoped to the API key (and connected account) that sent it.
- The first response whose endpoint began executing (success, card decline, even a 500) is stored with its status
  and body and replayed for the same key with `Idempotent-Replayed: true`. Validation failures are not stored.
- The same key with different parameters (or another endpoint) is an `idempotency_error` (400).
- A request whose key is still in flight gets 409 `idempotency_key_in_use` with `Stripe-Should-Retry: true`.
- Keys are pruned 24 hours after their first use, measured on the sandbox's simulated clock.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from . import errors
from .clock import SimulatedClock

KEY_LIFETIME_SECONDS = 24 * 3600


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([method.upper(), path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class StoredResponse:
    status: int
    body: bytes
    request_id: str


@dataclass(slots=True)
class _Record:
    fingerprint: str
    created: float
    response: StoredResponse | None = None  # None while the first request is in flight


Scope = tuple[str, str]  # (api key, Stripe-Account)


class IdempotencyStore:
    def __init__(self, clock: SimulatedClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[tuple[Scope, str], _Record] = {}

    def begin(self, scope: Scope, key: str, fp: str) -> StoredResponse | None:
        """Reserve `key`, or return the stored response to replay. Raises the 400/409 idempotency errors."""
        with self._lock:
            self._prune_locked()
            record = self._records.get((scope, key))
            if record is None:
                self._records[(scope, key)] = _Record(fp, self._clock.now())
                return None
            if record.response is None:
                raise errors.StripeApiError(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this Stripe-Idempotency-Key (that "
                    f"probably means you submitted twice, and the other request is still going through): '{key}'. "
                    "Please try again later.",
                    code="idempotency_key_in_use",
                    headers={"Stripe-Should-Retry": "true"},
                    stored=False,
                )
            if record.fingerprint != fp:
                raise errors.StripeApiError(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                    stored=False,
                )
            return record.response

    def complete(self, scope: Scope, key: str, response: StoredResponse) -> None:
        with self._lock:
            record = self._records.get((scope, key))
            if record is not None:
                record.response = response

    def release(self, scope: Scope, key: str) -> None:
        """Forget a reservation whose request stored nothing (validation error, transport fault)."""
        with self._lock:
            record = self._records.get((scope, key))
            if record is not None and record.response is None:
                del self._records[(scope, key)]

    def expire(self, scope: Scope, key: str) -> bool:
        """Drop a completed key now, as if its 24 hours had passed (fault `key_expired`)."""
        with self._lock:
            record = self._records.get((scope, key))
            if record is None or record.response is None:
                return False
            del self._records[(scope, key)]
            return True

    def prune(self) -> int:
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        cutoff = self._clock.now() - KEY_LIFETIME_SECONDS
        stale = [k for k, r in self._records.items() if r.response is not None and r.created <= cutoff]
        for k in stale:
            del self._records[k]
        return len(stale)

    def keys(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "key": key,
                    "created": record.created,
                    "in_flight": record.response is None,
                    "status": record.response.status if record.response else None,
                }
                for (_scope, key), record in self._records.items()
            ]

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
