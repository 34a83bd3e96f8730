"""Every failure the domain knows, under one base. Handlers map them to HTTP answers or workflow errors.

Step Functions matches a task's error by the exception's class name, so the workflow's Retry and Catch clauses
name these classes: rename one only together with infra/constructs/workflow.py.
"""

from __future__ import annotations

import json
from typing import Any


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> str:
    """The one JSON shape of every error answer: {"error": {"code", "message", "details"}}."""
    return json.dumps({"error": {"code": code, "message": message, "details": details or []}})


class DomainError(Exception):
    """Base of every domain error: a machine-readable `code`, a message, and the HTTP status it maps to."""

    code = "domain_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or []


class RequestInvalid(DomainError):
    """The request body breaks a rule of the API (amount, currency, fields, limits)."""

    code = "invalid_request"
    http_status = 422


class CardNumberRefused(RequestInvalid):
    """The body carries something that looks like a primary account number; only PSP tokens are accepted."""

    code = "card_number_not_allowed"


class NotChargeableAtPsp(RequestInvalid):
    """The PSP cannot charge this amount or currency: below its minimum, above its maximum, finer than its unit."""

    code = "amount_not_supported_by_psp"


class CheckoutConflict(DomainError):
    """The checkout_id exists with a different request body."""

    code = "checkout_id_conflict"
    http_status = 409


class PaymentOrderIdInUse(DomainError):
    """A payment_order_id of the request already belongs to another checkout."""

    code = "payment_order_id_in_use"
    http_status = 409


class NotFound(DomainError):
    """The resource asked for does not exist."""

    code = "not_found"
    http_status = 404


class StatusTransitionRefused(DomainError):
    """An order status change that would move backwards or skip a state."""

    code = "status_transition_refused"
    http_status = 409


class UnbalancedTransaction(DomainError):
    """A ledger transaction whose entries do not sum to zero per currency; it is never written."""

    code = "unbalanced_transaction"
    http_status = 500


class LedgerConflict(DomainError):
    """A transaction with this id exists with different entries: a bug or tampering, never overwritten."""

    code = "ledger_conflict"
    http_status = 500


class PspTransientError(DomainError):
    """The PSP call may succeed if retried with the same idempotency key (network, 5xx, 429, in-flight key)."""

    code = "psp_transient"
    http_status = 502


class PspPermanentError(DomainError):
    """The PSP refused the request for a reason a retry will not change (invalid parameters, unknown method)."""

    code = "psp_permanent"
    http_status = 502


class PspOutcomeUnknown(DomainError):
    """The charge may or may not have happened and the PSP cannot tell us yet: never charge again blindly."""

    code = "psp_outcome_unknown"
    http_status = 502


class ChargeFailedUnsent(DomainError):
    """The charge was decided FAILED without ever being sent (its PSP down too long: functions/executor/handler.py
    `_park_if_psp_down`): no PSP call may go out for it any more. The executor answers FAILED again; it never
    reaches the workflow as an error."""

    code = "psp_unavailable"
    http_status = 409


class AwsTransientError(DomainError):
    """AWS said "not now" (a transaction conflict, throttling, a 5xx, a timeout): the same step run again later
    succeeds. The workflow retries it with backoff and jitter; it is never dead-lettered on first sight."""

    code = "aws_transient"
    http_status = 503


class ConcurrentChange(DomainError):
    """The item kept changing under the request (a release racing refunds of the same order): nothing was
    written; the same request sent again succeeds."""

    code = "concurrent_change"
    http_status = 503


class PspNotRoutable(DomainError):
    """An item names a PSP whose money path is not wired (routing never chooses one: functions/shared/routing.py).
    Nothing is sent anywhere; the workflow dead-letters it for a human."""

    code = "psp_not_routable"
    http_status = 502


class PspKeyPoisoned(DomainError):
    """Stripe replays a stored 500 for this idempotency key, and a look-up found no PaymentIntent of the charge:
    the key must be retired once the look-up can be trusted (see psp.charge)."""

    code = "psp_key_poisoned"
    http_status = 502


class Unauthenticated(DomainError):
    """No valid API key: missing, unknown, malformed or revoked (`code` says which)."""

    code = "invalid_api_key"
    http_status = 401


class ScopeMissing(DomainError):
    """The API key is valid but lacks the scope the route needs."""

    code = "insufficient_scope"
    http_status = 403


class BodyTooLarge(DomainError):
    """The request body is larger than any valid request of the API."""

    code = "body_too_large"
    http_status = 413


class BodyTooDeep(DomainError):
    """The request body nests JSON deeper than any valid request of the API."""

    code = "body_too_deep"
    http_status = 400


class RateLimited(DomainError):
    """The client sent more requests this second than its key allows; `retry_after` seconds to wait."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class MethodNotAllowed(DomainError):
    """The path exists, not with this method (the answer's Allow header lists those it has)."""

    code = "method_not_allowed"
    http_status = 405


class InvalidJson(DomainError):
    """The body is not JSON text (not UTF-8, or not JSON at all)."""

    code = "invalid_json"
    http_status = 400


class UnsupportedMediaType(DomainError):
    """The body is sent as something other than JSON."""

    code = "unsupported_media_type"
    http_status = 415
