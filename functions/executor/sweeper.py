"""Scheduled: finds charges past their deadline and drives them again through the idempotent path.

- NOT_STARTED past the enqueue grace: the API died between its write and its send (the outbox case): enqueue.
- EXECUTING past the deadline: the workflow died, timed out, was dead-lettered, the PSP said `pending`, or
  finalize died before marking the charge (it is marked last): start the next attempt (same PSP key; with the
  PSP reference known, the executor reads the charge's current state; every later step is idempotent).
- Past max attempts (not counting a bank debit still processing, nor attempts parked while the PSP was down, and one
  more for a charge whose outcome the PSP's notification recorded, which that attempt decides) the charge leaves the
  sweeper's index and a dead-letter message says why (alarm).

Then the payouts of the same shard (the Payouts table's sweep index), inside the same run budget:
- HELD past auto_release_at: released as the API releases (functions/payment/payouts.release_payout).
- RELEASED or TRANSFERRING past due (a lost message, a transient failure, a balance short's backoff, a worker
  killed mid-way): sent to PayoutsQueue again; the Transfer worker resumes it where it stopped.
- Waiting for the seller's connected account: the seller looked at again; sent on once it has one.
- Past max transfer attempts: a dead letter on PayoutsDlq, the payout out of the index.

Shards are swept in parallel (a bounded pool) and each one page by page; one charge's or one shard's error is
logged and the rest go on.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executor import payout_letters
from functions.payment.payouts import release_payout, send_to_transfer
from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.models import DEBIT_PAYMENT_METHOD_TYPES, ChargeWork
from functions.shared.observability import service_metrics
from functions.shared.status import OrderStatus, PayoutStatus
from functions.shared.tables import PaymentTables, PayoutsTable, SellersTable

logger = Logger(service="sweeper")
metrics = service_metrics()

# One thread per shard (32): each charge is ~4 sequential AWS calls, so a run's throughput is threads / call
# latency (docs/decisions.md 2026-12-04). boto3 clients share one pool of 50 connections (functions/shared/aws.py).
MAX_THREADS = 32
MAX_PER_SHARD = 1000  # a run's limit per shard; the rest waits one minute
RUN_BUDGET_S = 45  # of the Sweeper's 60 s timeout: past it, shards stop taking new charges (the next run goes on)
COUNTS = ("enqueued", "redriven", "dead_lettered", "skipped", "errors", "deferred",
          "payouts_released", "payouts_enqueued", "payouts_awaiting", "payouts_dead_lettered")


def sweep(tables: PaymentTables | None = None, max_per_shard: int = MAX_PER_SHARD,
          budget_s: float = RUN_BUDGET_S) -> dict[str, int]:
    tables = tables or PaymentTables.from_settings()
    now = clock.now()
    stop_at = time.monotonic() + budget_s
    shards = [str(shard) for shard in range(settings().sweep_shards)]
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(shards))) as pool:
        results = list(pool.map(lambda shard: _sweep_shard(tables, shard, now, max_per_shard, stop_at), shards))
    counts = {name: 0 for name in COUNTS}
    for result in results:
        for name, value in result.items():
            counts[name] += value
    if any(counts[name] for name in COUNTS if name != "skipped"):
        logger.info("sweep", extra=counts)
    return counts


def _sweep_shard(tables: PaymentTables, shard: str, now: datetime, max_items: int, stop_at: float
                 ) -> Counter[str]:
    counts: Counter[str] = Counter()
    try:
        for key in tables.due_charges(shard, clock.iso(now), max_items=max_items):
            if time.monotonic() > stop_at:
                counts["deferred"] += 1
                break
            try:
                counts[_drive(tables, key, now)] += 1
            except Exception:
                logger.exception("sweep of one charge failed; the next run tries again",
                                 extra={"charge_key": key, "shard": shard})
                counts["errors"] += 1
    except Exception:
        logger.exception("sweep of one shard failed; the other shards go on", extra={"shard": shard})
        counts["errors"] += 1
    if settings().payouts_table:
        counts += _sweep_payout_shard(PayoutsTable.from_settings(), shard, now, max_items, stop_at)
    return counts


def _sweep_payout_shard(payouts: PayoutsTable, shard: str, now: datetime, max_items: int, stop_at: float
                        ) -> Counter[str]:
    counts: Counter[str] = Counter()
    sellers = SellersTable.from_settings()
    try:
        for order_id in payouts.due_payouts(shard, clock.iso(now), max_items=max_items):
            if time.monotonic() > stop_at:
                counts["deferred"] += 1
                break
            try:
                counts[_drive_payout(payouts, sellers, order_id, now)] += 1
            except Exception:
                logger.exception("sweep of one payout failed; the next run tries again",
                                 extra={"payment_order_id": order_id, "shard": shard})
                counts["errors"] += 1
    except Exception:
        logger.exception("payout sweep of one shard failed; the other shards go on", extra={"shard": shard})
        counts["errors"] += 1
    return counts


def _drive_payout(payouts: PayoutsTable, sellers: SellersTable, order_id: str, now: datetime) -> str:
    payout = payouts.get(order_id)
    if payout is None or "due_at" not in payout or payout["due_at"] > clock.iso(now):
        return "skipped"
    status = PayoutStatus(payout["payout_status"])
    if status.is_final:
        return "skipped"
    if status is PayoutStatus.HELD:
        if payout.get("auto_release_at", payout["due_at"]) > clock.iso(now):
            return "skipped"
        if release_payout(payout, now, payouts, sellers) is None:
            return "skipped"
        send_to_transfer([order_id])  # if refused: it is due after the enqueue grace, and sent then
        return "payouts_released"
    if int(payout.get("transfer_attempts", 0)) >= settings().max_transfer_attempts:
        dead = payout_letters.out_of_attempts(payouts, payout, now) == "dead_lettered"
        return "payouts_dead_lettered" if dead else "skipped"
    if payout.get("awaiting_seller") and not (sellers.get(payout["seller_account"]) or {}).get("psp_account_id"):
        payouts.await_seller(order_id, payout["seller_account"], clock.iso(now + payout_letters.AWAIT_SELLER),
                             clock.iso(now))
        return "payouts_awaiting"
    # Not sent again before the deadline: the worker's own begin_transfer pushes it further on.
    payouts.postpone(order_id, clock.iso(now + timedelta(seconds=settings().transfer_deadline_s)), clock.iso(now),
                     str(payout.get("last_error", "")))
    if send_to_transfer([order_id]):
        raise RuntimeError(f"the payouts queue refused {order_id}")
    return "payouts_enqueued"


def _drive(tables: PaymentTables, key: str, now: datetime) -> str:
    charge = tables.get_charge(key)
    if charge is None or "due_at" not in charge:
        return "skipped"
    config = settings()
    due_at, attempts = charge["due_at"], int(charge.get("attempts", 0))
    status = OrderStatus(charge["charge_status"])
    if status.is_final or due_at > clock.iso(now):  # (the index may lag a write that pushed the deadline on)
        return "skipped"
    # an attempt that found its PSP down sent nothing: a wait, not a failed attempt (for psp_outage_max_wait_s)
    failed_attempts = attempts - int(charge.get("parked_attempts", 0))
    # the PSP's notification recorded the outcome: one attempt more, which decides it (functions/executor/handler.py)
    out_of_attempts = failed_attempts >= config.max_attempts + (1 if charge.get("psp_notified") else 0)
    if not _debit_still_processing(charge, now) and (out_of_attempts or _psp_outage_too_long(charge, now)):
        return _dead_letter(tables, charge, status, now)
    if status is OrderStatus.NOT_STARTED:
        later = clock.iso(now + timedelta(seconds=config.enqueue_grace_s))
        if not tables.postpone_charge(key, due_at, later, clock.iso(now)):
            return "skipped"
        if queues.enqueue_charges([(key, charge["checkout_id"])], {key: charge.get("correlation_id", "")}):
            raise RuntimeError(f"the orders queue refused {key}")
        return "enqueued"
    started = tables.begin_charge_attempt(key, attempts + 1, clock.iso(now),
                                          clock.iso(now + timedelta(seconds=config.executing_deadline_s)),
                                          expected_due_at=due_at)
    if started is None:
        return "skipped"
    queues.start_workflow(ChargeWork.from_charge_item(started, attempt=attempts + 1))
    tables.note_execution_started(key, attempts + 1)
    return "redriven"


def _debit_still_processing(charge: dict[str, Any], now: datetime) -> bool:
    """A bank debit the bank has not answered yet: its look-ups are waits, not failed attempts, for
    debit_max_wait_s from its creation (then a person looks)."""
    created = clock.parse_iso(str(charge.get("created_at") or clock.iso(now)))
    debit = charge.get("payment_method_type") in DEBIT_PAYMENT_METHOD_TYPES
    waiting = debit and charge.get("psp_status") == "processing"
    return waiting and now < created + timedelta(seconds=settings().debit_max_wait_s)


def _psp_outage_too_long(charge: dict[str, Any], now: datetime) -> bool:
    """Parked since `psp_down_since` (every attempt since then found its PSP down and sent nothing:
    functions/executor/handler.py `_park_if_psp_down`) for longer than psp_outage_max_wait_s: a person looks. One
    never sent has ended FAILED long before (psp_unavailable_fail_after_s); this one had a call out before."""
    since = charge.get("psp_down_since")
    return bool(since) and now >= clock.parse_iso(str(since)) + timedelta(seconds=settings().psp_outage_max_wait_s)


def _dead_letter(tables: PaymentTables, charge: dict[str, Any], status: OrderStatus, now: datetime) -> str:
    """The dead letter first, then the charge out of the index: a sweeper killed between the two sends it again
    on its next run (on-call sees the charge twice; a redrive is idempotent), where the other order would leave
    the charge out of every index with no message and no alarm."""
    key, attempts = charge["charge_key"], int(charge.get("attempts", 0))
    reason = f"{status.value} after {attempts} attempts (psp_status={charge.get('psp_status', '')})"
    queues.dead_letter(key, "sweeper", reason, attempts, {
        "checkout_id": charge["checkout_id"], "psp_reference": charge.get("psp_reference"),
        "payment_order_ids": [order["payment_order_id"] for order in charge["orders"]]})
    if not tables.mark_charge_dead_lettered(key, charge["due_at"], reason, clock.iso(now)):
        return "skipped"
    return "dead_lettered"


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    counts = sweep()
    for name, value in counts.items():
        if value:
            metrics.add_metric(name=f"Sweep_{name}", unit=MetricUnit.Count, value=value)
    return counts
