"""Redrive a dead-letter queue, message by message, reporting each as it goes.

OrdersDlq, ReconDlq, ReviewDlq: the message moves back to its main queue (send, then delete: a crash in between
duplicates it, which the idempotent consumers absorb, and never loses it). WorkflowDlq: the message names a
charge (older ones an order, resolved to its charge); the charge is put back to work (ops.orders.redrive_order)
and the message is deleted once nothing is left to do for it. Messages the tool cannot act on stay in the DLQ
and are made visible again at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.tables import PaymentTables
from ops.messages import WORK_VISIBILITY_S, Message, Queue
from ops.orders import Action, Outcome, redrive_order
from ops.resources import Dlq, Resources


@dataclass(frozen=True)
class Result:
    message: Message
    payment_order_id: str  # or the charge key the message names
    outcome: Outcome
    deleted: bool


def redrive_queue(
    dlq: Dlq, resources: Resources, *, limit: int | None = None, dry_run: bool = False,
    report: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    """Handle up to `limit` messages of `dlq` (all of them when None); `report` sees each result at once."""
    source = Queue(resources.get(dlq.url_value))
    if dlq.target_value is not None:
        target = Queue(resources.get(dlq.target_value), source.sqs)
        act = _mover(target, dlq.target_name or target.name, dry_run)
    else:
        resources.export_for_shared_code()
        act = _order_driver(PaymentTables(resources.get("payment_events_table"),
                                          resources.get("payment_orders_table"),
                                          resources.get("charges_table")), dry_run)
    results: list[Result] = []
    held: dict[str, Message] = {}  # received and not deleted: made visible again at the end, whatever happens
    seen: set[str] = set()
    try:
        for batch in source.receive(limit, WORK_VISIBILITY_S):
            held.update((message.receipt, message) for message in batch)
            # A message kept earlier in a long run can come back once its work timeout ends: once is enough.
            fresh = [message for message in batch if message.id not in seen]
            if not fresh:
                break
            seen.update(message.id for message in fresh)
            for message in fresh:
                outcome = act(message)
                deleted = outcome.action.settles_message and not dry_run
                if deleted:
                    source.delete(message)
                    del held[message.receipt]
                summary = message.summary()
                result = Result(message, summary.charge_key or summary.payment_order_id, outcome, deleted)
                results.append(result)
                report(result)
    finally:
        for message in held.values():
            # If AWS cannot be reached, the message becomes visible by itself when the work timeout ends.
            with suppress(ClientError, BotoCoreError):
                source.release(message)
    return results


def _mover(target: Queue, target_name: str, dry_run: bool) -> Callable[[Message], Outcome]:
    def move(message: Message) -> Outcome:
        if dry_run:
            return Outcome(Action.MOVED, f"would move to {target_name}")
        new_id = target.send_copy(message)
        return Outcome(Action.MOVED, f"moved to {target_name} as {new_id}")

    return move


def _order_driver(tables: PaymentTables, dry_run: bool) -> Callable[[Message], Outcome]:
    def drive(message: Message) -> Outcome:
        summary = message.summary()
        identifier = summary.charge_key or summary.payment_order_id
        if not identifier or "," in identifier:
            return Outcome(Action.LEFT, "no charge_key or payment_order_id in the body: look at it with ops dlq show")
        return redrive_order(tables, identifier, failed_attempt=summary.attempts,
                             from_message=True, dry_run=dry_run)

    return drive
