"""A hot seller: 5,000 orders a second to one seller for 60 s of virtual time, released and transferred.

    .venv/bin/python benchmarks/hot_seller.py [--seconds 60] [--rate 5000] [--sampled-shards 8]

Drives the real write path, `functions.wallet.movements` (so `WalletTable.apply_movement`) and
`functions.ledger.journal.record`, against `CountingDynamo`: an in-memory stand-in for the DynamoDB client that
keeps the items, executes the conditions and update expressions the path sends (the guard's
attribute_not_exists, a bucket's cover; anything else raises, so a changed write path cannot be counted wrongly)
and records every item written with its virtual second. Write units as DynamoDB bills them: per item
ceil(size / 1 KB), twice inside a transaction, plus one write per global secondary index the item is in.

Order i is placed at i / rate s; released `--release-after` s later (10: releases at the full rate from t = 10 s)
and transferred `--transfer-after` s after its release (1). Commission 1,000 bps.

Sampling (runtime < 60 s): every order is drawn, but only the orders of `--sampled-shards` (2) of the wallet's
32 shards go through the write path. An order's movements touch only its own shard's balance item and statement
partition, its own movement items and its own ledger transactions, so every figure of a sampled item is exact.
For the other shards the run counts, from the hash alone, the movements each shard's balance item takes per
virtual second; on the sampled shards that count must equal the writes the stand-in recorded (the run fails
otherwise), and the hottest of all shards is reported. Item counts in the table are the sampled ones.
`--sampled-shards 32` drives every order (about 16 times as long).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.exceptions import ClientError  # noqa: E402

from functions.ledger import journal  # noqa: E402
from functions.shared import tables  # noqa: E402
from functions.shared.money import Money  # noqa: E402
from functions.shared.tables import LedgerTable, WalletTable  # noqa: E402
from functions.wallet import movements  # noqa: E402

TARGET_ITEM_WRITES_PER_S = 1000
SELLER = "seller_hot"
COMMISSION_BPS = 1000
START = datetime(2026, 12, 4, 10, tzinfo=UTC)
WALLET, LEDGER = "Wallet", "Ledger"
# table -> key attributes, and its indexes: name -> (partition key, sort key, projects the whole item)
KEYS = {WALLET: ("account_id", "sk"), LEDGER: ("transaction_id",)}
INDEXES = {WALLET: {tables.WALLET_STATEMENT_INDEX: ("statement_key", "created_at", True)},
           LEDGER: {tables.LEDGER_ORDER_INDEX: ("payment_order_id", None, False)}}


def write_units(item: dict[str, Any]) -> int:
    """ceil(DynamoDB's item size / 1 KB). The item's JSON (type tags, quotes) is longer than that size: when it
    fits in 1 KB, so does the item, and the exact size is needed only above."""
    if len(json.dumps(item)) <= 1024:
        return 1
    return math.ceil(item_size(item) / 1024)


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (numbers: about a byte per two digits, plus one)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    (kind, raw), = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return (len(raw.lstrip("-")) + 1) // 2 + 1
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in raw.items())
    return 1  # BOOL, NULL


def _failed(code: str, message: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, "stand-in")


@dataclass
class CountingDynamo:
    """The DynamoDB calls of the wallet and ledger write path, in memory, each item write counted per virtual
    second. `second` is set by the driver before each step."""

    second: int = 0
    items: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    item_writes: Counter[tuple[tuple[str, ...], int]] = field(default_factory=Counter)
    partition_writes: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (table/index, pk, second)
    units: int = 0

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        plan, reasons = [], []
        for entry in TransactItems:
            (operation, request), = entry.items()
            table = request["TableName"]
            key = self._key(table, request["Item"] if operation == "Put" else request["Key"])
            values = request.get("ExpressionAttributeValues", {})
            ok = _holds(request.get("ConditionExpression"), self.items.get(key), values)
            reasons.append({"Code": "None" if ok else "ConditionalCheckFailed"})
            plan.append((operation, request, table, key, values))
        if any(r["Code"] != "None" for r in reasons):
            raise _failed("TransactionCanceledException", "condition", CancellationReasons=reasons)
        for operation, request, table, key, values in plan:
            if operation == "Put":
                new = dict(request["Item"])
            elif operation == "Update":
                new = _updated(self.items.get(key), request["Key"], request["UpdateExpression"], values)
            else:
                raise NotImplementedError(operation)
            self._write(table, key, new, transactional=True)
        return {}

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str | None = None,  # noqa: N803
                 ReturnValuesOnConditionCheckFailure: str = "NONE", **_: Any) -> dict[str, Any]:  # noqa: N803
        key = self._key(TableName, Item)
        old = self.items.get(key)
        if not _holds(ConditionExpression, old, {}):
            extra = {"Item": old} if ReturnValuesOnConditionCheckFailure == "ALL_OLD" else {}
            raise _failed("ConditionalCheckFailedException", "condition", **extra)
        self._write(TableName, key, dict(Item), transactional=False)
        return {}

    def get_item(self, TableName: str, Key: dict[str, Any], **_: Any) -> dict[str, Any]:  # noqa: N803
        found = self.items.get(self._key(TableName, Key))
        return {"Item": found} if found else {}

    def _key(self, table: str, item: dict[str, Any]) -> tuple[str, ...]:
        return (table, *(item[name]["S"] for name in KEYS[table]))

    def _write(self, table: str, key: tuple[str, ...], item: dict[str, Any], transactional: bool) -> None:
        self.items[key] = item
        units = write_units(item)
        self.units += units * (2 if transactional else 1)
        self.item_writes[(key, self.second)] += 1
        self.partition_writes[(table, key[1], self.second)] += 1
        for index, (pk, sk, whole) in INDEXES[table].items():
            if pk in item and (sk is None or sk in item):  # sparse: only items carrying the keys
                self.units += units if whole else 1  # keys only: well under 1 KB
                self.partition_writes[(f"{table}/{index}", item[pk]["S"], self.second)] += 1


def _holds(condition: str | None, item: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    if condition is None:
        return True
    for term in condition.split(" AND "):
        if found := re.fullmatch(r"attribute_not_exists\((\w+)\)", term):
            if item is not None and found[1] in item:
                return False
        elif found := re.fullmatch(r"(\w+) >= (:\w+)", term):
            if item is None or found[1] not in item or int(item[found[1]]["N"]) < int(values[found[2]]["N"]):
                return False
        else:
            raise NotImplementedError(f"condition {term!r}")
    return True


def _updated(item: dict[str, Any] | None, key: dict[str, Any], expression: str,
             values: dict[str, Any]) -> dict[str, Any]:
    new = dict(item or key)
    found = re.fullmatch(r"ADD (.+) SET (.+)", expression)
    if not found:
        raise NotImplementedError(f"update {expression!r}")
    for clause in found[1].split(", "):
        name, value = clause.split(" ")
        new[name] = {"N": str(int(new.get(name, {"N": "0"})["N"]) + int(values[value]["N"]))}
    for clause in found[2].split(", "):
        name, value = clause.split(" = ")
        new[name] = values[value]
    return new


class _CountingWallet(WalletTable):
    db: CountingDynamo

    @property
    def _db(self) -> CountingDynamo:
        return self.db


class _CountingLedger(LedgerTable):
    db: CountingDynamo

    @property
    def _db(self) -> CountingDynamo:
        return self.db


@dataclass
class Figures:
    orders: int  # placed, all shards
    driven: Counter[str]  # movements driven through the write path, per kind
    units_per_kind: Counter[str]
    max_item_writes_per_s: int  # over every item, the unsampled shards' balance items included
    hottest_item: tuple[str, ...]
    rows: list[tuple[str, int, int]]  # (what, how many, max writes in one second)

    @property
    def write_units_per_order(self) -> float:
        """An order's whole cycle (pay-in, release, transfer), wallet and ledger together."""
        return sum(self.units_per_kind[kind] / self.driven[kind] for kind in self.driven)


@contextmanager
def _shards(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    with mock.patch.object(tables, "WALLET_SHARDS", count):
        yield


def run(seconds: int = 60, rate: int = 5000, release_after_s: int = 10, transfer_after_s: int = 1,
        sampled_shards: int = 2, shards: int | None = None) -> Figures:
    """`shards` overrides WALLET_SHARDS (the test's way to show the target can be missed)."""
    db = CountingDynamo()
    wallet, ledger = _CountingWallet("Wallet"), _CountingLedger("Ledger")
    wallet.db = ledger.db = db
    driven: Counter[str] = Counter()
    units: Counter[str] = Counter()
    predicted: Counter[tuple[int, int]] = Counter()  # (shard, second) -> movements, every shard
    with _shards(shards):
        sampled = set(range(min(sampled_shards, tables.WALLET_SHARDS)))
        steps = (("payin", 0), ("release", release_after_s * rate),
                 ("transfer", (release_after_s + transfer_after_s) * rate))
        for tick in range(seconds * rate):
            db.second = tick // rate
            now = (START + timedelta(microseconds=tick * 1_000_000 // rate)).isoformat(timespec="microseconds")
            for kind, lag in steps:
                order = tick - lag
                if order < 0:
                    continue
                order_id = f"po_{order:08d}"
                shard = tables.wallet_shard(order_id)
                predicted[(shard, db.second)] += 1
                if shard not in sampled:
                    continue
                before = db.units
                _step(kind, order_id, Money(500 + order * 7919 % 100_000, "USD"), now, wallet, ledger)
                driven[kind] += 1
                units[kind] += db.units - before
        return _figures(db, seconds * rate, driven, units, predicted, sampled)


def _step(kind: str, order_id: str, gross: Money, now: str, wallet: WalletTable, ledger: LedgerTable) -> None:
    commission = Money(gross.minor * COMMISSION_BPS // 10_000, gross.currency)
    if kind == "payin":
        movements.credit_pending(SELLER, order_id, gross, now, wallet)
        journal.record(journal.payin(order_id, SELLER, gross, "stripe"), ledger)
    elif kind == "release":
        movements.release(SELLER, order_id, gross, commission, now, wallet)
        journal.record(journal.release(order_id, SELLER, gross, commission), ledger)
    else:
        net = gross - commission
        transfer_id = f"tr_{order_id}"
        movements.transfer_out(SELLER, order_id, net, transfer_id, now, wallet)
        journal.record(journal.transfer(order_id, SELLER, net, "stripe", transfer_id), ledger)


def _figures(db: CountingDynamo, orders: int, driven: Counter[str], units: Counter[str],
             predicted: Counter[tuple[int, int]], sampled: set[int]) -> Figures:
    counted = Counter({(int(key[1].rpartition("#")[2]), second): count
                       for (key, second), count in db.item_writes.items() if key[-1].startswith("BALANCE#")})
    expected = Counter({key: count for key, count in predicted.items() if key[0] in sampled})
    if counted != expected:
        raise AssertionError("the balance shards' writes differ from the movements hashed to them")
    per_item: dict[tuple[str, ...], int] = defaultdict(int)
    for (key, _), count in db.item_writes.items():
        per_item[key] = max(per_item[key], count)
    per_partition: dict[tuple[str, str], int] = defaultdict(int)
    for (where, pk, _), count in db.partition_writes.items():
        per_partition[(where, pk)] = max(per_partition[(where, pk)], count)
    classes: dict[str, list[int]] = defaultdict(list)
    for key, most in per_item.items():
        what = ("item: wallet balance shard" if key[0] == WALLET and key[2].startswith("BALANCE#")
                else "item: wallet movement guard" if key[0] == WALLET else "item: ledger transaction")
        classes[what].append(most)
    for (where, _), most in per_partition.items():
        classes[f"partition key: {where}"].append(most)
    rows = [(what, len(counts), max(counts)) for what, counts in sorted(classes.items())]
    shards = {shard for shard, _ in predicted}
    rows.append((f"item: balance shard, all {len(shards)} (hashed)", len(shards), max(predicted.values())))
    (shard, _), most = predicted.most_common(1)[0]
    hottest = max(per_item, key=per_item.__getitem__)
    if most >= per_item[hottest]:
        hottest, most = (WALLET, f"{SELLER}#{shard}", "BALANCE#USD"), most
    else:
        most = per_item[hottest]
    return Figures(orders, driven, units, most, hottest, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=5000, help="orders a second to the one seller")
    parser.add_argument("--release-after", type=int, default=10)
    parser.add_argument("--transfer-after", type=int, default=1)
    parser.add_argument("--sampled-shards", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    figures = run(args.seconds, args.rate, args.release_after, args.transfer_after, args.sampled_shards)
    print(f"{figures.orders} orders to {SELLER} over {args.seconds} s of virtual time; driven through the write "
          f"path (orders of {args.sampled_shards} of {tables.WALLET_SHARDS} shards): "
          + ", ".join(f"{count} {kind}" for kind, count in figures.driven.items())
          + f"; {time.perf_counter() - started:.1f} s")
    print(f"{'what':<48} {'count':>8} {'max writes/s':>13}")
    for what, count, most in figures.rows:
        print(f"{what:<48} {count:>8} {most:>13}")
    print(f"hottest item: {' / '.join(figures.hottest_item)}; write units per kind and movement: "
          + ", ".join(f"{k} {figures.units_per_kind[k] / figures.driven[k]:g}" for k in figures.driven))
    verdict = "met" if figures.max_item_writes_per_s <= TARGET_ITEM_WRITES_PER_S else "MISSED"
    print(f"target max_item_writes_per_s <= {TARGET_ITEM_WRITES_PER_S}: {verdict}")
    print(f"orders_per_s={args.rate} max_item_writes_per_s={figures.max_item_writes_per_s} "
          f"write_units_per_order={figures.write_units_per_order:g}")


if __name__ == "__main__":
    main()
