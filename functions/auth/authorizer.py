"""ApiAuthorizer: the HTTP API's Lambda authorizer (payload 2.0, simple responses) on every storefront route.

It says who is calling, within its rate limit (functions/auth/limits.py), and never refuses by itself: an HTTP
API answers a refused request with its own bare `{"message": ...}`, so the verdict travels in the context and
PaymentApi answers 401, 403 or 429 in the API's error shape (functions/auth/scopes.py). No identity source is
set, so a request without a key reaches it too; its answers on keys are kept here for `api_key_cache_s` (60 s),
which is how long a revoked key may still work.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.auth import limits
from functions.auth.keys import bearer_key, is_well_formed, key_hash, key_id
from functions.shared.config import settings
from functions.shared.names import (
    AUTH_CLIENT_ID,
    AUTH_ERROR,
    AUTH_KEY_ID,
    AUTH_RATE_LIMIT,
    AUTH_RETRY_AFTER,
    AUTH_SCOPES,
)
from functions.shared.observability import service_metrics
from functions.shared.tables import ApiKeysTable

logger = Logger(service="auth")
metrics = service_metrics()

_CACHE_LIMIT = 10_000  # answers kept per container: bounded, whatever keys a caller sprays
_cache: dict[str, tuple[float, dict[str, str]]] = {}


def identify(authorization: str | None, now: float | None = None) -> dict[str, str]:
    """The authorizer's context for an Authorization header: the client and its scopes, or the error."""
    key = bearer_key(authorization)
    if key is None:
        return {AUTH_ERROR: "missing_api_key"}
    if not is_well_formed(key):
        return {AUTH_ERROR: "invalid_api_key"}
    digest, now = key_hash(key), time.monotonic() if now is None else now
    kept = _cache.get(digest)
    if kept is not None and kept[0] > now:
        return kept[1]
    context = _context(key, ApiKeysTable.from_settings().get(digest))
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[digest] = (now + settings().api_key_cache_s, context)
    return context


def _context(key: str, item: dict[str, Any] | None) -> dict[str, str]:
    if item is None:
        return {AUTH_ERROR: "invalid_api_key"}
    if item.get("revoked_at"):
        return {AUTH_ERROR: "revoked_api_key", AUTH_KEY_ID: key_id(key)}
    return {AUTH_CLIENT_ID: item["client_id"], AUTH_SCOPES: " ".join(item.get("scopes", [])),
            AUTH_KEY_ID: key_id(key), AUTH_RATE_LIMIT: str(item.get("rate_limit_per_s") or "")}


def _within_rate(verdict: dict[str, str], now: float) -> dict[str, str]:
    """The verdict, or the client refused for this second when its rate limit is spent."""
    limit = int(verdict.get(AUTH_RATE_LIMIT) or settings().default_rate_limit_per_s)
    wait = limits.retry_after(verdict[AUTH_CLIENT_ID], limit, now)
    if not wait:
        return verdict
    return {AUTH_ERROR: "rate_limited", AUTH_RETRY_AFTER: str(wait), AUTH_KEY_ID: verdict.get(AUTH_KEY_ID, "")}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    verdict = identify((event.get("headers") or {}).get("authorization"))
    if AUTH_CLIENT_ID in verdict:
        verdict = _within_rate(verdict, time.time())
    if AUTH_ERROR in verdict:
        logger.info("request without a valid key", extra={"reason": verdict[AUTH_ERROR],
                                                          "route": event.get("routeKey")})
        metrics.add_metric(name="ApiKeysRefused", unit=MetricUnit.Count, value=1)
    return {"isAuthorized": True, "context": verdict}
