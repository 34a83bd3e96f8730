"""Scheduled: finds orders past their deadline and drives them again through the idempotent path.

- NOT_STARTED past the enqueue grace: the API died between its write and its send (the outbox case):
  enqueue again.
- EXECUTING past the deadline: the workflow died, timed out, or the PSP said `pending`: start the next
  attempt (same idempotency key; with the PSP reference known, the executor reads the charge's current state).
- Past max attempts: the order leaves the sweeper's index and a dead-letter message says why (alarm).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.models import OrderWork
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables

logger = Logger(service="sweeper")


def sweep(tables: PaymentTables | None = None, limit_per_shard: int = 100) -> dict[str, int]:
    tables = tables or PaymentTables.from_settings()
    config = settings()
    counts = {"enqueued": 0, "redriven": 0, "dead_lettered": 0, "skipped": 0}
    now = clock.now()
    for shard in range(config.sweep_shards):
        for key in tables.due_orders(str(shard), clock.iso(now), limit_per_shard):
            order = tables.get_order(key["payment_order_id"])
            if order is None or "due_at" not in order:
                counts["skipped"] += 1
                continue
            counts[_drive(order, tables, now)] += 1
    if any(counts[k] for k in ("enqueued", "redriven", "dead_lettered")):
        logger.info("sweep", extra=counts)
    return counts


def _drive(order: dict[str, Any], tables: PaymentTables, now: Any) -> str:
    config = settings()
    order_id, due_at = order["payment_order_id"], order["due_at"]
    status = OrderStatus(order["payment_order_status"])
    attempts = int(order.get("attempts", 0))
    if status.is_final:
        return "skipped"
    if attempts >= config.max_attempts:
        reason = f"{status.value} after {attempts} attempts (psp_status={order.get('psp_status', '')})"
        if tables.mark_dead_lettered(order_id, due_at, reason, clock.iso(now)):
            queues.dead_letter(order_id, "sweeper", reason, attempts,
                               {"checkout_id": order["checkout_id"], "psp_reference": order.get("psp_reference")})
            return "dead_lettered"
        return "skipped"
    if status is OrderStatus.NOT_STARTED:
        if not tables.postpone(order_id, due_at, clock.iso(now + timedelta(seconds=config.enqueue_grace_s)),
                               clock.iso(now)):
            return "skipped"
        queues.enqueue_orders([OrderWork.from_order_item(order, attempt=1)])
        return "enqueued"
    next_attempt = attempts + 1
    started = tables.begin_attempt(order_id, next_attempt, clock.iso(now),
                                   clock.iso(now + timedelta(seconds=config.executing_deadline_s)),
                                   expected_due_at=due_at)
    if started is None:
        return "skipped"
    queues.start_workflow(OrderWork.from_order_item(started, attempt=next_attempt))
    return "redriven"


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return sweep()
