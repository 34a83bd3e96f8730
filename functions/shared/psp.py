"""The PSP adapter: the only module that imports `stripe`.

One charge per payment order, keyed by payment_order_id, so a retry (ours, the SDK's, Step Functions') is
replayed by Stripe instead of charging again. Errors come out in three kinds:
- transient (network, 5xx, 429, key in flight, `Stripe-Should-Retry: true`): PspTransientError, retry same key;
- permanent (a decline, an invalid request): a `failed` ChargeResult or PspPermanentError;
- unknown outcome past the key's lifetime: look the PaymentIntent up first (see `charge`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import stripe

from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError
from functions.shared.models import OrderWork

PSP_NAME = "stripe"
# Stripe may prune idempotency keys after 24 hours; past this age a retry looks the charge up before anything.
IDEMPOTENCY_KEY_SAFE_AGE = timedelta(hours=23)

SUCCEEDED, FAILED, PENDING = "succeeded", "failed", "pending"
_PENDING_STATUSES = {"processing", "requires_action", "requires_confirmation", "requires_capture"}


@dataclass(frozen=True)
class ChargeResult:
    outcome: str  # succeeded | failed | pending
    psp_reference: str = ""
    psp_status: str = ""
    failure_code: str = ""
    failure_reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "outcome": self.outcome, "psp_reference": self.psp_reference, "psp_status": self.psp_status,
            "failure_code": self.failure_code, "failure_reason": self.failure_reason,
        }


class PspClient:
    def __init__(self, api_key: str, api_base: str = "", timeout_s: float = 20.0, max_network_retries: int = 1):
        base = {"api": api_base} if api_base else None
        self._stripe = stripe.StripeClient(
            api_key,
            base_addresses=base,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout_s),
        )

    # -- charges -----------------------------------------------------------------------------------

    def charge(self, work: OrderWork) -> ChargeResult:
        """Create and confirm the PaymentIntent of one order, at most once.

        Within the key's lifetime the idempotency key makes this safe to call any number of times. Past it,
        an existing PaymentIntent for the order is looked up by metadata first and its status reported.
        """
        if work.first_attempt_at and clock.now() - clock.parse_iso(work.first_attempt_at) > IDEMPOTENCY_KEY_SAFE_AGE:
            existing = self.find_payment_intent(work.payment_order_id)
            if existing is not None:
                return self._result_of(existing)
        params: dict[str, Any] = {
            "amount": work.amount_minor,
            "currency": work.currency.lower(),
            "payment_method": work.payment_method,
            "confirm": True,
            "payment_method_types": ["card"],
            "metadata": {"payment_order_id": work.payment_order_id, "checkout_id": work.checkout_id,
                         "seller_account": work.seller_account},
        }
        try:
            intent = self._stripe.v1.payment_intents.create(
                params=params, options={"idempotency_key": work.payment_order_id}  # type: ignore[arg-type]
            )
        except stripe.CardError as error:
            return self._declined(error)
        except stripe.StripeError as error:
            raise self._classify(error) from error
        return self._result_of(intent)

    def find_payment_intent(self, payment_order_id: str) -> Any | None:
        """The PaymentIntent Stripe holds for this order, by our metadata (Stripe's search is eventually
        consistent, so this is only trusted past the idempotency key's lifetime)."""
        try:
            found = self._stripe.v1.payment_intents.search(
                params={"query": f"metadata['payment_order_id']:'{payment_order_id}'", "limit": 10}
            )
        except stripe.StripeError as error:
            raise self._classify(error) from error
        intents = list(found.data)
        if len(intents) > 1:
            raise PspOutcomeUnknown(f"{len(intents)} PaymentIntents carry payment_order_id {payment_order_id}")
        return intents[0] if intents else None

    def retrieve(self, psp_reference: str) -> ChargeResult:
        try:
            return self._result_of(self._stripe.v1.payment_intents.retrieve(psp_reference))
        except stripe.StripeError as error:
            raise self._classify(error) from error

    # -- mapping -----------------------------------------------------------------------------------

    @staticmethod
    def _result_of(intent: Any) -> ChargeResult:
        status = intent.status
        if status == "succeeded":
            return ChargeResult(SUCCEEDED, intent.id, status)
        if status in _PENDING_STATUSES:
            return ChargeResult(PENDING, intent.id, status)
        error = getattr(intent, "last_payment_error", None)
        code = (getattr(error, "decline_code", None) or getattr(error, "code", None) or status) if error else status
        message = getattr(error, "message", None) if error else None
        return ChargeResult(FAILED, intent.id, status, code, message or f"payment intent {status}")

    @staticmethod
    def _declined(error: stripe.CardError) -> ChargeResult:
        body = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
        intent = body.get("payment_intent") or {}
        code = body.get("decline_code") or error.code or "card_declined"
        return ChargeResult(
            FAILED, intent.get("id", ""), intent.get("status", "requires_payment_method"), code,
            body.get("message") or "card declined",
        )

    @staticmethod
    def _classify(error: stripe.StripeError) -> Exception:
        should_retry = (error.headers or {}).get("stripe-should-retry")
        message = f"{type(error).__name__}: {error.user_message or error}"
        if should_retry == "true":
            return PspTransientError(message)
        if should_retry == "false" and not isinstance(error, stripe.IdempotencyError):
            return PspPermanentError(message, code=error.code or "psp_refused")
        if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
            return PspTransientError(message)
        if isinstance(error, stripe.IdempotencyError):
            # 409: the first request with this key is still in flight. 400: same key, other parameters,
            # which our deterministic parameters never produce: stop and let a human look.
            if error.http_status == 409:
                return PspTransientError(message)
            return PspOutcomeUnknown(message)
        if error.http_status is None or error.http_status >= 500:
            return PspTransientError(message)
        return PspPermanentError(message, code=error.code or "psp_refused")


_lock = threading.Lock()


@cache
def _api_key() -> str:
    config = settings()
    if config.psp_api_key_parameter:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_parameter(config.psp_api_key_parameter, decrypt=True, max_age=300))
    if not config.psp_api_key:
        raise RuntimeError("PSP_API_KEY_PARAMETER (deployed) or PSP_API_KEY (local) must be set")
    return config.psp_api_key


_client: PspClient | None = None


def client() -> PspClient:
    """The process's PSP client, built at first use from configuration."""
    global _client
    with _lock:
        if _client is None:
            _client = PspClient(_api_key(), settings().psp_api_base, timeout_s=settings().psp_timeout_s)
        return _client


def reset_client() -> None:
    global _client
    with _lock:
        _client = None
    _api_key.cache_clear()
