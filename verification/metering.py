"""Counts the AWS requests a run makes, by service and operation, and prices them at us-east-1 list prices.

Every boto3 call in the process goes through `BaseClient._make_api_call`; the meter wraps it. DynamoDB write and
read units are computed from the real item sizes in moto's backend (moto's own ConsumedCapacity is a constant),
doubled for transactions, plus the writes of the sparse `sweep` index. Lambda invocations and durations come from
the local runtime's records; Step Functions executions and their durations from the state machine.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient

# us-east-1 list prices (USD)
LAMBDA_PER_REQUEST = 0.20 / 1e6
LAMBDA_PER_GB_S_ARM = 0.0000133334
HTTP_API_PER_REQUEST = 1.00 / 1e6
SQS_PER_REQUEST = 0.40 / 1e6
EXPRESS_PER_EXECUTION = 1.00 / 1e6
EXPRESS_PER_GB_S = 0.00001667
STANDARD_PER_TRANSITION = 0.025 / 1e3
DDB_PER_WRU = 0.625 / 1e6
DDB_PER_RRU = 0.125 / 1e6
LOGS_PER_GB = 0.50

_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


@dataclass
class Meter:
    calls: Counter = field(default_factory=Counter)
    write_units: Counter = field(default_factory=Counter)  # by table
    read_units: Counter = field(default_factory=Counter)
    gsi_write_units: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _original: Any = None

    def install(self) -> Meter:
        original = self._original = BaseClient._make_api_call
        meter = self

        def metered(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            before = meter._dynamo_sizes(operation, params) if service == "dynamodb" else None
            result = original(client, operation, params)
            meter._count(service, operation, params, result, before)
            return result

        BaseClient._make_api_call = metered  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            BaseClient._make_api_call = self._original  # type: ignore[method-assign]
            self._original = None

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.write_units.clear()
            self.read_units.clear()
            self.gsi_write_units.clear()

    # -- DynamoDB sizes ------------------------------------------------------------------------------

    @staticmethod
    def _item(table: str, key: dict[str, Any]) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        try:
            return dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_item(table, key)
        except Exception:  # noqa: BLE001 - a missing item or table has no size
            return None

    def _dynamo_sizes(self, operation: str, params: dict[str, Any]) -> dict[tuple[str, str], tuple[int, dict]]:
        """Size and attributes of each item a write touches, before the write (its index entries are derived)."""
        touched: list[tuple[str, dict[str, Any]]] = []
        if operation in _WRITES:
            key = params.get("Key") or _key_of(params)
            touched.append((params["TableName"], key))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (_, action), = entry.items()
                touched.append((action["TableName"], action.get("Key") or _key_of(action)))
        sizes = {}
        for table, key in touched:
            item = self._item(table, key) if key else None
            sizes[(table, _key_text(key))] = (item.size() if item else 0, _attrs(item))
        return sizes

    def _count(self, service: str, operation: str, params: dict[str, Any], result: Any,
               before: dict[tuple[str, str], tuple[int, bool]] | None) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1
        if service != "dynamodb":
            return
        if operation in _WRITES or operation == "TransactWriteItems":
            factor = 2 if operation == "TransactWriteItems" else 1
            for (table, key_text), (size_before, attrs_before) in (before or {}).items():
                item = self._item(table, _key_from_text(key_text))
                size_after = item.size() if item else 0
                units = max(1, math.ceil(max(size_before, size_after) / 1024)) * factor
                gsi = sum(_index_writes(index, attrs_before, _attrs(item), max(size_before, size_after))
                          for index in _indexes(table))
                with self._lock:
                    self.write_units[table] += units
                    self.gsi_write_units[table] += gsi
        elif operation in ("GetItem", "Query", "Scan", "BatchGetItem"):
            self._count_reads(operation, params, result)

    def _count_reads(self, operation: str, params: dict[str, Any], result: Any) -> None:
        def units(size: int, consistent: bool) -> float:
            return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)

        if operation == "GetItem":
            size = _size_of(result.get("Item"))
            with self._lock:
                self.read_units[params["TableName"]] += units(size, params.get("ConsistentRead", False))
        elif operation == "BatchGetItem":
            for table, items in result.get("Responses", {}).items():
                consistent = params["RequestItems"].get(table, {}).get("ConsistentRead", False)
                with self._lock:
                    self.read_units[table] += sum(units(_size_of(i), consistent) for i in items)
        else:
            size = sum(_size_of(i) for i in result.get("Items", []))
            with self._lock:
                self.read_units[params["TableName"]] += units(size, params.get("ConsistentRead", False))


def _key_of(action: dict[str, Any]) -> dict[str, Any]:
    item = action.get("Item") or {}
    # Keys of our tables (docs/design.md); an unknown table is counted by its first two attributes.
    for names in (("payment_order_id",), ("checkout_id",), ("transaction_id",), ("account_id", "sk"), ("pk", "sk")):
        if all(n in item for n in names):
            return {n: item[n] for n in names}
    return {}


def _key_text(key: dict[str, Any]) -> str:
    import json

    return json.dumps(key, sort_keys=True)


def _key_from_text(text: str) -> dict[str, Any]:
    import json

    return json.loads(text)


def _size_of(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    import json

    return len(json.dumps(item))


def _attrs(item: Any) -> dict[str, Any]:
    return item.to_json()["Attributes"] if item else {}


def _indexes(table: str) -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    try:
        return list(dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(table).global_indexes)
    except Exception:  # noqa: BLE001 - a table moto does not know has no index
        return []


def _index_writes(index: Any, before: dict[str, Any], after: dict[str, Any], size: int) -> int:
    """Write units one global secondary index takes for a write of its table's item (DynamoDB's rules): an item
    entering or leaving it costs one write, one whose index key changes two (delete and put), one that stays with
    a projected attribute changed one; each write is sized by the projected item (here, the whole item)."""
    keys = [k["AttributeName"] for k in index.schema]
    in_before, in_after = all(k in before for k in keys), all(k in after for k in keys)
    unit = max(1, math.ceil(size / 1024))
    if not in_before and not in_after:
        return 0
    if in_before != in_after:
        return unit
    if any(before[k] != after[k] for k in keys):
        return 2 * unit
    projection = (index.projection or {}).get("ProjectionType", "ALL")
    projected = set(before) | set(after) if projection == "ALL" else set(
        (index.projection or {}).get("NonKeyAttributes", []))
    return unit if any(before.get(a) != after.get(a) for a in projected) else 0
