"""Payment orders for on-call: everything known about one order, and putting a dead-lettered one back to work.

A redrive never charges anything itself: it hands the order back to the sweeper (or, past the sweeper's
attempt budget, starts the next workflow attempt itself), and the workflow runs the idempotent path again with
the same PSP idempotency key (the payment_order_id), so an order that was charged is not charged twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from functions.shared import aws, clock, queues
from functions.shared.config import settings
from functions.shared.models import OrderWork
from functions.shared.status import OrderStatus
from functions.shared.tables import LedgerTable, PaymentTables, from_item, sweep_shard, to_item

PAYIN = "payin"  # the kind of the ledger transaction and the wallet movement of a pay-in


class Action(StrEnum):
    MOVED = "moved"
    REQUEUED = "requeued"
    STARTED = "attempt started"
    ALREADY_FINAL = "already final"
    SUPERSEDED = "superseded"
    WATCHED = "not dead-lettered"
    LEFT = "left in queue"

    @property
    def settles_message(self) -> bool:
        """After this, the dead-letter message has nothing left to ask for and is deleted."""
        return self in (Action.MOVED, Action.REQUEUED, Action.STARTED, Action.ALREADY_FINAL, Action.SUPERSEDED)


@dataclass(frozen=True)
class Outcome:
    action: Action
    detail: str


def redrive_order(
    tables: PaymentTables, payment_order_id: str, *, failed_attempt: int | None = None,
    from_message: bool = False, dry_run: bool = False,
) -> Outcome:
    """Put one order back to work if it is dead-lettered and not final; say what was done (or would be).

    `from_message`: called for a WorkflowDlq message about `failed_attempt`. A message from the state machine
    leaves the order in the sweeper's index (the failed execution is over): it is requeued unless a newer
    attempt has started since. Without a message (`ops order redrive`), an order still in the index is left
    alone: an execution may be running, and pulling its deadline forward would start a second one.
    """
    config = settings()
    order = tables.get_order(payment_order_id)
    if order is None:
        return Outcome(Action.LEFT, f"no order {payment_order_id} in table {tables.orders_table}")
    status = OrderStatus(order["payment_order_status"])
    attempts = int(order.get("attempts", 0))
    if status.is_final:
        return Outcome(Action.ALREADY_FINAL, f"order is {status.value}; nothing to redrive")
    if "due_at" in order and "dead_letter_reason" not in order:
        if not from_message:
            return Outcome(Action.WATCHED, f"{status.value}, attempt {attempts}: the sweeper already watches it "
                                           f"(next look at {order['due_at']})")
        if failed_attempt is not None and attempts > failed_attempt:
            return Outcome(Action.SUPERSEDED, f"attempt {attempts} was started after the failed attempt "
                                              f"{failed_attempt}; the sweeper watches it")
    now = clock.now()
    shard = sweep_shard(payment_order_id, config.sweep_shards)
    if status is OrderStatus.EXECUTING and attempts >= config.max_attempts:
        return _start_next_attempt(tables, order, shard, now, dry_run)
    what_next = (f"the sweeper starts attempt {attempts + 1}" if status is OrderStatus.EXECUTING
                 else "the sweeper sends it to OrdersQueue")
    if dry_run:
        return Outcome(Action.REQUEUED, f"would requeue ({status.value}, attempt {attempts}): {what_next}")
    if not tables.requeue_dead_lettered(payment_order_id, shard, clock.iso(now), clock.iso(now)):
        return _changed_meanwhile(tables, payment_order_id)
    return Outcome(Action.REQUEUED, f"{status.value}, attempt {attempts}: {what_next} at its next run (every minute)")


def _start_next_attempt(tables: PaymentTables, order: dict[str, Any], shard: str, now: Any, dry_run: bool) -> Outcome:
    """The sweeper dead-letters an order at max_attempts: requeued only, it would dead-letter it again at once.

    So the next attempt is started here, as the sweeper does it (conditional move to the next attempt, then the
    workflow). Requeued with a future deadline first, so the sweeper cannot act in between; if this attempt
    fails too, the sweeper dead-letters the order again when the deadline passes. A crash between the steps
    leaves the order in the index, where the sweeper dead-letters it again: never lost, never doubled.
    """
    order_id, attempt = order["payment_order_id"], int(order.get("attempts", 0)) + 1
    if dry_run:
        return Outcome(Action.STARTED, f"would start attempt {attempt} now (past the sweeper's "
                                       f"{settings().max_attempts} attempts)")
    deadline = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    if not tables.requeue_dead_lettered(order_id, shard, deadline, clock.iso(now)):
        return _changed_meanwhile(tables, order_id)
    started = tables.begin_attempt(order_id, attempt, clock.iso(now), deadline, expected_due_at=deadline)
    if started is None:
        return _changed_meanwhile(tables, order_id)
    execution = queues.start_workflow(OrderWork.from_order_item(started, attempt=attempt))
    return Outcome(Action.STARTED, f"attempt {attempt} started ({execution.rsplit(':', 1)[-1]}); if it fails too, "
                                   f"the sweeper dead-letters it again after {deadline}")


def _changed_meanwhile(tables: PaymentTables, order_id: str) -> Outcome:
    current = tables.get_order(order_id)
    if current and OrderStatus(current["payment_order_status"]).is_final:
        return Outcome(Action.ALREADY_FINAL, f"order became {current['payment_order_status']} meanwhile")
    status = current.get("payment_order_status") if current else "missing"
    return Outcome(Action.LEFT, f"the order changed while redriving (now {status}); look again with ops order show")


@dataclass
class OrderView:
    """The order item, its ledger transaction and the seller's wallet movement, as stored."""

    order: dict[str, Any]
    checkout: dict[str, Any] | None
    ledger: dict[str, Any] | None
    movement: dict[str, Any] | None


def load_order(tables: PaymentTables, ledger: LedgerTable, wallet_table: str, payment_order_id: str
               ) -> OrderView | None:
    order = tables.get_order(payment_order_id)
    if order is None:
        return None
    reference = f"{PAYIN}#{payment_order_id}"
    # WalletTable has no single-movement read; this is one consistent GetItem on its key.
    answer = aws.client("dynamodb").get_item(
        TableName=wallet_table, ConsistentRead=True,
        Key=to_item({"account_id": order.get("seller_account", ""), "sk": f"MOVE#{reference}"}),
    )
    return OrderView(
        order=order,
        checkout=tables.get_checkout(order["checkout_id"]) if order.get("checkout_id") else None,
        ledger=ledger.get(reference),
        movement=from_item(answer["Item"]) if "Item" in answer else None,
    )
