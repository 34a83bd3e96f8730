"""The PSP adapter: the only module that imports `stripe`.

One PaymentIntent per charge (a checkout in one currency), idempotency key `charge:<checkout_id>:<CURRENCY>`
(functions/shared/charges.py), so a retry (ours, Step Functions', the sweeper's) is replayed by Stripe instead
of charging again. Answers come out in three kinds:
- a decline: a `failed` ChargeResult; an invalid request (unknown or used PaymentMethod): PspPermanentError;
- anything unclear (network, 401/403 after a key rotation, 5xx whatever Stripe-Should-Retry says, 429, a key in
  flight): PspTransientError, retried; a later attempt looks the PaymentIntent up before creating anything;
- a 500 that Stripe replays for our key: PspKeyPoisoned (the executor decides when the key may be retired).
Amounts go out in Stripe's units and come back through functions/shared/psp_units.py. A checkout's single-use
PaymentMethod that pays several PaymentIntents is attached to one Customer first (keys customer:/attach:<checkout_id>).
A seller's share goes out as one Transfer per order (key `transfer:<payment_order_id>`, `transfer`).
"""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from functions.shared import aws, breaker, clock, observability, psp_units
from functions.shared.config import settings
from functions.shared.errors import (
    NotChargeableAtPsp,
    PspKeyPoisoned,
    PspNotRoutable,
    PspOutcomeUnknown,
    PspPermanentError,
    PspTransientError,
)
from functions.shared.lazy import deferred
from functions.shared.models import ChargeWork
from functions.shared.money import Money, MoneyError
from functions.shared.names import (
    attach_idempotency_key,
    charge_idempotency_key,
    customer_idempotency_key,
    refund_idempotency_key,
    reversal_idempotency_key,
    transfer_key,
)
from functions.shared.psp_port import (  # noqa: F401 - re-exported: moved to the port, imported from here
    FAILED,
    PARKED,
    PENDING,
    REFUND_REFUSED,
    SUCCEEDED,
    ChargeResult,
    RefundResult,
    WebhookSignatureInvalid,
)

# Imported at the first Stripe call (~45 ms at cold start): the webhook processor and the refund worker often
# finish without one (benchmarks/cold_start.py).
stripe = deferred("stripe")

PSP_NAME = "stripe"
# Stripe may prune idempotency keys after 24 hours; past this age a retry looks the charge up before anything.
IDEMPOTENCY_KEY_SAFE_AGE = timedelta(hours=23)
# Stripe's search is eventually consistent ("under a minute" normally): a miss proves nothing before this age.
SEARCH_TRUSTED_AFTER = timedelta(minutes=5)

# A Customer or attach request of the checkout's other charge in flight (409): tries, first pause.
IN_FLIGHT_TRIES = 4
IN_FLIGHT_PAUSE_S = 0.2

_PENDING_STATUSES = {"processing", "requires_action", "requires_confirmation", "requires_capture"}


AUTHENTICATION_ABANDONED = "authentication_abandoned"
REQUIRES_ACTION = "requires_action"
REQUIRES_PAYMENT_METHOD = "requires_payment_method"  # failed and still open: it could be confirmed again


TRANSFERRED, BALANCE_SHORT, ACCOUNT_REFUSED = "transferred", "balance_short", "account_refused"
# Refusals that name the destination account: invalid, or unable to receive transfers (restricted).
_ACCOUNT_REFUSALS = {"account_invalid", "insufficient_capabilities_for_transfer", "transfers_not_allowed",
                     "account_closed", "account_restricted"}
TRANSFER_PAGE_LIMIT = 100
TRANSFER_PAGES_MAX = 50  # a checkout's transfers (one per order): 5,000 is far past any checkout


@dataclass(frozen=True)
class TransferResult:
    outcome: str  # transferred | balance_short | account_refused
    transfer_id: str = ""
    failure_code: str = ""
    failure_reason: str = ""


@functools.cache
def rate_limited_retries_class() -> type:
    """RateLimitedRetries, defined on first use: it subclasses the SDK's client, imported then."""

    class RateLimitedRetries(stripe.RequestsClient):
        """The one place a PSP 429 is handled: Stripe did not execute a rate-limited request, so the same request
        (same Idempotency-Key) is sent again after a jittered backoff (Retry-After when shorter), for at most
        `wait_budget_s` in all, inside the call's budget. A 429 past it is returned as it is and classified as
        PspTransientError: the workflow's Retry (or the queue's redelivery) tries again later. Never a failure of
        the payment. `rate_limited` counts the 429s this process saw (the governor's signal: raise the limit or
        lower the concurrency, README "Throughput ceiling")."""

        rate_limited = 0

        def __init__(self, *, timeout: float, wait_budget_s: float, sleep: Any = time.sleep):
            super().__init__(timeout=timeout)
            self._budget_s, self._sleep = wait_budget_s, sleep

        # The SDK reads `_timeout` for each request: the configured timeout, or less when the invocation's deadline
        # (`calls_within`) is nearer, so that a slow PSP fails the call in time for a clean retry.
        @property
        def _timeout(self) -> float:
            left = time_left_s()
            return self._configured_timeout if left is None else min(self._configured_timeout, left)

        @_timeout.setter
        def _timeout(self, value: float) -> None:
            self._configured_timeout = value

        def request(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
            waited, retry = 0.0, 0
            while True:
                left = time_left_s()
                if left is not None and left < MIN_CALL_S:
                    # Not sent: nothing happened at the PSP, and the workflow's next try has a whole invocation.
                    raise stripe.APIConnectionError(f"{left:.1f} s left in this invocation: the PSP call is not sent")
                answer = self._measured(method, url, headers, post_data)
                if answer[1] != 429:
                    return answer
                type(self).rate_limited += 1
                delay = rate_limit_backoff_s(retry, answer[2].get("Retry-After") if answer[2] else None)
                left = time_left_s()
                if waited + delay > self._budget_s or (left is not None and delay + MIN_CALL_S > left):
                    return answer
                self._sleep(delay)
                waited, retry = waited + delay, retry + 1

        def _measured(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
            """The one place every SDK call goes through: its latency, and the class of an answer that is not a
            2xx (a connection that failed is `network`), as metrics of the calling function; and what it says of
            Stripe's health to its circuit breaker (a 500 Stripe replays for a key is an answer: Stripe is up)."""
            breaker.call_starting(PSP_NAME, time_left_s=time_left_s())
            started = time.perf_counter()
            try:
                answer = super().request(method, url, headers, post_data)
            except Exception as error:
                _record_psp_call(started, "network")
                breaker.record_call(PSP_NAME, down=True, reason=f"{type(error).__name__}: no answer",
                                    time_left_s=time_left_s())
                raise
            status, replayed = answer[1], str((answer[2] or {}).get("Idempotent-Replayed", "")).lower() == "true"
            _record_psp_call(started, psp_error_class(status))
            breaker.record_call(PSP_NAME, down=status >= 500 and not replayed, reason=f"HTTP {status}",
                                time_left_s=time_left_s())
            return answer

    return RateLimitedRetries


# What a PSP answer's HTTP status says (Stripe's error types), as the `error_class` of the PspErrors metric.
_ERROR_CLASSES = {400: "invalid_request", 401: "authentication", 402: "declined", 403: "authentication",
                  404: "not_found", 409: "conflict", 429: "rate_limited"}


def psp_error_class(status: int) -> str | None:
    """None for a 2xx; else the class of the PSP's answer (few values: a metric dimension)."""
    if 200 <= status < 300:
        return None
    if status >= 500:
        return "server_error"
    return _ERROR_CLASSES.get(status, "other_client_error")


def _record_psp_call(started: float, error_class: str | None) -> None:
    # to a tenth of a millisecond: a float's fifteen digits can pass the Luhn check, and log scanners flag them
    observability.dimensioned(observability.PSP_LATENCY, round((time.perf_counter() - started) * 1000, 1),
                              MetricUnit.Milliseconds)
    if error_class is not None:
        observability.dimensioned(observability.PSP_ERRORS, 1, error_class=error_class)


MIN_CALL_S = 1.0  # a PSP call is not started with less time than this left before the invocation's deadline
# Kept for the DynamoDB writes that record what a PSP call answered, after the last call.
DEADLINE_MARGIN_S = 2.0
_deadline = threading.local()


@contextmanager
def calls_within(remaining_ms: int) -> Iterator[None]:
    """PSP calls made inside this block end before the invocation does (Lambda's remaining time, less a margin):
    each call's timeout is cut to what is left, and a call is not sent without MIN_CALL_S. A Lambda timeout
    mid-call would also be safe (every call is idempotent or looked up first), but it costs the whole timeout
    and hides the cause; this way the call fails as a transient error the workflow retries."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + remaining_ms / 1000 - DEADLINE_MARGIN_S
    try:
        yield
    finally:
        _deadline.at = previous


def time_left_s() -> float | None:
    at = getattr(_deadline, "at", None)
    return None if at is None else at - time.monotonic()


def rate_limit_backoff_s(retry: int, retry_after: str | None) -> float:
    """0.25 s doubled per retry, with up to 50 % of jitter (concurrent callers spread out); never below the
    PSP's Retry-After when it names one (the least time to wait). Never 0, so the caller's budget always ends
    the loop: a `Retry-After: 0` must not make a tight loop of 429s."""
    delay = 0.25 * 2**retry * (1 + random.random() / 2)  # noqa: S311 - jitter, not a secret
    try:
        after = float(retry_after) if retry_after else 0.0
    except ValueError:
        after = 0.0
    return max(delay, after) if math.isfinite(after) else delay


class PspClient:
    def __init__(self, api_key: str, api_base: str = "", timeout_s: float = 8.0, max_network_retries: int = 0,
                 rate_limit_wait_s: float = 2.0):
        base = {"api": api_base} if api_base else None
        self.api_key = api_key
        # No SDK retries: the workflow's Retry (with a look-up first) is the one retry loop, inside its budget.
        self._stripe = stripe.StripeClient(
            api_key,
            base_addresses=base,
            max_network_retries=max_network_retries,
            http_client=rate_limited_retries_class()(timeout=timeout_s, wait_budget_s=rate_limit_wait_s),
        )

    # -- charges -----------------------------------------------------------------------------------

    def charge(self, work: ChargeWork, *, look_up_first: bool = False, generation: int = 0,
               customer: str = "", mandate_data: dict[str, Any] | None = None) -> ChargeResult:
        """Create and confirm the charge's PaymentIntent, at most once.

        `look_up_first` (a later call for the same charge, or past the key's lifetime): an existing
        PaymentIntent of the charge is found by metadata and reported instead. Within the key's lifetime the
        idempotency key alone makes this safe to call any number of times. `customer`: the Customer the
        checkout's PaymentMethod is attached to (ensure_customer), when several charges share it.
        """
        if look_up_first or key_aged(work):
            existing = self.find_payment_intent(work.charge_key)
            if existing is not None:
                return self._checked(existing, work)
        try:
            amount = psp_units.check_chargeable(work.amount)
        except NotChargeableAtPsp as refused:  # certain: nothing was sent to Stripe
            return ChargeResult(FAILED, failure_code=refused.code, failure_reason=refused.message)
        params: dict[str, Any] = {
            "amount": amount,
            "currency": work.currency.lower(),
            "payment_method": work.payment_method,
            "confirm": True,
            "payment_method_types": [work.payment_method_type],
            "transfer_group": work.checkout_id,
            # the correlation id is the one stored with the charge: the same on every retry of this key
            "metadata": observability.correlated({"checkout_id": work.checkout_id, "charge_key": work.charge_key},
                                                 work.correlation_id),
        }
        if customer:
            params["customer"] = customer
        if work.return_url:  # a redirect method: Stripe refuses to confirm one without it
            params["return_url"] = work.return_url
        if mandate_data:  # a bank debit: the buyer's acceptance of the mandate (stored with the charge)
            params["mandate_data"] = mandate_data
        key = charge_idempotency_key(work.checkout_id, work.currency, generation)
        try:
            intent = self._stripe.v1.payment_intents.create(
                params=params, options={"idempotency_key": key}  # type: ignore[arg-type]
            )
        except stripe.CardError as error:
            return self._declined(error)
        except stripe.StripeError as error:
            raise self._classify(error) from error
        return self._checked(intent, work)

    def look_up(self, work: ChargeWork) -> ChargeResult | None:
        """The charge's PaymentIntent found by metadata (the port's look-up), None if Stripe has none."""
        existing = self.find_payment_intent(work.charge_key)
        return None if existing is None else self._checked(existing, work)

    @staticmethod
    def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
        """The port's verification: verify_webhook below, with Stripe's tolerance."""
        return verify_webhook(payload, signature, secret)

    # -- the checkout's Customer (a single-use PaymentMethod shared by several charges) -----------------

    def attached_customer(self, payment_method: str) -> str:
        """The Customer the PaymentMethod is attached to, "" if none (the look-up past the keys' lifetime)."""
        try:
            method = self._stripe.v1.payment_methods.retrieve(payment_method)
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error
        return _id_of(getattr(method, "customer", None))

    def create_customer(self, work: ChargeWork) -> str:
        """The checkout's Customer, once per checkout: every charge of it sends the same key and parameters."""
        params = {"metadata": {"checkout_id": work.checkout_id}, "description": f"checkout {work.checkout_id}"}
        key = customer_idempotency_key(work.checkout_id)
        created = self._in_flight_retried(lambda: self._stripe.v1.customers.create(
            params=params, options={"idempotency_key": key}))  # type: ignore[arg-type]
        return str(created.id)

    def attach(self, work: ChargeWork, customer: str) -> ChargeResult | None:
        """Attach the checkout's PaymentMethod to `customer`; None when attached (now or before), a `failed`
        result when Stripe declines the card while attaching it (it checks the card then)."""
        try:
            self._in_flight_retried(lambda: self._stripe.v1.payment_methods.attach(
                work.payment_method, params={"customer": customer},
                options={"idempotency_key": attach_idempotency_key(work.checkout_id)}))  # type: ignore[arg-type]
        except stripe.CardError as error:
            return self._declined(error)
        except (PspTransientError, PspOutcomeUnknown):
            raise
        except PspPermanentError:
            # "already attached": done if it is to this Customer (a retry past the key's lifetime)
            if self.attached_customer(work.payment_method) != customer:
                raise
        return None

    def _in_flight_retried(self, call: Any) -> Any:
        """The charges of one checkout set its Customer up at the same moment, with the same keys: a 409
        (the other's request in flight) is retried here briefly, then left to the workflow's Retry."""
        for attempt in range(IN_FLIGHT_TRIES):
            try:
                return call()
            except stripe.CardError:
                raise
            except stripe.StripeError as error:
                if error.http_status == 409 and attempt < IN_FLIGHT_TRIES - 1:
                    time.sleep(IN_FLIGHT_PAUSE_S * 2**attempt)
                    continue
                raise self._classify(error) from error
        raise AssertionError("unreachable")

    def find_payment_intent(self, charge_key: str) -> Any | None:
        """The PaymentIntent Stripe holds for this charge, by our metadata (eventually consistent: a miss is
        proof of absence only once SEARCH_TRUSTED_AFTER has passed since the first attempt)."""
        try:
            found = self._stripe.v1.payment_intents.search(
                params={"query": f"metadata['charge_key']:'{charge_key}'", "limit": 10}
            )
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error
        intents = list(found.data)
        succeeded = [i for i in intents if i.status == "succeeded"]
        if len(succeeded) > 1:
            raise PspOutcomeUnknown(f"{len(succeeded)} succeeded PaymentIntents carry charge_key {charge_key}")
        if succeeded:
            return succeeded[0]
        live = [i for i in intents if i.status != "canceled" and i.status != "requires_payment_method"]
        if len(live) > 1:
            raise PspOutcomeUnknown(f"{len(live)} open PaymentIntents carry charge_key {charge_key}")
        return (live or intents or [None])[0]

    def retrieve(self, psp_reference: str, work: ChargeWork | None = None) -> ChargeResult:
        try:
            intent = self._stripe.v1.payment_intents.retrieve(psp_reference)
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error
        return self._checked(intent, work) if work is not None else self._result_of(intent)

    # -- transfers (a released order's net share to the seller's connected account) -------------------

    def transfer(self, payout: dict[str, Any], destination: str, *, look_up_first: bool) -> TransferResult:
        """The order's one Transfer: created under `transfer:<payment_order_id>`, or, with `look_up_first` (past
        the key's lifetime), the one Stripe already holds reported instead. A Transfer of the order for another
        amount, currency or destination is PspOutcomeUnknown (a human looks)."""
        order_id = payout["payment_order_id"]
        net = Money(int(payout["net_minor"]), payout["currency"])
        if look_up_first:
            existing = self.find_transfer(payout["checkout_id"], order_id)
            if existing is not None:
                return _checked_transfer(existing, order_id, net, destination)
        params = {
            "amount": psp_units.to_stripe_amount(net),
            "currency": net.currency.lower(),
            "destination": destination,
            "transfer_group": payout["checkout_id"],
            # A check's or money order's order has no PSP charge (issue 17): its net comes from the platform's
            # available balance, which the platform funds from its bank deposits.
            **({"source_transaction": payout["charge_id"]} if payout.get("charge_id") else {}),
            # stored with the payout at its creation: the same on every retry of the key
            "metadata": observability.correlated({"payment_order_id": order_id, "checkout_id": payout["checkout_id"],
                                                  "seller_account": payout["seller_account"]},
                                                 payout.get(observability.CORRELATION_FIELD)),
        }
        key = transfer_key(order_id, int(payout.get("transfer_key_generation", 0)))
        try:
            created = self._stripe.v1.transfers.create(
                params=params, options={"idempotency_key": key})  # type: ignore[arg-type]
        except stripe.StripeError as error:
            refused = _transfer_refusal(error)
            if refused is not None:
                return refused
            raise self._classify_transfer(error) from error
        return _checked_transfer(created, order_id, net, destination)

    def find_transfer(self, transfer_group: str, payment_order_id: str) -> Any | None:
        """The order's Transfer among its checkout's (listed by transfer_group, matched by metadata). A list is
        consistent, unlike search: a miss is proof of absence. Two Transfers of one order: PspOutcomeUnknown."""
        found: list[Any] = []
        params: dict[str, Any] = {"transfer_group": transfer_group, "limit": TRANSFER_PAGE_LIMIT}
        for _ in range(TRANSFER_PAGES_MAX):
            try:
                page = self._stripe.v1.transfers.list(params=params)  # type: ignore[arg-type]
            except stripe.StripeError as error:
                raise self._classify(error, creating=False) from error
            found += [t for t in page.data if getattr(t.metadata, "payment_order_id", None) == payment_order_id]
            if not page.has_more or not page.data:
                break
            params = {**params, "starting_after": page.data[-1].id}
        else:
            raise PspOutcomeUnknown(f"checkout {transfer_group} has more than "
                                    f"{TRANSFER_PAGE_LIMIT * TRANSFER_PAGES_MAX} transfers")
        if len(found) > 1:
            raise PspOutcomeUnknown(f"{len(found)} transfers carry payment_order_id {payment_order_id}: "
                                    f"{', '.join(t.id for t in found)}")
        return found[0] if found else None

    def _classify_transfer(self, error: stripe.StripeError) -> Exception:
        """A transfer Stripe answered unclearly (network, 5xx, 429, 409 in flight, 401/403): transient, and a
        replayed 500 too (the key's 24 h end it; past 23 h the next attempt looks first). Any other refusal (a
        parameter Stripe refuses, e.g. the charge cannot fund it) is permanent: a human looks."""
        classified = self._classify(error)
        return PspTransientError(str(classified)) if isinstance(classified, PspKeyPoisoned) else classified

    # -- refunds and transfer reversals (issue 16 a) ----------------------------------------------------

    def refund(self, refund: dict[str, Any], order: dict[str, Any], *, look_up_first: bool) -> RefundResult:
        """Our refund's one Refund at Stripe, on the order's charge (or its PaymentIntent), under
        `refund:<refund_id>`. With `look_up_first` (past the key's lifetime) the Refund Stripe holds already is
        reported instead. Stripe's refusal of the amount (amount_too_large, charge_already_refunded) is a
        `refused` result: certain, no Refund exists; anything unclear raises as the charge path does."""
        amount = Money(int(refund["amount_minor"]), refund["currency"])
        target = refund_target(order)
        if look_up_first:
            existing = self.find_refund(target, refund["refund_id"])
            if existing is not None:
                return _refund_result(existing, amount)
        params: dict[str, Any] = {
            **target, "amount": psp_units.to_stripe_amount(amount),
            "metadata": observability.correlated({"payment_order_id": refund["payment_order_id"],
                                                  "refund_id": refund["refund_id"],
                                                  "reason": str(refund.get("reason") or "")[:500]},
                                                 refund.get(observability.CORRELATION_FIELD)),
        }
        try:
            created = self._stripe.v1.refunds.create(
                params=params, options={"idempotency_key": refund_idempotency_key(refund["refund_id"])})  # type: ignore[arg-type]
        except stripe.StripeError as error:
            refused = _refund_refusal(error)
            if refused is not None:
                return refused
            raise self._classify_transfer(error) from error
        return _refund_result(created, amount)

    def find_refund(self, target: dict[str, str], refund_id: str) -> Any | None:
        """Our refund's Refund among the charge's (a list is consistent: a miss is proof of absence)."""
        found: list[Any] = []
        params: dict[str, Any] = {**target, "limit": TRANSFER_PAGE_LIMIT}
        for _ in range(TRANSFER_PAGES_MAX):
            try:
                page = self._stripe.v1.refunds.list(params=params)  # type: ignore[arg-type]
            except stripe.StripeError as error:
                raise self._classify(error, creating=False) from error
            found += [r for r in page.data if getattr(r.metadata, "refund_id", None) == refund_id]
            if not page.has_more or not page.data:
                break
            params = {**params, "starting_after": page.data[-1].id}
        if len(found) > 1:
            raise PspOutcomeUnknown(f"{len(found)} refunds carry refund_id {refund_id}")
        return found[0] if found else None

    def retrieve_refund(self, psp_refund_id: str) -> Any:
        """The Refund as Stripe holds it now (its status moves: pending -> succeeded | failed | canceled)."""
        try:
            return self._stripe.v1.refunds.retrieve(psp_refund_id)
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error

    def reverse_transfer(self, transfer_id: str, share: Money, refund_id: str, *, look_up_first: bool
                         ) -> ReversalResult:
        """Take a refund's seller share back from the transfer, once, under `reversal:<refund_id>`. Stripe's
        refusal (the connected account's balance too low, more than the transfer's unreversed amount) is a
        `refused` result: the seller owes the share."""
        if look_up_first:
            existing = self.find_reversal(transfer_id, refund_id)
            if existing is not None:
                return ReversalResult(REVERSED, str(existing.id))
        try:
            made = self._stripe.v1.transfers.reversals.create(
                transfer_id, params={"amount": psp_units.to_stripe_amount(share), "metadata": {"refund_id": refund_id}},
                options={"idempotency_key": reversal_idempotency_key(refund_id)})  # type: ignore[arg-type]
        except stripe.StripeError as error:
            if error.http_status == 400 and not isinstance(error, stripe.IdempotencyError):
                body = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
                return ReversalResult(REVERSAL_REFUSED, failure_code=error.code or body.get("code") or "refused",
                                      failure_reason=body.get("message") or str(error))
            raise self._classify_transfer(error) from error
        sent = psp_units.from_stripe_amount(made.currency, made.amount)
        if sent != share:
            raise PspOutcomeUnknown(f"{made.id} reverses {sent}, the refund {refund_id} asks {share}")
        return ReversalResult(REVERSED, str(made.id))

    def find_reversal(self, transfer_id: str, refund_id: str) -> Any | None:
        try:
            page = self._stripe.v1.transfers.reversals.list(transfer_id, params={"limit": 100})
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error
        found = [r for r in page.data if getattr(r.metadata, "refund_id", None) == refund_id]
        return found[0] if found else None

    # -- mapping -----------------------------------------------------------------------------------

    @classmethod
    def _checked(cls, intent: Any, work: ChargeWork) -> ChargeResult:
        """The PaymentIntent's outcome, once its amount (back in our units) is the charge's: a PaymentIntent of
        the charge for another amount breaks invariant 1, and a human looks (never SUCCESS or FAILED)."""
        try:
            charged = psp_units.from_stripe_amount(intent.currency, intent.amount)
        except (MoneyError, NotChargeableAtPsp) as error:
            raise PspOutcomeUnknown(f"{intent.id}: amount {intent.amount} {intent.currency}: {error}") from error
        if charged != work.amount:
            raise PspOutcomeUnknown(f"{intent.id} is for {charged}, the charge {work.charge_key} for {work.amount}")
        return cls._result_of(intent)

    def cancel_abandoned(self, psp_reference: str, work: ChargeWork) -> ChargeResult:
        """A 3-D Secure challenge not completed in time: cancel the PaymentIntent (reason `abandoned`)."""
        return self._cancelled(psp_reference, work, "abandoned") or self.retrieve(psp_reference, work)

    def close_failed(self, failed: ChargeResult, work: ChargeWork) -> ChargeResult:
        """A PaymentIntent whose payment failed stays open in requires_payment_method, and the buyer's browser
        may hold its client secret (a 3-D Secure challenge was handed out): Stripe.js could confirm it with
        another card, charging for orders we report FAILED. So it is cancelled before the orders end FAILED,
        and keeps its failure code. A success that raced the cancel is a success."""
        cancelled = self._cancelled(failed.psp_reference, work, "requested_by_customer")
        return failed if cancelled is not None else self.retrieve(failed.psp_reference, work)

    def _cancelled(self, psp_reference: str, work: ChargeWork, reason: str) -> ChargeResult | None:
        """Cancel the PaymentIntent; None when Stripe refuses because it is no longer cancelable (it succeeded,
        is processing, or a previous call cancelled it): then its current state decides. No idempotency key:
        a fixed one would make Stripe replay a stored 500 for 24 h, and a second cancel is refused harmlessly."""
        try:
            intent = self._stripe.v1.payment_intents.cancel(psp_reference, params={"cancellation_reason": reason})
        except stripe.InvalidRequestError as error:
            if error.code != "payment_intent_unexpected_state":
                raise self._classify(error, creating=False) from error
            return None
        except stripe.StripeError as error:
            raise self._classify(error, creating=False) from error
        return self._checked(intent, work)

    @staticmethod
    def _result_of(intent: Any) -> ChargeResult:
        status = intent.status
        charge_id = _id_of(getattr(intent, "latest_charge", None))
        if status == "succeeded":
            return ChargeResult(SUCCEEDED, intent.id, status, charge_id=charge_id)
        if status == REQUIRES_ACTION:
            action, url = _next_action(intent)
            return ChargeResult(PENDING, intent.id, status, charge_id=charge_id,
                                client_secret=str(getattr(intent, "client_secret", "") or ""), action=action,
                                redirect_url=url)
        if status in _PENDING_STATUSES:
            return ChargeResult(PENDING, intent.id, status, charge_id=charge_id)
        if status == "canceled" and getattr(intent, "cancellation_reason", None) == "abandoned":
            return ChargeResult(FAILED, intent.id, status, AUTHENTICATION_ABANDONED,
                                "the buyer did not complete the 3-D Secure challenge in time")
        error = getattr(intent, "last_payment_error", None)
        code = (getattr(error, "decline_code", None) or getattr(error, "code", None) or status) if error else status
        message = getattr(error, "message", None) if error else None
        return ChargeResult(FAILED, intent.id, status, code, message or f"payment intent {status}")

    @staticmethod
    def _declined(error: stripe.CardError) -> ChargeResult:
        body = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
        intent = body.get("payment_intent") or {}
        code = body.get("decline_code") or error.code or "card_declined"
        charge_id = intent.get("latest_charge") or body.get("charge") or ""
        return ChargeResult(
            FAILED, intent.get("id", ""), intent.get("status", "requires_payment_method"), code,
            body.get("message") or "card declined", charge_id if isinstance(charge_id, str) else "",
        )

    @staticmethod
    def _classify(error: stripe.StripeError, creating: bool = True) -> Exception:
        """Only a create Stripe refused for a reason a retry cannot change is permanent; everything unclear
        is transient, and the next attempt looks the charge up before creating anything. A look-up that Stripe
        refuses proves nothing about the charge: PspOutcomeUnknown (a human looks), never FAILED."""
        headers = error.headers or {}
        message = f"{type(error).__name__}: {error.user_message or error}"
        status = error.http_status
        if isinstance(error, stripe.AuthenticationError | stripe.PermissionError) or status in (401, 403):
            reset_client()  # a rotated key: the next call re-reads it
            return PspTransientError(message)
        if isinstance(error, stripe.IdempotencyError):
            # 409: the first request with this key is still in flight. 400: same key, other parameters,
            # which our deterministic parameters never produce: stop and let a human look.
            return PspTransientError(message) if status == 409 else PspOutcomeUnknown(message)
        if status is None or status >= 500 or isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
            if status is not None and status >= 500 and headers.get("idempotent-replayed") == "true":
                return PspKeyPoisoned(message)
            return PspTransientError(message)
        if status == 429 or headers.get("stripe-should-retry") == "true":
            return PspTransientError(message)
        if not creating:
            return PspOutcomeUnknown(message)
        return PspPermanentError(message, code=error.code or "psp_refused")


MAGIC_TEST_PREFIX = "pm_card_"  # Stripe's test PaymentMethods: reusable without a Customer


_ACTION_PAGES = {"redirect_to_url": "url", "verify_with_microdeposits": "hosted_verification_url"}


def _next_action(intent: Any) -> tuple[str, str]:
    """The type of the PaymentIntent's next_action, and the page the buyer goes to for it ("" for Stripe.js's own
    3-D Secure challenge)."""
    action = getattr(intent, "next_action", None)
    kind = str(getattr(action, "type", "") or "") if action is not None else ""
    details = getattr(action, kind, None) if kind in _ACTION_PAGES else None
    return kind, str(getattr(details, _ACTION_PAGES[kind], "") or "") if details is not None else ""


def needs_customer(work: ChargeWork) -> bool:
    """A PaymentMethod from Stripe.js pays one PaymentIntent unless attached to a Customer: a checkout of several
    currencies (a PaymentIntent each) attaches it first. The magic test tokens are reusable as they are (attaching
    one would mint a copy), so they skip it."""
    return work.shares_payment_method and not work.payment_method.startswith(MAGIC_TEST_PREFIX)


def key_aged(work: ChargeWork) -> bool:
    """Past this, Stripe may have pruned the charge's keys: look up before creating anything."""
    return bool(work.first_attempt_at) and (
        clock.now() - clock.parse_iso(work.first_attempt_at) > IDEMPOTENCY_KEY_SAFE_AGE)


def _transfer_refusal(error: stripe.StripeError) -> TransferResult | None:
    """Stripe's refusals of a Transfer that we act on: the platform's balance short (retried later, never FAILED),
    or the destination account invalid or unable to receive transfers (FAILED with the reason)."""
    if error.http_status is None or error.http_status >= 500 or error.http_status in (401, 403, 409, 429):
        return None
    body = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
    code = error.code or body.get("code") or ""
    reason = body.get("message") or str(error.user_message or error)
    if code == "balance_insufficient":
        return TransferResult(BALANCE_SHORT, failure_code=code, failure_reason=reason)
    if code in _ACCOUNT_REFUSALS or body.get("param") == "destination":
        return TransferResult(ACCOUNT_REFUSED, failure_code=code or "account_invalid", failure_reason=reason)
    return None


def _checked_transfer(transfer: Any, payment_order_id: str, net: Money, destination: str) -> TransferResult:
    """The Transfer's id, once it is the order's: its amount (back in our units) and destination. Another amount
    means money moved that our books do not say: a human looks, never TRANSFERRED or FAILED."""
    try:
        sent = psp_units.from_stripe_amount(transfer.currency, transfer.amount)
    except (MoneyError, NotChargeableAtPsp) as error:
        raise PspOutcomeUnknown(f"{transfer.id}: amount {transfer.amount} {transfer.currency}: {error}") from error
    to = _id_of(getattr(transfer, "destination", None))
    if sent != net or to != destination:
        raise PspOutcomeUnknown(f"{transfer.id} sends {sent} to {to}; order {payment_order_id} owes {net} to "
                                f"{destination}")
    return TransferResult(TRANSFERRED, str(transfer.id))


def transfer_key_aged(payout: dict[str, Any]) -> bool:
    """Past this since the first transfer attempt, Stripe may have pruned the key: look up before creating."""
    first = payout.get("first_transfer_at")
    return bool(first) and clock.now() - clock.parse_iso(str(first)) > IDEMPOTENCY_KEY_SAFE_AGE


def _id_of(value: Any) -> str:
    """An expandable field's id (Stripe sends the id, or the object when expanded)."""
    return value if isinstance(value, str) else str(getattr(value, "id", "") or "")


REVERSED, REVERSAL_REFUSED = "reversed", "refused"


@dataclass(frozen=True)
class ReversalResult:
    outcome: str  # reversed | refused
    reversal_id: str = ""
    failure_code: str = ""
    failure_reason: str = ""


def refund_target(order: dict[str, Any]) -> dict[str, str]:
    """What a refund of the order names at Stripe: its charge (ch_...), else its PaymentIntent."""
    return {"charge": order["charge_id"]} if order.get("charge_id") else {"payment_intent": order["psp_reference"]}


def refund_result(refund: Any) -> RefundResult:
    """A Stripe Refund object (SDK object or webhook dict) as a RefundResult."""
    get = refund.get if isinstance(refund, dict) else lambda name, default=None: getattr(refund, name, default)
    metadata = get("metadata") or {}
    ours = metadata.get("refund_id") if isinstance(metadata, dict) else getattr(metadata, "refund_id", None)
    reason = get("failure_reason") or ""
    return RefundResult(str(get("status")), str(get("id")), str(ours or ""),
                        reason if get("status") in ("failed", "canceled") else "",
                        f"refund {get('status')}" + (f": {reason}" if reason else ""))


def _refund_result(refund: Any, amount: Money) -> RefundResult:
    """The Refund, once its amount (back in our units) is our refund's: another amount is money moved that our
    books do not say (a human looks)."""
    made = psp_units.from_stripe_amount(refund.currency, refund.amount)
    if made != amount:
        raise PspOutcomeUnknown(f"{refund.id} refunds {made}, our refund is {amount}")
    return refund_result(refund)


def _refund_refusal(error: stripe.StripeError) -> RefundResult | None:
    """Stripe's 400 on the amount or the charge (nothing refundable left, the charge not refundable)."""
    if error.http_status != 400 or isinstance(error, stripe.IdempotencyError):
        return None
    body = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
    code = error.code or body.get("code") or ""
    if code in ("amount_too_large", "charge_already_refunded", "charge_not_refundable", "charge_disputed"):
        return RefundResult(REFUND_REFUSED, failure_code=code, failure_reason=body.get("message") or str(error))
    return None


_lock = threading.Lock()
_client: PspClient | None = None
_force_fetch = False


_ssm_provider: tuple[Any, Any] | None = None  # (the ssm client it was built on, the provider)


def _ssm() -> Any:
    """Powertools' SSM provider on the process's own ssm client (functions/shared/aws.py), so that it follows
    that client: Powertools' default provider keeps the first client it made, endpoint included, for the life of
    the process."""
    global _ssm_provider
    ssm = aws.client("ssm")
    if _ssm_provider is None or _ssm_provider[0] is not ssm:
        from aws_lambda_powertools.utilities.parameters import SSMProvider

        _ssm_provider = (ssm, SSMProvider(boto3_client=ssm))
    return _ssm_provider[1]


def _api_key() -> str:
    """The key, from SSM through Powertools' cache (max_age): a rotated key is seen within five minutes, or
    at once after a 401/403 (reset_client forces the next fetch)."""
    global _force_fetch
    config = settings()
    if config.psp_api_key_parameter:
        force, _force_fetch = _force_fetch, False
        return str(_ssm().get(config.psp_api_key_parameter, decrypt=True, max_age=300, force_fetch=force))
    if not config.psp_api_key:
        raise RuntimeError("PSP_API_KEY_PARAMETER (deployed) or PSP_API_KEY (local) must be set")
    return config.psp_api_key


def client() -> PspClient:
    """The process's PSP client, rebuilt whenever the key it was built with is no longer the current one."""
    global _client
    key = _api_key()
    with _lock:
        if _client is None or _client.api_key != key:
            config = settings()
            _client = PspClient(key, config.psp_api_base, timeout_s=config.psp_timeout_s,
                                rate_limit_wait_s=config.psp_rate_limit_wait_s)
        return _client


ADYEN = "adyen"  # functions/shared/psp_adyen.py PSP_NAME (not imported here: that imports the Adyen library)
_adyen: tuple[tuple[str, ...], Any] | None = None  # (what it was built from, the AdyenPsp)


def client_for(name: str) -> Any:
    """THE one place an adapter is picked by a PSP's name (a charge's or a refund's recorded `psp`): Stripe's
    PspClient (`client()`, unchanged) or the Adyen adapter (`adyen_client()`, functions/shared/psp_adyen.py).
    Another name is an item no configuration made (routing refuses it: functions/shared/routing.py
    ROUTABLE_PSPS): PspNotRoutable, dead-lettered for a human, sent nowhere. Callers that need more than the port
    (functions/shared/psp_port.py) check the name first: Stripe's extra steps exist on PspClient only."""
    if name == PSP_NAME:
        return client()
    if name == ADYEN:
        return adyen_client()
    raise PspNotRoutable(f"no money path for PSP {name!r}: only {PSP_NAME} and {ADYEN} are wired")


def adyen_client() -> Any:
    """The process's Adyen adapter, built from the settings (merchant account, environment, live prefix, the
    sandbox's checkout base, the call budget) and the API key, read as Stripe's is (SSM through Powertools' cache,
    so a rotated key is used within five minutes; a 401/403 in between is transient and retried). Rebuilt when any
    of them changes. The Adyen library is imported here, on first use: a process that never charges at Adyen does
    not pay its import (90-190 ms, docs/decisions.md 2026-12-06)."""
    global _adyen
    config = settings()
    if config.adyen_api_key_parameter:
        key = str(_ssm().get(config.adyen_api_key_parameter, decrypt=True, max_age=300))
    elif config.adyen_api_key:
        key = config.adyen_api_key
    else:
        raise RuntimeError("ADYEN_API_KEY_PARAMETER (deployed) or ADYEN_API_KEY (local) must be set to charge at Adyen")
    if not config.adyen_merchant_account:
        raise RuntimeError("ADYEN_MERCHANT_ACCOUNT must be set to charge at Adyen")
    built_from = (key, config.adyen_merchant_account, config.adyen_environment, config.adyen_live_prefix,
                  config.adyen_checkout_base, str(config.psp_timeout_s))
    with _lock:
        if _adyen is None or _adyen[0] != built_from:
            from functions.shared.psp_adyen import AdyenPsp

            _adyen = (built_from, AdyenPsp(key, config.adyen_merchant_account, environment=config.adyen_environment,
                                           live_prefix=config.adyen_live_prefix,
                                           checkout_base=config.adyen_checkout_base,
                                           timeout_s=config.psp_timeout_s))
        return _adyen[1]


def adyen_hmac_key() -> str:
    """The HMAC key (hex) Adyen signs notifications with, read as the webhook secret is; for AdyenPsp's
    verify_webhook (`secret`)."""
    config = settings()
    return _secret(config.adyen_hmac_key_parameter, config.adyen_hmac_key, "ADYEN_HMAC_KEY")


def reset_client() -> None:
    """Forget the client and make the next key read skip the cache (tests; a 401/403 after a rotation)."""
    global _client, _force_fetch, _adyen
    with _lock:
        _client = None
        _adyen = None
        _force_fetch = True


# -- webhooks in ------------------------------------------------------------------------------------------

WEBHOOK_TOLERANCE_S = 300  # Stripe's default: a signature older than this is refused (replays)
WEBHOOK_SECRET_MAX_AGE_S = 300  # a rotated signing secret is seen within five minutes


def webhook_secret() -> str:
    """The endpoint's signing secret (`whsec_...`), from SSM through Powertools' cache, like the API key."""
    config = settings()
    return _secret(config.webhook_secret_parameter, config.webhook_secret, "WEBHOOK_SECRET")


def _secret(parameter: str, value: str, name: str) -> str:
    """A signing secret: from its SSM parameter through Powertools' cache (deployed), else its plain value (tests)."""
    if parameter:
        return str(_ssm().get(parameter, decrypt=True, max_age=WEBHOOK_SECRET_MAX_AGE_S))
    if not value:
        raise RuntimeError(f"{name}_PARAMETER (deployed) or {name} (tests) must be set")
    return value


def verify_webhook(payload: bytes, signature: str | None, secret: str,
                   tolerance_s: int = WEBHOOK_TOLERANCE_S) -> dict[str, Any]:
    """The event, if `signature` signs exactly these bytes with `secret` within the tolerance (the SDK's own
    check: HMAC-SHA256 of "<t>.<body>", any v1 of the header, constant-time compare). Nothing of the body is
    put in the error: a refused body may be anything."""
    if not signature:
        raise WebhookSignatureInvalid("no Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance_s)
    except stripe.SignatureVerificationError as error:
        raise WebhookSignatureInvalid(error.user_message or "signature refused") from None
    except ValueError:  # signed, but not JSON: Stripe never sends that
        raise WebhookSignatureInvalid("the signed body is not JSON") from None
    return event.to_dict()
