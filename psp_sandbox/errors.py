"""Stripe-shaped API errors: the JSON body and HTTP status the official SDK turns into its exceptions."""

from __future__ import annotations

from typing import Any


class StripeApiError(Exception):
    """An error answer. `stored` says whether the idempotency layer keeps it for replays.

    Stripe stores a result only once an endpoint began executing: validation failures (400/404) are not stored,
    card declines (402) and internal errors (500) are.
    """

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        stored: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.code = code
        self.decline_code = decline_code
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}
        self.stored = stored

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        for name in ("code", "decline_code", "param"):
            value = getattr(self, name)
            if value is not None:
                error[name] = value
        if self.code:
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        error.update(self.extra)
        return {"error": error}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, param=param, code=code, stored=False)


def refused(message: str, *, param: str | None = None, code: str | None = None) -> StripeApiError:
    """A 400 from an endpoint that ran (the account cannot take transfers, the balance is short): stored, so the
    same key replays it for 24 h. Stripe does not say whether it stores these; storing is the stricter reading:
    a client must use a new key to try again."""
    return StripeApiError(400, "invalid_request_error", message, param=param, code=code, stored=True)


def missing_param(param: str) -> StripeApiError:
    return invalid_request(f"Missing required param: {param}.", param=param, code="parameter_missing")


def no_such(kind: str, object_id: str, *, param: str | None = None, status: int = 404) -> StripeApiError:
    """A reference to an object that does not exist: 404 on a URL, 400 when it was a parameter."""
    error = invalid_request(f"No such {kind}: '{object_id}'", param=param, code="resource_missing")
    error.status = status
    return error


def unexpected_state(message: str, obj: dict[str, Any] | None = None, key: str = "payment_intent") -> StripeApiError:
    error = invalid_request(message, code=f"{key}_unexpected_state")
    if obj is not None:
        error.extra[key] = obj
    return error


def api_error(message: str = "An unknown error occurred on Stripe's end.", status: int = 500) -> StripeApiError:
    return StripeApiError(status, "api_error", message)


def authentication_error(message: str) -> StripeApiError:
    return StripeApiError(401, "invalid_request_error", message, stored=False)


# Stripe's wording, as captured in real answers (a 400 `invalid_request_error` with neither code nor param).
PAYMENT_METHOD_REUSED = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer attachment, shared with a "
    "connected account without Customer attachment, or was detached from a Customer. It may not be used again. To "
    "use a PaymentMethod multiple times, you must attach it to a Customer first."
)
PAYMENT_METHOD_CONSUMED = (
    "This PaymentMethod was previously used without being attached to a Customer or was detached from a Customer, "
    "and may not be used again."
)


def payment_method_reused() -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", PAYMENT_METHOD_REUSED, stored=False)
