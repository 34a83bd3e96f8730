"""The matcher's ports on AWS: batched reads of orders and ledger, charges handed back, fee writes, review queue."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from functions.ledger import journal
from functions.recon.matching import (
    CHECKOUT_ATTRIBUTES,
    LEDGER_KIND,
    ORDER_ATTRIBUTES,
    PAYIN_ATTRIBUTES,
    PAYOUT_ATTRIBUTES,
    ROW_TRANSACTION_ATTRIBUTES,
    WINDOW_ORDER_ATTRIBUTES,
    Listing,
)
from functions.recon.outcomes import Outcome, Restart
from functions.recon.rows import RowKind
from functions.shared import aws, clock, queues
from functions.shared.config import settings
from functions.shared.errors import LedgerConflict
from functions.shared.models import ChargeWork
from functions.shared.money import Money
from functions.shared.names import (
    PAYIN,
    charge_key,
    ledger_transaction_id,
    ledger_transaction_kind_and_reference,
)
from functions.shared.status import OrderStatus
from functions.shared.tables import LedgerTable, PaymentTables, created_buckets

_CHUNK = 100  # keys per BatchGetItem
_REFUND = LEDGER_KIND[RowKind.REFUND]  # the order index also holds an order's disputes


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


@dataclass
class DynamoLookup:
    """Reads a batch's orders and transactions with up to `pool` BatchGetItem requests in flight.

    Every read asks only for the attributes the matcher reads (the projections of `matching`): fewer bytes
    over the wire and fewer to decode, for the same read capacity.
    """

    payments: PaymentTables
    ledger: LedgerTable
    pool: ThreadPoolExecutor
    payout_records: Any = None  # PayoutsTable: read only for a file with transfers

    def orders(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._all(self.payments.get_orders, {ORDER_ATTRIBUTES: payment_order_ids})

    def checkout_orders(self, checkout_ids: list[str]) -> dict[str, Listing]:
        """The checkouts' order ids by currency, from their payment events' `payment_orders`."""
        events = self._all(self.payments.get_checkouts, {CHECKOUT_ATTRIBUTES: checkout_ids})
        return {checkout_id: listing(event.get("payment_orders") or []) for checkout_id, event in events.items()}

    def payins(self, payment_order_ids: list[str]) -> set[str]:
        keys = [ledger_transaction_id(PAYIN, order_id) for order_id in payment_order_ids]
        found = self._all(self.ledger.get_many, {PAYIN_ATTRIBUTES: keys})
        return {ledger_transaction_kind_and_reference(transaction_id)[1] for transaction_id in found}

    def transactions(self, transaction_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._all(self.ledger.get_many, {ROW_TRANSACTION_ATTRIBUTES: transaction_ids})

    def refunds_of(self, payment_order_ids: set[str]) -> dict[str, list[str]]:
        """One query of the ledger's order index per order, `pool` of them in flight."""
        ids = list(payment_order_ids)
        found = self.pool.map(self.ledger.transaction_ids_of_order, ids)
        return {order_id: refunds for order_id, transaction_ids in zip(ids, found, strict=True)
                if (refunds := [t for t in transaction_ids if ledger_transaction_kind_and_reference(t)[0] == _REFUND])}

    def window_orders(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._all(self.payments.get_orders, {WINDOW_ORDER_ATTRIBUTES: payment_order_ids})

    def created_between(self, start: str, end: str) -> Iterator[str]:
        """One query per creation hour and shard, `pool` of them in flight."""
        for ids in self.pool.map(lambda bucket: self.payments.orders_created(bucket, start, end),
                                 created_buckets(start, end)):
            yield from ids

    def order_ids_by_reference(self, psp_references: set[str]) -> dict[str, str]:
        references = list(psp_references)
        found = self.pool.map(self.payments.order_ids_with_reference, references)
        return {reference: ids[0] for reference, ids in zip(references, found, strict=True) if ids}

    def payouts(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._all(self.payout_records.get_many, {PAYOUT_ATTRIBUTES: payment_order_ids})

    def transferred_between(self, start: str, end: str) -> Iterator[str]:
        """One query of the `transferred` index per hour and shard, `pool` of them in flight."""
        for ids in self.pool.map(lambda bucket: self.payout_records.transferred_between(bucket, start, end),
                                 created_buckets(start, end)):
            yield from ids

    def _all(self, read: Any, wanted: dict[tuple[str, ...], list[str]]) -> dict[str, dict[str, Any]]:
        """Every request of `wanted` (attributes -> keys), 100 keys each, in flight together."""
        requests = [(chunk, attributes) for attributes, ids in wanted.items()
                    for chunk in _chunks(list(dict.fromkeys(ids)))]
        found: dict[str, dict[str, Any]] = {}
        for part in self.pool.map(lambda request: read(*request), requests):
            found.update(part)
        return found


def listing(payment_orders: list[dict[str, Any]]) -> Listing:
    """A checkout's order ids by currency, from its event's order summaries."""
    found: Listing = {}
    for summary in payment_orders:
        found.setdefault(summary["currency"], []).append(summary["payment_order_id"])
    return found


@dataclass
class AwsFixes:
    """Charges handed back to their normal path (the orders queue or the sweeper) and PSP fee transactions
    (ledger), both idempotent.

    Fee writes (one conditional PutItem per PSP balance transaction) run on their own pool, at most
    `max_in_flight` queued, so the matcher's batch reads never wait behind them.
    """

    psp: str
    pool: ThreadPoolExecutor
    ledger: LedgerTable
    payments: PaymentTables
    max_in_flight: int = 256
    _pending: set[Future[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _conflicts: list[tuple[str, Money]] = field(default_factory=list)
    _charges: dict[str, Restart] = field(default_factory=dict)
    restarted: int = 0
    fees_recorded: int = 0

    def restart_order(self, order: dict[str, Any]) -> Restart:
        """Hand the charge of a settled but unfinished order back to its normal path, once per charge and file
        (the orders of a charge share it)."""
        key = order.get("charge_key") or self._charge_key_of(order["payment_order_id"])
        if key is None:
            return Restart.NO_CHARGE
        if key not in self._charges:
            self._charges[key] = self._restart_charge(key)
        return self._charges[key]

    def _charge_key_of(self, payment_order_id: str) -> str | None:
        """The matcher's projected read leaves the charge out; the order is read again (a handful per file)."""
        order = self.payments.get_order(payment_order_id) or {}
        if order.get("charge_key"):
            return str(order["charge_key"])
        return charge_key(order["checkout_id"], order["currency"]) if order else None

    def _restart_charge(self, key: str) -> Restart:
        """NOT_STARTED: its message is sent again, as the API sends it (the starter begins attempt 1 once,
        whatever the number of deliveries). EXECUTING and still watched by the sweeper: left to it (its
        deadline is the promise of the next attempt; pulling it forward could overlap a live execution).
        EXECUTING and dead-lettered: put back under the sweeper's watch, due now; past the sweeper's attempts
        (it would dead-letter it again at once) the next attempt is started here, as `ops order redrive` does.
        The next attempt's executor looks the PaymentIntent up and the charge completes with its orders."""
        charge = self.payments.get_charge(key)
        if charge is None:
            return Restart.NO_CHARGE
        status = OrderStatus(charge["charge_status"])
        if status.is_final:
            return Restart.FINISHED if status is OrderStatus.SUCCESS else Restart.MOVED_ON
        if status is OrderStatus.NOT_STARTED:
            if queues.enqueue_charges([(key, charge["checkout_id"])], {key: charge.get("correlation_id", "")}):
                raise RuntimeError(f"the orders queue refused {key}")
        elif "due_at" in charge and "dead_letter_reason" not in charge:
            return Restart.WATCHED
        elif not self._redrive(charge):
            return self._restart_charge(key)  # it changed since the read: judged again as it is now
        self.restarted += 1
        return Restart.STARTED

    def _redrive(self, charge: dict[str, Any]) -> bool:
        """A dead-lettered EXECUTING charge back to work; False when it changed since it was read."""
        key, config, now = charge["charge_key"], settings(), clock.now()
        attempt = int(charge.get("attempts", 0)) + 1
        if attempt <= config.max_attempts:
            return self.payments.requeue_charge(key, config.sweep_shards, clock.iso(now), clock.iso(now))
        # Under watch with a future deadline first, so the sweeper cannot act in between.
        deadline = clock.iso(now + timedelta(seconds=config.executing_deadline_s))
        if not self.payments.requeue_charge(key, config.sweep_shards, deadline, clock.iso(now)):
            return False
        started = self.payments.begin_charge_attempt(key, attempt, clock.iso(now), deadline,
                                                     expected_due_at=deadline)
        if started is None:
            return False
        queues.start_workflow(ChargeWork.from_charge_item(started, attempt=attempt))
        self.payments.note_execution_started(key, attempt)
        return True

    def record_fees(self, currency: str, fees: list[tuple[str, int]]) -> None:
        for reference, minor in fees:
            if len(self._pending) >= self.max_in_flight:
                done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            self._pending.add(self.pool.submit(self._write_fee, reference, Money(minor, currency)))

    def _write_fee(self, reference: str, fee: Money) -> None:
        try:
            journal.record(journal.psp_fee(reference, fee, self.psp), self.ledger)
        except LedgerConflict:
            self._conflicts.append((reference, fee))
            return
        with self._lock:
            self.fees_recorded += 1

    def fee_conflicts(self) -> list[tuple[str, Money]]:
        """Wait for every fee write; return those the ledger holds with a different amount."""
        pending, self._pending = self._pending, set()
        for future in pending:
            future.result()
        return list(self._conflicts)


@dataclass
class ReviewQueue:
    """One message per unexplained discrepancy, sent 10 at a time.

    A retried run sends its messages again (SQS standard queues do not deduplicate): each carries a
    deterministic `discrepancy_id` so the reviewer's tooling can drop repeats.
    """

    queue_url: str
    context: dict[str, Any]
    sent: int = 0
    _batch: list[dict[str, Any]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        body = {**self.context, **outcome.to_dict()}
        identity = ":".join(str(part) for part in (self.context.get("file_sha256"), outcome.line, outcome.category,
                                                   outcome.payment_order_id, outcome.psp_reference))
        body["discrepancy_id"] = hashlib.sha256(identity.encode()).hexdigest()[:32]
        self._batch.append(body)
        if len(self._batch) == 10:
            self.flush()

    def flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        entries = [{"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(batch)]
        for _ in range(3):
            answer = aws.client("sqs").send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = {f["Id"] for f in answer.get("Failed", [])}
            self.sent += len(entries) - len(failed)
            entries = [e for e in entries if e["Id"] in failed]
            if not entries:
                return
        raise RuntimeError(f"review queue refused {len(entries)} messages")
