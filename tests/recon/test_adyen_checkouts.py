"""Adyen settlement files of checkout-level charges (issue 18 point 5), through the real parser and matcher on moto.

The Adyen adapter sends a charge per checkout and currency with `reference` = our charge key `<checkout_id>#<CUR>`,
and a refund with `reference` = our refund_id: Adyen's report carries the first as every row's Merchant Reference
(the payment's), the second as a refund row's Modification Merchant Reference.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from functions.recon import parsers
from functions.recon.rows import MalformedRow, RowKind, SettlementRow
from functions.shared.money import Money
from functions.shared.names import charge_key, charge_of_key
from tests.recon.conftest import FIXTURES, Account
from tests.recon.test_formats import outcomes, plant_stripe, reconcile

HEADER = (FIXTURES / "adyen/settlement_detail_report_batch_380.csv").read_text().splitlines()[0].split(",")


@dataclass
class Line:
    """One row of a settlement details report, in the classic 30 columns. Amounts are decimal major units as
    Adyen writes them, unsigned: `debit` or `credit` says the direction."""

    psp_reference: str
    merchant_reference: str
    type: str
    currency: str
    credit: str = ""
    debit: str = ""
    commission: str = ""
    modification: str = ""
    modification_merchant_reference: str = ""
    created: str = "2026-11-24 10:00:00"

    def cells(self) -> dict[str, str]:
        net_credit = net_debit = ""
        commission = Money.from_major(self.commission or "0", self.currency)
        if self.credit:
            net_credit = (Money.from_major(self.credit, self.currency) - commission).to_major()
        if self.debit:
            net_debit = (Money.from_major(self.debit, self.currency) + commission).to_major()
        return {"Company Account": "TestCompany", "Merchant Account": "TestMerchant",
                "Psp Reference": self.psp_reference, "Merchant Reference": self.merchant_reference,
                "Payment Method": "visa", "Creation Date": self.created, "TimeZone": "CET", "Type": self.type,
                "Modification Reference": self.modification or self.psp_reference, "Gross Currency": self.currency,
                "Gross Debit (GC)": self.debit, "Gross Credit (GC)": self.credit, "Exchange Rate": "1",
                "Net Currency": self.currency, "Net Debit (NC)": net_debit, "Net Credit (NC)": net_credit,
                "Commission (NC)": self.commission, "Payment Method Variant": "visaclassic",
                "Modification Merchant Reference": self.modification_merchant_reference, "Batch Number": "381"}


def report_file(*lines: Line) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, HEADER, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(line.cells() for line in lines)
    return out.getvalue().encode()


# The day's first and last rows draw the file's window (earliest .. latest - 2 h): 08:00 .. 20:30 UTC.
OPENS = Line("8800000000000900", "po_opens", "Settled", "EUR", "1.00", created="2026-11-24 09:00:00")
CLOSES = Line("8800000000000901", "po_closes", "Settled", "EUR", "1.00", created="2026-11-24 23:30:00")


def reconcile_adyen(account: Account, *lines: Line, name: str = "settlement_detail_report_batch_381.csv") -> dict:
    for order_id in ("po_opens", "po_closes"):
        paid(account, order_id, 100, "EUR", checkout=f"co_{order_id}",
             reference=OPENS.psp_reference if order_id == "po_opens" else CLOSES.psp_reference)
    account.drop(f"incoming/adyen/{name}", report_file(OPENS, *lines, CLOSES))
    assert account.deliver()["batchItemFailures"] == []
    return account.report(f"reports/adyen/{name}.json")


def paid(account: Account, order_id: str, amount: int, currency: str, *, checkout: str, reference: str,
         psp: str | None = "adyen", created_at: str = "2026-11-24T12:00:00.000Z") -> None:
    """An order charged (SUCCESS, its pay-in in the ledger) by the charge of its checkout in its currency."""
    account.put_order(order_id, amount, currency, psp_reference=reference, checkout_id=checkout, psp=psp,
                      created_at=created_at)
    account.put_transaction("payin", order_id, amount, currency)


def matched(report: dict) -> int:
    return report["categories"]["matched"]["count"]


# -- the parser --------------------------------------------------------------------------------------------------

def parsed(*lines: Line) -> list:
    return list(parsers.parse("adyen", io.BytesIO(report_file(*lines))))


def test_a_charge_key_names_the_checkout_and_a_refund_its_own_reference() -> None:
    # Given a charge of a checkout's EUR orders, its refund, a dispute of it, and a row of the per-order format
    charge, refund, dispute, per_order = parsed(
        Line("8815", "co_1#EUR", "Settled", "EUR", "100.00", commission="2.00"),
        Line("8815", "co_1#EUR", "Refunded", "EUR", debit="10.00", modification="8816",
             modification_merchant_reference="rf_1"),
        Line("8815", "co_1#EUR", "Chargeback", "EUR", debit="100.00", modification="8817",
             modification_merchant_reference="ignored"),
        Line("8818", "po_2", "Settled", "EUR", "5.00"))

    # Then the charge key names the checkout (no order), and the refund carries our refund_id
    assert isinstance(charge, SettlementRow) and (charge.checkout_id, charge.payment_order_id) == ("co_1", "")
    assert (charge.kind, charge.gross, charge.fee) == (RowKind.CHARGE, Money(10000, "EUR"), Money(200, "EUR"))
    assert (refund.checkout_id, refund.payment_order_id, refund.own_reference, refund.source_id) == \
        ("co_1", "", "rf_1", "8816")
    assert refund.gross == Money(-1000, "EUR")
    # a dispute carries no reference of ours: only a refund's Modification Merchant Reference is our id
    assert (dispute.kind, dispute.checkout_id, dispute.own_reference) == (RowKind.CHARGEBACK, "co_1", "")
    assert (per_order.payment_order_id, per_order.checkout_id) == ("po_2", "")


def test_a_charge_key_in_another_currency_than_its_row_is_malformed_and_names_its_checkout() -> None:
    [row] = parsed(Line("8815", "co_1#USD", "Settled", "EUR", "100.00"))
    assert isinstance(row, MalformedRow)
    assert (row.checkout_id, row.payment_order_id, row.reason) == (
        "co_1", "", "the Merchant Reference names the charge in USD, the row is in EUR")


def test_charge_of_key_reads_only_charge_keys() -> None:
    assert charge_of_key(charge_key("shop_b~co_1", "eur")) == ("shop_b~co_1", "EUR")
    for reference in ("po_1", "co_1#", "#EUR", "co_1#EURO", "co_1#eur", "co_1#E1R", "co_1#ÉUR", ""):
        assert charge_of_key(reference) is None, reference


# -- charges -----------------------------------------------------------------------------------------------------

def test_a_two_currency_checkout_settles_each_currency_against_its_orders_sum(account: Account) -> None:
    # Given a checkout of three orders in two currencies, each currency charged once at Adyen, and an order of the
    # per-order format
    paid(account, "po_1a", 6000, "EUR", checkout="co_1", reference="8815000000000001")
    paid(account, "po_1b", 4000, "EUR", checkout="co_1", reference="8815000000000001")
    paid(account, "po_1c", 2500, "USD", checkout="co_1", reference="8815000000000002")
    paid(account, "po_old", 700, "EUR", checkout="co_old", reference="8815000000000003")

    # When Adyen's file settles both charges and the per-order row
    report = reconcile_adyen(
        account,
        Line("8815000000000001", "co_1#EUR", "Settled", "EUR", "100.00", commission="2.00"),
        Line("8815000000000002", "co_1#USD", "Settled", "USD", "25.00", commission="0.50"),
        Line("8815000000000003", "po_old", "Settled", "EUR", "7.00"))

    # Then every order is matched, none reported missing, and each charge's fee is in the ledger
    assert report["discrepancies"] == []
    assert matched(report) == 2 + 3 + 1  # the window's two rows, the checkout's three orders, the per-order one
    fees = account.ledger_ids("fee#")
    assert {"fee#381:8815000000000001", "fee#381:8815000000000002"} <= fees


def test_a_charge_whose_amount_differs_reports_each_order_against_the_sum(account: Account) -> None:
    paid(account, "po_2a", 5000, "EUR", checkout="co_2", reference="8815000000000010")
    paid(account, "po_2b", 4000, "EUR", checkout="co_2", reference="8815000000000010")

    report = reconcile_adyen(account, Line("8815000000000010", "co_2#EUR", "Settled", "EUR", "100.00"))

    found = outcomes(report)
    assert set(found) == {("amount_mismatch", "po_2a"), ("amount_mismatch", "po_2b")}
    for entry in (found[("amount_mismatch", "po_2a")][0], found[("amount_mismatch", "po_2b")][0]):
        assert entry["explanation"] == "the charge of checkout co_2 settled 100.00 EUR; its 2 orders we hold sum " \
                                       "to 90.00 EUR"
        assert (entry["checkout_id"], entry["psp_reference"], entry["unexplained"]) == \
            ("co_2", "8815000000000010", True)
    # our amounts of the two orders, each once
    assert report["categories"]["amount_mismatch"]["amounts"] == {"EUR": "90.00"}


def test_a_charge_settled_twice_is_a_duplicate_once(account: Account) -> None:
    paid(account, "po_3a", 3000, "EUR", checkout="co_3", reference="8815000000000020")
    paid(account, "po_3b", 2000, "EUR", checkout="co_3", reference="8815000000000020")
    row = Line("8815000000000020", "co_3#EUR", "Settled", "EUR", "50.00", commission="1.00")

    report = reconcile_adyen(account, row, row)

    found = outcomes(report)
    assert set(found) == {("duplicate_settlement", "8815000000000020")}
    [entry] = found[("duplicate_settlement", "8815000000000020")]
    assert entry["explanation"] == "Settled 8815000000000020 is settled more than once in this file"
    assert matched(report) == 2 + 2
    # the duplicate's fee is not recorded again
    assert [i for i in account.ledger_ids("fee#") if "8815000000000020" in i] == ["fee#381:8815000000000020"]


def test_a_charge_of_a_checkout_in_progress_hands_its_charge_back(account: Account) -> None:
    # Given an Adyen charge the executor never saw finish (its orders NOT_STARTED, its charge item stored)
    account.put_order("po_4a", 3000, "EUR", status="NOT_STARTED", checkout_id="co_4", psp="adyen")

    report = reconcile_adyen(account, Line("8815000000000030", "co_4#EUR", "Settled", "EUR", "30.00"))

    # Then the charge goes back to the orders queue, as a Stripe one does
    [entry] = outcomes(report)[("missing_in_ledger", "po_4a")]
    assert entry["fix"] == "workflow_restarted"
    assert account.queued_orders() == [{"charge_key": "co_4#EUR", "checkout_id": "co_4"}]


# -- refunds and disputes ---------------------------------------------------------------------------------------

def test_refunds_and_disputes_find_their_order_or_say_why_not(account: Account) -> None:
    # Given a two-order checkout and a one-order checkout charged at Adyen, and refunds our ledger records
    paid(account, "po_5a", 6000, "EUR", checkout="co_5", reference="8815000000000040")
    paid(account, "po_5b", 4000, "EUR", checkout="co_5", reference="8815000000000040")
    paid(account, "po_6", 3000, "EUR", checkout="co_6", reference="8815000000000050")
    account.put_transaction("refund", "rf_5b", 1000, "EUR", payment_order_id="po_5b")
    account.put_transaction("refund", "rf_5b_2", 500, "EUR", payment_order_id="po_5b")
    account.put_transaction("refund", "rf_6", 700, "EUR", payment_order_id="po_6")

    # When the file settles the charges and then undoes parts of them
    charge_5 = Line("8815000000000040", "co_5#EUR", "Settled", "EUR", "100.00")
    charge_6 = Line("8815000000000050", "co_6#EUR", "Settled", "EUR", "30.00")
    report = reconcile_adyen(
        account, charge_5, charge_6,
        # by its own reference: matched against the ledger's rf_5b of po_5b
        Line("8815000000000040", "co_5#EUR", "Refunded", "EUR", debit="10.00", modification="8816000000000001",
             modification_merchant_reference="rf_5b"),
        # by its own reference, a different amount: reported against po_5b, the order the ledger names
        Line("8815000000000040", "co_5#EUR", "Refunded", "EUR", debit="6.00", modification="8816000000000002",
             modification_merchant_reference="rf_5b_2"),
        # no reference of ours, two orders in the charge: not guessed
        Line("8815000000000040", "co_5#EUR", "Refunded", "EUR", debit="3.00", modification="8816000000000003"),
        # a dispute of the two-order charge: not guessed either
        Line("8815000000000040", "co_5#EUR", "Chargeback", "EUR", debit="100.00", modification="8816000000000004"),
        # no reference of ours, but the charge has one order: that order (the ledger holds a refund of it)
        Line("8815000000000050", "co_6#EUR", "Refunded", "EUR", debit="7.00", modification="8816000000000005"),
        # a dispute naming neither order nor checkout, found by the payment's PSP reference: its charge's one order
        Line("8815000000000050", "", "Chargeback", "EUR", debit="30.00", modification="8816000000000006"),
        # a refund naming our refund of another checkout's order: not matched to it
        Line("8815000000000050", "co_6#EUR", "Refunded", "EUR", debit="10.00", modification="8816000000000007",
             modification_merchant_reference="rf_5b"))

    # Then each row the ledger cannot tie to one order of its charge says why; none is matched by a guess
    by_line = {entry["line"]: entry for entry in report["discrepancies"]}
    assert {line: entry["category"] for line, entry in by_line.items()} == {
        6: "amount_mismatch", 7: "status_mismatch", 8: "status_mismatch", 10: "status_mismatch",
        11: "status_mismatch"}
    assert (by_line[6]["payment_order_id"], by_line[6]["explanation"]) == (
        "po_5b", "ledger records 5.00 EUR for this refund")
    assert (by_line[7]["payment_order_id"], by_line[7]["checkout_id"], by_line[7]["unexplained"]) == (
        "", "co_5", True)
    assert by_line[7]["explanation"] == "a refund of the charge of checkout co_5 in EUR, which settled 2 orders; " \
                                        "the row names no refund of ours: which order it undoes is not known"
    assert by_line[8]["explanation"] == "a chargeback of the charge of checkout co_5 in EUR, which settled 2 " \
                                        "orders; the row names no chargeback of ours: which order it undoes is not " \
                                        "known"
    assert (by_line[10]["payment_order_id"], by_line[10]["row_kind"], by_line[10]["explanation"]) == (
        "po_6", "Chargeback", "a chargeback at the PSP that our ledger lacks")
    assert (by_line[11]["payment_order_id"], by_line[11]["explanation"]) == (
        "", "the ledger's refund#rf_5b names order po_5b, which is not an order of the charge of checkout co_6 in EUR")
    # matched: the window's two rows, the three charged orders, rf_5b, and co_6's refund found by its one order
    assert matched(report) == 2 + 3 + 1 + 1
    assert len(account.review_messages()) == report["unexplained"] == 5


def test_a_refund_of_a_charge_we_do_not_hold_is_unknown(account: Account) -> None:
    report = reconcile_adyen(account, Line("8815000000000060", "co_gone#EUR", "Refunded", "EUR", debit="5.00",
                                           modification="8816000000000010", modification_merchant_reference="rf_x"))
    [entry] = outcomes(report)[("missing_in_ledger", "8815000000000060")]
    assert entry["explanation"] == "the PSP moved money we have no order for (no payment_order_id, reference " \
                                   "8815000000000060)"
    assert entry["checkout_id"] == "co_gone"


# -- each PSP's file expects its own orders ----------------------------------------------------------------------

def test_each_file_expects_only_the_orders_its_psp_charged(account: Account) -> None:
    # Given a window with orders charged at Adyen (a multi-order checkout among them) and at Stripe (one that
    # records its PSP, one written before routing recorded any)
    paid(account, "po_7a", 2000, "EUR", checkout="co_7", reference="8815000000000070")
    paid(account, "po_7b", 1000, "EUR", checkout="co_7", reference="8815000000000070")
    paid(account, "po_8", 1500, "EUR", checkout="co_8", reference="8815000000000080")
    paid(account, "po_9", 900, "EUR", checkout="co_9", reference="8815000000000090")
    paid(account, "po_stripe", 1200, "USD", checkout="co_stripe", reference="pi_stripe", psp="stripe")
    paid(account, "po_unrecorded", 800, "USD", checkout="co_unrecorded", reference="pi_unrecorded", psp=None)

    # When Adyen's file settles co_7 only
    report = reconcile_adyen(account, Line("8815000000000070", "co_7#EUR", "Settled", "EUR", "30.00"))

    # Then it misses Adyen's two other orders, and no Stripe order
    found = outcomes(report)
    assert set(found) == {("missing_in_settlement", "po_8"), ("missing_in_settlement", "po_9")}
    assert matched(report) == 2 + 2

    # And when Stripe's file of the same day arrives, it never expects an Adyen-charged order
    plant_stripe(account)
    stripe = reconcile(account, "incoming/stripe/balance_change_from_activity.itemized.3.csv",
                       "stripe/balance_change_from_activity.itemized.3.csv")
    missing = {key[1] for key in outcomes(stripe) if key[0] == "missing_in_settlement"}
    assert {"po_stripe", "po_unrecorded"} <= missing
    assert not missing & {"po_7a", "po_7b", "po_8", "po_9", "po_opens", "po_closes", "po_a_elsewhere"}


def test_an_adyen_row_never_settles_a_stripe_charged_order(account: Account) -> None:
    # Given a Stripe-charged order whose PSP reference an Adyen row happens to carry
    paid(account, "po_s", 1000, "EUR", checkout="co_s", reference="8815000000000100", psp=None)

    report = reconcile_adyen(account, Line("8815000000000100", "", "Settled", "EUR", "10.00"))

    # Then the row names no order of Adyen's
    assert set(outcomes(report)) == {("missing_in_ledger", "8815000000000100")}
