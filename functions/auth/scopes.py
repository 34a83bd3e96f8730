"""Which scope each route of the API needs, and the check the PaymentApi function makes on every request.

The authorizer says who is calling (functions/auth/authorizer.py); this module says what they may do. A request
that reaches the API without the authorizer's answer is refused: closed by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.auth import tenancy
from functions.shared.errors import RateLimited, ScopeMissing, Unauthenticated
from functions.shared.names import AUTH_CLIENT_ID, AUTH_ERROR, AUTH_KEY_ID, AUTH_RETRY_AFTER, AUTH_SCOPES, SCOPES

ANY_VALID_KEY = ""  # the route needs a valid key and no particular scope
ROUTE_SCOPES = {
    "POST /v1/payments": "payments:write",
    "POST /v1/payment_routes": "payments:write",
    "GET /v1/payments/{payment_order_id}": "payments:read",
    "GET /v1/checkouts/{checkout_id}": "payments:read",
    "POST /v1/checkouts/{checkout_id}/payment_details": "payments:write",
    "POST /v1/payments/{payment_order_id}/release": "releases",
    "POST /v1/payments/{payment_order_id}/refunds": "refunds",
    "GET /v1/refunds/{refund_id}": "refunds",
    "PUT /v1/sellers/{seller_account}": "sellers",
    "GET /v1/sellers/{seller_account}": "sellers",
    "GET /v1/sellers/{seller_account}/balance": "sellers",
    "GET /v1/sellers/{seller_account}/statement": "sellers",
    "PUT /v1/notification_endpoint": "webhooks",
    "GET /v1/notification_endpoint": "webhooks",
    # Checks and money orders (issue 17): the platform's operators only (not in a key's default scopes).
    "POST /v1/checkouts/{checkout_id}/offline_payments": "offline_payments:write",
    "POST /v1/checkouts/{checkout_id}/offline_payments/bounce": "offline_payments:write",
    "GET /v1/openapi.json": ANY_VALID_KEY,
}
assert set(ROUTE_SCOPES.values()) <= {*SCOPES, ANY_VALID_KEY}

_MESSAGES = {
    "missing_api_key": "send your API key as `Authorization: Bearer mk_...`",
    "invalid_api_key": "the API key is not valid",
    "revoked_api_key": "the API key was revoked",
}


@dataclass(frozen=True)
class Caller:
    client_id: str
    key_id: str
    scopes: frozenset[str]


def caller(event: dict[str, Any]) -> Caller:
    """The storefront client behind a request, allowed on its route; raises Unauthenticated or ScopeMissing."""
    context = ((event.get("requestContext") or {}).get("authorizer") or {}).get("lambda") or {}
    if context.get(AUTH_ERROR) == "rate_limited":
        raise RateLimited("too many requests for this client this second", int(context.get(AUTH_RETRY_AFTER) or 1))
    if not tenancy.is_valid_client_id(str(context.get(AUTH_CLIENT_ID) or "")):  # none, or one no key may have
        code = context.get(AUTH_ERROR) or ("invalid_api_key" if context.get(AUTH_CLIENT_ID) else "missing_api_key")
        raise Unauthenticated(_MESSAGES.get(code, _MESSAGES["invalid_api_key"]), code=code)
    found = Caller(context[AUTH_CLIENT_ID], context.get(AUTH_KEY_ID, ""),
                   frozenset((context.get(AUTH_SCOPES) or "").split()))
    needed = ROUTE_SCOPES.get(event.get("routeKey", ""))
    if needed is None or (needed and needed not in found.scopes):
        message = f"this API key lacks the scope `{needed}`" if needed else "no scope opens this route"
        raise ScopeMissing(message, details=[{"code": "insufficient_scope", "message": message,
                                              "required_scope": needed or ""}])
    return found
