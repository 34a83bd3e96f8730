"""The only place that talks to DynamoDB. Driver errors become domain answers here.

Every write is conditional, so running it twice changes nothing the second time: conditions are the
idempotency guards (see docs/design.md for the table layout).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.shared import aws
from functions.shared.config import Settings, settings
from functions.shared.errors import PaymentOrderIdInUse, StatusTransitionRefused
from functions.shared.status import ALLOWED_FROM, OrderStatus

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in values.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def _plain(value: Any) -> Any:
    # DynamoDB numbers come back as Decimal; every number we store is an integer (minor units, counters).
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _cancellation_codes(error: ClientError) -> list[str]:
    reasons = error.response.get("CancellationReasons") or []
    return [reason.get("Code", "None") for reason in reasons]


class CheckoutExists(Exception):
    """The checkout_id is taken; `existing` is the stored event (None if it could not be read yet)."""

    def __init__(self, existing: dict[str, Any] | None):
        super().__init__("checkout exists")
        self.existing = existing


class WriteConflict(Exception):
    """A concurrent transaction touched the same items; the caller may retry."""


def sweep_shard(payment_order_id: str, shards: int) -> str:
    digest = hashlib.sha256(payment_order_id.encode()).digest()
    return str(digest[0] % shards)


# The orders table's indexes besides the sweep index (infra/names.py names them for the stack).
CREATED_INDEX = "created"
REFERENCE_INDEX = "psp_reference"
# The ledger's sparse index of the transactions that name their order (refunds).
LEDGER_ORDER_INDEX = "payment_order_id"
# Part of every stored created_bucket: changing it means rewriting that attribute on the orders of open windows.
CREATED_SHARDS = 8


def created_bucket(payment_order_id: str, created_at: str) -> str:
    """The created index's partition of an order: its creation hour (UTC) and one of CREATED_SHARDS shards,
    so the orders of a busy hour spread over several partitions."""
    return f"{created_at[:13]}#{sweep_shard(payment_order_id, CREATED_SHARDS)}"


def created_buckets(start: str, end: str) -> list[str]:
    """Every created_bucket that can hold an order created in [start, end) (ISO timestamps, UTC)."""
    hour = datetime.fromisoformat(start[:13] + ":00:00+00:00")
    last = datetime.fromisoformat(end[:13] + ":00:00+00:00")
    buckets = []
    while hour <= last:
        prefix = hour.strftime("%Y-%m-%dT%H")
        buckets += [f"{prefix}#{shard}" for shard in range(CREATED_SHARDS)]
        hour += timedelta(hours=1)
    return buckets


@dataclass
class PaymentTables:
    """Payment events (one per checkout) and payment orders (one per seller share)."""

    events_table: str
    orders_table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> PaymentTables:
        config = config or settings()
        return cls(config.payment_events_table, config.payment_orders_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def _update_order_if(self, payment_order_id: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional update of an order; False when the condition did not hold (nothing changed)."""
        try:
            self._db.update_item(
                TableName=self.orders_table,
                Key=to_item({"payment_order_id": payment_order_id}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=to_item(values),
            )
        except ClientError as error:
            if _error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- checkout creation -------------------------------------------------------------------------

    def create_checkout(self, event: dict[str, Any], orders: list[dict[str, Any]]) -> None:
        """Store the event and all its orders in one transaction: all or nothing.

        Raises CheckoutExists when the checkout_id is taken, PaymentOrderIdInUse when an order id belongs
        to another checkout, WriteConflict when a concurrent transaction raced this one.
        """
        items = [
            {
                "Put": {
                    "TableName": self.events_table,
                    "Item": to_item(event),
                    "ConditionExpression": "attribute_not_exists(checkout_id)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        ]
        items += [
            {
                "Put": {
                    "TableName": self.orders_table,
                    "Item": to_item(order),
                    "ConditionExpression": "attribute_not_exists(payment_order_id)",
                }
            }
            for order in orders
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            code = _error_code(error)
            if code == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if "TransactionConflict" in reasons:
                    raise WriteConflict() from error
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    old = (error.response.get("CancellationReasons") or [{}])[0].get("Item")
                    raise CheckoutExists(from_item(old) if old else None) from error
                taken = [
                    order["payment_order_id"]
                    for order, reason in zip(orders, reasons[1:], strict=False)
                    if reason == "ConditionalCheckFailed"
                ]
                raise PaymentOrderIdInUse(
                    "payment_order_id already used by another checkout",
                    details=[{"field": "payment_orders", "code": "payment_order_id_in_use", "value": t}
                             for t in taken],
                ) from error
            if code == "TransactionConflictException":
                raise WriteConflict() from error
            raise

    # -- reads -------------------------------------------------------------------------------------

    def get_checkout(self, checkout_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(
            TableName=self.events_table, Key=to_item({"checkout_id": checkout_id}), ConsistentRead=True
        )
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_order(self, payment_order_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(
            TableName=self.orders_table, Key=to_item({"payment_order_id": payment_order_id}), ConsistentRead=True
        )
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_orders(self, payment_order_ids: Iterable[str],
                   attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Batch read (consistent); `attributes` projects each order to those (default: whole items)."""
        return batch_get(self._db, self.orders_table, "payment_order_id", payment_order_ids, attributes)

    def scan_orders(self, attributes: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every order (operator checks and the chaos run's invariants; never on a request or nightly path)."""
        yield from _scan(self._db, self.orders_table, attributes)

    def orders_created(self, bucket: str, start: str, end: str) -> list[str]:
        """Ids of the orders of one created_bucket created in [start, end), from the keys-only created index.

        The index is eventually consistent: an order written in the last second may not be there yet (a
        reconciliation window closes hours before the file is read)."""
        keys = _query(self._db, self.orders_table, CREATED_INDEX,
                      "created_bucket = :bucket AND created_at BETWEEN :start AND :end",
                      {":bucket": bucket, ":start": start, ":end": end})
        return [key["payment_order_id"] for key in keys if key["created_at"] < end]

    def order_ids_with_reference(self, psp_reference: str) -> list[str]:
        """Ids of the orders that record this PSP reference (one, unless something is badly wrong)."""
        keys = _query(self._db, self.orders_table, REFERENCE_INDEX, "psp_reference = :reference",
                      {":reference": psp_reference})
        return [key["payment_order_id"] for key in keys]

    # -- status moves --------------------------------------------------------------------------------

    def begin_attempt(
        self, payment_order_id: str, attempt: int, now: str, due_at: str, *, expected_due_at: str | None = None
    ) -> dict[str, Any] | None:
        """Move the order to EXECUTING for `attempt`; the winner of a race gets the new item, others None.

        The first attempt needs NOT_STARTED; a re-drive needs EXECUTING with the `due_at` the sweeper read,
        so two sweepers (or a sweeper and a late workflow) never both start the same attempt.
        """
        if attempt == 1:
            condition = "payment_order_status = :not_started"
            values: dict[str, Any] = {":not_started": OrderStatus.NOT_STARTED.value}
        else:
            condition = "payment_order_status = :executing AND due_at = :expected"
            values = {":executing": OrderStatus.EXECUTING.value, ":expected": expected_due_at}
        values.update(
            {":status": OrderStatus.EXECUTING.value, ":attempt": attempt, ":now": now, ":due": due_at}
        )
        try:
            answer = self._db.update_item(
                TableName=self.orders_table,
                Key=to_item({"payment_order_id": payment_order_id}),
                UpdateExpression=(
                    "SET payment_order_status = :status, attempts = :attempt, updated_at = :now, due_at = :due,"
                    " first_attempt_at = if_not_exists(first_attempt_at, :now)"
                ),
                ConditionExpression=condition,
                ExpressionAttributeValues=to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return from_item(answer["Attributes"])

    def postpone(self, payment_order_id: str, expected_due_at: str, due_at: str, now: str) -> bool:
        """Push the sweeper's deadline of a non-final order (NOT_STARTED re-enqueued, or PSP still pending)."""
        return self._update_order_if(payment_order_id, "SET due_at = :due, updated_at = :now", "due_at = :expected",
                                     {":due": due_at, ":now": now, ":expected": expected_due_at})

    def record_pending(self, payment_order_id: str, psp_reference: str, psp_status: str, due_at: str, now: str
                       ) -> None:
        """The PSP has not decided yet (processing, requires_action): keep EXECUTING, look again at `due_at`."""
        try:
            self._db.update_item(
                TableName=self.orders_table,
                Key=to_item({"payment_order_id": payment_order_id}),
                UpdateExpression="SET psp_reference = :ref, psp_status = :psp, due_at = :due, updated_at = :now",
                ConditionExpression="payment_order_status = :executing",
                ExpressionAttributeValues=to_item(
                    {":ref": psp_reference, ":psp": psp_status, ":due": due_at, ":now": now,
                     ":executing": OrderStatus.EXECUTING.value}
                ),
            )
        except ClientError as error:
            if _error_code(error) != "ConditionalCheckFailedException":
                raise

    def finish(self, payment_order_id: str, status: OrderStatus, fields: dict[str, Any], now: str) -> bool:
        """Move the order to a final status once; True if this call did it, False if it already was there.

        A move the transition table forbids (SUCCESS -> FAILED, anything backwards) raises.
        """
        if not status.is_final:
            raise ValueError(f"finish needs a final status, not {status.value}")
        allowed = ALLOWED_FROM[status]
        placeholders = {f":from{i}": s.value for i, s in enumerate(allowed)}
        sets = ", ".join(f"{name} = :{name}" for name in fields)
        update = f"SET payment_order_status = :status, updated_at = :now{', ' + sets if sets else ''}"
        try:
            self._db.update_item(
                TableName=self.orders_table,
                Key=to_item({"payment_order_id": payment_order_id}),
                UpdateExpression=update + " REMOVE sweep_shard, due_at",
                ConditionExpression=f"payment_order_status IN ({', '.join(placeholders)})",
                ExpressionAttributeValues=to_item(
                    {":status": status.value, ":now": now, **placeholders,
                     **{f":{name}": value for name, value in fields.items()}}
                ),
            )
            return True
        except ClientError as error:
            if _error_code(error) != "ConditionalCheckFailedException":
                raise
        current = self.get_order(payment_order_id)
        if current and current.get("payment_order_status") == status.value:
            return False
        raise StatusTransitionRefused(
            f"order {payment_order_id} cannot move from "
            f"{current.get('payment_order_status') if current else 'missing'} to {status.value}"
        )

    def mark_dead_lettered(self, payment_order_id: str, expected_due_at: str, reason: str, now: str) -> bool:
        """Take a stuck order out of the sweeper's index: it now waits in the dead-letter queue for a human."""
        return self._update_order_if(
            payment_order_id, "SET dead_letter_reason = :reason, updated_at = :now REMOVE sweep_shard, due_at",
            "due_at = :expected", {":reason": reason, ":now": now, ":expected": expected_due_at})

    def requeue_dead_lettered(self, payment_order_id: str, shard: str, due_at: str, now: str) -> bool:
        """Put a dead-lettered, still non-final order back under the sweeper's watch (operator redrive)."""
        return self._update_order_if(
            payment_order_id,
            "SET sweep_shard = :shard, due_at = :due, updated_at = :now REMOVE dead_letter_reason",
            "payment_order_status IN (:a, :b)",
            {":shard": shard, ":due": due_at, ":now": now,
             ":a": OrderStatus.NOT_STARTED.value, ":b": OrderStatus.EXECUTING.value})

    def settle_checkout_order(self, checkout_id: str, payment_order_id: str) -> bool:
        """Remove a final order from its checkout's pending set; True once the checkout has none left.

        Deleting from a set is idempotent, so a retried finalize never double-counts.
        """
        answer = self._db.update_item(
            TableName=self.events_table,
            Key=to_item({"checkout_id": checkout_id}),
            UpdateExpression="DELETE pending_order_ids :id",
            ConditionExpression="attribute_exists(checkout_id)",
            ExpressionAttributeValues={":id": {"SS": [payment_order_id]}},
            ReturnValues="ALL_NEW",
        )
        event = from_item(answer["Attributes"])
        if event.get("pending_order_ids") or event.get("is_payment_done"):
            return bool(event.get("is_payment_done"))
        self._db.update_item(
            TableName=self.events_table,
            Key=to_item({"checkout_id": checkout_id}),
            UpdateExpression="SET is_payment_done = :done",
            ExpressionAttributeValues=to_item({":done": True}),
        )
        return True

    def due_orders(self, shard: str, now: str, limit: int = 100) -> list[dict[str, Any]]:
        """Orders of one sweep shard whose deadline has passed (keys and due_at only)."""
        answer = self._db.query(
            TableName=self.orders_table,
            IndexName="sweep",
            KeyConditionExpression="sweep_shard = :shard AND due_at <= :now",
            ExpressionAttributeValues=to_item({":shard": shard, ":now": now}),
            Limit=limit,
        )
        return [from_item(item) for item in answer.get("Items", [])]


@dataclass
class WalletTable:
    """Seller balances per currency, and one movement item per applied change (the once-only guard)."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> WalletTable:
        return cls((config or settings()).wallet_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def apply_movement(
        self, account_id: str, kind: str, reference: str, currency: str,
        pending_delta: int, available_delta: int, now: str,
    ) -> bool:
        """Change a balance exactly once per (kind, reference): guard and balance in one transaction.

        Returns False when this movement was applied before (nothing changes the second time).
        """
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item({
                        "account_id": account_id, "sk": f"MOVE#{kind}#{reference}", "kind": kind,
                        "reference": reference, "currency": currency, "pending_delta": pending_delta,
                        "available_delta": available_delta, "created_at": now,
                    }),
                    "ConditionExpression": "attribute_not_exists(sk)",
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item({"account_id": account_id, "sk": f"BALANCE#{currency}"}),
                    "UpdateExpression": "ADD pending_minor :p, available_minor :a SET currency = :c, updated_at = :now",
                    "ExpressionAttributeValues": to_item(
                        {":p": pending_delta, ":a": available_delta, ":c": currency, ":now": now}
                    ),
                }
            },
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if _error_code(error) == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                raise WriteConflict() from error
            raise
        return True

    def balances(self, account_id: str) -> dict[str, dict[str, int]]:
        answer = self._db.query(
            TableName=self.table,
            KeyConditionExpression="account_id = :a AND begins_with(sk, :b)",
            ExpressionAttributeValues=to_item({":a": account_id, ":b": "BALANCE#"}),
            ConsistentRead=True,
        )
        result = {}
        for item in map(from_item, answer.get("Items", [])):
            result[item["currency"]] = {
                "pending_minor": item.get("pending_minor", 0), "available_minor": item.get("available_minor", 0)
            }
        return result

    def scan(self) -> Iterator[dict[str, Any]]:
        yield from _scan(self._db, self.table)


@dataclass
class LedgerTable:
    """Immutable ledger transactions, one item each, written once under their id."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> LedgerTable:
        return cls((config or settings()).ledger_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def put_once(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """Write the transaction unless its id exists; return the existing item when it does."""
        try:
            self._db.put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(transaction_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _error_code(error) != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
            return from_item(old) if old else self.get(item["transaction_id"])
        return None

    def get(self, transaction_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(
            TableName=self.table, Key=to_item({"transaction_id": transaction_id}), ConsistentRead=True
        )
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_many(self, transaction_ids: Iterable[str],
                 attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.table, "transaction_id", transaction_ids, attributes)

    def transaction_ids_of_order(self, payment_order_id: str) -> list[str]:
        """Ids of the transactions that name the order (its refunds), from the sparse keys-only index."""
        keys = _query(self._db, self.table, LEDGER_ORDER_INDEX, "payment_order_id = :order",
                      {":order": payment_order_id})
        return [key["transaction_id"] for key in keys]

    def scan(self, attributes: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        yield from _scan(self._db, self.table, attributes)


def _projection(attributes: Sequence[str] | None) -> dict[str, Any]:
    """A ProjectionExpression of `attributes`, each through a placeholder (some are reserved words)."""
    if attributes is None:
        return {}
    names = {f"#p{i}": name for i, name in enumerate(attributes)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


def batch_get(db: Any, table: str, key: str, ids: Iterable[str],
              attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """BatchGetItem (consistent), 100 distinct keys a request; keys left unprocessed (throttling) are asked
    again after a growing pause, as AWS advises. `attributes` projects the items (the key must be among them)."""
    wanted = list(dict.fromkeys(ids))
    shape = {"ConsistentRead": True, **_projection(attributes)}
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 100):
        keys = [{key: {"S": i}} for i in wanted[start : start + 100]]
        pause = 0.05
        while keys:
            answer = db.batch_get_item(RequestItems={table: {"Keys": keys, **shape}})
            for item in answer.get("Responses", {}).get(table, []):
                record = from_item(item)
                found[record[key]] = record
            keys = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if keys:
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
    return found


def _query(db: Any, table: str, index: str, condition: str, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return _pages(db.query, {"TableName": table, "IndexName": index, "KeyConditionExpression": condition,
                             "ExpressionAttributeValues": to_item(values)})


def _scan(db: Any, table: str, attributes: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    return _pages(db.scan, {"TableName": table, "ConsistentRead": True, **_projection(attributes)})


def _pages(read: Any, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item of a Query or Scan, page after page."""
    while True:
        answer = read(**request)
        for item in answer.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in answer:
            return
        request = {**request, "ExclusiveStartKey": answer["LastEvaluatedKey"]}
