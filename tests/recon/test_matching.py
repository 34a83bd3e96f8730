"""The matcher against in-memory fakes: batch checks, double charges, carries, and batching itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.recon.matching import (
    ORDER_ATTRIBUTES,
    ROW_TRANSACTION_ATTRIBUTES,
    WINDOW_ORDER_ATTRIBUTES,
    Matcher,
    Policy,
    Window,
)
from functions.recon.outcomes import Category, Fix, Outcome, Restart
from functions.recon.rows import ChargeBlock, ParsedRow, RowKind, SettlementRow
from functions.shared.money import Money
from tests.recon.conftest import summarized

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def row(line: int, kind: RowKind, gross: int, *, order: str = "", ref: str = "", source: str = "",
        batch: str = "", net: int | None = None, fee: int = 0, currency: str = "USD",
        psp_type: str | None = None) -> SettlementRow:
    return SettlementRow(line, kind, f"txn_{line}", order, ref, source or f"src_{line}", Money(gross, currency),
                         Money(fee, currency) if fee else None, Money(gross - fee if net is None else net, currency),
                         NOW - timedelta(days=1), batch, psp_type or kind.value)


def order(order_id: str, amount: int, *, status: str = "SUCCESS", ref: str | None = None,
          created_at: str = "2026-11-24T12:00:00.000Z") -> dict[str, Any]:
    return {"payment_order_id": order_id, "checkout_id": "co", "seller_account": "s", "amount_minor": amount,
            "currency": "USD", "payment_order_status": status, "psp_reference": ref or f"pi_{order_id}",
            "created_at": created_at}


class Projected(dict[str, Any]):
    """A record as a projected read returns it: the matcher reading any other attribute fails the test."""

    def __init__(self, record: dict[str, Any], attributes: tuple[str, ...]):
        super().__init__((name, record[name]) for name in attributes if name in record)
        self.attributes = frozenset(attributes)

    def __getitem__(self, name: str) -> Any:
        assert name in self.attributes, f"the matcher read {name!r}, which its projection leaves out"
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        assert name in self.attributes, f"the matcher read {name!r}, which its projection leaves out"
        return super().get(name, default)


@dataclass
class World:
    """Our orders and ledger, answered as projected reads (only the attributes the matcher declares)."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)
    carried_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    fees: dict[str, Money] = field(default_factory=dict)
    conflicts: list[tuple[str, Money]] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    largest_read: int = 0

    # Lookup
    def orders_of(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.largest_read = max(self.largest_read, len(ids))
        return {i: Projected(self.orders[i], ORDER_ATTRIBUTES) for i in ids if i in self.orders}

    def payins(self, ids: list[str]) -> set[str]:
        return {i for i in ids if f"payin#{i}" in self.ledger}

    def transactions(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: Projected(self.ledger[i], ROW_TRANSACTION_ATTRIBUTES) for i in ids if i in self.ledger}

    def refunds_of(self, ids: set[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for transaction_id, tx in self.ledger.items():
            if transaction_id.startswith("refund#") and tx.get("payment_order_id") in ids:
                found.setdefault(tx["payment_order_id"], []).append(transaction_id)
        return found

    def window_orders(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.largest_read = max(self.largest_read, len(ids))
        return {i: Projected(self.orders[i], WINDOW_ORDER_ATTRIBUTES) for i in ids if i in self.orders}

    def created_between(self, start: str, end: str) -> list[str]:
        return [i for i, item in self.orders.items() if start <= item["created_at"] < end]

    def order_ids_by_reference(self, references: set[str]) -> dict[str, str]:
        return {item["psp_reference"]: i for i, item in self.orders.items() if item.get("psp_reference") in references}

    # Fixes
    def restart_order(self, item: dict[str, Any]) -> Restart:
        self.restarted.append(item["payment_order_id"])
        return Restart.STARTED

    def record_fees(self, currency: str, fees: list[tuple[str, int]]) -> None:
        for reference, minor in fees:
            fee = Money(minor, currency)
            if self.fees.setdefault(reference, fee) != fee:
                self.conflicts.append((reference, fee))

    def fee_conflicts(self) -> list[tuple[str, Money]]:
        return self.conflicts

    # Carries
    def carried(self) -> dict[str, dict[str, Any]]:
        return dict(self.carried_items)

    def carry(self, item: dict[str, Any], first_seen: str) -> None:
        self.carried_items.setdefault(item["payment_order_id"], {**item, "first_seen": first_seen})

    def mark_raised(self, order_id: str, now: str) -> bool:
        if self.carried_items[order_id].get("raised_at"):
            return False
        self.carried_items[order_id]["raised_at"] = now
        return True

    def clear(self, order_id: str) -> None:
        self.carried_items.pop(order_id, None)


class Lookup:
    def __init__(self, world: World):
        self.world = world
        self.orders = world.orders_of
        self.payins = world.payins
        self.transactions = world.transactions
        self.refunds_of = world.refunds_of
        self.window_orders = world.window_orders
        self.created_between = world.created_between
        self.order_ids_by_reference = world.order_ids_by_reference


def run(world: World, rows: list[ParsedRow], *, window: Window | None = None, batch_size: int = 1000,
        psp: str = "stripe", now: datetime = NOW) -> list[Outcome]:
    found: list[Outcome] = []
    matcher = Matcher(Policy(psp, "stripe", timedelta(days=3), batch_size), Lookup(world), world, world,
                      found.append, window=window, now=now)
    for item in rows:
        matcher.feed(item)
    matcher.finish()
    return found


def test_an_adyen_batch_whose_net_differs_from_its_payout_is_an_amount_mismatch() -> None:
    world = World()
    rows = [row(2, RowKind.BATCH, 0, net=9800, batch="380"), row(3, RowKind.FEE, 0, net=-500, batch="380"),
            row(4, RowKind.PAYOUT, 0, net=-9000, batch="380")]
    outcomes = run(world, rows, psp="adyen")
    payout = next(o for o in outcomes if o.line == 4)
    assert payout.category is Category.AMOUNT_MISMATCH and payout.review
    assert payout.explanation == "the batch's net is 93.00 USD, the payout 90.00 USD"
    rows[-1] = row(4, RowKind.PAYOUT, 0, net=-9300, batch="380")
    assert next(o for o in run(World(), rows, psp="adyen") if o.line == 4).category is Category.MATCHED


def test_a_second_charge_for_one_order_is_a_duplicate_settlement() -> None:
    world = World(orders={"po_1": order("po_1", 1000)}, ledger={"payin#po_1": {}})
    outcomes = run(world, [row(2, RowKind.CHARGE, 1000, order="po_1", ref="pi_po_1"),
                           row(3, RowKind.CHARGE, 1000, order="po_1", ref="pi_other")])
    assert [(o.category, o.psp_reference) for o in outcomes] == [
        (Category.MATCHED, "pi_po_1"), (Category.DUPLICATE_SETTLEMENT, "pi_other")]


def test_agreeing_charges_of_a_block_are_reported_together_with_their_fees_and_batch_net() -> None:
    world = World(orders={f"po_{i}": order(f"po_{i}", 1000) for i in range(4)},
                  ledger={f"payin#po_{i}": {} for i in range(4)})
    charges = [row(2, RowKind.CHARGE, 1000, order="po_0", ref="pi_po_0", fee=30, batch="po_A"),
               row(3, RowKind.CHARGE, 1000, order="po_1", ref="pi_po_1", fee=0, batch="po_A"),
               row(4, RowKind.CHARGE, 1001, order="po_2", ref="pi_po_2", fee=20, batch="po_A"),  # another amount
               row(5, RowKind.CHARGE, 1000, order="po_3", ref="pi_po_3", fee=40, batch="po_A")]
    payout = row(6, RowKind.PAYOUT, -3911, batch="po_A")  # 3 x 1000 + 1001 - 30 - 20 - 40 - 0
    found: list[Outcome] = []
    matcher = Matcher(Policy("stripe"), Lookup(world), world, world, found.append, now=NOW)
    matcher.feed_all([block_of([*charges, payout])])
    matcher.finish()
    assert [(o.category, o.count, o.theirs, o.line) for o in found] == [
        (Category.AMOUNT_MISMATCH, 1, Money(1001, "USD"), 4),
        (Category.MATCHED, 3, Money(3000, "USD"), None),
        (Category.MATCHED, 1, Money(-3911, "USD"), 6)]  # the payout equals its batch's net
    assert world.fees == {"txn_2": Money(30, "USD"), "txn_4": Money(20, "USD"), "txn_5": Money(40, "USD")}


def test_charge_checks_in_order() -> None:
    world = World(orders={
        "po_ref": order("po_ref", 1000, ref="pi_recorded"),
        "po_noledger": order("po_noledger", 1000),
        "po_new": order("po_new", 1000, status="NOT_STARTED"),
        "po_stuck_wrong": order("po_stuck_wrong", 900, status="EXECUTING"),
    })
    outcomes = run(world, [row(2, RowKind.CHARGE, 1000, order="po_ref", ref="pi_other"),
                           row(3, RowKind.CHARGE, 1000, order="po_noledger", ref="pi_po_noledger"),
                           row(4, RowKind.CHARGE, 1000, order="po_new", ref="pi_po_new"),
                           row(5, RowKind.CHARGE, 1000, order="po_stuck_wrong", ref="pi_po_stuck_wrong")])
    by_order = {o.payment_order_id: o for o in outcomes}
    assert by_order["po_ref"].explanation == "the PSP settled pi_other; the order records pi_recorded"
    assert by_order["po_noledger"].explanation == "order SUCCESS but the ledger has no pay-in transaction"
    assert by_order["po_new"].fix is Fix.WORKFLOW_RESTARTED and not by_order["po_new"].review
    # a stuck order the PSP settled for another amount is never completed automatically
    assert by_order["po_stuck_wrong"].category is Category.AMOUNT_MISMATCH
    assert world.restarted == ["po_new"]


@pytest.mark.parametrize(("restart", "category", "fix", "review", "explained"), [
    (Restart.STARTED, Category.MISSING_IN_LEDGER, Fix.WORKFLOW_RESTARTED, False, "handed back to its workflow"),
    (Restart.ALREADY_STARTED, Category.MISSING_IN_LEDGER, Fix.WORKFLOW_RESTARTED, False, "by an earlier run"),
    (Restart.FINISHED, Category.MATCHED, Fix.NONE, False, "completed by its workflow since"),
    (Restart.MOVED_ON, Category.MISSING_IN_LEDGER, Fix.NONE, True, "no longer in progress and not SUCCESS"),
])
def test_a_stuck_order_is_reported_by_what_its_restart_found(restart: Restart, category: Category, fix: Fix,
                                                             review: bool, explained: str) -> None:
    world = World(orders={"po_1": order("po_1", 1000, status="EXECUTING")})
    world.restart_order = lambda item: restart  # type: ignore[method-assign]
    [outcome] = run(world, [row(2, RowKind.CHARGE, 1000, order="po_1", ref="pi_po_1")])
    assert (outcome.category, outcome.fix, outcome.review) == (category, fix, review)
    assert explained in outcome.explanation


def test_a_fee_the_ledger_holds_with_another_amount_is_reported() -> None:
    world = World(fees={"txn_2": Money(99, "USD")})
    outcomes = run(world, [row(2, RowKind.FEE, -200)])
    assert [o.category for o in outcomes] == [Category.MATCHED, Category.AMOUNT_MISMATCH]
    assert outcomes[1].explanation == "the ledger's fee#txn_2 records a different fee"


def test_stripe_payout_checked_against_its_rows() -> None:
    world = World(orders={"po_1": order("po_1", 1000)}, ledger={"payin#po_1": {}})
    rows = [row(2, RowKind.CHARGE, 1000, fee=59, order="po_1", ref="pi_po_1", batch="po_X"),
            row(3, RowKind.PAYOUT, -941, batch="po_X")]
    assert [o.category for o in run(world, rows)] == [Category.MATCHED, Category.MATCHED]
    assert world.fees == {"txn_2": Money(59, "USD")}


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_every_row_and_every_window_order_ends_in_exactly_one_category(batch_size: int) -> None:
    world = World(
        orders={f"po_{i}": order(f"po_{i}", 100 * i, created_at=f"2026-11-24T1{i}:00:00.000Z") for i in range(6)},
        ledger={f"payin#po_{i}": {} for i in range(6)} | {"refund#re_1": {"entries": [
            {"amount_minor": 50, "currency": "USD"}, {"amount_minor": -50, "currency": "USD"}]}},
    )
    rows: list[ParsedRow] = [row(2 + i, RowKind.CHARGE, 100 * i, order=f"po_{i}", ref=f"pi_po_{i}") for i in (1, 2)]
    rows += [row(5, RowKind.CHARGE, 300, ref="pi_po_3"),  # no metadata: matched by PSP reference
             row(6, RowKind.REFUND, -50, order="po_1", ref="pi_po_1", source="re_1"),
             row(7, RowKind.REFUND, -20, order="po_2", ref="pi_po_2", source="re_2"),
             row(8, RowKind.CHARGEBACK_REVERSAL, 20, order="po_2", ref="pi_po_2", source="du_1"),
             row(9, RowKind.CHARGE, 700, order="po_9", ref="pi_9")]
    window = Window(datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 15, tzinfo=UTC))
    outcomes = run(world, rows, window=window, batch_size=batch_size)
    assert sorted((o.line or 0, o.category.value) for o in outcomes) == [
        (0, "missing_in_settlement"), (0, "missing_in_settlement"),
        (3, "matched"), (4, "matched"), (5, "matched"), (6, "matched"), (7, "status_mismatch"),
        (8, "status_mismatch"), (9, "missing_in_ledger")]
    # the window is [10:00, 15:00): po_0 (10:00) and po_4 (14:00) are unsettled, po_5 (15:00) is the next file's
    assert {o.payment_order_id for o in outcomes if o.category is Category.MISSING_IN_SETTLEMENT} == {"po_0", "po_4"}
    assert world.largest_read <= batch_size


def test_carried_orders_are_raised_once_after_the_delay_and_cleared_when_settled() -> None:
    world = World(orders={"po_1": order("po_1", 100)}, ledger={"payin#po_1": {}})
    window = Window(datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 15, tzinfo=UTC))
    first = run(world, [], window=window)
    assert [(o.category, o.review) for o in first] == [(Category.MISSING_IN_SETTLEMENT, False)]
    assert world.carried_items["po_1"]["first_seen"] == "2026-11-25T06:00:00.000Z"

    assert run(world, [], now=NOW + timedelta(days=2, hours=23)) == []  # not yet due, out of this window
    raised = run(world, [], now=NOW + timedelta(days=3))
    assert [(o.category, o.review, o.payment_order_id) for o in raised] == [
        (Category.MISSING_IN_SETTLEMENT, True, "po_1")]
    assert run(world, [], now=NOW + timedelta(days=4)) == []  # raised once only

    settled = run(world, [row(2, RowKind.CHARGE, 100, order="po_1", ref="pi_po_1")], now=NOW + timedelta(days=5))
    assert [o.category for o in settled] == [Category.MATCHED]
    assert world.carried_items == {}


def test_a_refund_the_ledger_holds_under_another_id_is_found_by_its_order() -> None:
    # po_1's refund is recorded under our own id, not the PSP's re_1; po_2 has none in the ledger
    world = World(orders={f"po_{i}": order(f"po_{i}", 1000) for i in (1, 2)},
                  ledger={"refund#rf_9": {"payment_order_id": "po_1"}, "payin#po_2": {}})
    rows: list[ParsedRow] = [row(2, RowKind.REFUND, -300, order="po_1", ref="pi_po_1", source="re_1"),
                             row(3, RowKind.REFUND, -300, order="po_2", ref="pi_po_2", source="re_2")]
    assert [(o.category, o.payment_order_id) for o in run(world, rows)] == [
        (Category.MATCHED, "po_1"), (Category.STATUS_MISMATCH, "po_2")]


def test_window_of_a_file_leaves_the_cutoff_margin_to_the_next_file() -> None:
    start, end = datetime(2026, 11, 24, 0, tzinfo=UTC), datetime(2026, 11, 24, 23, tzinfo=UTC)
    assert Window.of_file(start, end, timedelta(hours=2)) == Window(start, end - timedelta(hours=2))
    assert Window.of_file(start, start + timedelta(hours=1), timedelta(hours=2)) is None
    assert Window.of_file(None, end, timedelta(hours=2)) is None


def test_counts_are_independent_of_batch_size() -> None:
    def outcome_counts(batch_size: int) -> Counter[str]:
        world = World(orders={f"po_{i}": order(f"po_{i}", 100) for i in range(50)},
                      ledger={f"payin#po_{i}": {} for i in range(0, 50, 2)})
        rows: list[ParsedRow] = [row(i + 2, RowKind.CHARGE, 100 + (i % 7 == 0), order=f"po_{i % 60}",
                                     ref=f"pi_po_{i % 60}") for i in range(80)]
        return Counter(o.category.value for o in run(world, rows, batch_size=batch_size))

    assert outcome_counts(1) == outcome_counts(7) == outcome_counts(1000)


class SettleEveryRow(Matcher):
    inline_agreeing = False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.integers(0, 5),                                # which order the row names (5: none of ours)
    # each one mostly as an agreeing charge has it, so that many rows agree
    st.sampled_from(["same", "same", "same", "more", "other_currency"]),  # the row's amount against the order's
    st.sampled_from(["same", "same", "same", "none", "other"]),  # the row's PSP reference against the order's
    # the order's status (the first row naming it sets it); a NOT_STARTED order has no PSP reference
    st.sampled_from(["SUCCESS", "SUCCESS", "SUCCESS", "FAILED", "EXECUTING", "NOT_STARTED"]),
    st.sampled_from([True, True, True, False]),       # the order's pay-in is in the ledger
    st.integers(0, 3),                                # fee
    st.sampled_from(["", "po_A", "po_B"]),             # payout batch
    st.sampled_from([RowKind.CHARGE, RowKind.CHARGE, RowKind.REFUND, RowKind.FEE]),
), max_size=25), st.integers(1, 6))
def test_the_inline_agreeing_charge_path_gives_what_settle_gives(specs: list[tuple[Any, ...]],
                                                                  batch_size: int) -> None:
    """`_flush` decides agreeing charges inline, a copy of `_settle`'s all-equal case kept for speed: the same
    rows through both give the same outcomes, fees, restarts and payout checks."""
    def world_and_rows() -> tuple[World, list[ParsedRow]]:
        world, rows = World(), []
        for line, (which, amount, ref, status, has_payin, fee, batch, kind) in enumerate(specs, start=2):
            order_id = f"po_{which}" if which < 5 else ""
            if order_id and order_id not in world.orders:
                world.orders[order_id] = order(order_id, 1000 + which, status=status)
                if status == "NOT_STARTED":
                    del world.orders[order_id]["psp_reference"]
                if has_payin:
                    world.ledger[f"payin#{order_id}"] = {}
            gross = 1000 + which + (amount == "more")
            reference = {"same": f"pi_{order_id}", "none": "", "other": f"pi_x{line}"}[ref]
            signed = -gross if kind is RowKind.REFUND else gross
            rows.append(row(line, kind, signed, order=order_id, ref=reference,
                            fee=fee if kind is RowKind.CHARGE else 0, batch=batch,
                            currency="EUR" if amount == "other_currency" else "USD"))
        last = len(specs) + 2
        rows += [row(last + i, RowKind.PAYOUT, -1000, batch=batch) for i, batch in enumerate(["po_A", "po_B"])]
        return world, rows

    results = []
    for matcher_class, as_block in ((Matcher, False), (SettleEveryRow, False), (Matcher, True)):
        world, rows = world_and_rows()
        found: list[Outcome] = []
        matcher = matcher_class(Policy("stripe", "stripe", timedelta(days=3), batch_size), Lookup(world), world,
                                world, found.append, now=NOW)
        if as_block:  # the block path's inline copy: its plain charges as columns, the rest as rows
            matcher.feed_all([block_of(rows)])
        else:
            for item in rows:
                matcher.feed(item)
        matcher.finish()
        results.append((summarized(found), world.fees, world.conflicts, world.restarted))
    assert results[0] == results[1] == results[2]


def block_of(rows: list[SettlementRow]) -> ChargeBlock:
    """The rows as a columnar reader would hand them over: charges with an order id and a reference as columns."""
    block = ChargeBlock("charge", len(rows), [], [], [], [], [], [], [], [], [], [], [])
    for row in rows:
        if row.kind is not RowKind.CHARGE or not row.payment_order_id or not row.psp_reference:
            block.others.append(row)
            continue
        for column, value in (
                (block.lines, row.line), (block.row_ids, row.row_id), (block.order_ids, row.payment_order_id),
                (block.references, row.psp_reference), (block.sources, row.source_id), (block.gross, row.gross.minor),
                (block.fees, row.fee.minor if row.fee else 0), (block.currencies, row.gross.currency),
                (block.batch_ids, row.batch_id), (block.seconds, int(row.occurred_at.timestamp()))):
            column.append(value)
    assert list(block.rows()) == rows
    return block
