"""The matcher against in-memory fakes: batch checks, double charges, carries, and batching itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.recon.closing import Window
from functions.recon.matching import Matcher, Policy
from functions.recon.outcomes import Category, Fix, Outcome, Restart
from functions.recon.ports import ORDER_ATTRIBUTES, ROW_TRANSACTION_ATTRIBUTES, WINDOW_ORDER_ATTRIBUTES
from functions.recon.rows import ChargeBlock, MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import Money
from tests.recon.conftest import summarized

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def row(line: int, kind: RowKind, gross: int, *, order: str = "", ref: str = "", source: str = "",
        batch: str = "", net: int | None = None, fee: int = 0, currency: str = "USD",
        psp_type: str | None = None, checkout: str = "") -> SettlementRow:
    return SettlementRow(line, kind, f"txn_{line}", order, ref, source or f"src_{line}", Money(gross, currency),
                         Money(fee, currency) if fee else None, Money(gross - fee if net is None else net, currency),
                         NOW - timedelta(days=1), batch, psp_type or kind.value, checkout)


def order(order_id: str, amount: int, *, status: str = "SUCCESS", ref: str | None = None,
          created_at: str = "2026-11-24T12:00:00.000Z", checkout: str = "", currency: str = "USD") -> dict[str, Any]:
    """An order; alone in its checkout `co_<order_id>` unless given one."""
    return {"payment_order_id": order_id, "checkout_id": checkout or f"co_{order_id}", "seller_account": "s",
            "amount_minor": amount, "currency": currency, "payment_order_status": status,
            "psp_reference": ref or f"pi_{order_id}", "created_at": created_at}


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
    # orders a checkout's event lists that the orders table lacks: checkout -> [(order id, currency)]
    lost: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
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

    def checkout_orders(self, checkout_ids: list[str]) -> dict[str, dict[str, list[str]]]:
        """The checkouts' events as the orders (and the lost ones) make them."""
        self.largest_read = max(self.largest_read, len(checkout_ids))
        wanted, found = set(checkout_ids), {}
        listed = [(item["checkout_id"], i, item["currency"]) for i, item in self.orders.items()]
        listed += [(checkout, i, currency) for checkout, lost in self.lost.items() for i, currency in lost]
        for checkout, order_id, currency in listed:
            if checkout in wanted:
                found.setdefault(checkout, {}).setdefault(currency, []).append(order_id)
        return found

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
        self.checkout_orders = world.checkout_orders
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


def charge(line: int, gross: int, checkout: str, ref: str = "", **extra: Any) -> SettlementRow:
    """A checkout's charge in one currency, as Stripe settles it: the checkout's id and its PaymentIntent."""
    return row(line, RowKind.CHARGE, gross, checkout=checkout, ref=ref, **extra)


def both_paths(world_of: Any, rows: list[SettlementRow], **kwargs: Any) -> list[Outcome]:
    """The outcomes of the row path; the block path (plain charges as columns) must give the same, summarized."""
    found = run(world_of(), rows, **kwargs)
    block: list[Outcome] = []
    world = world_of()
    matcher = Matcher(Policy("stripe"), Lookup(world), world, world, block.append, now=NOW)
    matcher.feed_all([block_of(rows)])
    matcher.finish()
    assert summarized(block) == summarized(found)
    return found


def mixed_checkout(**changes: Any) -> World:
    """Checkout co_1: po_a 10.00 USD and po_b 25.00 USD (charge pi_usd), po_c 7.00 EUR (charge pi_eur)."""
    orders = {"po_a": order("po_a", 1000, ref="pi_usd", checkout="co_1"),
              "po_b": order("po_b", 2500, ref="pi_usd", checkout="co_1"),
              "po_c": order("po_c", 700, ref="pi_eur", checkout="co_1", currency="EUR")}
    for order_id, fields in changes.items():
        orders[order_id].update(fields)
    return World(orders=orders, ledger={f"payin#{i}": {} for i in orders})


def test_a_checkout_charge_is_matched_to_the_sum_of_its_orders_in_its_currency() -> None:
    outcomes = both_paths(mixed_checkout, [charge(2, 3500, "co_1", "pi_usd"),
                                           charge(3, 700, "co_1", "pi_eur", currency="EUR")])
    assert [(o.category, o.payment_order_id, o.checkout_id, o.line, o.theirs) for o in outcomes] == [
        (Category.MATCHED, "po_a", "co_1", 2, Money(1000, "USD")),
        (Category.MATCHED, "po_b", "co_1", 2, Money(2500, "USD")),
        (Category.MATCHED, "po_c", "co_1", 3, Money(700, "EUR"))]


def test_one_orders_amount_off_makes_every_order_of_the_charge_an_amount_mismatch() -> None:
    outcomes = both_paths(lambda: mixed_checkout(po_b={"amount_minor": 2400}), [charge(2, 3500, "co_1", "pi_usd")])
    assert [(o.category, o.payment_order_id, o.ours, o.theirs, o.review) for o in outcomes] == [
        (Category.AMOUNT_MISMATCH, "po_a", Money(1000, "USD"), None, True),
        (Category.AMOUNT_MISMATCH, "po_b", Money(2400, "USD"), None, True)]
    assert outcomes[0].explanation == "the charge of checkout co_1 settled 35.00 USD; its 2 orders we hold sum to " \
                                      "34.00 USD"
    more = both_paths(lambda: mixed_checkout(po_b={"amount_minor": 2600}), [charge(2, 3500, "co_1", "pi_usd")])
    assert [o.category for o in more] == [Category.AMOUNT_MISMATCH] * 2


def test_an_order_its_checkout_lists_but_the_orders_table_lacks_is_reported() -> None:
    def world() -> World:
        found = mixed_checkout()
        found.lost = {"co_1": [("po_gone", "USD")]}
        return found

    outcomes = both_paths(world, [charge(2, 4000, "co_1", "pi_usd")])
    assert [(o.category, o.payment_order_id) for o in outcomes] == [
        (Category.MISSING_IN_LEDGER, "po_gone"), (Category.AMOUNT_MISMATCH, "po_a"),
        (Category.AMOUNT_MISMATCH, "po_b")]
    assert outcomes[0].explanation == "checkout co_1 lists this order, the orders table has no such order"
    assert outcomes[1].explanation.endswith("sum to 35.00 USD (1 more it lists are missing)")


def test_a_row_naming_only_its_checkout_or_only_its_payment_intent_is_found() -> None:
    only_checkout = run(mixed_checkout(), [charge(2, 3500, "co_1")])
    assert [(o.category, o.payment_order_id) for o in only_checkout] == [
        (Category.MATCHED, "po_a"), (Category.MATCHED, "po_b")]
    only_intent = run(mixed_checkout(), [charge(2, 3500, "", "pi_usd"), charge(3, 700, "", "pi_eur", currency="EUR")])
    assert [(o.category, o.payment_order_id, o.checkout_id, o.line) for o in only_intent] == [
        (Category.MATCHED, "po_a", "co_1", 2), (Category.MATCHED, "po_b", "co_1", 2),
        (Category.MATCHED, "po_c", "co_1", 3)]


def test_a_charge_settled_twice_or_charged_again_is_one_duplicate_outcome() -> None:
    outcomes = both_paths(mixed_checkout, [charge(2, 3500, "co_1", "pi_usd"), charge(3, 3500, "co_1", "pi_usd"),
                                           charge(4, 3500, "co_1", "pi_again")])
    assert [(o.category, o.payment_order_id, o.line) for o in outcomes] == [
        (Category.MATCHED, "po_a", 2), (Category.MATCHED, "po_b", 2), (Category.DUPLICATE_SETTLEMENT, "", 3),
        (Category.DUPLICATE_SETTLEMENT, "", 4)]
    assert outcomes[2].explanation == "charge pi_usd is settled more than once in this file"
    assert outcomes[3].explanation == "a second charge of checkout co_1 in USD is settled in this file"


def test_a_charge_in_a_currency_its_checkout_lacks() -> None:
    # co_1 has USD and EUR orders: a GBP charge settles none of them
    [gbp] = both_paths(mixed_checkout, [charge(2, 700, "co_1", "pi_gbp", currency="GBP")])
    assert (gbp.category, gbp.checkout_id, gbp.review) == (Category.CURRENCY_MISMATCH, "co_1", True)
    # a checkout in one currency charged in another: each of its orders is a currency mismatch
    def world() -> World:
        return World(orders={f"po_{i}": order(f"po_{i}", 1000, checkout="co_1", ref="pi_1") for i in (1, 2)},
                     ledger={"payin#po_1": {}, "payin#po_2": {}})

    outcomes = both_paths(world, [charge(2, 2000, "co_1", "pi_1", currency="EUR")])
    assert [(o.category, o.payment_order_id, o.explanation) for o in outcomes] == [
        (Category.CURRENCY_MISMATCH, f"po_{i}", "settled in another currency") for i in (1, 2)]


def test_each_order_of_a_charge_is_checked_on_its_own() -> None:
    outcomes = both_paths(lambda: mixed_checkout(po_a={"payment_order_status": "FAILED"},
                                                 po_b={"psp_reference": "pi_other"}),
                          [charge(2, 3500, "co_1", "pi_usd")])
    assert [(o.category, o.payment_order_id, o.explanation) for o in outcomes] == [
        (Category.MISSING_IN_LEDGER, "po_a", "the PSP settled a charge we recorded as FAILED"),
        (Category.MISSING_IN_LEDGER, "po_b", "the PSP settled pi_usd; the order records pi_other")]


def test_a_second_charge_for_one_order_is_a_duplicate_settlement() -> None:
    # a per-order format's charges (and Stripe's from before checkouts were charged once) name their order
    world = World(orders={"po_1": order("po_1", 1000)}, ledger={"payin#po_1": {}})
    outcomes = run(world, [row(2, RowKind.CHARGE, 1000, order="po_1", ref="pi_po_1"),
                           row(3, RowKind.CHARGE, 1000, order="po_1", ref="pi_other")])
    assert [(o.category, o.psp_reference) for o in outcomes] == [
        (Category.MATCHED, "pi_po_1"), (Category.DUPLICATE_SETTLEMENT, "pi_other")]
    assert outcomes[1].explanation == "a second charge of this order is settled in this file"


def test_agreeing_charges_of_a_block_are_reported_together_with_their_fees_and_batch_net() -> None:
    world = World(orders={f"po_{i}": order(f"po_{i}", 1000, checkout=f"co_{i // 2}", ref=f"pi_{i // 2}")
                          for i in range(8)},
                  ledger={f"payin#po_{i}": {} for i in range(8)})
    charges = [charge(2, 2000, "co_0", "pi_0", fee=30, batch="po_A"),
               charge(3, 2000, "co_1", "pi_1", fee=0, batch="po_A"),
               charge(4, 2001, "co_2", "pi_2", fee=20, batch="po_A"),  # another amount
               charge(5, 2000, "co_3", "pi_3", fee=40, batch="po_A")]
    payout = row(6, RowKind.PAYOUT, -7911, batch="po_A")  # 3 x 2000 + 2001 - 30 - 20 - 40 - 0
    found: list[Outcome] = []
    matcher = Matcher(Policy("stripe"), Lookup(world), world, world, found.append, now=NOW)
    matcher.feed_all([block_of([*charges, payout])])
    matcher.finish()
    assert [(o.category, o.count, o.theirs, o.line) for o in found] == [
        (Category.AMOUNT_MISMATCH, 1, None, 4), (Category.AMOUNT_MISMATCH, 1, None, 4),
        (Category.MATCHED, 6, Money(6000, "USD"), None),
        (Category.MATCHED, 1, Money(-7911, "USD"), 6)]  # the payout equals its batch's net
    assert world.fees == {"txn_2": Money(30, "USD"), "txn_4": Money(20, "USD"), "txn_5": Money(40, "USD")}


def test_charge_checks_in_order() -> None:
    def world_of() -> World:
        return World(orders={
            "po_ref": order("po_ref", 1000, ref="pi_recorded"),
            "po_noledger": order("po_noledger", 1000),
            "po_new": order("po_new", 1000, status="NOT_STARTED"),
            "po_stuck_wrong": order("po_stuck_wrong", 900, status="EXECUTING"),
        })

    world = world_of()
    rows = [charge(2, 1000, "co_po_ref", "pi_other"), charge(3, 1000, "co_po_noledger", "pi_po_noledger"),
            charge(4, 1000, "co_po_new", "pi_po_new"), charge(5, 1000, "co_po_stuck_wrong", "pi_po_stuck_wrong")]
    outcomes = run(world, rows)
    assert both_paths(world_of, rows) == outcomes
    by_order = {o.payment_order_id: o for o in outcomes}
    assert by_order["po_ref"].explanation == "the PSP settled pi_other; the order records pi_recorded"
    assert by_order["po_noledger"].explanation == "order SUCCESS but the ledger has no pay-in transaction"
    assert by_order["po_new"].fix is Fix.WORKFLOW_RESTARTED and not by_order["po_new"].review
    # a stuck order the PSP settled for another amount is never completed automatically
    assert by_order["po_stuck_wrong"].category is Category.AMOUNT_MISMATCH
    assert by_order["po_stuck_wrong"].explanation == "settled 10.00 USD, the order is for 9.00 USD"
    assert world.restarted == ["po_new"]


@pytest.mark.parametrize(("restart", "category", "fix", "review", "explained"), [
    (Restart.STARTED, Category.MISSING_IN_LEDGER, Fix.WORKFLOW_RESTARTED, False, "handed back to its workflow"),
    (Restart.WATCHED, Category.MISSING_IN_LEDGER, Fix.WORKFLOW_RESTARTED, False, "in the sweeper's hands"),
    (Restart.NO_CHARGE, Category.MISSING_IN_LEDGER, Fix.NONE, True, "no charge of it is stored"),
    (Restart.FINISHED, Category.MATCHED, Fix.NONE, False, "completed by its workflow since"),
    (Restart.MOVED_ON, Category.MISSING_IN_LEDGER, Fix.NONE, True, "no longer in progress and not SUCCESS"),
])
def test_a_stuck_order_is_reported_by_what_its_restart_found(restart: Restart, category: Category, fix: Fix,
                                                             review: bool, explained: str) -> None:
    world = World(orders={f"po_{i}": order(f"po_{i}", 1000, status="EXECUTING", checkout="co_1", ref="pi_1")
                          for i in (1, 2)})
    world.restart_order = lambda item: restart  # type: ignore[method-assign]
    outcomes = run(world, [charge(2, 2000, "co_1", "pi_1")])
    assert [(o.payment_order_id, o.category, o.fix, o.review) for o in outcomes] == [
        ("po_1", category, fix, review), ("po_2", category, fix, review)]
    assert explained in outcomes[0].explanation


def test_a_fee_the_ledger_holds_with_another_amount_is_reported() -> None:
    world = World(fees={"txn_2": Money(99, "USD")})
    outcomes = run(world, [row(2, RowKind.FEE, -200)])
    assert [o.category for o in outcomes] == [Category.MATCHED, Category.AMOUNT_MISMATCH]
    assert outcomes[1].explanation == "the ledger's fee#txn_2 records a different fee"


def test_stripe_payout_checked_against_its_rows() -> None:
    world = World(orders={"po_1": order("po_1", 1000)}, ledger={"payin#po_1": {}})
    rows = [charge(2, 1000, "co_po_1", "pi_po_1", fee=59, batch="po_X"), row(3, RowKind.PAYOUT, -941, batch="po_X")]
    assert [o.category for o in run(world, rows)] == [Category.MATCHED, Category.MATCHED]
    assert world.fees == {"txn_2": Money(59, "USD")}


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_every_row_and_every_window_order_ends_in_exactly_one_category(batch_size: int) -> None:
    world = World(
        orders={f"po_{i}": order(f"po_{i}", 100 * i, created_at=f"2026-11-24T1{i}:00:00.000Z") for i in range(6)},
        ledger={f"payin#po_{i}": {} for i in range(6)} | {"refund#re_1": {"entries": [
            {"amount_minor": 50, "currency": "USD"}, {"amount_minor": -50, "currency": "USD"}]}},
    )
    world.orders["po_6"] = order("po_6", 600, created_at="2026-11-24T13:30:00.000Z", checkout="co_po_4")
    rows: list[ParsedRow] = [charge(2 + i, 100 * i, f"co_po_{i}", f"pi_po_{i}") for i in (1, 2)]
    rows += [charge(5, 300, "", "pi_po_3"),  # no metadata: found by its PaymentIntent
             row(6, RowKind.REFUND, -50, order="po_1", ref="pi_po_1", source="re_1"),
             row(7, RowKind.REFUND, -20, order="po_2", ref="pi_po_2", source="re_2"),
             row(8, RowKind.CHARGEBACK_REVERSAL, 20, order="po_2", ref="pi_po_2", source="du_1"),
             charge(9, 700, "co_9", "pi_9"),
             MalformedRow(10, "bad amount", psp_reference="pi_po_6", checkout_id="co_po_4")]
    window = Window(datetime(2026, 11, 24, 10, tzinfo=UTC), datetime(2026, 11, 24, 15, tzinfo=UTC))
    outcomes = run(world, rows, window=window, batch_size=batch_size)
    assert sorted((o.line or 0, o.category.value) for o in outcomes) == [
        (0, "missing_in_settlement"),
        (3, "matched"), (4, "matched"), (5, "matched"), (6, "matched"), (7, "status_mismatch"),
        (8, "status_mismatch"), (9, "missing_in_ledger"), (10, "malformed_row")]
    # the window is [10:00, 15:00): po_0 (10:00) is unsettled, po_4 and po_6 (13:30) are the checkout a malformed
    # row names, po_5 (15:00) is the next file's
    assert {o.payment_order_id for o in outcomes if o.category is Category.MISSING_IN_SETTLEMENT} == {"po_0"}
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

    settled = run(world, [charge(2, 100, "co_po_1", "pi_po_1")], now=NOW + timedelta(days=5))
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
        world = World(orders={f"po_{i}": order(f"po_{i}", 100, checkout=f"co_{i // 3}", ref=f"pi_{i // 3}")
                              for i in range(50)},
                      ledger={f"payin#po_{i}": {} for i in range(0, 50, 2)})
        rows: list[ParsedRow] = [charge(i + 2, 300 + (i % 7 == 0), f"co_{i % 20}", f"pi_{i % 20}")
                                 for i in range(30)]
        return Counter(o.category.value for o in run(world, rows, batch_size=batch_size))

    assert outcome_counts(1) == outcome_counts(7) == outcome_counts(1000)


# The differential test's checkouts: 1-5 orders each, some in two currencies.
CHECKOUT_ORDERS = st.lists(st.sampled_from(["USD", "USD", "EUR"]), min_size=1, max_size=5)


def mostly(usual: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`usual` 3 times in 4, so that many charges agree and the rest differ in one thing."""
    return st.sampled_from([usual] * 3 * len(others) + list(others))


@st.composite
def charge_spec(draw: Any) -> tuple[Any, ...]:
    return (
        draw(st.integers(0, 4)),                                  # which checkout (4: none of ours)
        draw(mostly("USD", "EUR", "GBP")),                        # the charge's currency
        draw(mostly("same", "more", "less")),                     # the amount against the orders' sum
        draw(mostly("same", "none", "other")),                    # the PaymentIntent
        draw(mostly("both", "checkout", "intent")),               # what the row names
        draw(st.integers(0, 3)),                                  # fee
        draw(st.sampled_from(["", "po_A", "po_B"])),               # payout batch
        draw(mostly(RowKind.CHARGE, RowKind.REFUND, RowKind.FEE)),
    )


@st.composite
def checkout_spec(draw: Any) -> list[tuple[str, str, bool, bool]]:
    """Each order's (currency, status, pay-in in the ledger, lost: listed by its checkout, not in the table)."""
    return [(currency, draw(st.sampled_from(["SUCCESS"] * 15 + ["FAILED", "EXECUTING", "NOT_STARTED"])),
             draw(st.sampled_from([True] * 9 + [False])), draw(st.sampled_from([False] * 19 + [True])))
            for currency in draw(CHECKOUT_ORDERS)]


def differential_world(checkouts: list[list[tuple[str, str, bool, bool]]], specs: list[tuple[Any, ...]]
                       ) -> tuple[World, list[SettlementRow]]:
    world = World()
    for c, orders in enumerate(checkouts):
        for j, (currency, status, has_payin, lost) in enumerate(orders):
            order_id = f"po_{c}_{j}"
            if lost:
                world.lost.setdefault(f"co_{c}", []).append((order_id, currency))
                continue
            world.orders[order_id] = order(order_id, 1000 + 10 * c + j, status=status, checkout=f"co_{c}",
                                           currency=currency, ref=f"pi_{c}_{currency}")
            if status == "NOT_STARTED":
                del world.orders[order_id]["psp_reference"]
            if has_payin:
                world.ledger[f"payin#{order_id}"] = {}
    rows = []
    for line, (which, currency, amount, ref, names, fee, batch, kind) in enumerate(specs, start=2):
        checkout = f"co_{which}"
        # the orders' sum in the charge's currency, else (a charge in the wrong currency) all of them
        amounts = [(spec[0], 1000 + 10 * which + j) for j, spec in enumerate(checkouts[which] if which < len(checkouts)
                                                                              else [])]
        total = sum(a for c, a in amounts if c == currency) or sum(a for _, a in amounts) or 1000
        gross = total + {"same": 0, "more": 1, "less": -1}[amount]
        reference = {"same": f"pi_{which}_{currency}", "none": "", "other": f"pi_x{line}"}[ref]
        if kind is RowKind.CHARGE:
            rows.append(charge(line, gross, checkout if names != "intent" else "",
                               reference if names != "checkout" else "", fee=fee, batch=batch, currency=currency))
        else:
            refunded = f"po_{which}_0"
            rows.append(row(line, kind, -gross if kind is RowKind.REFUND else gross, order=refunded,
                            ref=reference, batch=batch, currency=currency))
    last = len(specs) + 2
    rows += [row(last + i, RowKind.PAYOUT, -1000, batch=batch) for i, batch in enumerate(["po_A", "po_B"])]
    return world, rows


@settings(max_examples=300, deadline=None)
@given(st.lists(checkout_spec(), min_size=1, max_size=4), st.lists(charge_spec(), max_size=25), st.integers(1, 6))
def test_the_block_path_gives_what_the_row_path_gives(checkouts: list[Any], specs: list[tuple[Any, ...]],
                                                      batch_size: int) -> None:
    """The block path decides agreeing checkout charges together (`_agreeing`); the same rows through the row
    path (`_settle`, row by row) give the same outcomes, fees, restarts and payout checks. And every order a
    charge row settles is reported once."""
    results = []
    for as_block in (False, True):
        world, rows = differential_world(checkouts, specs)
        found: list[Outcome] = []
        matcher = Matcher(Policy("stripe", "stripe", timedelta(days=3), batch_size), Lookup(world), world, world,
                          found.append, now=NOW)
        if as_block:  # the plain charges as columns, the rest as rows
            matcher.feed_all([block_of(rows)])
        else:
            for item in rows:
                matcher.feed(item)
        matcher.finish()
        results.append((summarized(found), world.fees, world.conflicts, world.restarted))
        if not as_block:
            named = Counter(o.payment_order_id for o in found if o.row_kind == "charge" and o.payment_order_id)
            assert all(times == 1 for times in named.values())
    assert results[0] == results[1]


def block_of(rows: list[SettlementRow]) -> ChargeBlock:
    """The rows as a columnar reader would hand them over: charges naming a checkout and a PaymentIntent (and no
    order) as columns."""
    block = ChargeBlock("charge", len(rows), [], [], [], [], [], [], [], [], [], [], [])
    for row in rows:
        if row.kind is not RowKind.CHARGE or row.payment_order_id or not row.checkout_id or not row.psp_reference:
            block.others.append(row)
            continue
        for column, value in (
                (block.lines, row.line), (block.row_ids, row.row_id), (block.checkout_ids, row.checkout_id),
                (block.references, row.psp_reference), (block.sources, row.source_id), (block.gross, row.gross.minor),
                (block.fees, row.fee.minor if row.fee else 0), (block.currencies, row.gross.currency),
                (block.batch_ids, row.batch_id), (block.seconds, int(row.occurred_at.timestamp()))):
            column.append(value)
    assert list(block.rows()) == rows
    return block
