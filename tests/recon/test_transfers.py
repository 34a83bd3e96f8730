"""Transfers to sellers (Stripe Connect) in Stripe's reports: parsed with their order and account, matched to our
payouts, and our transfers the file lacks found through the Payouts table's window."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from functions.recon import parsers
from functions.recon.closing import Window
from functions.recon.matching import Matcher, Policy
from functions.recon.outcomes import Category, Outcome
from functions.recon.ports import PAYOUT_ATTRIBUTES
from functions.recon.rows import MalformedRow, RowKind, SettlementRow
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.tables import PayoutsTable
from psp_sandbox.server import SandboxServer, start_sandbox
from psp_sandbox.settlement import BALANCE_REPORT, PAYOUT_REPORT, build_report
from tests.recon.conftest import Account
from tests.recon.test_matching import NOW, Lookup, Projected, World, charge, order

# -- parser ---------------------------------------------------------------------------------------------------

# The columns of balance_change_from_activity.itemized.3 a transfer row fills, in Stripe's order, with an
# older per-order charge's payment_metadata column and the transfer's own metadata columns.
HEADER = (b"balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,source_id,description,"
          b"automatic_payout_id,charge_id,payment_intent_id,connected_account_id,payment_metadata[payment_order_id],"
          b"payment_metadata[checkout_id],transfer_metadata[payment_order_id],transfer_metadata[seller_account]\n")


def parse(data: bytes) -> list[Any]:
    return list(parsers.parse("stripe", io.BytesIO(data)))


def test_a_transfer_row_names_its_order_and_account_and_is_negative() -> None:
    data = HEADER + (
        b"txn_1,2026-11-24 10:00:00,usd,30.00,1.17,28.83,charge,ch_1,,po_x,ch_1,pi_1,,,co_1,,\n"
        b"txn_2,2026-11-24 11:00:00,usd,-27.00,0.00,-27.00,transfer,tr_1,Order po_1,po_x,,,acct_1Sel,,,po_1,s_1\n"
        b"txn_3,2026-11-24 12:00:00,jpy,-500,0,-500,transfer,tr_2,,po_y,,,acct_2Sel,,,po_2,s_2\n"
        b"txn_4,2026-11-24 13:00:00,usd,27.00,0.00,27.00,transfer_reversal,trr_1,,po_x,,,acct_1Sel,,,po_1,s_1\n"
        b"txn_5,2026-11-24 14:00:00,usd,-1.2.3,0.00,0,transfer,tr_3,,po_x,,,acct_1Sel,,,po_3,s_1\n")
    first, transfer, jpy, reversal, bad = parse(data)
    assert first.kind is RowKind.CHARGE and first.payment_order_id == "" and first.destination == ""
    assert isinstance(transfer, SettlementRow)
    assert (transfer.kind, transfer.gross, transfer.fee, transfer.net, transfer.payment_order_id,
            transfer.destination, transfer.reference, transfer.batch_id, transfer.psp_type) == (
        RowKind.TRANSFER, Money(-2700, "USD"), None, Money(-2700, "USD"), "po_1", "acct_1Sel", "tr_1", "po_x",
        "transfer")
    assert transfer.occurred_at == datetime(2026, 11, 24, 11, tzinfo=UTC)
    assert (jpy.gross, jpy.payment_order_id, jpy.destination) == (Money(-500, "JPY"), "po_2", "acct_2Sel")
    assert (reversal.kind, reversal.gross, reversal.reference, reversal.payment_order_id) == (
        RowKind.TRANSFER_REVERSAL, Money(2700, "USD"), "trr_1", "po_1")
    assert isinstance(bad, MalformedRow) and bad.payment_order_id == "po_3"


def test_a_report_without_transfer_columns_still_reads_transfer_rows() -> None:
    data = (b"balance_transaction_id,created_utc,currency,gross,fee,reporting_category,source_id\n"
            b"txn_1,2026-11-24 11:00:00,eur,-5.00,0.00,transfer,tr_9\n")
    (transfer,) = parse(data)
    assert (transfer.kind, transfer.gross, transfer.payment_order_id, transfer.destination) == (
        RowKind.TRANSFER, Money(-500, "EUR"), "", "")


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox(port=0)
    yield server
    server.stop()


def sandbox_transfers(sandbox: SandboxServer) -> tuple[stripe.StripeClient, list[Any]]:
    """A checkout charged at the sandbox, and its two orders' net shares transferred as the Transfer worker
    makes them (source_transaction, transfer_group, metadata naming the order, idempotency key)."""
    client = stripe.StripeClient("sk_test_sandbox", base_addresses={"api": sandbox.url})
    intent = client.v1.payment_intents.create(
        params={"amount": 5000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
                "payment_method_types": ["card"], "transfer_group": "co_t",
                "metadata": {"checkout_id": "co_t", "charge_key": "co_t#USD"}},
        options={"idempotency_key": "charge:co_t:USD"})
    charge_id = intent.latest_charge if isinstance(intent.latest_charge, str) else intent.latest_charge.id
    accounts = [client.v1.accounts.create(params={"type": "express", "capabilities": {"transfers": {
        "requested": True}}}).id for _ in range(2)]
    transfers = [client.v1.transfers.create(
        params={"amount": amount, "currency": "usd", "destination": account, "transfer_group": "co_t",
                "source_transaction": charge_id, "metadata": {"payment_order_id": order_id}},
        options={"idempotency_key": f"transfer:{order_id}"})
        for order_id, amount, account in (("po_t1", 2700, accounts[0]), ("po_t2", 1800, accounts[1]))]
    return client, transfers


@pytest.mark.parametrize("report", [BALANCE_REPORT, PAYOUT_REPORT])
def test_the_sandbox_reports_transfers_as_the_parser_reads_them(sandbox: SandboxServer, report: str) -> None:
    _, transfers = sandbox_transfers(sandbox)
    export = build_report(sandbox.state, report)
    found = [r for r in parse(export.to_csv().encode()) if r.kind is RowKind.TRANSFER]
    assert [(r.reference, r.gross, r.payment_order_id, r.destination) for r in found] == [
        (t.id, Money(-t.amount, "USD"), t.metadata["payment_order_id"], t.destination) for t in transfers]


# -- rules ----------------------------------------------------------------------------------------------------

def payout(order_id: str, net: int, *, transfer_id: str | None = None, status: str = "TRANSFERRED",
           currency: str = "USD", transferred_at: str = "2026-11-24T12:00:00.000Z",
           first_transfer_at: str | None = None, destination: str = "acct_1Seller") -> dict[str, Any]:
    """A payout as the Payouts table holds it (more attributes than recon reads)."""
    item = {"payment_order_id": order_id, "seller_account": "s_1", "checkout_id": f"co_{order_id}",
            "currency": currency, "gross_minor": net + 300, "psp": "stripe", "charge_id": f"ch_{order_id}",
            "payout_status": status, "commission_bps": 1000, "commission_minor": 300, "net_minor": net,
            "transfer_attempts": 1}
    if status in ("TRANSFERRING", "TRANSFERRED"):
        item.update(first_transfer_at=first_transfer_at or transferred_at, destination=destination)
    if status == "TRANSFERRED":
        item.update(transfer_id=transfer_id or f"tr_{order_id}", transferred_at=transferred_at)
    return item


class PayoutWorld(World):
    def __init__(self, *payouts: dict[str, Any]):
        super().__init__()
        self.payout_items = {item["payment_order_id"]: item for item in payouts}
        self.payout_reads: list[int] = []

    def payouts(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.payout_reads.append(len(ids))
        return {i: Projected(self.payout_items[i], PAYOUT_ATTRIBUTES) for i in ids if i in self.payout_items}

    def transferred_between(self, start: str, end: str) -> list[str]:
        return [i for i, item in self.payout_items.items()
                if item.get("transferred_at") and start <= item["transferred_at"] < end]


class PayoutLookup(Lookup):
    def __init__(self, world: PayoutWorld):
        super().__init__(world)
        self.payouts = world.payouts
        self.transferred_between = world.transferred_between


WINDOW = Window(datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


def run(world: PayoutWorld, rows: list[Any], *, transfer_window: Window | None = None, batch_size: int = 1000,
        psp: str = "stripe") -> list[Outcome]:
    found: list[Outcome] = []
    matcher = Matcher(Policy(psp, "stripe", timedelta(days=3), batch_size), PayoutLookup(world), world, world,
                      found.append, now=NOW, transfer_window=transfer_window)
    matcher.feed_all(rows)
    matcher.finish()
    return found


def transfer(line: int, amount: int, order_id: str, reference: str = "", *, currency: str = "USD",
             batch: str = "") -> SettlementRow:
    """A transfer row as the parser reads it: negative gross, no fee, the order of its metadata."""
    return SettlementRow(line, RowKind.TRANSFER, f"txn_{line}", order_id, "", reference or f"tr_{order_id}",
                         Money(-amount, currency), None, Money(-amount, currency), NOW - timedelta(days=1), batch,
                         "transfer", "", "acct_1Seller")


def only(outcomes: list[Outcome]) -> Outcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def test_a_transfer_that_agrees_with_its_payout_is_matched_and_nothing_is_written() -> None:
    world = PayoutWorld(payout("po_1", 2700))
    outcome = only(run(world, [transfer(2, 2700, "po_1")]))
    assert (outcome.category, outcome.review, outcome.payment_order_id, outcome.psp_reference, outcome.ours,
            outcome.theirs, outcome.row_kind, outcome.line) == (
        Category.MATCHED, False, "po_1", "tr_po_1", Money(2700, "USD"), Money(2700, "USD"), "transfer", 2)
    assert world.fees == {} and world.restarted == [] and world.carried_items == {}


def test_an_amount_off_by_one_minor_unit_is_a_transfer_amount_mismatch() -> None:
    outcome = only(run(PayoutWorld(payout("po_1", 2700)), [transfer(2, 2701, "po_1")]))
    assert (outcome.category, outcome.review) == (Category.TRANSFER_AMOUNT_MISMATCH, True)
    assert outcome.explanation == "the PSP transferred 27.01 USD to acct_1Seller; our payout's net is 27.00 USD"


def test_a_transfer_in_another_currency_is_a_transfer_currency_mismatch() -> None:
    outcome = only(run(PayoutWorld(payout("po_1", 2700)), [transfer(2, 2700, "po_1", currency="EUR")]))
    assert (outcome.category, outcome.review, outcome.ours, outcome.theirs) == (
        Category.TRANSFER_CURRENCY_MISMATCH, True, Money(2700, "USD"), Money(2700, "EUR"))


def test_a_transfer_to_another_account_than_our_payout_names_is_a_destination_mismatch() -> None:
    outcome = only(run(PayoutWorld(payout("po_1", 2700, destination="acct_1Other")), [transfer(2, 2700, "po_1")]))
    assert (outcome.category, outcome.review) == (Category.TRANSFER_DESTINATION_MISMATCH, True)
    assert outcome.explanation == "the PSP transferred 27.00 USD to acct_1Seller; our payout sent it to acct_1Other"


@pytest.mark.parametrize(("payouts", "row", "review", "explained"), [
    ((), transfer(2, 2700, "po_1"), True, "we hold no payout of this order"),
    ((), transfer(2, 2700, ""), True, "naming no order"),
    ((payout("po_1", 2700, transfer_id="tr_A"),), transfer(2, 2700, "po_1", "tr_B"), True,
     "a second transfer of this order, our payout records tr_A"),
    ((payout("po_1", 2700, status="RELEASED"),), transfer(2, 2700, "po_1"), True,
     "our payout is RELEASED and records no transfer"),
    ((payout("po_1", 2700, status="FAILED"),), transfer(2, 2700, "po_1"), True,
     "our payout is FAILED and records no transfer"),
    # its answer was lost: the worker's next attempt finds it by its idempotency key
    ((payout("po_1", 2700, status="TRANSFERRING"),), transfer(2, 2700, "po_1"), False,
     "our payout is TRANSFERRING: its next attempt records it"),
])
def test_a_transfer_our_payout_lacks(payouts: tuple[dict[str, Any], ...], row: SettlementRow, review: bool,
                                     explained: str) -> None:
    outcome = only(run(PayoutWorld(*payouts), [row]))
    assert (outcome.category, outcome.review, outcome.psp_reference) == (
        Category.TRANSFER_MISSING_IN_PAYOUTS, review, row.reference)
    assert explained in outcome.explanation


def test_a_transfer_row_twice_in_the_file_is_a_duplicate() -> None:
    outcomes = run(PayoutWorld(payout("po_1", 2700)), [transfer(2, 2700, "po_1"), transfer(3, 2700, "po_1")])
    first, second = sorted(outcomes, key=lambda o: o.line or 0)
    assert (first.category, first.line) == (Category.MATCHED, 2)
    assert (second.category, second.line, second.review) == (Category.DUPLICATE_SETTLEMENT, 3, True)


def test_a_transfer_reversal_is_reported_unexplained() -> None:
    reversal = SettlementRow(2, RowKind.TRANSFER_REVERSAL, "txn_2", "po_1", "", "trr_1", Money(2700, "USD"), None,
                             Money(2700, "USD"), NOW, "", "transfer_reversal", "", "acct_1Seller")
    outcome = only(run(PayoutWorld(payout("po_1", 2700)), [reversal]))
    assert (outcome.category, outcome.review, outcome.psp_reference, outcome.row_kind) == (
        Category.STATUS_MISMATCH, True, "trr_1", "transfer_reversal")


def test_our_transfers_of_the_window_the_file_lacks_are_reported() -> None:
    world = PayoutWorld(
        payout("po_in_file", 2700), payout("po_lost", 1800),
        payout("po_other_day", 900, transferred_at="2026-11-25T01:00:00.000Z"),
        # its first attempt came before the window: the PSP may have made it (and settled it) the day before
        payout("po_straddles", 500, transferred_at="2026-11-24T00:10:00.000Z",
               first_transfer_at="2026-11-23T23:59:00.000Z"),
        payout("po_released", 400, status="RELEASED"), {**payout("po_adyen", 300), "psp": "adyen"})
    outcomes = run(world, [transfer(2, 2700, "po_in_file")], transfer_window=WINDOW)
    matched, lost = outcomes
    assert matched.category is Category.MATCHED
    assert (lost.category, lost.review, lost.payment_order_id, lost.psp_reference, lost.ours, lost.theirs,
            lost.row_kind) == (Category.TRANSFER_MISSING_IN_SETTLEMENT, True, "po_lost", "tr_po_lost",
                               Money(1800, "USD"), None, "payout")
    # without a transfer window (another PSP's file, or too short a file) nothing is looked for
    assert [o.category for o in run(world, [transfer(2, 2700, "po_in_file")])] == [Category.MATCHED]


def test_transfers_are_read_a_batch_at_a_time_among_charges() -> None:
    payouts = [payout(f"po_{i}", 100 + i) for i in range(25)]
    world = PayoutWorld(*payouts)
    world.orders["po_c"] = order("po_c", 5000, checkout="co_c", ref="pi_c")
    world.ledger["payin#po_c"] = {}
    rows: list[Any] = [transfer(2 + i, 100 + i, f"po_{i}") for i in range(25)]
    rows.insert(10, charge(40, 5000, "co_c", "pi_c"))
    outcomes = run(world, rows, batch_size=10, transfer_window=WINDOW)
    assert [o.category for o in outcomes] == [Category.MATCHED] * 26
    assert max(world.payout_reads) <= 10 and sum(world.payout_reads) == 25
    assert sum(o.count for o in outcomes if o.row_kind == "charge") == 1


def test_a_file_of_the_sandbox_matched_to_our_payouts(sandbox: SandboxServer) -> None:
    client, transfers = sandbox_transfers(sandbox)
    tr1, tr2 = transfers
    client.v1.transfers.reversals.create(tr2.id, params={"amount": 100})
    moment = clock.iso(datetime.fromtimestamp(tr1.created, UTC))
    world = PayoutWorld(payout("po_t1", 2700, transfer_id=tr1.id, transferred_at=moment, destination=tr1.destination),
                        payout("po_t2", 1900, transfer_id=tr2.id, transferred_at=moment, destination=tr2.destination),
                        payout("po_t3", 800, transferred_at=moment))
    rows = parse(build_report(sandbox.state).to_csv().encode())
    window = Window(datetime.fromtimestamp(tr1.created, UTC) - timedelta(hours=1),
                    datetime.fromtimestamp(tr1.created, UTC) + timedelta(hours=1))
    found = {(o.category, o.payment_order_id) for o in run(world, rows, transfer_window=window)
             if o.row_kind in ("transfer", "transfer_reversal", "payout")}
    assert found == {(Category.MATCHED, "po_t1"), (Category.TRANSFER_AMOUNT_MISMATCH, "po_t2"),
                     (Category.TRANSFER_MISSING_IN_SETTLEMENT, "po_t3"), (Category.STATUS_MISMATCH, "po_t2")}


# -- end to end: the sandbox's file, S3 -> ReconQueue -> handler, our payouts in the Payouts table (moto) -------

def test_the_transfers_of_a_sandbox_file_reconciled_end_to_end(sandbox: SandboxServer, account: Account) -> None:
    # Given a checkout charged at the PSP, four transfers an hour later (one of an order we hold no payout of)
    # and one of them partly reversed, and a later charge that closes the file's window after them
    client = stripe.StripeClient("sk_test_sandbox", base_addresses={"api": sandbox.url})

    def charged(checkout: str, orders: dict[str, int]) -> Any:
        intent = client.v1.payment_intents.create(
            params={"amount": sum(orders.values()), "currency": "usd", "payment_method": "pm_card_visa",
                    "confirm": True, "payment_method_types": ["card"], "transfer_group": checkout,
                    "metadata": {"checkout_id": checkout, "charge_key": f"{checkout}#USD"}},
            options={"idempotency_key": f"charge:{checkout}:USD"})
        created = clock.iso(datetime.fromtimestamp(intent.created, UTC))
        for order_id, amount in orders.items():
            account.put_order(order_id, amount, psp_reference=intent.id, checkout_id=checkout, created_at=created,
                              charge_id=intent.latest_charge)
            account.put_transaction("payin", order_id, amount)
        return intent

    intent = charged("co_t", {"po_t1": 3000, "po_t2": 2000})
    sandbox.clock.advance(3600)
    seller = client.v1.accounts.create(params={"type": "express", "capabilities": {"transfers": {"requested": True}}})
    transfers = {order_id: client.v1.transfers.create(
        params={"amount": amount, "currency": "usd", "destination": seller.id, "transfer_group": "co_t",
                "source_transaction": intent.latest_charge, "metadata": {"payment_order_id": order_id}},
        options={"idempotency_key": f"transfer:{order_id}"})
        for order_id, amount in (("po_t1", 2700), ("po_t2", 1800), ("po_t5", 300), ("po_ghost", 100))}
    client.v1.transfers.reversals.create(transfers["po_t2"].id, params={"amount": 100})
    sandbox.clock.advance(3 * 3600)
    charged("co_late", {"po_late": 1000})

    # and our payouts, moved by the Payouts table as the Transfer worker moves them: po_t2's net differs from
    # what the PSP sent, po_t5 is recorded in another currency, po_t3's transfer is not in the file at all
    payouts = PayoutsTable.from_settings()
    moment = clock.iso(datetime.fromtimestamp(transfers["po_t1"].created, UTC))
    for order_id, net, currency, transfer_id in (
            ("po_t1", 2700, "USD", transfers["po_t1"].id), ("po_t2", 1900, "USD", transfers["po_t2"].id),
            ("po_t5", 300, "EUR", transfers["po_t5"].id), ("po_t3", 800, "USD", "tr_lost")):
        payouts.create_held([{"payment_order_id": order_id, "seller_account": "seller_1", "checkout_id": "co_t",
                              "currency": currency, "gross_minor": net + 300, "psp": "stripe",
                              "charge_id": intent.latest_charge, "settled_at": moment}])
        assert payouts.release(order_id, 1000, 300, net, moment, moment) is not None
        assert payouts.begin_transfer(order_id, moment, moment) is not None
        assert payouts.finish_transfer(order_id, transfer_id, moment)

    # When the PSP's file arrives
    account.drop("incoming/stripe/activity.csv", build_report(sandbox.state).to_csv().encode())
    assert account.deliver()["batchItemFailures"] == []

    # Then each transfer row and each of our transfers of the window ends in one category
    report = account.report("reports/stripe/activity.csv.json")
    found = {(e["category"], e["payment_order_id"] or e["psp_reference"]) for e in report["discrepancies"]}
    reversal = next(e["psp_reference"] for e in report["discrepancies"] if e["row_kind"] == "transfer_reversal")
    # the reversal's row names the reversed transfer's order (its metadata)
    assert found == {("transfer_amount_mismatch", "po_t2"), ("transfer_currency_mismatch", "po_t5"),
                     ("transfer_missing_in_payouts", "po_ghost"), ("transfer_missing_in_settlement", "po_t3"),
                     ("status_mismatch", "po_t2")}
    assert reversal.startswith("trr_")
    counts = {c: v["count"] for c, v in report["categories"].items()}
    assert counts["matched"] == 4  # the charges' three orders and po_t1's transfer
    assert report["categories"]["transfer_amount_mismatch"]["amounts"] == {"USD": "18.00"}  # what the PSP sent
    assert report["transfer_window"]["start"] <= moment < report["transfer_window"]["end"]
    # every one of them is unexplained, and nothing is written to the ledger for a transfer
    assert len(account.review_messages()) == report["unexplained"] == 5
    assert account.ledger_ids("transfer#") == set()
    assert {m for m in account.ledger_ids("") if not m.startswith(("payin#", "fee#"))} == set()


def test_a_netted_payouts_transfer_is_compared_with_its_net_less_what_was_netted() -> None:
    # The Transfer worker kept 450 back for the seller's debt (functions/executor/netting.py): it sent 2250.
    netted = {**payout("po_1", 2700), "netted_minor": 450}
    outcome = only(run(PayoutWorld(netted), [transfer(2, 2250, "po_1")]))
    assert (outcome.category, outcome.review, outcome.ours, outcome.theirs) == (
        Category.MATCHED, False, Money(2250, "USD"), Money(2250, "USD"))
    outcome = only(run(PayoutWorld(netted), [transfer(2, 2700, "po_1")]))
    assert (outcome.category, outcome.review) == (Category.TRANSFER_AMOUNT_MISMATCH, True)
    assert outcome.explanation == ("the PSP transferred 27.00 USD to acct_1Seller; our payout's net less 4.50 USD "
                                   "netted is 22.50 USD")


def test_a_netted_payouts_transfer_missing_from_the_file_is_reported_with_what_it_sent() -> None:
    netted = {**payout("po_1", 2700), "netted_minor": 450}
    outcome = only(run(PayoutWorld(netted), [transfer(2, 100, "po_2", "tr_other")], transfer_window=WINDOW)[1:])
    assert (outcome.category, outcome.ours) == (Category.TRANSFER_MISSING_IN_SETTLEMENT, Money(2250, "USD"))
