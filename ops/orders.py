"""Payment orders and their charges for on-call: everything known about one order, and putting a dead-lettered
charge back to work.

An order is charged as part of its charge (its checkout in its currency): a redrive by payment_order_id
resolves to that charge and redrives it, for every order of it. A redrive never charges anything itself: it
hands the charge back to the sweeper (or, past the sweeper's attempt budget, starts the next workflow attempt
itself), and the workflow runs the idempotent path again with the same PSP idempotency key, so a charge that
was made is not made twice. A charge already final only gets its checkout completed (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from functions.shared import clock, queues
from functions.shared.config import settings
from functions.shared.models import ChargeWork
from functions.shared.names import PAYIN, charge_key, ledger_transaction_id
from functions.shared.status import OrderStatus
from functions.shared.tables import LedgerTable, PaymentTables, WalletTable


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


def resolve_charge_key(tables: PaymentTables, identifier: str) -> str | None:
    """A charge key (`<checkout_id>#<CURRENCY>`) as it is, or the charge of a payment_order_id."""
    if "#" in identifier:
        return identifier
    order = tables.get_order(identifier)
    if order is None:
        return None
    return order.get("charge_key") or charge_key(order["checkout_id"], order["currency"])


def redrive_order(
    tables: PaymentTables, identifier: str, *, failed_attempt: int | None = None,
    from_message: bool = False, dry_run: bool = False,
) -> Outcome:
    """Put the charge of `identifier` (a payment_order_id or a charge key) back to work if it is not final."""
    key = resolve_charge_key(tables, identifier)
    charge = tables.get_charge(key) if key else None
    if key is None or charge is None:
        return Outcome(Action.LEFT, f"no order or charge {identifier} in {tables.orders_table} / "
                                    f"{tables.charges_table}")
    return redrive_charge(tables, charge, failed_attempt=failed_attempt, from_message=from_message,
                          dry_run=dry_run)


def redrive_charge(
    tables: PaymentTables, charge: dict[str, Any], *, failed_attempt: int | None = None,
    from_message: bool = False, dry_run: bool = False,
) -> Outcome:
    """`from_message`: called for a WorkflowDlq message about `failed_attempt`. A message from the state machine
    leaves the charge in the sweeper's index (the failed execution is over): it is requeued unless a newer
    attempt has started since. Without a message (`ops order redrive`), a charge still in the index is left
    alone: an execution may be running, and pulling its deadline forward would start a second one."""
    key, status = charge["charge_key"], OrderStatus(charge["charge_status"])
    attempts = int(charge.get("attempts", 0))
    if status.is_final:
        return _complete_checkout(tables, charge, status, dry_run)
    if "due_at" in charge and "dead_letter_reason" not in charge:
        if not from_message:
            return Outcome(Action.WATCHED, f"charge {key} {status.value}, attempt {attempts}: the sweeper already "
                                           f"watches it (next look at {charge['due_at']})")
        if failed_attempt is not None and attempts > failed_attempt:
            return Outcome(Action.SUPERSEDED, f"attempt {attempts} of {key} was started after the failed attempt "
                                              f"{failed_attempt}; the sweeper watches it")
    now = clock.now()
    if status is OrderStatus.EXECUTING and attempts >= settings().max_attempts:
        return _start_next_attempt(tables, charge, now, dry_run)
    what_next = (f"the sweeper starts attempt {attempts + 1}" if status is OrderStatus.EXECUTING
                 else "the sweeper sends it to OrdersQueue")
    if dry_run:
        return Outcome(Action.REQUEUED, f"would requeue charge {key} ({status.value}, attempt {attempts}): "
                                        f"{what_next}")
    if not tables.requeue_charge(key, settings().sweep_shards, clock.iso(now), clock.iso(now)):
        return _changed_meanwhile(tables, key)
    return Outcome(Action.REQUEUED, f"charge {key} {status.value}, attempt {attempts}: {what_next} at its next run "
                                    f"(every minute)")


def _complete_checkout(tables: PaymentTables, charge: dict[str, Any], status: OrderStatus, dry_run: bool
                       ) -> Outcome:
    """A final charge whose checkout was not marked done (a finalize that died before the last write of an
    older release): taking its orders off the pending set again completes it; nothing else changes."""
    order_ids = [order["payment_order_id"] for order in charge["orders"]]
    checkout = tables.get_checkout(charge["checkout_id"]) or {}
    if checkout.get("is_payment_done") or not set(order_ids) & set(checkout.get("pending_order_ids") or ()):
        return Outcome(Action.ALREADY_FINAL, f"charge {charge['charge_key']} is {status.value}; nothing to redrive")
    if dry_run:
        return Outcome(Action.ALREADY_FINAL, f"charge is {status.value}; would complete its checkout")
    done = tables.settle_checkout_orders(charge["checkout_id"], order_ids)
    return Outcome(Action.ALREADY_FINAL, f"charge is {status.value}; its orders were taken off the checkout's "
                                         f"pending set (is_payment_done={done})")


def _start_next_attempt(tables: PaymentTables, charge: dict[str, Any], now: datetime, dry_run: bool) -> Outcome:
    """The sweeper dead-letters a charge at max_attempts: requeued only, it would dead-letter it again at once.

    So the next attempt is started here, as the sweeper does it (conditional move to the next attempt, then the
    workflow). Requeued with a future deadline first, so the sweeper cannot act in between; if this attempt
    fails too, the sweeper dead-letters the charge again when the deadline passes. A crash between the steps
    leaves the charge in the index, where the sweeper dead-letters it again: never lost, never doubled.
    """
    key, attempt = charge["charge_key"], int(charge.get("attempts", 0)) + 1
    if dry_run:
        return Outcome(Action.STARTED, f"would start attempt {attempt} of {key} now (past the sweeper's "
                                       f"{settings().max_attempts} attempts)")
    deadline = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    if not tables.requeue_charge(key, settings().sweep_shards, deadline, clock.iso(now)):
        return _changed_meanwhile(tables, key)
    started = tables.begin_charge_attempt(key, attempt, clock.iso(now), deadline, expected_due_at=deadline)
    if started is None:
        return _changed_meanwhile(tables, key)
    execution = queues.start_workflow(ChargeWork.from_charge_item(started, attempt=attempt))
    tables.note_execution_started(key, attempt)
    return Outcome(Action.STARTED, f"attempt {attempt} of {key} started ({execution.rsplit(':', 1)[-1]}); if it "
                                   f"fails too, the sweeper dead-letters it again after {deadline}")


def _changed_meanwhile(tables: PaymentTables, key: str) -> Outcome:
    current = tables.get_charge(key)
    if current and OrderStatus(current["charge_status"]).is_final:
        return Outcome(Action.ALREADY_FINAL, f"charge {key} became {current['charge_status']} meanwhile")
    status = current.get("charge_status") if current else "missing"
    return Outcome(Action.LEFT, f"charge {key} changed while redriving (now {status}); look again with "
                                f"ops order show")


@dataclass
class OrderView:
    """The order item, its charge, its ledger transaction and the seller's wallet movement, as stored."""

    order: dict[str, Any]
    charge: dict[str, Any] | None
    checkout: dict[str, Any] | None
    ledger: dict[str, Any] | None
    movement: dict[str, Any] | None


def load_order(tables: PaymentTables, ledger: LedgerTable, wallet_table: str, payment_order_id: str
               ) -> OrderView | None:
    order = tables.get_order(payment_order_id)
    if order is None:
        return None
    key = resolve_charge_key(tables, payment_order_id)
    return OrderView(
        order=order,
        charge=tables.get_charge(key) if key else None,
        checkout=tables.get_checkout(order["checkout_id"]) if order.get("checkout_id") else None,
        ledger=ledger.get(ledger_transaction_id(PAYIN, payment_order_id)),
        movement=WalletTable(wallet_table).get_movement(PAYIN, payment_order_id),
    )
