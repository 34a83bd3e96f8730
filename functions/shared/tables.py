"""The only place that talks to DynamoDB. Driver errors become domain answers here.

Every write is conditional, so running it twice changes nothing the second time: conditions are the
idempotency guards (see docs/design.md for the table layout).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from functions.shared import aws, clock
from functions.shared.config import Settings, settings
from functions.shared.errors import (
    AwsTransientError,
    ChargeFailedUnsent,
    DomainError,
    PaymentOrderIdInUse,
    StatusTransitionRefused,
)
from functions.shared.names import (
    AWAITING_INDEX,
    BALANCE_SORT_PREFIX,
    CREATED_INDEX,
    FILE_GUARD_SORT_KEY,
    FILE_RUN_SORT_KEY,
    LEDGER_ORDER_INDEX,
    MOVEMENT_SORT_KEY,
    RECEIPTS_INDEX,
    REFERENCE_INDEX,
    SELLER_ACCOUNT_INDEX,
    SWEEP_INDEX,
    TRANSFERRED_INDEX,
    WALLET_STATEMENT_INDEX,
    balance_sort_key,
    carried_orders_key,
    duplicate_delivery_sort_key,
    movement_key,
    rate_window_key,
    recon_file_key,
    wallet_shard_key,
)
from functions.shared.status import ALLOWED_FROM, PAYOUT_ALLOWED_FROM, OrderStatus, PayoutStatus

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


# Answers after which the same request succeeds later (AWS's "retryable" list for DynamoDB).
_TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "TransactionConflictException", "TransactionInProgressException",
})
_TRANSIENT_CANCELLATIONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})


def is_transient(error: BaseException) -> bool:
    if isinstance(error, WriteConflict | UnprocessedKeysLeft | ConnectionError | HTTPClientError):
        return True  # HTTPClientError: read timeouts, closed connections; ConnectionError: connect failures
    if not isinstance(error, ClientError):
        return False
    code = aws.error_code(error)
    if code == "TransactionCanceledException":
        return bool(_TRANSIENT_CANCELLATIONS & set(_cancellation_codes(error)))
    return code in _TRANSIENT_CODES or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


@contextmanager
def transient_errors_retryable() -> Iterator[None]:
    """Inside a workflow task: a transient AWS error leaves as AwsTransientError, the one name the workflow's
    Retry matches for them (with backoff and full jitter); anything else leaves as it is."""
    try:
        yield
    except Exception as error:
        if is_transient(error):
            raise AwsTransientError(f"{type(error).__name__}: {error}") from error
        raise


def sweep_shard(key: str, shards: int) -> str:
    """One of `shards` (at most 256; a divisor of 256 spreads evenly). Stored created_buckets depend on it."""
    digest = hashlib.sha256(key.encode()).digest()
    return str(digest[0] % shards)


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
    """Payment events (one per checkout), payment orders (one per seller share) and charges (one per checkout
    and currency: the PSP charge its orders share)."""

    events_table: str
    orders_table: str
    charges_table: str = ""

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> PaymentTables:
        config = config or settings()
        return cls(config.payment_events_table, config.payment_orders_table, config.charges_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def _update_if(self, table: str, key: dict[str, str], update: str, condition: str, values: dict[str, Any],
                   returns: str = "NONE") -> dict[str, Any] | None:
        """One conditional update; the item as `returns` asks ({} for NONE), None when the condition failed."""
        try:
            answer = self._db.update_item(
                TableName=table, Key=to_item(key), UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeValues=to_item(values), ReturnValues=returns,
            )
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return from_item(answer.get("Attributes", {}))

    def _update_charge_if(self, key: str, update: str, condition: str, values: dict[str, Any],
                          returns: str = "NONE") -> dict[str, Any] | None:
        return self._update_if(self.charges_table, {"charge_key": key}, update, condition, values, returns)

    # -- checkout creation -------------------------------------------------------------------------

    def create_checkout(self, event: dict[str, Any], orders: list[dict[str, Any]],
                        charges: Sequence[dict[str, Any]] = ()) -> None:
        """Store the event, all its orders and its charges in one transaction: all or nothing.

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
        items += [_put_new(self.orders_table, order, "payment_order_id") for order in orders]
        items += [_put_new(self.charges_table, charge, "charge_key") for charge in charges]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            code = aws.error_code(error)
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

    def get_checkouts(self, checkout_ids: Iterable[str],
                      attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Batch read of payment events (consistent); `attributes` projects each (default: whole items)."""
        return batch_get(self._db, self.events_table, "checkout_id", checkout_ids, attributes)

    def get_charge(self, key: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.charges_table, Key=to_item({"charge_key": key}),
                                   ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_charges(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.charges_table, "charge_key", keys)

    # -- order status moves (every one conditional on the transition table) --------------------------

    def mark_orders_executing(self, payment_order_ids: Iterable[str], now: str) -> None:
        """NOT_STARTED -> EXECUTING for each order of a charge whose attempt began (an order already further
        along is left as it is, so running this twice, or after finalize, changes nothing)."""
        allowed = ALLOWED_FROM[OrderStatus.EXECUTING]
        for order_id in payment_order_ids:
            self._update_if(
                self.orders_table, {"payment_order_id": order_id},
                "SET payment_order_status = :status, updated_at = :now",
                "payment_order_status = :from", {":status": OrderStatus.EXECUTING.value, ":now": now,
                                                 ":from": allowed[0].value})

    def finish(self, payment_order_id: str, status: OrderStatus, fields: dict[str, Any], now: str) -> bool:
        """Move the order to a final status once; True if this call did it, False if it already was there.

        A move the transition table forbids (SUCCESS -> FAILED, anything backwards) raises.
        """
        if not status.is_final:
            raise ValueError(f"finish needs a final status, not {status.value}")
        changed = self._finish(self.orders_table, {"payment_order_id": payment_order_id}, "payment_order_status",
                               status, fields, now)
        if changed:
            return True
        current = self.get_order(payment_order_id)
        if current and current.get("payment_order_status") == status.value:
            return False
        raise StatusTransitionRefused(
            f"order {payment_order_id} cannot move from "
            f"{current.get('payment_order_status') if current else 'missing'} to {status.value}"
        )

    def _finish(self, table: str, key: dict[str, str], status_attribute: str, status: OrderStatus,
                fields: dict[str, Any], now: str) -> bool:
        allowed = ALLOWED_FROM[status]
        placeholders = {f":from{i}": s.value for i, s in enumerate(allowed)}
        sets = "".join(f", {name} = :{name}" for name in fields)
        return self._update_if(
            table, key,
            # final: out of the sweep index, and the buyer's client secret, mandate acceptance, Adyen card
            # (encrypted, its security code among it) and browser, and a shopper action's details are not kept (the
            # details' digest is: a storefront's retry of them still gets its answer)
            f"SET {status_attribute} = :status, updated_at = :now{sets} "
            "REMOVE sweep_shard, due_at, next_action, mandate_data, adyen_payment_method, adyen_browser, psp_details",
            f"{status_attribute} IN ({', '.join(placeholders)})",
            {":status": status.value, ":now": now, **placeholders, **{f":{k}": v for k, v in fields.items()}},
        ) is not None

    def settle_checkout_orders(self, checkout_id: str, payment_order_ids: Sequence[str]) -> bool:
        """Remove final orders from their checkout's pending set; True once the checkout has none left.

        Deleting from a set is idempotent, so a retried (or resumed) finalize never double-counts, and the run
        that finds the set empty marks the checkout done, whichever charge it finalizes.
        """
        answer = self._db.update_item(
            TableName=self.events_table,
            Key=to_item({"checkout_id": checkout_id}),
            UpdateExpression="DELETE pending_order_ids :ids",
            ConditionExpression="attribute_exists(checkout_id)",
            ExpressionAttributeValues={":ids": {"SS": list(payment_order_ids)}},
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

    # -- charge status moves --------------------------------------------------------------------------

    def begin_charge_attempt(
        self, key: str, attempt: int, now: str, due_at: str, *, expected_due_at: str | None = None
    ) -> dict[str, Any] | None:
        """Move the charge to EXECUTING for `attempt`; the winner of a race gets the new item, others None.

        The first attempt needs NOT_STARTED; a re-drive needs EXECUTING with the `due_at` the sweeper read,
        so two sweepers (or a sweeper and a late workflow) never both start the same attempt. The due_at set
        here is the promise that the charge is never left EXECUTING without a sweep to come.
        """
        if attempt == 1:
            condition = "charge_status = :from"
            values: dict[str, Any] = {":from": OrderStatus.NOT_STARTED.value}
        else:
            condition = "charge_status = :from AND due_at = :expected"
            values = {":from": OrderStatus.EXECUTING.value, ":expected": expected_due_at}
        values.update({":status": OrderStatus.EXECUTING.value, ":attempt": attempt, ":now": now, ":due": due_at})
        return self._update_charge_if(
            key,
            "SET charge_status = :status, attempts = :attempt, updated_at = :now, due_at = :due,"
            " first_attempt_at = if_not_exists(first_attempt_at, :now)",
            condition, values, returns="ALL_NEW")

    def note_execution_started(self, key: str, attempt: int) -> None:
        """Remember that the workflow of `attempt` was started, so a duplicate delivery does not start it again."""
        self._update_charge_if(key, "SET started_attempt = :attempt",
                               "attempts = :attempt AND charge_status = :executing",
                               {":attempt": attempt, ":executing": OrderStatus.EXECUTING.value})

    def note_psp_call(self, key: str, attempt: int, account: str = "") -> dict[str, Any]:
        """Count a PSP call of the charge; returns the charge as it was before (calls made, key generation). A call
        going out ends a wait for the PSP (`park_for_psp`), and its attempt is one that sent (`sent_attempt`: never
        counted as parked, so an attempt that keeps probing a down PSP is spent as any failed attempt). `account`:
        the PSP account its idempotency keys belong to, kept from the first call (`psp_account`), so a later call
        under another account's keys is seen (the caller compares it with the one returned)."""
        account_set = ", psp_account = if_not_exists(psp_account, :account)" if account else ""
        answer = self._update_charge_if(
            key, f"SET sent_attempt = :attempt{account_set} ADD psp_calls :one REMOVE psp_down_since",
            "attribute_exists(charge_key) AND attribute_not_exists(unsent_failed_at)",
            {":one": 1, ":attempt": attempt, **({":account": account} if account else {})}, returns="ALL_OLD")
        if answer is None:
            if self.get_charge(key) is None:
                raise KeyError(f"no charge {key}")
            raise ChargeFailedUnsent(f"charge {key} was failed unsent: no PSP call goes out for it")
        return answer

    def record_debit_returned(self, key: str, code: str, now: str) -> None:
        """A SUCCESS bank debit the buyer's bank returned (once; the first code is kept): its refunds not yet made at
        the PSP are then taken back by the return itself (functions/executor/refund.py)."""
        self._update_charge_if(key, "SET debit_returned = if_not_exists(debit_returned, :code), updated_at = :now",
                               "charge_status = :success", {":code": code, ":now": now,
                                                            ":success": OrderStatus.SUCCESS.value})

    def record_psp_reference(self, key: str, psp_reference: str, now: str) -> None:
        """The PSP's id of the charge, as soon as it is known: later attempts retrieve it, never create."""
        self._update_charge_if(key, "SET psp_reference = :ref, updated_at = :now", "attribute_exists(charge_key)",
                               {":ref": psp_reference, ":now": now})

    def record_psp_customer(self, key: str, customer: str, now: str) -> None:
        """The Customer the checkout's PaymentMethod was attached to (several currencies): later calls reuse it."""
        self._update_charge_if(key, "SET psp_customer = :customer, updated_at = :now",
                               "attribute_exists(charge_key)", {":customer": customer, ":now": now})

    def note_key_poisoned(self, key: str, generation: int, now: str) -> str:
        """When the PSP was first seen replaying a stored 500 for this generation's key; the first call records
        it, every later one reads it back. A PaymentIntent that key made was created before that moment."""
        field = f"key_poisoned_at_g{generation}"
        answer = self._update_charge_if(key, f"SET {field} = if_not_exists({field}, :now)",
                                        "attribute_exists(charge_key)", {":now": now}, returns="ALL_NEW")
        if answer is None:
            raise KeyError(f"no charge {key}")
        return str(answer[field])

    def retire_key(self, key: str, generation: int, now: str) -> int:
        """Move the charge's PSP key to the next generation (once per generation); returns the one to use."""
        moved = self._update_charge_if(
            key, "SET key_generation = :next, updated_at = :now",
            "attribute_not_exists(key_generation) OR key_generation = :current",
            {":next": generation + 1, ":current": generation, ":now": now}, returns="ALL_NEW")
        if moved is not None:
            return int(moved["key_generation"])
        return int((self.get_charge(key) or {}).get("key_generation", generation + 1))

    def park_for_psp(self, key: str, attempt: int, due_at: str, now: str) -> dict[str, Any] | None:
        """Attempt `attempt` of the charge found its PSP down and sends nothing more: EXECUTING, due when it may go
        (the sweeper drives it then), waiting since the first park of this outage (`psp_down_since`, removed when a
        call goes out) and the attempt counted once in `parked_attempts`, which the sweeper does not hold against
        max_attempts, unless it sent a call (`sent_attempt`, note_psp_call). Only the current attempt parks (an older
        execution finishing late changes nothing). The charge as it is now, or None when it is no longer this
        attempt's."""
        values = {":due": due_at, ":now": now, ":attempt": attempt, ":one": 1,
                  ":executing": OrderStatus.EXECUTING.value}
        current = "charge_status = :executing AND attempts = :attempt"
        first = self._update_charge_if(
            key, "SET due_at = :due, psp_down_since = if_not_exists(psp_down_since, :now), parked_attempt = :attempt, "
                 "updated_at = :now ADD parked_attempts :one",
            f"{current} AND (attribute_not_exists(parked_attempt) OR parked_attempt <> :attempt) "
            "AND (attribute_not_exists(sent_attempt) OR sent_attempt <> :attempt)", values, "ALL_NEW")
        if first is not None:
            return first
        return self._update_charge_if(  # parked already, or it sent a call: the wait, without counting it
            key, "SET due_at = :due, psp_down_since = if_not_exists(psp_down_since, :now), updated_at = :now", current,
            {k: v for k, v in values.items() if k != ":one"}, "ALL_NEW")

    def fail_unsent(self, key: str, attempt: int, due_at: str, now: str) -> bool:
        """Decide, once and for good, that attempt `attempt` fails the charge unsent: only while nothing was ever
        sent for it (no call counted, no PSP reference). From then on `note_psp_call` refuses every call, so no
        later attempt or stale execution can charge the orders that finalize marks FAILED; `due_at` gives finalize
        its time before the sweeper drives the charge again (and that attempt answers FAILED again)."""
        return self._update_charge_if(
            key, "SET unsent_failed_at = if_not_exists(unsent_failed_at, :now), due_at = :due, updated_at = :now",
            "charge_status = :executing AND attempts = :attempt AND attribute_not_exists(psp_reference) "
            "AND (attribute_not_exists(psp_calls) OR psp_calls = :zero)",
            {":now": now, ":due": due_at, ":attempt": attempt, ":zero": 0,
             ":executing": OrderStatus.EXECUTING.value}) is not None

    def postpone_charge(self, key: str, expected_due_at: str, due_at: str, now: str) -> bool:
        """Push the sweeper's deadline of a non-final charge (NOT_STARTED re-enqueued)."""
        return self._update_charge_if(key, "SET due_at = :due, updated_at = :now", "due_at = :expected",
                                      {":due": due_at, ":now": now, ":expected": expected_due_at}) is not None

    def record_charge_pending(self, key: str, psp_reference: str, psp_status: str, due_at: str, now: str) -> None:
        """The PSP has not decided yet (processing, requires_action): keep EXECUTING, look again at `due_at`; at
        once if the PSP's notification is recorded (`record_psp_notification`: it may have come while the attempt
        was out, when it could not bring the charge forward)."""
        values = {":ref": psp_reference, ":psp": psp_status, ":due": due_at, ":now": now,
                  ":executing": OrderStatus.EXECUTING.value}
        update = "SET psp_reference = :ref, psp_status = :psp, due_at = :due, updated_at = :now"
        if self._update_charge_if(key, update, "charge_status = :executing AND attribute_not_exists(psp_notified)",
                                  values) is None:
            self._update_charge_if(key, update, "charge_status = :executing", {**values, ":due": now})

    def record_charge_awaiting_action(self, key: str, psp_reference: str, next_action: dict[str, str],
                                      expires_at: str, payment_order_ids: Iterable[str], now: str) -> str:
        """requires_action (3-D Secure): keep EXECUTING; the challenge's deadline is set once (a re-drive before it
        keeps it) and the sweep is due then. The orders still EXECUTING show next_action. Returns the deadline."""
        values = {":ref": psp_reference, ":psp": "requires_action", ":action": next_action, ":expires": expires_at,
                  ":now": now, ":executing": OrderStatus.EXECUTING.value}
        update = ("SET psp_reference = :ref, psp_status = :psp, next_action = :action, "
                  "action_expires_at = if_not_exists(action_expires_at, :expires), updated_at = :now")
        action_id = next_action.get("action_id")
        if action_id:
            # Adyen's actions: the deadline is the action's. A new one (a challenge after a fingerprint) gets its
            # own, never less than what was left; the one whose details are recorded is not shown again, nor its
            # sweep pushed to the deadline (a run that read the charge before the details: they decide, now).
            values[":aid"] = action_id
            moved = self._update_charge_if(
                key, update, "charge_status = :executing AND (attribute_not_exists(next_action) OR "
                "next_action.action_id = :aid) AND (attribute_not_exists(psp_details_for) OR psp_details_for <> :aid)",
                values, "ALL_NEW")
            if moved is None:
                current = self.get_charge(key) or {}
                if current.get("charge_status") != OrderStatus.EXECUTING.value or \
                        current.get("psp_details_for") == action_id:
                    return str(current.get("action_expires_at") or expires_at)
                later = max(expires_at, str(current.get("action_expires_at") or ""))
                moved = self._update_charge_if(
                    key, "SET psp_reference = :ref, psp_status = :psp, next_action = :action, "
                         "action_expires_at = :expires, updated_at = :now",
                    "charge_status = :executing AND (attribute_not_exists(psp_details_for) OR psp_details_for <> :aid)",
                    {**values, ":expires": later}, "ALL_NEW")
        else:
            moved = self._update_charge_if(key, update, "charge_status = :executing", values, "ALL_NEW")
        if moved is None:
            return expires_at
        deadline = str(moved["action_expires_at"])
        for order_id in payment_order_ids:
            self._update_if(self.orders_table, {"payment_order_id": order_id},
                            "SET next_action = :action, action_expires_at = :expires, psp_reference = :ref, "
                            "updated_at = :now", "payment_order_status = :executing",
                            {":action": next_action, ":expires": deadline, ":ref": psp_reference, ":now": now,
                             ":executing": OrderStatus.EXECUTING.value})
        # Last: until the sweep is pushed to the deadline, a call killed half-way is re-driven within the executing
        # deadline and writes the orders' next_action again (else the buyer might never see the challenge).
        self._update_charge_if(key, "SET due_at = :due", "charge_status = :executing AND attribute_exists(due_at)",
                               {":due": deadline, ":executing": OrderStatus.EXECUTING.value})
        return deadline

    def record_psp_details(self, key: str, psp: str, details: dict[str, str], digest: str, action: str, now: str
                           ) -> dict[str, Any] | None:
        """The buyer's answer to the PSP's shopper action `action` (its id, next_action.action_id: Adyen's
        `details`), recorded once on the charge while it waits for it: EXECUTING at `psp`, that action shown, its
        deadline not passed and not yet abandoned by the executor (`abandon_action`): the two conditions exclude each
        other, so the executor's decision and the buyer's answer never both win. The first details of an action are
        kept (`psp_details_for` names the action); every digest recorded is remembered (`psp_details_seen`), so a
        storefront's retry of an earlier action's details is known. The charge as it is now, or None when not
        recorded (the caller reads the charge to say why)."""
        return self._update_charge_if(
            key, "SET psp_details = :details, psp_details_digest = :digest, psp_details_for = :action, "
                 "psp_details_at = :now, updated_at = :now ADD psp_details_seen :seen",
            "charge_status = :executing AND psp = :psp AND psp_status = :requires AND next_action.action_id = :action "
            "AND action_expires_at > :now AND (attribute_not_exists(psp_details_for) OR psp_details_for <> :action) "
            "AND attribute_not_exists(action_abandoned_at)",
            {":details": details, ":digest": digest, ":action": action, ":seen": {digest}, ":now": now, ":psp": psp,
             ":requires": "requires_action", ":executing": OrderStatus.EXECUTING.value}, "ALL_NEW")

    def hide_answered_action(self, payment_order_ids: Iterable[str], action: str, now: str) -> None:
        """The orders stop showing the shopper action `action` once its details are recorded (the charge keeps it:
        the executor answers from it), so a storefront polling them does not run it again. Only that action, only
        while EXECUTING: a next action finalize wrote meanwhile stays shown. Safe to repeat."""
        for order_id in payment_order_ids:
            self._update_if(self.orders_table, {"payment_order_id": order_id},
                            "SET updated_at = :now REMOVE next_action",
                            "payment_order_status = :executing AND next_action.action_id = :action",
                            {":now": now, ":action": action, ":executing": OrderStatus.EXECUTING.value})

    def abandon_action(self, key: str, action: str, now: str) -> bool:
        """The executor's decision that the buyer abandoned the shopper action `action` (its deadline passed with no
        details for it): written once, only while no details for it are recorded, and kept (a re-run after a crash
        finds it and answers the same). False: details were recorded first, or the PSP's notification (Adyen's
        AUTHORISATION: the buyer completed the action at the PSP), and they decide."""
        return self._update_charge_if(
            key, "SET action_abandoned_at = if_not_exists(action_abandoned_at, :now), updated_at = :now",
            "charge_status = :executing AND (attribute_not_exists(psp_details_for) OR psp_details_for <> :action) "
            "AND attribute_not_exists(psp_notified)",
            {":now": now, ":action": action, ":executing": OrderStatus.EXECUTING.value}) is not None

    def note_details_sent(self, key: str, action: str, now: str) -> bool:
        """Before the details of `action` go to the PSP: True for their first sending, False when an earlier call
        may have sent them (a refusal of a later one then proves nothing). Counts the actions answered
        (`details_rounds`), which the executor bounds."""
        return self._update_charge_if(
            key, f"SET details_sent_{action} = :now ADD details_rounds :one",
            f"attribute_exists(charge_key) AND attribute_not_exists(details_sent_{action})",
            {":now": now, ":one": 1}) is not None

    def record_details_refused(self, key: str, code: str, message: str) -> None:
        """The PSP refused the details at their first sending (certain: nothing was authorised): kept, so that a
        re-run answers the same FAILED without sending them again. The first refusal is kept."""
        self._update_charge_if(key, "SET details_refused = if_not_exists(details_refused, :refused)",
                               "attribute_exists(charge_key)", {":refused": {"code": code, "message": message[:500]}})

    def finish_charge(self, key: str, status: OrderStatus, fields: dict[str, Any], now: str) -> bool:
        """The charge's final status, written last by finalize (after its orders and the checkout): until then
        it stays in the sweep index, so a finalize that died half-way is resumed. True if this call moved it."""
        if self._finish(self.charges_table, {"charge_key": key}, "charge_status", status, fields, now):
            return True
        current = self.get_charge(key)
        if current and current.get("charge_status") == status.value:
            return False
        raise StatusTransitionRefused(
            f"charge {key} cannot move from {current.get('charge_status') if current else 'missing'} "
            f"to {status.value}")

    def mark_charge_dead_lettered(self, key: str, expected_due_at: str, reason: str, now: str) -> bool:
        """Take a stuck charge out of the sweeper's index, and its orders out of the open-orders index: they
        now wait in the dead-letter queue for a human."""
        moved = self._update_charge_if(
            key, "SET dead_letter_reason = :reason, updated_at = :now REMOVE sweep_shard, due_at",
            "due_at = :expected", {":reason": reason, ":now": now, ":expected": expected_due_at}, "ALL_NEW")
        if moved is None:
            return False
        for order in moved["orders"]:
            self._update_if(self.orders_table, {"payment_order_id": order["payment_order_id"]},
                            "SET dead_letter_reason = :reason, updated_at = :now REMOVE sweep_shard, due_at",
                            "attribute_exists(sweep_shard)", {":reason": reason, ":now": now})
        return True

    def requeue_charge(self, key: str, shards: int, due_at: str, now: str) -> bool:
        """Put a non-final charge (dead-lettered or not) and its open orders back under watch, due at `due_at`."""
        values = {":due": due_at, ":now": now,
                  ":a": OrderStatus.NOT_STARTED.value, ":b": OrderStatus.EXECUTING.value}
        moved = self._update_charge_if(
            key, "SET sweep_shard = :shard, due_at = :due, updated_at = :now REMOVE dead_letter_reason",
            "charge_status IN (:a, :b)", {**values, ":shard": sweep_shard(key, shards)}, "ALL_NEW")
        if moved is None:
            return False
        for order in moved["orders"]:
            order_id = order["payment_order_id"]
            self._update_if(self.orders_table, {"payment_order_id": order_id},
                            "SET sweep_shard = :shard, due_at = :due, updated_at = :now REMOVE dead_letter_reason",
                            "payment_order_status IN (:a, :b)", {**values, ":shard": sweep_shard(order_id, shards)})
        return True

    def due_charges(self, shard: str, now: str, page_size: int = 100, max_items: int = 1000) -> Iterator[str]:
        """Keys of the charges of one sweep shard whose deadline has passed, page after page (at most
        `max_items` a run: the rest waits for the next run a minute later)."""
        keys = _query(self._db, self.charges_table, SWEEP_INDEX, "sweep_shard = :shard AND due_at <= :now",
                      {":shard": shard, ":now": now}, page_size=page_size, max_items=max_items)
        for key in keys:
            yield key["charge_key"]

    def record_offline_receipt(self, key: str, receipt: dict[str, Any], now: str) -> dict[str, Any] | None:
        """A check or money order's funds, recorded once while the charge waits for them and before its deadline;
        its sweep is due now, so the sweeper's next run starts the attempt that finalizes it SUCCESS. None: not
        recorded (already, too late, or no such waiting charge; the caller reads the charge to say which)."""
        return self._update_charge_if(
            key, "SET offline_receipt = :receipt, receipt_day = :day, due_at = :now, updated_at = :now",
            "charge_status = :executing AND attribute_exists(offline_method) AND attribute_not_exists(offline_receipt)"
            " AND funds_due_by > :now",
            {":receipt": receipt, ":day": now[:10], ":now": now, ":executing": OrderStatus.EXECUTING.value}, "ALL_NEW")

    def charges_with_receipts_of(self, day: str) -> list[str]:
        """Keys of the offline charges whose funds were recorded on `day` (YYYY-MM-DD, UTC), from the sparse
        receipts index (eventually consistent: a receipt of the last second may be missing)."""
        keys = _query(self._db, self.charges_table, RECEIPTS_INDEX, "receipt_day = :day", {":day": day})
        return [key["charge_key"] for key in keys]

    def record_offline_bounce(self, key: str, now: str) -> dict[str, Any] | None:
        """The recorded check bounced: noted once on the SUCCESS charge (its refunds do the rest). None: not SUCCESS,
        no receipt, or bounced before."""
        return self._update_charge_if(
            key, "SET offline_receipt.bounced_at = :now, updated_at = :now",
            "charge_status = :success AND attribute_exists(offline_receipt) "
            "AND attribute_not_exists(offline_receipt.bounced_at)",
            {":now": now, ":success": OrderStatus.SUCCESS.value}, "ALL_NEW")

    def mark_orders_bounced(self, payment_order_ids: Iterable[str], now: str) -> None:
        for order_id in payment_order_ids:
            self._update_if(self.orders_table, {"payment_order_id": order_id},
                            "SET bounced_at = if_not_exists(bounced_at, :now), updated_at = :now",
                            "attribute_exists(payment_order_id)", {":now": now})

    def record_psp_notification(self, key: str, notified: dict[str, str], now: str) -> dict[str, Any] | None:
        """A PSP's signed word on an EXECUTING charge's payment (Adyen's AUTHORISATION: outcome, psp_reference,
        psp_status, failure_code, failure_reason), which the executor's next attempt answers from. The first one is
        kept (a later, different one changes nothing). The charge as it is now, or None if it is not EXECUTING."""
        return self._update_charge_if(
            key, "SET psp_notified = if_not_exists(psp_notified, :notified), updated_at = :now",
            "charge_status = :executing", {":notified": notified, ":now": now,
                                           ":executing": OrderStatus.EXECUTING.value}, "ALL_NEW")

    def bring_charge_forward(self, key: str, expected_due_at: str, now: str, no_run_before: str) -> bool:
        """A PSP webhook says a parked charge may be decided: its sweep is due now, so the sweeper's next run
        starts the next attempt (a PSP look-up, then the usual conditional writes). Only when `expected_due_at`
        (as read) is later than `no_run_before` (now + the executing deadline): an attempt's execution sets
        due_at to its start + that deadline, so a later one means no execution can be running, and the re-drive
        never overlaps one. False: nothing moved (in flight, moved on, or final)."""
        return self._update_charge_if(
            key, "SET due_at = :now, updated_at = :now",
            "charge_status = :executing AND due_at = :expected AND due_at > :no_run_before",
            {":now": now, ":executing": OrderStatus.EXECUTING.value, ":expected": expected_due_at,
             ":no_run_before": no_run_before}) is not None


# A hot seller's balance is spread over this many items per currency (docs/design.md "Hot seller"): every
# movement of one order lands on the same shard, so a shard's buckets cover that order's later movements.
WALLET_SHARDS = 32
WALLET_BUCKETS = ("pending", "available", "transferred", "owed")
_BALANCE_READERS = 8  # balances(): shard queries in flight at once


def wallet_shard(payment_order_id: str) -> int:
    return int.from_bytes(hashlib.sha256(payment_order_id.encode()).digest(), "big") % WALLET_SHARDS


class InsufficientBucket(DomainError):
    """A movement would take a wallet bucket below zero on its shard: a bug upstream, never clamped."""

    code = "insufficient_bucket"
    http_status = 500


@dataclass
class WalletTable:
    """Seller balances per currency, spread over WALLET_SHARDS balance items (wallet_shard_key,
    balance_sort_key), and one movement item per applied change in its own partition (movement_key,
    MOVEMENT_SORT_KEY): the once-only guard, and the seller's statement through the `statement` index."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> WalletTable:
        return cls((config or settings()).wallet_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def apply_movement(self, seller_account: str, kind: str, reference: str, currency: str, *, pending: int = 0,
                       available: int = 0, transferred: int = 0, owed: int = 0, now: str,
                       details: dict[str, Any] | None = None) -> bool:
        """Change a seller's balance exactly once per (kind, reference): guard and shard in one transaction.

        The shard is the one of `details["payment_order_id"]`, else of `reference` (an order id for payin,
        release and transfer). Returns False when this movement was applied before (nothing changes the second
        time); raises InsufficientBucket when a negative delta is more than the shard's bucket holds.
        """
        details = details or {}
        shard_key = wallet_shard_key(seller_account, wallet_shard(details.get("payment_order_id") or reference))
        deltas = dict(zip(WALLET_BUCKETS, (pending, available, transferred, owed), strict=True))
        movement = {
            **details, "account_id": movement_key(kind, reference), "sk": MOVEMENT_SORT_KEY,
            "seller_account": seller_account, "kind": kind, "reference": reference, "currency": currency,
            "created_at": now,
            "statement_key": shard_key, **{f"{bucket}_delta": delta for bucket, delta in deltas.items()},
        }
        values: dict[str, Any] = {f":{bucket}": delta for bucket, delta in deltas.items()}
        covers = []
        for bucket, delta in deltas.items():
            if delta < 0:  # a missing bucket compares false: nothing to take from
                covers.append(f"{bucket}_minor >= :need_{bucket}")
                values[f":need_{bucket}"] = -delta
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": to_item({"account_id": shard_key, "sk": balance_sort_key(currency)}),
            "UpdateExpression": "ADD " + ", ".join(f"{b}_minor :{b}" for b in WALLET_BUCKETS)
                                + " SET seller_account = :seller, currency = :currency, updated_at = :now",
            "ExpressionAttributeValues": to_item({**values, ":seller": seller_account, ":currency": currency,
                                                  ":now": now}),
        }
        if covers:
            update["ConditionExpression"] = " AND ".join(covers)
        guard = _put_new(self.table, movement, "account_id")
        try:
            self._db.transact_write_items(TransactItems=[guard, {"Update": update}])
        except ClientError as error:
            if aws.error_code(error) == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    raise InsufficientBucket(
                        f"{kind} {reference}: {seller_account} shard {shard_key} {currency} cannot cover "
                        f"{ {b: d for b, d in deltas.items() if d < 0} }") from error
                if _TRANSIENT_CANCELLATIONS & set(reasons):
                    raise WriteConflict() from error
            if aws.error_code(error) == "TransactionConflictException":
                raise WriteConflict() from error
            raise
        return True

    def balances(self, seller_account: str) -> dict[str, dict[str, int]]:
        """CUR -> {pending_minor, available_minor, transferred_minor, owed_minor}, summed over every shard
        (one consistent query each, exact: no cache, no index)."""
        def shard(number: int) -> list[dict[str, Any]]:
            return list(_pages(self._db, "query", {
                "TableName": self.table, "ConsistentRead": True,
                "KeyConditionExpression": "account_id = :a AND begins_with(sk, :b)",
                "ExpressionAttributeValues": to_item({":a": wallet_shard_key(seller_account, number),
                                                      ":b": BALANCE_SORT_PREFIX})}))

        result: dict[str, dict[str, int]] = {}
        with ThreadPoolExecutor(max_workers=_BALANCE_READERS) as pool:
            for items in pool.map(shard, range(WALLET_SHARDS)):
                for item in items:
                    totals = result.setdefault(item["currency"], {f"{b}_minor": 0 for b in WALLET_BUCKETS})
                    for bucket in WALLET_BUCKETS:
                        totals[f"{bucket}_minor"] += int(item.get(f"{bucket}_minor", 0))
        return result

    def movements(self, seller_account: str, start: str, end: str) -> list[dict[str, Any]]:
        """The seller's movements created in [start, end), oldest first, from the `statement` index (eventually
        consistent: a movement of the last second may be missing)."""
        if start >= end:
            return []

        def shard(number: int) -> list[dict[str, Any]]:
            items = _query(self._db, self.table, WALLET_STATEMENT_INDEX,
                           "statement_key = :key AND created_at BETWEEN :start AND :end",
                           {":key": wallet_shard_key(seller_account, number), ":start": start, ":end": end})
            return [item for item in items if item["created_at"] < end]

        with ThreadPoolExecutor(max_workers=_BALANCE_READERS) as pool:
            found = [item for items in pool.map(shard, range(WALLET_SHARDS)) for item in items]
        return sorted(found, key=lambda item: (item["created_at"], item["account_id"]))

    def get_movement(self, kind: str, reference: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, ConsistentRead=True,
                                   Key=to_item({"account_id": movement_key(kind, reference), "sk": MOVEMENT_SORT_KEY}))
        return from_item(answer["Item"]) if "Item" in answer else None

    def scan(self) -> Iterator[dict[str, Any]]:
        yield from _scan(self._db, self.table)

    def apply_movement_parts(self, seller_account: str, kind: str, reference: str, currency: str,
                             parts: Sequence[tuple[str, dict[str, int]]], *, now: str,
                             details: dict[str, Any] | None = None) -> bool:
        """One movement whose buckets live on several shards (refunds: `owed` on the seller's owed shard,
        `available` on the order's): the once-only guard and every shard's change in ONE transaction. `parts`:
        (the key that picks the shard, {bucket: delta}); parts on the same shard are merged. False when applied
        before; InsufficientBucket when a shard cannot cover a negative delta (nothing is written)."""
        details = details or {}
        by_shard: dict[str, dict[str, int]] = {}
        for shard_of, deltas in parts:
            key = wallet_shard_key(seller_account, wallet_shard(shard_of))
            merged = by_shard.setdefault(key, dict.fromkeys(WALLET_BUCKETS, 0))
            for bucket, delta in deltas.items():
                merged[bucket] += delta
        totals = {bucket: sum(d[bucket] for d in by_shard.values()) for bucket in WALLET_BUCKETS}
        movement = {
            **details, "account_id": movement_key(kind, reference), "sk": MOVEMENT_SORT_KEY,
            "seller_account": seller_account, "kind": kind, "reference": reference, "currency": currency,
            "created_at": now, "statement_key": next(iter(by_shard)),
            **{f"{bucket}_delta": delta for bucket, delta in totals.items()},
        }
        items: list[dict[str, Any]] = [_put_new(self.table, movement, "account_id")]
        for shard_key, deltas in by_shard.items():
            values: dict[str, Any] = {f":{b}": d for b, d in deltas.items()}
            covers = [f"{b}_minor >= :need_{b}" for b, d in deltas.items() if d < 0]
            values.update({f":need_{b}": -d for b, d in deltas.items() if d < 0})
            update: dict[str, Any] = {
                "TableName": self.table,
                "Key": to_item({"account_id": shard_key, "sk": balance_sort_key(currency)}),
                "UpdateExpression": "ADD " + ", ".join(f"{b}_minor :{b}" for b in WALLET_BUCKETS)
                                    + " SET seller_account = :seller, currency = :currency, updated_at = :now",
                "ExpressionAttributeValues": to_item({**values, ":seller": seller_account, ":currency": currency,
                                                      ":now": now}),
            }
            if covers:
                update["ConditionExpression"] = " AND ".join(covers)
            items.append({"Update": update})
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if aws.error_code(error) == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if "ConditionalCheckFailed" in reasons[1:]:
                    raise InsufficientBucket(
                        f"{kind} {reference}: {seller_account} {currency} cannot cover {totals}") from error
                if _TRANSIENT_CANCELLATIONS & set(reasons):
                    raise WriteConflict() from error
            if aws.error_code(error) == "TransactionConflictException":
                raise WriteConflict() from error
            raise
        return True

    def shard_balance(self, seller_account: str, shard_of: str, currency: str) -> dict[str, int]:
        """The buckets of the one shard `shard_of` picks (a seller's owed shard), read consistently."""
        answer = self._db.get_item(TableName=self.table, ConsistentRead=True, Key=to_item({
            "account_id": wallet_shard_key(seller_account, wallet_shard(shard_of)), "sk": balance_sort_key(currency)}))
        item = from_item(answer["Item"]) if "Item" in answer else {}
        return {bucket: int(item.get(f"{bucket}_minor", 0)) for bucket in WALLET_BUCKETS}


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
            if aws.error_code(error) != "ConditionalCheckFailedException":
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


_PAYOUT_SWEEP_FIELDS = "sweep_shard = :shard, due_at = :due"


@dataclass
class SellersTable:
    """Registered sellers: their connected account at the PSP, commission and auto-release delay."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> SellersTable:
        return cls((config or settings()).sellers_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def put(self, seller_account: str, *, commission_bps: int, now: str, psp_account_id: str | None = None,
            auto_release_days: int | None = None) -> dict[str, Any]:
        """Create or replace the seller (PUT semantics: an optional field left out is removed); created_at is
        kept from the first registration. Returns the stored item."""
        sets = {"commission_bps": commission_bps, "updated_at": now, "psp_account_id": psp_account_id,
                "auto_release_days": auto_release_days}
        present = {name: value for name, value in sets.items() if value is not None}
        removed = [name for name, value in sets.items() if value is None]
        update = "SET created_at = if_not_exists(created_at, :now), " + ", ".join(
            f"{name} = :{name}" for name in present)
        if removed:
            update += " REMOVE " + ", ".join(removed)
        answer = self._db.update_item(
            TableName=self.table, Key=to_item({"seller_account": seller_account}), UpdateExpression=update,
            ExpressionAttributeValues=to_item({":now": now, **{f":{k}": v for k, v in present.items()}}),
            ReturnValues="ALL_NEW",
        )
        return from_item(answer["Attributes"])

    def get(self, seller_account: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"seller_account": seller_account}),
                                   ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_many(self, seller_accounts: Iterable[str]) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.table, "seller_account", seller_accounts)

    def by_psp_account(self, psp_account_id: str) -> list[str]:
        """The sellers registered with this connected account (usually one), through its sparse index."""
        keys = _query(self._db, self.table, SELLER_ACCOUNT_INDEX, "psp_account_id = :account",
                      {":account": psp_account_id})
        return [key["seller_account"] for key in keys]

    def record_psp_fact(self, seller_account: str, name: str, fact: dict[str, Any], event_created: int,
                        now: str) -> bool:
        """Store `fact` (a webhook's news about the seller's account: `bank_payout`, `psp_account_state`) under
        `name`, unless a newer event's fact is there already: webhooks arrive in any order, so the event's
        `created` orders them, and an older one never overwrites a newer. Only for a registered seller."""
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"seller_account": seller_account}),
                UpdateExpression="SET #fact = :fact, #at = :created, updated_at = :now",
                ConditionExpression="attribute_exists(seller_account) AND "
                                    "(attribute_not_exists(#at) OR #at < :created)",
                ExpressionAttributeNames={"#fact": name, "#at": f"{name}_event_created"},
                ExpressionAttributeValues=to_item({":fact": fact, ":created": event_created, ":now": now}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


_NOT_DEAD_LETTERED = "attribute_not_exists(dead_letter_reason)"  # a human holds it until `ops payouts retry`


@dataclass
class PayoutsTable:
    """One pay-out item per SUCCESS order. Every status move is one conditional update from PAYOUT_ALLOWED_FROM
    (FAILED -> RELEASED only through retry_failed); the sweep fields are present only while something is due."""

    table: str
    shards: int = 32

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> PayoutsTable:
        config = config or settings()
        return cls(config.payouts_table, config.sweep_shards)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def _update(self, order_id: str, update: str, condition: str, values: dict[str, Any],
                returns: str = "NONE") -> dict[str, Any] | None:
        """One conditional update; the item as `returns` asks ({} for NONE), None when the condition failed."""
        try:
            answer = self._db.update_item(
                TableName=self.table, Key=to_item({"payment_order_id": order_id}), UpdateExpression=update,
                ConditionExpression=condition, ExpressionAttributeValues=to_item(values), ReturnValues=returns,
            )
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return from_item(answer.get("Attributes", {}))

    def _move(self, order_id: str, target: PayoutStatus, update: str, values: dict[str, Any],
              returns: str = "NONE", extra_condition: str = "") -> dict[str, Any] | None:
        allowed = {f":from{i}": status.value for i, status in enumerate(PAYOUT_ALLOWED_FROM[target])}
        condition = f"payout_status IN ({', '.join(allowed)})" + (f" AND {extra_condition}" if extra_condition else "")
        return self._update(order_id, f"SET payout_status = :target, updated_at = :now, {update}", condition,
                            {":target": target.value, **allowed, **values}, returns)

    def _shard(self, order_id: str) -> str:
        return sweep_shard(order_id, self.shards)

    def create_held(self, items: Iterable[dict[str, Any]]) -> list[str]:
        """Store each order's HELD pay-out unless it exists; returns the ids created now. An item with an
        auto_release_at is due then (the sweeper releases it)."""
        created = []
        for item in items:
            record = {**item, "payout_status": PayoutStatus.HELD.value}
            if record.get("auto_release_at"):
                record.update(sweep_shard=self._shard(record["payment_order_id"]), due_at=record["auto_release_at"])
            try:
                self._db.put_item(TableName=self.table, Item=to_item(record),
                                  ConditionExpression="attribute_not_exists(payment_order_id)")
            except ClientError as error:
                if aws.error_code(error) != "ConditionalCheckFailedException":
                    raise
                continue
            created.append(record["payment_order_id"])
        return created

    def get(self, order_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"payment_order_id": order_id}),
                                   ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_many(self, ids: Iterable[str], attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.table, "payment_order_id", ids, attributes)

    def release(self, order_id: str, commission_bps: int, commission_minor: int, net_minor: int, now: str,
                due_at: str) -> dict[str, Any] | None:
        """HELD -> RELEASED with the commission frozen; the wallet and ledger step is due at `due_at`
        (release_applied false). The new item, or None if it was not HELD."""
        return self._move(
            order_id, PayoutStatus.RELEASED,
            "commission_bps = :bps, commission_minor = :commission, net_minor = :net, released_at = :now, "
            f"release_applied = :false, {_PAYOUT_SWEEP_FIELDS}",
            {":bps": commission_bps, ":commission": commission_minor, ":net": net_minor, ":now": now,
             ":false": False, ":shard": self._shard(order_id), ":due": due_at, ":gross": commission_minor + net_minor},
            returns="ALL_NEW",
            # the gross it was computed from: a refund while HELD shrinks it (RefundsTable.succeed_held)
            extra_condition="gross_minor = :gross")

    def mark_release_applied(self, order_id: str, now: str) -> bool:
        """The release's wallet movement and ledger transaction are written (both once-only by themselves)."""
        return self._update(
            order_id, "SET release_applied = :true, updated_at = :now", "attribute_exists(released_at)",
            {":true": True, ":now": now}) is not None

    def begin_transfer(self, order_id: str, now: str, due_at: str, destination: str = "") -> dict[str, Any] | None:
        """RELEASED|TRANSFERRING -> TRANSFERRING for one more attempt, due again at `due_at` if this one dies;
        never for a dead-lettered one (a stale message must not revive what a human holds: `ops payouts retry`
        does). The destination is frozen with the key generation's first attempt: a seller's account changed while a
        Transfer may exist never sends the same key elsewhere. The new item, or None if in no state to transfer."""
        frozen = ", destination = if_not_exists(destination, :destination)" if destination else ""
        return self._move(
            order_id, PayoutStatus.TRANSFERRING,
            f"first_transfer_at = if_not_exists(first_transfer_at, :now), {_PAYOUT_SWEEP_FIELDS}{frozen} "
            "ADD transfer_attempts :one REMOVE awaiting_seller",
            {":now": now, ":one": 1, ":shard": self._shard(order_id), ":due": due_at,
             **({":destination": destination} if destination else {})}, returns="ALL_NEW",
            # an open dispute holds the pay-out (DisputesTable.hold_payout): none of it is transferred
            extra_condition=f"{_NOT_DEAD_LETTERED} AND attribute_not_exists(dispute_holds)")

    def record_transfer_id(self, order_id: str, transfer_id: str, now: str) -> bool:
        """The PSP's transfer id as soon as it is known; never replaced by another one."""
        return self._update(
            order_id, "SET transfer_id = :transfer, updated_at = :now",
            "payout_status IN (:transferring, :transferred) AND "
            "(attribute_not_exists(transfer_id) OR transfer_id = :transfer)",
            {":transfer": transfer_id, ":now": now, ":transferring": PayoutStatus.TRANSFERRING.value,
             ":transferred": PayoutStatus.TRANSFERRED.value}) is not None

    def finish_transfer(self, order_id: str, transfer_id: str, now: str, *, at_psp: bool = True) -> bool:
        """TRANSFERRING -> TRANSFERRED (final), out of the sweep index, into recon's window of our transfers
        (unless nothing went to the PSP: a net of zero). True if this call moved it."""
        window = ", transferred_bucket = :bucket" if at_psp else ""
        values = {":transfer": transfer_id, ":now": now}
        if at_psp:
            values[":bucket"] = created_bucket(order_id, now)
        return self._move(
            order_id, PayoutStatus.TRANSFERRED,
            f"transfer_id = :transfer, transferred_at = :now{window} "
            "REMOVE sweep_shard, due_at, last_error, awaiting_seller",
            values, extra_condition="(attribute_not_exists(transfer_id) OR transfer_id = :transfer)") is not None

    def fail_transfer(self, order_id: str, code: str, reason: str, now: str) -> bool:
        """-> FAILED (the account refused): final until `ops payouts retry`. True if this call moved it."""
        return self._move(
            order_id, PayoutStatus.FAILED,
            "payout_failure_code = :code, payout_failure_reason = :reason, failed_at = :now "
            "REMOVE sweep_shard, due_at, awaiting_seller",
            {":code": code, ":reason": reason[:500], ":now": now},
            extra_condition="attribute_not_exists(transfer_id)") is not None

    def retire_transfer_key(self, order_id: str, used_generation: int, now: str) -> bool:
        """Stripe refused the request of key generation `used_generation` outright (no Transfer under it): later
        attempts use the next key and may go to the seller's current account. Conditional on the generation and
        on no transfer recorded, so a late worker holding an older refusal never skips past a key whose Transfer
        may exist. False: another attempt moved on (the caller then changes nothing)."""
        generation = "transfer_key_generation = :used"
        if used_generation == 0:
            generation = f"(attribute_not_exists(transfer_key_generation) OR {generation})"
        return self._update(
            order_id, "SET transfer_key_generation = :next, updated_at = :now REMOVE destination",
            f"{generation} AND attribute_not_exists(transfer_id)",
            {":next": used_generation + 1, ":used": used_generation, ":now": now}) is not None

    def postpone(self, order_id: str, due_at: str, now: str, note: str, *, backoff: bool = False) -> bool:
        """Keep the status, look again at `due_at` (platform balance short, a transient error). `backoff`: the
        Transfer worker waits until then (`postponed_until`), so a message already queued for the pay-out (a
        duplicate, a release's, an earlier sweep's) neither calls the PSP nor spends an attempt before it."""
        until = ", postponed_until = :due" if backoff else ""
        return self._update(
            order_id, f"SET {_PAYOUT_SWEEP_FIELDS}, last_error = :note, updated_at = :now{until}",
            f"payout_status IN (:held, :released, :transferring) AND {_NOT_DEAD_LETTERED}",
            {":shard": self._shard(order_id), ":due": due_at, ":note": note[:500], ":now": now,
             **_open_statuses()}) is not None

    def await_seller(self, order_id: str, seller: str, due_at: str, now: str) -> bool:
        """The seller has no connected account yet: wait for its registration (wake_awaiting), with a late
        `due_at` as a safety net."""
        return self._update(
            order_id, f"SET awaiting_seller = :seller, {_PAYOUT_SWEEP_FIELDS}, updated_at = :now",
            f"payout_status IN (:released, :transferring) AND {_NOT_DEAD_LETTERED}",
            {":seller": seller, ":shard": self._shard(order_id), ":due": due_at, ":now": now,
             ":released": PayoutStatus.RELEASED.value, ":transferring": PayoutStatus.TRANSFERRING.value},
        ) is not None

    def wake_awaiting(self, seller: str, now: str, limit: int = 1000) -> list[str]:
        """The seller registered an account: every pay-out waiting for it is due now. Ids woken by this call."""
        keys = _query(self._db, self.table, AWAITING_INDEX, "awaiting_seller = :seller", {":seller": seller})
        woken = []
        for count, key in enumerate(keys):
            if count >= limit:
                break
            order_id = key["payment_order_id"]
            if self._update(order_id, f"SET {_PAYOUT_SWEEP_FIELDS}, updated_at = :now REMOVE awaiting_seller",
                            f"awaiting_seller = :seller AND {_NOT_DEAD_LETTERED}",
                            {":seller": seller, ":shard": self._shard(order_id), ":due": now, ":now": now},
                            ) is not None:
                woken.append(order_id)
        return woken

    def retry_failed(self, order_id: str, now: str) -> bool:
        """FAILED -> RELEASED, due now, failure cleared: the only move back, made explicitly by an operator."""
        return self._update(
            order_id,
            f"SET payout_status = :released, {_PAYOUT_SWEEP_FIELDS}, retried_at = :now, updated_at = :now "
            "REMOVE payout_failure_code, payout_failure_reason, failed_at, dead_letter_reason",
            "payout_status = :failed",
            {":released": PayoutStatus.RELEASED.value, ":failed": PayoutStatus.FAILED.value,
             ":shard": self._shard(order_id), ":due": now, ":now": now}) is not None

    def requeue_dead_lettered(self, order_id: str, now: str) -> bool:
        """A dead-lettered RELEASED/TRANSFERRING pay-out back in the sweep index, due now, with its attempts
        counted afresh (the PSP key and first_transfer_at stay, so a transfer made before is found, never made
        again). False if it is no longer dead-lettered in one of those states."""
        return self._update(
            order_id, f"SET {_PAYOUT_SWEEP_FIELDS}, transfer_attempts = :zero, updated_at = :now "
            "REMOVE dead_letter_reason",
            "payout_status IN (:released, :transferring) AND attribute_exists(dead_letter_reason)",
            {":shard": self._shard(order_id), ":due": now, ":now": now, ":zero": 0,
             ":released": PayoutStatus.RELEASED.value, ":transferring": PayoutStatus.TRANSFERRING.value},
        ) is not None

    def due_payouts(self, shard: str, now: str, max_items: int = 1000, page_size: int = 100) -> Iterator[str]:
        """Ids of the pay-outs of one sweep shard whose due_at has passed (at most `max_items` a run)."""
        keys = _query(self._db, self.table, SWEEP_INDEX, "sweep_shard = :shard AND due_at <= :now",
                      {":shard": shard, ":now": now}, page_size=page_size, max_items=max_items)
        for key in keys:
            yield key["payment_order_id"]

    def mark_dead_lettered(self, order_id: str, expected_due_at: str, reason: str, now: str) -> bool:
        """Out of the sweep index (a human has it now), if nobody moved its due_at since it was read."""
        return self._update(
            order_id, "SET dead_letter_reason = :reason, updated_at = :now REMOVE sweep_shard, due_at",
            "due_at = :expected", {":reason": reason[:500], ":now": now, ":expected": expected_due_at},
        ) is not None

    def transferred_between(self, bucket: str, start: str, end: str) -> list[str]:
        """Ids of the pay-outs of one transferred_bucket transferred in [start, end) (keys-only index)."""
        keys = _query(self._db, self.table, TRANSFERRED_INDEX,
                      "transferred_bucket = :bucket AND transferred_at BETWEEN :start AND :end",
                      {":bucket": bucket, ":start": start, ":end": end})
        return [key["payment_order_id"] for key in keys if key["transferred_at"] < end]

    def scan(self, attributes: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every pay-out (operator checks and the chaos run's invariants; never on a request path)."""
        yield from _scan(self._db, self.table, attributes)


class ClaimOutcome(StrEnum):
    NEW = "new"  # this delivery owns the file: process it (or resume an interrupted run of it)
    DONE = "done"  # this very delivery was processed already (an SQS redelivery): nothing to do
    DUPLICATE = "duplicate"  # the same content arrived before under another delivery


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    original: dict[str, Any] | None = None


@dataclass
class ReconTable:
    """Recon's file guard (duplicates), run summaries and carried unsettled orders (keys: functions/shared/
    names.py)."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> ReconTable:
        return cls((config or settings()).recon_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    # -- files -----------------------------------------------------------------------------------------

    def claim_file(self, sha256: str, psp: str, source_key: str, delivery: str, now: str) -> Claim:
        """Take the guard of this content for this delivery. The same delivery may take it again while its
        run is unfinished (a retry resumes); any other delivery of the same content is a duplicate."""
        item = {"pk": recon_file_key(sha256), "sk": FILE_GUARD_SORT_KEY, "status": "processing", "psp": psp,
                "source_key": source_key, "delivery": delivery, "started_at": now}
        try:
            self._db.put_item(
                TableName=self.table, Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk) OR (#status = :processing AND delivery = :delivery)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=to_item({":processing": "processing", ":delivery": delivery}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if aws.error_code(error) != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
            original = from_item(old) if old else self.get_guard(sha256) or {}
            if original.get("delivery") == delivery:
                return Claim(ClaimOutcome.DONE, original)
            return Claim(ClaimOutcome.DUPLICATE, original)
        return Claim(ClaimOutcome.NEW)

    def get_guard(self, sha256: str) -> dict[str, Any] | None:
        return self._get(recon_file_key(sha256), FILE_GUARD_SORT_KEY)

    def record_duplicate(self, sha256: str, source_key: str, delivery: str, original_key: str, now: str) -> None:
        self._db.put_item(TableName=self.table, Item=to_item({
            "pk": recon_file_key(sha256), "sk": duplicate_delivery_sort_key(delivery), "source_key": source_key,
            "duplicate_of": original_key, "seen_at": now,
        }))

    def finish_run(self, sha256: str, summary: dict[str, Any], now: str) -> None:
        """Store the run's summary, then release the guard as done (a crash in between re-runs, harmlessly)."""
        self._db.put_item(TableName=self.table, Item=to_item({
            "pk": recon_file_key(sha256), "sk": FILE_RUN_SORT_KEY, "finished_at": now, **summary,
        }))
        self._db.update_item(
            TableName=self.table, Key=to_item({"pk": recon_file_key(sha256), "sk": FILE_GUARD_SORT_KEY}),
            UpdateExpression="SET #status = :done, finished_at = :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item({":done": "done", ":now": now}),
        )

    def get_run(self, sha256: str) -> dict[str, Any] | None:
        return self._get(recon_file_key(sha256), FILE_RUN_SORT_KEY)

    # -- carried orders --------------------------------------------------------------------------------

    def carried(self, psp: str) -> dict[str, dict[str, Any]]:
        items = _pages(self._db, "query", {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": to_item({":pk": carried_orders_key(psp)}), "ConsistentRead": True})
        return {item["sk"]: item for item in items}

    def carry(self, psp: str, order: dict[str, Any], first_seen: str) -> None:
        """Start carrying an order; an order carried already keeps its first-seen date."""
        item = {"pk": carried_orders_key(psp), "sk": order["payment_order_id"], "first_seen": first_seen,
                "payment_order_id": order["payment_order_id"], "psp_reference": order.get("psp_reference"),
                "amount_minor": int(order["amount_minor"]), "currency": order["currency"],
                "created_at": order.get("created_at")}
        try:
            self._db.put_item(TableName=self.table, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if aws.error_code(error) != "ConditionalCheckFailedException":
                raise

    def mark_raised(self, psp: str, payment_order_id: str, now: str) -> bool:
        """True for the one run that raises the order; later runs see it raised already."""
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"pk": carried_orders_key(psp), "sk": payment_order_id}),
                UpdateExpression="SET raised_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(raised_at)",
                ExpressionAttributeValues=to_item({":now": now}),
            )
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def clear(self, psp: str, payment_order_id: str) -> None:
        self._db.delete_item(TableName=self.table,
                             Key=to_item({"pk": carried_orders_key(psp), "sk": payment_order_id}))


def _open_statuses() -> dict[str, str]:
    return {":held": PayoutStatus.HELD.value, ":released": PayoutStatus.RELEASED.value,
            ":transferring": PayoutStatus.TRANSFERRING.value}


def _put_new(table: str, item: dict[str, Any], key: str) -> dict[str, Any]:
    """A transaction's Put of an item that must not exist yet."""
    return {"Put": {"TableName": table, "Item": to_item(item), "ConditionExpression": f"attribute_not_exists({key})"}}


def _projection(attributes: Sequence[str] | None) -> dict[str, Any]:
    """A ProjectionExpression of `attributes`, each through a placeholder (some are reserved words)."""
    if attributes is None:
        return {}
    names = {f"#p{i}": name for i, name in enumerate(attributes)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


# BatchGetItem's keys left unprocessed (throttling) are asked again after a full-jitter pause of at most
# min(cap, base * 2**round), as AWS advises; botocore's own retries (functions/shared/aws.py) cover failed calls.
BATCH_GET_ROUNDS = 8
_UNPROCESSED_PAUSE_BASE_S = 0.05
_UNPROCESSED_PAUSE_CAP_S = 1.0


class UnprocessedKeysLeft(Exception):
    """DynamoDB left keys unprocessed after BATCH_GET_ROUNDS rounds (throttled): retry later."""


def batch_get(db: Any, table: str, key: str, ids: Iterable[str],
              attributes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """BatchGetItem (consistent), 100 distinct keys a request. `attributes` projects the items (the key must be
    among them). Raises UnprocessedKeysLeft when throttling outlasts BATCH_GET_ROUNDS rounds."""
    wanted = list(dict.fromkeys(ids))
    shape = {"ConsistentRead": True, **_projection(attributes)}
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), 100):
        keys = [{key: {"S": i}} for i in wanted[start : start + 100]]
        for round_number in range(BATCH_GET_ROUNDS):
            if round_number:
                time.sleep(random.uniform(0, _unprocessed_pause_cap_s(round_number)))
            answer = db.batch_get_item(RequestItems={table: {"Keys": keys, **shape}})
            for item in answer.get("Responses", {}).get(table, []):
                record = from_item(item)
                found[record[key]] = record
            keys = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if not keys:
                break
        else:
            raise UnprocessedKeysLeft(f"{table}: {len(keys)} keys still unprocessed after {BATCH_GET_ROUNDS} rounds")
    return found


def _unprocessed_pause_cap_s(round_number: int) -> float:
    """The longest pause before round `round_number` (1, 2, ...): doubling from the base, capped."""
    return min(_UNPROCESSED_PAUSE_CAP_S, _UNPROCESSED_PAUSE_BASE_S * 2 ** (round_number - 1))


def _query(db: Any, table: str, index: str, condition: str, values: dict[str, Any], *,
           page_size: int | None = None, max_items: int | None = None) -> Iterator[dict[str, Any]]:
    return _pages(db, "query", {"TableName": table, "IndexName": index, "KeyConditionExpression": condition,
                                "ExpressionAttributeValues": to_item(values)}, page_size, max_items)


def _scan(db: Any, table: str, attributes: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    return _pages(db, "scan", {"TableName": table, "ConsistentRead": True, **_projection(attributes)})


def _pages(db: Any, operation: str, request: dict[str, Any], page_size: int | None = None,
           max_items: int | None = None) -> Iterator[dict[str, Any]]:
    """Every item of a Query or Scan (`operation`), page after page, at most `max_items` of them."""
    limits = {name: value for name, value in (("PageSize", page_size), ("MaxItems", max_items)) if value}
    for page in db.get_paginator(operation).paginate(**request, PaginationConfig=limits):
        for item in page.get("Items", []):
            yield from_item(item)


class ClaimRefused(Exception):
    """Another delivery of the same webhook event holds it (its lease is live): this one is retried later."""


@dataclass
class WebhookEventsTable:
    """One item per PSP webhook event id, kept 30 days (TTL `expires_at`, longer than Stripe's 3 days of retries).

    Claim/complete: `claim` takes a lease (status PROCESSING, `lease_until`, a token) when the event is new, or
    its last lease ran out; `complete` marks it DONE (with the handler's outcome) under that token, only after
    the handler succeeded; `release` ends the lease of a failed handler so the retry may take it at once. A worker
    that dies between its handler and `complete` leaves a lease that runs out: the redelivery runs the
    (idempotent) handler again. An event is never marked DONE without its handler having succeeded.
    """

    table: str
    ttl_days: int = 30

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> WebhookEventsTable:
        return cls((config or settings()).webhook_events_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def claim(self, event_id: str, event_type: str, token: str, now: datetime, lease_s: int) -> bool:
        """True: this delivery holds the event now. False: it is DONE (a duplicate). ClaimRefused: another
        delivery's lease is live."""
        stamp = clock.iso(now)
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"event_id": event_id}),
                UpdateExpression="SET event_status = :processing, lease_until = :until, lease_token = :token, "
                                 "event_type = :type, expires_at = :expires, updated_at = :now, "
                                 "first_seen_at = if_not_exists(first_seen_at, :now) ADD attempts :one",
                ConditionExpression="attribute_not_exists(event_id) OR "
                                    "(event_status = :processing AND lease_until < :now)",
                ExpressionAttributeValues=to_item({
                    ":processing": "PROCESSING", ":until": clock.iso(now + timedelta(seconds=lease_s)),
                    ":token": token, ":type": event_type, ":now": stamp, ":one": 1,
                    ":expires": int((now + timedelta(days=self.ttl_days)).timestamp())}))
        except ClientError as error:
            if aws.error_code(error) != "ConditionalCheckFailedException":
                raise
            current = self.get(event_id) or {}
            if current.get("event_status") == "DONE":
                return False
            raise ClaimRefused(f"webhook event {event_id} is being processed (lease until "
                               f"{current.get('lease_until')})") from None
        return True

    def complete(self, event_id: str, token: str, outcome: str, now: datetime) -> bool:
        """PROCESSING -> DONE under this delivery's lease. False: the lease was lost to another delivery (which
        then completes it; the handler ran twice, harmlessly)."""
        return self._update(event_id, "SET event_status = :done, outcome = :outcome, done_at = :now, "
                            "updated_at = :now REMOVE lease_until, lease_token",
                            "event_status = :processing AND lease_token = :token",
                            {":done": "DONE", ":outcome": outcome, ":now": clock.iso(now), ":processing": "PROCESSING",
                             ":token": token})

    def release(self, event_id: str, token: str, error: str, now: datetime) -> bool:
        """The handler failed: the lease ends now (the event stays PROCESSING, not DONE), so the retry claims it."""
        return self._update(event_id, "SET lease_until = :now, last_error = :error, updated_at = :now",
                            "event_status = :processing AND lease_token = :token",
                            {":now": clock.iso(now), ":error": error[:500], ":processing": "PROCESSING",
                             ":token": token})

    def get(self, event_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"event_id": event_id}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def _update(self, event_id: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self._db.update_item(TableName=self.table, Key=to_item({"event_id": event_id}), UpdateExpression=update,
                                 ConditionExpression=condition, ExpressionAttributeValues=to_item(values))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True



@dataclass
class NotificationEndpointsTable:
    """One storefront endpoint per client (`client_id`, the API key's client): the URL
    events are POSTed to and the secret they are signed with. The secret is stored as given: signing needs it in
    the clear (encrypted at rest by DynamoDB; only PaymentApi writes and only the Deliverer reads it)."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> NotificationEndpointsTable:
        return cls((config or settings()).notification_endpoints_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def get(self, client_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"client_id": client_id}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def create(self, client_id: str, url: str, secret: str, now: str) -> bool:
        """Store a first endpoint; False (nothing written) if the client has one already."""
        try:
            self._db.put_item(
                TableName=self.table, ConditionExpression="attribute_not_exists(client_id)",
                Item=to_item({"client_id": client_id, "url": url, "secret": secret, "created_at": now,
                              "updated_at": now}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def set_url(self, client_id: str, url: str, now: str) -> dict[str, Any] | None:
        """Point an existing endpoint at `url`, keeping its secret; the new item, or None if there is none."""
        try:
            answer = self._db.update_item(
                TableName=self.table, Key=to_item({"client_id": client_id}),
                UpdateExpression="SET #url = :url, updated_at = :now",
                ConditionExpression="attribute_exists(client_id)",
                ExpressionAttributeNames={"#url": "url"}, ExpressionAttributeValues=to_item({":url": url, ":now": now}),
                ReturnValues="ALL_NEW")
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return from_item(answer["Attributes"])

    def replace(self, client_id: str, url: str, secret: str, now: str) -> dict[str, Any]:
        """Set the URL and the secret (a rotation when one existed); the same call twice writes the same item."""
        answer = self._db.update_item(
            TableName=self.table, Key=to_item({"client_id": client_id}),
            UpdateExpression="SET #url = :url, secret = :secret, updated_at = :now,"
                             " created_at = if_not_exists(created_at, :now)",
            ExpressionAttributeNames={"#url": "url"},
            ExpressionAttributeValues=to_item({":url": url, ":secret": secret, ":now": now}), ReturnValues="ALL_NEW")
        return from_item(answer["Attributes"])


@dataclass
class ApiKeysTable:
    """One item per API key (issue 21), keyed by the SHA-256 of the key: the key itself is never stored, so a
    leak of the table gives nobody a key. Revocation keeps the item (who had it, when it stopped)."""

    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> ApiKeysTable:
        return cls((config or settings()).api_keys_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def get(self, key_hash: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"key_hash": key_hash}))
        return from_item(answer["Item"]) if "Item" in answer else None

    def create(self, key_hash: str, key_id: str, client_id: str, scopes: Sequence[str], now: str,
               rate_limit_per_s: int | None = None) -> None:
        """Store a new key; a hash already taken (never, for 32 random bytes) raises rather than overwrites."""
        self._db.put_item(
            TableName=self.table, ConditionExpression="attribute_not_exists(key_hash)",
            Item=to_item({"key_hash": key_hash, "key_id": key_id, "client_id": client_id,
                          "scopes": sorted(scopes), "created_at": now, "rate_limit_per_s": rate_limit_per_s}))

    def all(self) -> Iterator[dict[str, Any]]:
        """Every key, revoked ones included (the ops tool's list; a small table)."""
        for page in self._db.get_paginator("scan").paginate(TableName=self.table):
            yield from (from_item(item) for item in page["Items"])

    def revoke(self, key_hash: str, now: str) -> bool:
        """Revoke a key once; False if there is no such key. Revoking twice keeps the first time."""
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"key_hash": key_hash}),
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="attribute_exists(key_hash)", ExpressionAttributeValues=to_item({":now": now}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


@dataclass
class ApiRateTable:
    """Requests per client and second (issue 21): one counter item per (client, second), gone a minute later
    (TTL). Authorizer containers take permits from it in leases, so a client's limit holds across containers."""

    table: str
    ttl_s: int = 60

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> ApiRateTable:
        return cls((config or settings()).api_rate_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def take(self, client_id: str, second: int, permits: int, limit: int) -> bool:
        """Take `permits` of the client's `limit` for `second`; False (nothing taken) when fewer are left."""
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"window": rate_window_key(client_id, second)}),
                UpdateExpression="ADD taken :n SET expires_at = if_not_exists(expires_at, :expires)",
                ConditionExpression="attribute_not_exists(taken) OR taken <= :most",
                ExpressionAttributeValues=to_item({":n": permits, ":most": limit - permits,
                                                   ":expires": second + self.ttl_s}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


# -- PSP health: circuit breakers (issue 18) -----------------------------------------------------------------------


@dataclass
class PspHealthTable:
    """One item per PSP: its circuit breaker (functions/shared/breaker.py). Timestamps are clock.iso() strings,
    which sort as they compare. A healthy PSP's item is read, never written: writes happen only while it fails
    and when it recovers. `quick`: one attempt with short timeouts (aws.quick_client), for calls made beside a
    payment call, which must never wait on this table."""

    table: str
    quick: bool = False
    _CHANGED = "ConditionalCheckFailedException"

    @classmethod
    def from_settings(cls, config: Settings | None = None, *, quick: bool = False) -> PspHealthTable:
        return cls((config or settings()).psp_health_table, quick)

    @property
    def _db(self) -> Any:
        return aws.quick_client("dynamodb") if self.quick else aws.client("dynamodb")

    def get(self, psp: str) -> dict[str, Any]:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"psp": psp}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else {}

    def all(self) -> list[dict[str, Any]]:
        """Every PSP's item (the ops tool's view; one item per PSP)."""
        return [from_item(item) for page in self._db.get_paginator("scan").paginate(TableName=self.table)
                for item in page["Items"]]

    def count_failure(self, psp: str, now: str, window_start_after: str, reason: str) -> dict[str, Any] | None:
        """One more failure of a closed breaker in its current window, or the first of a new window when the last
        began on or before `window_start_after`. None when it is not closed (it opened meanwhile: nothing to
        count). Two rounds: a concurrent caller may start the new window between our two writes."""
        values = {":one": 1, ":now": now, ":after": window_start_after, ":reason": reason[:200], ":closed": "closed"}
        closed = "(attribute_not_exists(#s) OR #s = :closed)"
        for _ in range(2):
            for update, condition in (
                ("ADD failures :one SET last_failure = :reason, last_failure_at = :now, updated_at = :now",
                 f"{closed} AND window_start > :after"),
                ("SET failures = :one, window_start = :now, last_failure = :reason, last_failure_at = :now, "
                 "updated_at = :now", f"{closed} AND (attribute_not_exists(window_start) OR window_start <= :after)"),
            ):
                changed = self._update(psp, update, condition, values)
                if changed is not None:
                    return changed
        return None

    def trip(self, psp: str, now: str, open_until: str, reason: str, *, lease: str = "") -> dict[str, Any] | None:
        """Open the breaker until `open_until`: from closed, or again when the probe holding `lease` failed. None
        when another caller changed it first (opened it, or another probe holds it)."""
        values = {":open": "open", ":now": now, ":until": open_until, ":zero": 0, ":one": 1, ":reason": reason[:200]}
        if lease:
            condition, values[":lease"] = "#s = :open AND probe_until = :lease", lease
        else:
            condition, values[":closed"] = "attribute_not_exists(#s) OR #s = :closed", "closed"
        return self._update(
            psp, "SET #s = :open, opened_at = :now, open_until = :until, failures = :zero, last_failure = :reason, "
                 "updated_at = :now ADD trips :one REMOVE probe_until, window_start, forced_by", condition, values)

    def take_probe(self, psp: str, now: str, lease_until: str) -> bool:
        """The one call that may try a PSP whose breaker's wait is over (half-open), until `lease_until`."""
        return self._update(
            psp, "SET probe_until = :lease, updated_at = :now",
            "#s = :open AND open_until <= :now AND (attribute_not_exists(probe_until) OR probe_until <= :now)",
            {":open": "open", ":now": now, ":lease": lease_until}) is not None

    def release_probe(self, psp: str, now: str, lease: str) -> bool:
        """The probe lease `lease` given back unused (its holder sent no call): the next call may take it now."""
        return self._update(psp, "SET updated_at = :now REMOVE probe_until", "#s = :open AND probe_until = :lease",
                            {":open": "open", ":now": now, ":lease": lease}) is not None

    def close(self, psp: str, now: str, by: str, *, lease: str = "") -> dict[str, Any] | None:
        """Closed, failures forgotten: by the probe holding `lease` (it got an answer), or by an operator (no
        lease: whatever the state). None when the lease is no longer the breaker's."""
        values = {":closed": "closed", ":zero": 0, ":now": now, ":by": by}
        condition = None
        if lease:
            condition, values[":open"], values[":lease"] = "#s = :open AND probe_until = :lease", "open", lease
        return self._update(
            psp, "SET #s = :closed, failures = :zero, closed_at = :now, closed_by = :by, updated_at = :now "
                 "REMOVE open_until, probe_until, window_start, forced_by", condition, values)

    def forget_failures(self, psp: str, now: str) -> dict[str, Any] | None:
        """A closed breaker's failures forgotten: the PSP answered. Never closes an open one."""
        return self._update(
            psp, "SET failures = :zero, updated_at = :now REMOVE window_start",
            "(attribute_not_exists(#s) OR #s = :closed) AND failures > :zero",
            {":zero": 0, ":now": now, ":closed": "closed"})

    def force_open(self, psp: str, now: str, open_until: str, by: str) -> dict[str, Any]:
        """An operator's open, in one write whatever the state: no probe before `open_until`, whatever answers."""
        changed = self._update(
            psp, "SET #s = :open, opened_at = :now, open_until = :until, failures = :zero, forced_by = :by, "
                 "last_failure = :reason, updated_at = :now ADD trips :one REMOVE probe_until, window_start", None,
            {":open": "open", ":now": now, ":until": open_until, ":zero": 0, ":one": 1, ":by": by,
             ":reason": f"opened by {by}"})
        return changed or {}

    def _update(self, psp: str, update: str, condition: str | None, values: dict[str, Any]) -> dict[str, Any] | None:
        request: dict[str, Any] = {"TableName": self.table, "Key": to_item({"psp": psp}), "UpdateExpression": update,
                                   "ExpressionAttributeValues": to_item(values), "ReturnValues": "ALL_NEW"}
        if condition:
            request["ConditionExpression"] = condition
        if "#s" in update or "#s" in (condition or ""):
            request["ExpressionAttributeNames"] = {"#s": "state"}
        try:
            return from_item(self._db.update_item(**request)["Attributes"])
        except ClientError as error:
            if aws.error_code(error) == self._CHANGED:
                return None
            raise


# -- refunds (issue 16 a) ----------------------------------------------------------------------------------------


class RefundExists(Exception):
    """The refund_id is taken; `existing` is the stored refund."""

    def __init__(self, existing: dict[str, Any] | None):
        super().__init__("refund exists")
        self.existing = existing


class RefundNotAccepted(Exception):
    """The order refused the refund: `reason` is not_found, not_settled or exceeds_remaining; `order` as read."""

    def __init__(self, reason: str, order: dict[str, Any] | None):
        super().__init__(reason)
        self.reason = reason
        self.order = order


class PayoutMoved(Exception):
    """The pay-out is no longer as the refund read it (released, transfer begun, another refund applied):
    read it again and decide the refund's timing afresh."""


REFUND_PENDING, REFUND_SUCCEEDED, REFUND_FAILED = "PENDING", "SUCCEEDED", "FAILED"


def _was(attribute: str, placeholder: str, value: int) -> str:
    """`attribute` is `value` (an absent counter counts as 0): the optimistic check of a pay-out's counters."""
    return f"attribute_not_exists({attribute})" if value == 0 else f"{attribute} = {placeholder}"


@dataclass
class RefundsTable:
    """One item per refund (key refund_id). The refund's reservation lives on its order (`refunded_minor`, what
    PENDING and SUCCEEDED refunds commit, and `refund_ids`): created together, so two refunds can never commit
    more than the order's amount. Status PENDING -> SUCCEEDED | FAILED only, each a conditional write; the
    SUCCEEDED move carries the pay-out's change in the same transaction (docs/decisions.md "Refunds")."""

    table: str
    orders_table: str
    payouts_table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> RefundsTable:
        config = config or settings()
        return cls(config.refunds_table, config.payment_orders_table, config.payouts_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def get(self, refund_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"refund_id": refund_id}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_many(self, refund_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.table, "refund_id", refund_ids)

    def scan(self) -> Iterator[dict[str, Any]]:
        yield from _scan(self._db, self.table)

    def create(self, item: dict[str, Any], gross_minor: int) -> None:
        """The refund (PENDING) and its reservation on the order, in one transaction: the order must be SUCCESS
        and `refunded_minor + amount <= gross`. RefundExists (the id is taken), RefundNotAccepted, WriteConflict
        (a concurrent refund of the order: retry)."""
        amount = int(item["amount_minor"])
        order_update = {"Update": {
            "TableName": self.orders_table, "Key": to_item({"payment_order_id": item["payment_order_id"]}),
            "UpdateExpression": "SET refunded_minor = if_not_exists(refunded_minor, :zero) + :amount "
                                "ADD refund_ids :ids",
            "ConditionExpression": "payment_order_status = :success AND "
                                   "(attribute_not_exists(refunded_minor) OR refunded_minor <= :limit)",
            "ExpressionAttributeValues": {**to_item({":zero": 0, ":amount": amount, ":limit": gross_minor - amount,
                                                     ":success": OrderStatus.SUCCESS.value}),
                                          ":ids": {"SS": [item["refund_id"]]}},
        }}
        put = {"Put": {"TableName": self.table, "Item": to_item(item),
                       "ConditionExpression": "attribute_not_exists(refund_id)",
                       "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        try:
            self._db.transact_write_items(TransactItems=[put, order_update])
        except ClientError as error:
            code = aws.error_code(error)
            if code == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    old = (error.response.get("CancellationReasons") or [{}])[0].get("Item")
                    raise RefundExists(from_item(old) if old else self.get(item["refund_id"])) from error
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    answer = self._db.get_item(TableName=self.orders_table, ConsistentRead=True,
                                               Key=to_item({"payment_order_id": item["payment_order_id"]}))
                    order = from_item(answer["Item"]) if "Item" in answer else None
                    if order is None:
                        raise RefundNotAccepted("not_found", None) from error
                    if order.get("payment_order_status") != OrderStatus.SUCCESS.value:
                        raise RefundNotAccepted("not_settled", order) from error
                    raise RefundNotAccepted("exceeds_remaining", order) from error
                if _TRANSIENT_CANCELLATIONS & set(reasons):
                    raise WriteConflict() from error
            if code == "TransactionConflictException":
                raise WriteConflict() from error
            raise

    def _update(self, refund_id: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self._db.update_item(TableName=self.table, Key=to_item({"refund_id": refund_id}),
                                 UpdateExpression=update, ConditionExpression=condition,
                                 ExpressionAttributeValues=to_item(values))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record_psp_refund(self, refund_id: str, psp_refund_id: str, psp_status: str, now: str, *,
                          unless_known: bool = False) -> bool:
        """The PSP's Refund id as soon as it is known (never replaced by another one) and its latest status.
        `unless_known`: the status only if none is recorded (Adyen's `received`, which must not overwrite the word
        of a REFUND notification that overtook the request's answer)."""
        status = "if_not_exists(psp_status, :status)" if unless_known else ":status"
        return self._update(
            refund_id, f"SET psp_refund_id = :psp, psp_status = {status}, updated_at = :now, "
            "psp_created_at = if_not_exists(psp_created_at, :now)",
            "attribute_exists(refund_id) AND (attribute_not_exists(psp_refund_id) OR psp_refund_id = :psp)",
            {":psp": psp_refund_id, ":status": psp_status, ":now": now})

    def note_psp_attempt(self, refund_id: str, now: str, account: str = "") -> bool:
        """When the PSP was first asked (the key's age: past IDEMPOTENCY_KEY_SAFE_AGE, look the Refund up first), and
        the PSP account its idempotency key belongs to (`psp_account`, kept from the first attempt). False: the
        refund was first asked under another account's keys, and nothing may be sent under this one's."""
        if not account:
            return self._update(refund_id, "SET psp_attempted_at = if_not_exists(psp_attempted_at, :now)",
                                "attribute_exists(refund_id)", {":now": now})
        return self._update(
            refund_id, "SET psp_attempted_at = if_not_exists(psp_attempted_at, :now), "
                       "psp_account = if_not_exists(psp_account, :account)",
            "attribute_exists(refund_id) AND (attribute_not_exists(psp_account) OR psp_account = :account)",
            {":now": now, ":account": account})

    def _succeed(self, refund: dict[str, Any], fields: dict[str, Any], payout_update: dict[str, Any]) -> bool:
        """PENDING -> SUCCEEDED with `fields`, and the pay-out's change, in one transaction. True if this call
        moved it, False if the refund was no longer PENDING; PayoutMoved if the pay-out changed meanwhile."""
        sets = "".join(f", {name} = :{name}" for name in fields)
        refund_update = {"Update": {
            "TableName": self.table, "Key": to_item({"refund_id": refund["refund_id"]}),
            "UpdateExpression": f"SET refund_status = :succeeded{sets}",
            "ConditionExpression": "refund_status = :pending",
            "ExpressionAttributeValues": to_item({":succeeded": REFUND_SUCCEEDED, ":pending": REFUND_PENDING,
                                                  **{f":{k}": v for k, v in fields.items()}}),
        }}
        payout_update = {"Update": {"TableName": self.payouts_table,
                                    "Key": to_item({"payment_order_id": refund["payment_order_id"]}),
                                    **payout_update}}
        try:
            self._db.transact_write_items(TransactItems=[refund_update, payout_update])
        except ClientError as error:
            if aws.error_code(error) == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    raise PayoutMoved() from error
                if _TRANSIENT_CANCELLATIONS & set(reasons):
                    raise WriteConflict() from error
            if aws.error_code(error) == "TransactionConflictException":
                raise WriteConflict() from error
            raise
        return True

    def succeed_held(self, refund: dict[str, Any], fields: dict[str, Any], payout: dict[str, Any]) -> bool:
        """The order still HELD: its pay-out's gross shrinks by the refund (the release works on what remains)."""
        amount, gross = int(refund["amount_minor"]), int(payout["gross_minor"])
        return self._succeed(refund, fields, {
            "UpdateExpression": "SET gross_minor = gross_minor - :amount, held_refunded_minor = "
                                "if_not_exists(held_refunded_minor, :zero) + :amount",
            "ConditionExpression": "payout_status = :held AND gross_minor = :gross AND gross_minor >= :amount",
            "ExpressionAttributeValues": to_item({":amount": amount, ":zero": 0, ":gross": gross,
                                                  ":held": PayoutStatus.HELD.value}),
        })

    def succeed_released(self, refund: dict[str, Any], fields: dict[str, Any], payout: dict[str, Any],
                         seller_share: int, commission_share: int) -> bool:
        """Released, no transfer begun, the release applied: the net (and commission) shrink by their shares, so
        the later transfer sends less; only while still so (the read values, no first_transfer_at)."""
        refunded = int(payout.get("refunded_minor", 0))
        return self._succeed(refund, fields, {
            "UpdateExpression": "SET net_minor = net_minor - :share, commission_minor = commission_minor - :cshare, "
                                "refunded_minor = if_not_exists(refunded_minor, :zero) + :amount",
            "ConditionExpression": "payout_status = :released AND attribute_not_exists(first_transfer_at) AND "
                                   "release_applied = :true AND net_minor = :net AND commission_minor = :commission "
                                   f"AND {_was('refunded_minor', ':refunded', refunded)}",
            "ExpressionAttributeValues": to_item({
                ":share": seller_share, ":cshare": commission_share, ":amount": int(refund["amount_minor"]),
                ":zero": 0, ":released": PayoutStatus.RELEASED.value, ":true": True, ":net": int(payout["net_minor"]),
                ":commission": int(payout["commission_minor"]), **({":refunded": refunded} if refunded else {})}),
        })

    def succeed_after_transfer(self, refund: dict[str, Any], fields: dict[str, Any], payout: dict[str, Any],
                               seller_share: int) -> bool:
        """The transfer is made (its id recorded): the pay-out keeps its net (what was sent) and counts the refund
        and the seller's share to take back."""
        refunded, shared = int(payout.get("refunded_minor", 0)), int(payout.get("refund_share_minor", 0))
        values = {":amount": int(refund["amount_minor"]), ":share": seller_share, ":zero": 0,
                  ":transfer": payout["transfer_id"], ":transferring": PayoutStatus.TRANSFERRING.value,
                  ":transferred": PayoutStatus.TRANSFERRED.value}
        values.update({":refunded": refunded} if refunded else {})
        values.update({":shared": shared} if shared else {})
        return self._succeed(refund, fields, {
            "UpdateExpression": "SET refunded_minor = if_not_exists(refunded_minor, :zero) + :amount, "
                                "refund_share_minor = if_not_exists(refund_share_minor, :zero) + :share",
            "ConditionExpression": "payout_status IN (:transferring, :transferred) AND transfer_id = :transfer AND "
                                   f"{_was('refunded_minor', ':refunded', refunded)} AND "
                                   f"{_was('refund_share_minor', ':shared', shared)}",
            "ExpressionAttributeValues": to_item(values),
        })

    def fail(self, refund: dict[str, Any], code: str, reason: str, now: str) -> bool:
        """PENDING -> FAILED and the order's reservation given back, in one transaction. True if this call did."""
        amount = int(refund["amount_minor"])
        items = [
            {"Update": {
                "TableName": self.table, "Key": to_item({"refund_id": refund["refund_id"]}),
                "UpdateExpression": "SET refund_status = :failed, failure_code = :code, failure_reason = :reason, "
                                    "updated_at = :now, finished_at = :now",
                "ConditionExpression": "refund_status = :pending",
                "ExpressionAttributeValues": to_item({":failed": REFUND_FAILED, ":pending": REFUND_PENDING,
                                                      ":code": code, ":reason": reason[:500], ":now": now}),
            }},
            {"Update": {
                "TableName": self.orders_table, "Key": to_item({"payment_order_id": refund["payment_order_id"]}),
                "UpdateExpression": "SET refunded_minor = refunded_minor - :amount",
                "ConditionExpression": "refunded_minor >= :amount",
                "ExpressionAttributeValues": to_item({":amount": amount}),
            }},
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if aws.error_code(error) == "TransactionCanceledException":
                reasons = _cancellation_codes(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if _TRANSIENT_CANCELLATIONS & set(reasons):
                    raise WriteConflict() from error
            if aws.error_code(error) == "TransactionConflictException":
                raise WriteConflict() from error
            raise
        return True

    def mark_books_applied(self, refund_id: str, now: str) -> bool:
        return self._update(refund_id, "SET books_applied = :true, updated_at = :now",
                            "refund_status = :succeeded", {":true": True, ":now": now,
                                                           ":succeeded": REFUND_SUCCEEDED})

    def record_reversal(self, refund_id: str, status: str, now: str, reversal_id: str = "", code: str = "") -> bool:
        """The reversal's outcome, once: SUCCEEDED (its id) or REFUSED (the seller owes the share: `owed`)."""
        return self._update(
            refund_id, "SET reversal_status = :status, reversal_id = :id, reversal_code = :code, updated_at = :now",
            "refund_status = :succeeded AND (attribute_not_exists(reversal_status) OR reversal_status = :status)",
            {":status": status, ":id": reversal_id, ":code": code, ":now": now, ":succeeded": REFUND_SUCCEEDED})

    def finish(self, refund_id: str, now: str) -> bool:
        """Every step of a SUCCEEDED refund is done (books, reversal or owed): nothing is left to drive."""
        return self._update(refund_id, "SET finished_at = if_not_exists(finished_at, :now), updated_at = :now",
                            "refund_status = :succeeded", {":now": now, ":succeeded": REFUND_SUCCEEDED})

    def record_netting(self, payment_order_id: str, netted_minor: int, now: str) -> bool:
        """What the order's transfer keeps back for its seller's debt, frozen before its Transfer is known (the
        transfer then sends net - netted). False if a transfer id is recorded or another netting was."""
        try:
            self._db.update_item(
                TableName=self.payouts_table, Key=to_item({"payment_order_id": payment_order_id}),
                UpdateExpression="SET netted_minor = :netted, updated_at = :now",
                ConditionExpression="attribute_not_exists(transfer_id) AND "
                                    "(attribute_not_exists(netted_minor) OR netted_minor = :netted)",
                ExpressionAttributeValues=to_item({":netted": netted_minor, ":now": now}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


# -- disputes (issue 16: chargebacks; docs/decisions.md "Disputes") ----------------------------------------------
DISPUTE_OPEN, DISPUTE_WON, DISPUTE_LOST = "OPEN", "WON", "LOST"
DISPUTE_ALLOWED_FROM = {DISPUTE_WON: (DISPUTE_OPEN,), DISPUTE_LOST: (DISPUTE_OPEN,)}  # never backwards


class DisputeExists(Exception):
    """The dispute id is stored already (a repeated or late event): its first attribution stands."""


@dataclass
class DisputesTable:
    """One item per PSP dispute (key `dispute_id`, the PSP's `dp_...`): its status (OPEN -> WON | LOST), the
    amount, the fee, and `parts`: order id -> {seller_account, amount_minor, and the progress of that order's
    steps: `timing` (held | transferred, decided once against the pay-out), `opened`, `resolved`, ...}. Each order
    of the dispute lists it in `dispute_ids` (GET /v1/payments/{id})."""

    table: str
    orders_table: str
    payouts_table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> DisputesTable:
        config = config or settings()
        return cls(config.disputes_table, config.payment_orders_table, config.payouts_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    def get(self, dispute_id: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"dispute_id": dispute_id}), ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def get_many(self, dispute_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return batch_get(self._db, self.table, "dispute_id", dispute_ids)

    def scan(self) -> Iterator[dict[str, Any]]:
        yield from _scan(self._db, self.table)

    def _transact(self, items: list[dict[str, Any]]) -> list[str]:
        """The cancellation reasons ([] when written); WriteConflict on a transient cancellation."""
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if aws.error_code(error) == "TransactionConflictException":
                raise WriteConflict() from error
            if aws.error_code(error) != "TransactionCanceledException":
                raise
            reasons = _cancellation_codes(error)
            if _TRANSIENT_CANCELLATIONS & set(reasons):
                raise WriteConflict() from error
            return reasons or ["ConditionalCheckFailed"]
        return []

    def create(self, item: dict[str, Any]) -> bool:
        """The dispute (OPEN) and `dispute_ids` on each of its orders, in one transaction. False if it exists."""
        items: list[dict[str, Any]] = [{"Put": {"TableName": self.table, "Item": to_item(item),
                                                "ConditionExpression": "attribute_not_exists(dispute_id)"}}]
        for order_id in item["parts"]:
            items.append({"Update": {
                "TableName": self.orders_table, "Key": to_item({"payment_order_id": order_id}),
                "UpdateExpression": "ADD dispute_ids :ids", "ConditionExpression": "attribute_exists(payment_order_id)",
                "ExpressionAttributeValues": {":ids": {"SS": [item["dispute_id"]]}}}})
        reasons = self._transact(items)
        if not reasons:
            return True
        if reasons[0] == "ConditionalCheckFailed":
            return False
        raise LookupError(f"dispute {item['dispute_id']}: an order of {sorted(item['parts'])} is missing")

    def _part_update(self, dispute_id: str, order_id: str, fields: dict[str, Any], now: str,
                     condition: str) -> dict[str, Any]:
        sets = ", ".join(f"parts.#o.{name} = :{name}" for name in fields)
        return {"Update": {
            "TableName": self.table, "Key": to_item({"dispute_id": dispute_id}),
            "UpdateExpression": f"SET {sets}, updated_at = :now", "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#o": order_id},
            "ExpressionAttributeValues": to_item({**{f":{k}": v for k, v in fields.items()}, ":now": now})}}

    def hold_payout(self, dispute_id: str, order_id: str, now: str) -> bool | None:
        """Timing `held`: the pay-out, not yet transferring, is blocked from transfer by this dispute (its id in
        `dispute_holds`), in one transaction with the part's timing. True if done now, False if the part's timing
        was decided before, None if the pay-out has begun a transfer meanwhile."""
        return self._decide(dispute_id, order_id, {"timing": "held"}, now, {"Update": {
            "TableName": self.payouts_table, "Key": to_item({"payment_order_id": order_id}),
            "UpdateExpression": "ADD dispute_holds :ids SET updated_at = :now",
            "ConditionExpression": "payout_status IN (:held, :released) AND attribute_not_exists(first_transfer_at)",
            "ExpressionAttributeValues": {":ids": {"SS": [dispute_id]}, **to_item({
                ":now": now, ":held": PayoutStatus.HELD.value, ":released": PayoutStatus.RELEASED.value})}}})

    def owe_transferred(self, dispute_id: str, order_id: str, transfer_id: str, seller_share: int,
                        commission_share: int, now: str) -> bool | None:
        """Timing `transferred`: the pay-out's transfer is recorded (final); the seller owes its share."""
        return self._decide(dispute_id, order_id, {"timing": "transferred", "seller_share_minor": seller_share,
                                                   "commission_share_minor": commission_share}, now, {
            "ConditionCheck": {"TableName": self.payouts_table, "Key": to_item({"payment_order_id": order_id}),
                               "ConditionExpression": "transfer_id = :transfer",
                               "ExpressionAttributeValues": to_item({":transfer": transfer_id})}})

    def _decide(self, dispute_id: str, order_id: str, fields: dict[str, Any], now: str,
                payout_item: dict[str, Any]) -> bool | None:
        reasons = self._transact([self._part_update(dispute_id, order_id, fields, now,
                                                    "attribute_not_exists(parts.#o.timing)"), payout_item])
        if not reasons:
            return True
        return False if reasons[0] == "ConditionalCheckFailed" else None

    def mark_part(self, dispute_id: str, order_id: str, step: str, now: str) -> None:
        """`step` of the order's part is written (its movement and transaction, each once by themselves)."""
        self._transact([self._part_update(dispute_id, order_id, {step: True}, now, "attribute_exists(parts.#o)")])

    def mark(self, dispute_id: str, step: str, now: str) -> None:
        self._db.update_item(TableName=self.table, Key=to_item({"dispute_id": dispute_id}),
                             UpdateExpression=f"SET {step} = :true, updated_at = :now",
                             ExpressionAttributeValues=to_item({":true": True, ":now": now}))

    def move(self, dispute_id: str, target: str, psp_status: str, now: str) -> bool:
        """OPEN -> WON | LOST (conditional; never backwards). True if this call moved it."""
        allowed = {f":from{i}": status for i, status in enumerate(DISPUTE_ALLOWED_FROM[target])}
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"dispute_id": dispute_id}),
                UpdateExpression="SET dispute_status = :target, psp_status = :psp, updated_at = :now, closed_at = :now",
                ConditionExpression=f"dispute_status IN ({', '.join(allowed)})",
                ExpressionAttributeValues=to_item({":target": target, ":psp": psp_status, ":now": now, **allowed}))
        except ClientError as error:
            if aws.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def lift_hold(self, dispute_id: str, order_id: str, now: str) -> None:
        """Won: the pay-out may transfer again (a RELEASED one is due now: its transfer was postponed)."""
        self._db.update_item(
            TableName=self.payouts_table, Key=to_item({"payment_order_id": order_id}),
            UpdateExpression="DELETE dispute_holds :ids SET updated_at = :now",
            ConditionExpression="attribute_exists(payment_order_id)",
            ExpressionAttributeValues={":ids": {"SS": [dispute_id]}, **to_item({":now": now})})

    def lose_held(self, dispute_id: str, order_id: str, payout: dict[str, Any], fields: dict[str, Any],
                  seller_share: int, commission_share: int, amount: int, now: str) -> bool | None:
        """Lost while held: the part leaves the pay-out as a refund would (HELD: gross shrinks; RELEASED with the
        release applied: net and commission shrink by the shares, `refunded_minor` counts it) and the hold goes,
        in one transaction with the part's `lost_timing`, conditional on the values read. True if done now, False
        if decided before, None if the pay-out moved meanwhile (read again)."""
        values: dict[str, Any] = {":amount": amount, ":now": now, ":zero": 0}
        if PayoutStatus(payout["payout_status"]) is PayoutStatus.HELD:
            update = ("SET gross_minor = gross_minor - :amount, dispute_lost_minor = "
                      "if_not_exists(dispute_lost_minor, :zero) + :amount, updated_at = :now")
            condition = "payout_status = :held AND gross_minor = :gross AND gross_minor >= :amount"
            values.update({":held": PayoutStatus.HELD.value, ":gross": int(payout["gross_minor"])})
        else:
            refunded = int(payout.get("refunded_minor", 0))
            update = ("SET net_minor = net_minor - :share, commission_minor = commission_minor - :cshare, "
                      "refunded_minor = if_not_exists(refunded_minor, :zero) + :amount, "
                      "dispute_lost_minor = if_not_exists(dispute_lost_minor, :zero) + :amount, updated_at = :now")
            condition = ("payout_status = :released AND attribute_not_exists(first_transfer_at) AND "
                         "release_applied = :true AND net_minor = :net AND commission_minor = :commission AND "
                         f"{_was('refunded_minor', ':refunded', refunded)}")
            values.update({":share": seller_share, ":cshare": commission_share, ":true": True,
                           ":released": PayoutStatus.RELEASED.value, ":net": int(payout["net_minor"]),
                           ":commission": int(payout["commission_minor"]),
                           **({":refunded": refunded} if refunded else {})})
        payout_item = {"Update": {
            "TableName": self.payouts_table, "Key": to_item({"payment_order_id": order_id}),
            "UpdateExpression": f"{update} DELETE dispute_holds :ids", "ConditionExpression": condition,
            "ExpressionAttributeValues": {":ids": {"SS": [dispute_id]}, **to_item(values)}}}
        reasons = self._transact([self._part_update(dispute_id, order_id, fields, now,
                                                    "attribute_not_exists(parts.#o.lost_timing)"), payout_item])
        if not reasons:
            return True
        return False if reasons[0] == "ConditionalCheckFailed" else None
