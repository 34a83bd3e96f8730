"""The throughput governor: PSP calls stay under the PSP account's rate limit (README "Throughput ceiling").

Every function that calls the PSP gets a concurrency cap, so that even if the PSP answered every call in
PSP_MIN_CALL_LATENCY_S (faster than it does), the callers together send at most the configured rate:
one instance calls the PSP one call at a time, so `concurrency` instances send at most
`concurrency / PSP_MIN_CALL_LATENCY_S` calls a second. The rate is split between callers by SHARES.
- Executor (charges; invoked by the workflow): reserved concurrency. A throttled invoke is
  Lambda.TooManyRequestsException, which the workflow retries (THROTTLE_RETRY), then leaves to the sweeper.
- Transfer, RefundWorker, WebhookProcessor (SQS): the event source's maximum concurrency, so messages wait in
  their queue instead of being throttled (SQS allows 2 at least).
- The Sweeper makes no PSP call (it re-drives through the queues); PaymentApi, OrderStarter and the others
  neither. The receiver only verifies signatures locally.
A 429 that still happens (another system on the same Stripe account, a burst at a second's edge) is waited out
in functions/shared/psp.py (RateLimitedRetries) and then retried as a transient error: never a failure.

The rate comes from CDK context `psp_rate_limit_per_s` (default 100: Stripe's live-mode limit; 25 in a sandbox).
"""

from __future__ import annotations

from constructs import Construct

from infra import names

CTX_PSP_RATE_LIMIT = "psp_rate_limit_per_s"
DEFAULT_PSP_RATE_LIMIT_PER_S = 100  # Stripe live mode: 100 operations a second (docs.stripe.com/rate-limits)
# The fastest a Stripe call answers (a retrieve; a confirm takes ~0.5-0.6 s): sizing by the fastest keeps the cap
# a bound whatever the latency of the day. Measured latencies only make the real rate lower.
PSP_MIN_CALL_LATENCY_S = 0.25
# Shares of the rate of the SQS-driven callers; the Executor (charges: the payment path) gets the rest.
SHARES = {
    names.TRANSFER.name: 0.2,  # payouts, one Transfer per order
    names.REFUND_WORKER.name: 0.1,
    names.WEBHOOK_PROCESSOR.name: 0.1,  # refund events' reversals and look-ups
}
CALLERS = (names.EXECUTOR.name, *SHARES)
SQS_MIN_CONCURRENCY = 2  # the event source's maximum concurrency may not be lower


def rate_limit(scope: Construct) -> int:
    value = scope.node.try_get_context(CTX_PSP_RATE_LIMIT)
    rate = int(value) if value not in (None, "") else DEFAULT_PSP_RATE_LIMIT_PER_S
    if rate < 1:
        raise ValueError(f"{CTX_PSP_RATE_LIMIT} must be at least 1, not {rate}")
    return rate


def concurrency(function_name: str, rate_per_s: int) -> int:
    """The most instances of `function_name` that keep its share of the rate at the fastest PSP answer."""
    if function_name == names.EXECUTOR.name:
        others = sum(concurrency(name, rate_per_s) for name in SHARES)
        return max(int(rate_per_s * PSP_MIN_CALL_LATENCY_S) - others, 1)
    return max(int(rate_per_s * SHARES[function_name] * PSP_MIN_CALL_LATENCY_S), SQS_MIN_CONCURRENCY)


def ceiling_calls_per_s(rate_per_s: int) -> float:
    """PSP calls a second the caps allow in all at the fastest answer: at most the rate, but below ~28 a second
    (a Stripe sandbox's 25) the SQS minimum of 2 per source and the Executor's 1 allow 7 instances, 28 calls."""
    return sum(concurrency(name, rate_per_s) for name in CALLERS) / PSP_MIN_CALL_LATENCY_S
