"""Every category planted in every format, reconciled end to end (S3 → ReconQueue → handler) on moto."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime

import pytest

from functions.recon.outcomes import DEPOSIT_CATEGORIES, Category
from tests.recon.conftest import FIXTURES, Account

# The categories of charges, refunds, disputes and fees: those of transfers are planted end to end in test_transfers.
ALL = {c.value for c in Category if not c.value.startswith("transfer_") and c not in DEPOSIT_CATEGORIES}


def outcomes(report: dict) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for entry in report["discrepancies"]:
        found.setdefault((entry["category"], entry["payment_order_id"] or entry["psp_reference"]), []).append(entry)
    return found


def reconcile(account: Account, key: str, fixture: str) -> dict:
    account.drop(key, (FIXTURES / fixture).read_bytes())
    result = account.deliver()
    assert result["batchItemFailures"] == []
    name = key.split("/", 2)[2]
    psp = key.split("/")[1]
    return account.report(f"reports/{psp}/{name}.json")


def plant_stripe(account: Account) -> None:
    """Checkouts, orders and ledger transactions that explain some rows of the Stripe file and not others. Each
    charge row is a checkout's charge in one currency."""
    def paid_order(order_id: str, amount: int, checkout: str, reference: str, **extra: object) -> None:
        account.put_order(order_id, amount, psp_reference=reference, checkout_id=checkout, **extra)  # type: ignore[arg-type]
        account.put_transaction("payin", order_id, amount)

    paid_order("po_s_match", 6000, "co_s_match", "pi_s_match")
    paid_order("po_s_match2", 4000, "co_s_match", "pi_s_match")
    account.put_order("po_s_amount", 2000, psp_reference="pi_s_amount", checkout_id="co_s_amount")
    account.put_order("po_s_amount2", 2500, psp_reference="pi_s_amount", checkout_id="co_s_amount")
    account.put_order("po_s_cur", 2000, "EUR", psp_reference="pi_s_cur", checkout_id="co_s_cur")
    account.put_order("po_s_failed", 4000, status="FAILED", psp_reference="pi_s_failed", checkout_id="co_s_failed")
    account.put_order("po_s_stuck", 6000, status="EXECUTING", psp_reference="pi_s_stuck", attempts=2,
                      checkout_id="co_s_stuck")
    paid_order("po_s_dup", 7000, "co_s_dup", "pi_s_dup")
    account.put_transaction("refund", "re_s02", 500)
    paid_order("po_s_byref", 1500, "co_s_byref", "pi_s_byref")
    paid_order("po_s_byref2", 1000, "co_s_byref", "pi_s_byref")
    paid_order("po_s_bycheckout", 1200, "co_s_bycheckout", "pi_s_bycheckout", charge_id="ch_s17")
    paid_order("po_s_lost1", 1000, "co_s_lost", "pi_s_lost")
    account.list_in_checkout("co_s_lost", "po_s_lost2", 500, "USD")  # listed by its checkout, not in the table
    paid_order("po_s_late", 1500, "co_s_late", "pi_s_late", created_at="2026-11-24T23:49:00.000Z")
    account.put_order("po_s_unsettled", 900, psp_reference="pi_s_unsettled", created_at="2026-11-24T12:00:00.000Z")
    account.put_order("po_s_after_cutoff", 800, psp_reference="pi_s_x", created_at="2026-11-24T22:30:00.000Z")
    account.put_order("po_a_elsewhere", 700, psp="adyen", created_at="2026-11-24T12:00:00.000Z")


def test_stripe_balance_report_plants_every_category(account: Account) -> None:
    # Given checkouts, orders and ledger transactions that explain some rows of the file and not others
    plant_stripe(account)

    # When the file arrives
    report = reconcile(account, "incoming/stripe/balance_change_from_activity.itemized.3.csv",
                       "stripe/balance_change_from_activity.itemized.3.csv")

    # Then every order a charge settles, every other row and every order of the window ends in exactly one
    # category, and each category is named
    found = outcomes(report)
    # one order's amount off: each order of the charge is reported, against the charge's total
    assert [e["explanation"] for e in found[("amount_mismatch", "po_s_amount2")]] == [
        "the charge of checkout co_s_amount settled 50.00 USD; its 2 orders we hold sum to 45.00 USD"]
    assert found[("amount_mismatch", "po_s_amount")][0]["checkout_id"] == "co_s_amount"
    assert ("currency_mismatch", "po_s_cur") in found
    assert found[("missing_in_ledger", "pi_s_ghost")][0]["checkout_id"] == "co_s_ghost"
    assert found[("missing_in_ledger", "po_s_failed")][0]["unexplained"] is True
    stuck = found[("missing_in_ledger", "po_s_stuck")][0]
    assert stuck["fix"] == "workflow_restarted" and stuck["unexplained"] is False
    assert found[("duplicate_settlement", "pi_s_dup")][0]["line"] == 9
    assert [e["row_kind"] for e in found[("status_mismatch", "po_s_match")]] == ["refund"]
    # a dispute names no order: found by its PaymentIntent (one order's here)
    assert [e["row_kind"] for e in found[("status_mismatch", "po_s_dup")]] == ["dispute"]
    assert found[("malformed_row", "pi_s_bad")][0]["explanation"] == "'abc' is not a decimal amount"
    # a charge of a checkout with an order the orders table lacks
    assert found[("missing_in_ledger", "po_s_lost2")][0]["explanation"] == \
        "checkout co_s_lost lists this order, the orders table has no such order"
    assert ("amount_mismatch", "po_s_lost1") in found
    assert ("missing_in_settlement", "po_s_unsettled") in found
    # found by its PaymentIntent alone (po_s_byref*), by its checkout alone (po_s_bycheckout): matched
    assert not any(k[1] in ("po_s_after_cutoff", "po_a_elsewhere", "po_s_byref", "po_s_byref2", "po_s_bycheckout",
                            "po_s_late", "po_s_match2") for k in found)
    counts = {c: v["count"] for c, v in report["categories"].items()}
    assert set(counts) == {c.value for c in Category} and all(counts[c] > 0 for c in ALL)
    # 18 rows, of which 4 charges settle 2 orders each, + 1 unsettled order
    assert sum(counts.values()) == 23
    assert counts["matched"] == 10  # match (2), dup (first), refund re_s02, fee, byref (2), payout, late, bycheckout
    assert report["categories"]["amount_mismatch"]["amounts"] == {"USD": "55.00"}  # our amounts of its 3 orders

    # The stuck order's dead-lettered charge is back under the sweeper's watch, due now (its next attempt)
    charge = account.charge("co_s_stuck#USD")
    assert "dead_letter_reason" not in charge and "sweep_shard" in charge and charge["due_at"] < "2026-11-26"
    assert account.executions() == [] and account.queued_orders() == []
    # PSP fees become ledger fee transactions: per charge row and the separate fee row
    fees = account.ledger_ids("fee#")
    assert {"fee#txn_s01", "fee#txn_s11", "fee#txn_s12", "fee#txn_s14", "fee#txn_s17"} <= fees
    # One review message per unexplained discrepancy
    messages = account.review_messages()
    assert len(messages) == report["unexplained"] == 11  # missing_in_settlement is carried, not raised yet
    assert Counter(m["category"] for m in messages)["status_mismatch"] == 2
    assert len({m["discrepancy_id"] for m in messages}) == 11


def test_the_csv_report_names_every_category(account: Account) -> None:
    plant_stripe(account)
    reconcile(account, "incoming/stripe/b.csv", "stripe/balance_change_from_activity.itemized.3.csv")
    text = account.s3.get_object(Bucket="settlement-test", Key="reports/stripe/b.csv.csv")["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["category"] for r in rows if r["record"] == "summary"} == {c.value for c in Category}
    discrepancies = [r for r in rows if r["record"] == "discrepancy"]
    assert {r["category"] for r in discrepancies} == ALL - {"matched"}
    ghost = next(r for r in discrepancies if r["psp_reference"] == "pi_s_ghost")
    assert (ghost["their_amount"], ghost["their_currency"], ghost["our_amount"], ghost["checkout_id"]) == (
        "30.00", "USD", "", "co_s_ghost")


def test_stripe_payout_report_in_utf16_with_comma_decimals(account: Account) -> None:
    account.put_order("po_p_match", 8000, "EUR", psp_reference="pi_p_match", created_at="2026-11-23T09:00:00.000Z")
    account.put_transaction("payin", "po_p_match", 8000, "EUR")
    account.put_order("po_p_amount", 1300, "EUR", psp_reference="pi_p_amount")
    account.put_transaction("refund", "rf_p_match", 300, "EUR", payment_order_id="po_p_match")
    report = reconcile(account, "incoming/stripe/payout_reconciliation.itemized.5.csv",
                       "stripe/payout_reconciliation.itemized.5.csv")
    found = outcomes(report)
    assert set(found) == {("amount_mismatch", "po_p_amount"), ("malformed_row", "po_p_blank")}
    # the refund row is explained by a ledger refund that names the order (under our own refund id)
    assert report["categories"]["matched"]["count"] == 2


def test_adyen_settlement_details_plant_every_category(account: Account) -> None:
    for order_id, amount, currency, status in [
        ("po_a_match", 10000, "EUR", "SUCCESS"), ("po_a_amount", 5500, "EUR", "SUCCESS"),
        ("po_a_cur", 2000, "EUR", "SUCCESS"), ("po_a_dup", 7000, "EUR", "SUCCESS"),
        ("po_a_stuck", 6000, "EUR", "NOT_STARTED"), ("po_a_failed", 4000, "EUR", "FAILED"),
        ("po_a_late", 1500, "EUR", "SUCCESS"), ("po_a_unsettled", 1000, "EUR", "SUCCESS"),
    ]:
        account.put_order(order_id, amount, currency, status=status, psp="adyen",
                          psp_reference=None if order_id == "po_a_stuck" else None)
        account.put_transaction("payin", order_id, amount, currency)
    account.put_transaction("refund", "rf_a_match_1", 1000, "EUR", payment_order_id="po_a_match")
    report = reconcile(account, "incoming/adyen/settlement_detail_report_batch_380.csv",
                       "adyen/settlement_detail_report_batch_380.csv")
    found = outcomes(report)
    assert set(found) == {
        ("amount_mismatch", "po_a_amount"), ("currency_mismatch", "po_a_cur"), ("missing_in_ledger", "po_a_ghost"),
        ("duplicate_settlement", "po_a_dup"), ("status_mismatch", "po_a_dup"), ("missing_in_ledger", "po_a_stuck"),
        ("missing_in_ledger", "po_a_failed"), ("malformed_row", "po_a_bad"),
        ("missing_in_settlement", "po_a_unsettled"),
    }
    counts = {c: v["count"] for c, v in report["categories"].items()}
    assert all(counts[c] > 0 for c in ALL)
    # matched: po_a_match, its refund (ledger names the order), po_a_dup first, fee row, late, the payout
    assert counts["matched"] == 6
    assert report["window"] == {"start": "2026-11-24T08:00:00.000Z", "end": "2026-11-24T20:30:00.000Z"}
    assert "fee#380:Transaction fees, November" in account.ledger_ids("fee#")
    # NOT_STARTED: its charge back to the orders queue, whose starter begins the first attempt
    assert account.executions() == []
    assert account.queued_orders() == [{"charge_key": "co_po_a_stuck#EUR", "checkout_id": "co_po_a_stuck"}]


def test_paypal_stl_plants_every_category(account: Account) -> None:
    for order_id, amount, status in [
        ("po_y_match", 10000, "SUCCESS"), ("po_y_amount", 4000, "SUCCESS"), ("po_y_dup", 7000, "SUCCESS"),
        ("po_y_stuck", 6000, "EXECUTING"), ("po_y_failed", 4000, "FAILED"), ("po_y_late", 1500, "SUCCESS"),
        ("po_y_unsettled", 1000, "SUCCESS"),
    ]:
        account.put_order(order_id, amount, status=status, psp="paypal")
        account.put_transaction("payin", order_id, amount)
    account.put_order("po_y_cur", 2000, "GBP", psp="paypal")
    report = reconcile(account, "incoming/paypal/STL-20261124.01.009.CSV", "paypal/STL-20261124.01.009.CSV")
    found = outcomes(report)
    assert set(found) == {
        ("amount_mismatch", "po_y_amount"), ("currency_mismatch", "po_y_cur"), ("missing_in_ledger", "po_y_ghost"),
        ("duplicate_settlement", "po_y_dup"), ("status_mismatch", "po_y_match"), ("status_mismatch", "po_y_dup"),
        ("missing_in_ledger", "po_y_stuck"), ("missing_in_ledger", "po_y_failed"), ("malformed_row", "po_y_bad"),
        ("missing_in_settlement", "po_y_unsettled"),
    }
    counts = {c: v["count"] for c, v in report["categories"].items()}
    assert all(counts[c] > 0 for c in ALL)
    assert "fee#3EF00000000000001" in account.ledger_ids("fee#")


def test_run_summary_is_stored(account: Account) -> None:
    report = reconcile(account, "incoming/paypal/STL-20261124.01.009.CSV", "paypal/STL-20261124.01.009.CSV")
    item = account.db.get_item(TableName="Recon", Key={"pk": {"S": f"FILE#{report['sha256']}"},
                                                       "sk": {"S": "RUN"}})["Item"]
    assert item["total"]["N"] == str(report["total"])
    assert item["report_json"]["S"] == "reports/paypal/STL-20261124.01.009.CSV.json"


@pytest.fixture(autouse=True)
def _fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.shared import clock

    offset = datetime(2026, 11, 25, 6, 0, tzinfo=UTC) - datetime.now(UTC)
    monkeypatch.setattr(clock, "_offset", offset)
