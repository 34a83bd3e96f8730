"""Settlement export: Stripe itemized report columns, signed major-unit amounts, planted discrepancies."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request

import pytest

from functions.shared.money import Money
from psp_sandbox.settlement import (
    BALANCE_REPORT,
    MALFORMED_AMOUNT,
    PAYOUT_REPORT,
    PLANT_KINDS,
    SettlementError,
    build_report,
    write_settlement_report,
)

from .conftest import pay

# balance_change_from_activity.itemized.3, in the documented order (docs/settlement-formats.md)
_ADDRESS = ["line1", "line2", "city", "state", "postal_code", "country"]
DOCUMENTED = [
    "balance_transaction_id",
    "created_utc",
    "created",
    "available_on_utc",
    "available_on",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "regulatory_tag",
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "automatic_payout_effective_at",
    "customer_id",
    "customer_email",
    "customer_name",
    "customer_description",
    *[f"customer_shipping_address_{p}" for p in _ADDRESS],
    *[f"customer_address_{p}" for p in _ADDRESS],
    *[f"shipping_address_{p}" for p in _ADDRESS],
    *[f"card_address_{p}" for p in _ADDRESS],
    "charge_id",
    "payment_intent_id",
    "charge_created_utc",
    "charge_created",
    "invoice_id",
    "invoice_number",
    "subscription_id",
    "payment_method_type",
    "is_link",
    "card_brand",
    "card_funding",
    "card_country",
    "statement_descriptor",
    "dispute_reason",
    "connected_account_id",
    "connected_account_name",
    "connected_account_country",
    "connected_account_direct_charge_id",
    "payment_metadata[checkout_id]",
    "payment_metadata[charge_key]",
]


def charge_checkout(client, checkout: str, amount: int, currency: str = "usd", pm: str = "pm_card_visa"):
    """Charge a checkout's orders in one currency as the executor does: one PaymentIntent for their sum."""
    key = f"{checkout}#{currency.upper()}"
    return client.v1.payment_intents.create(
        params={"amount": amount, "currency": currency, "payment_method": pm, "confirm": True,
                "payment_method_types": ["card"], "transfer_group": checkout,
                "metadata": {"checkout_id": checkout, "charge_key": key}},
        options={"idempotency_key": f"charge:{checkout}:{currency.upper()}"})


@pytest.fixture
def books(client, sandbox):
    """Four checkouts charged (one PaymentIntent each), one partly refunded, one payout transfer, one decline (not in
    the file)."""
    pis = [charge_checkout(client, f"co_{i}", 2500 + i) for i in range(4)]
    client.v1.refunds.create(params={"payment_intent": pis[0].id, "amount": 50, "metadata": {"reason_id": "r1"}})
    seller = client.v1.accounts.create(params={"type": "express", "capabilities": {"transfers": {"requested": True}}})
    client.v1.transfers.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "destination": seller.id,
            "source_transaction": pis[1].latest_charge,
            "metadata": {"payout_id": "p1"},
        }
    )
    with pytest.raises(Exception):  # noqa: B017 - a decline only adds a failed charge
        charge_checkout(client, "co_declined", 1000, pm="pm_card_chargeDeclined")
    return sandbox


def _platform_total(state, currency):
    available, pending = state.platform_balance()
    return available.get(currency, 0) + pending.get(currency, 0)


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_balance_report_columns_and_rows(books):
    export = build_report(books.state, BALANCE_REPORT)
    header = export.to_csv().splitlines()[0].split(",")

    assert header == [*DOCUMENTED, "refund_metadata[reason_id]", "transfer_metadata[payout_id]"]
    rows = _rows(export.to_csv())
    assert [r["reporting_category"] for r in rows] == ["charge"] * 4 + ["refund", "transfer"]
    charge, refund, transfer = rows[0], rows[4], rows[5]
    assert (charge["gross"], charge["fee"], charge["net"], charge["currency"]) == ("25.00", "1.03", "23.97", "usd")
    assert charge["payment_metadata[checkout_id]"] == "co_0"
    assert charge["payment_metadata[charge_key]"] == "co_0#USD"
    assert charge["payment_intent_id"].startswith("pi_") and charge["charge_id"].startswith("ch_")
    assert charge["source_id"] == charge["charge_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", charge["created_utc"])
    assert (refund["gross"], refund["net"], refund["charge_id"]) == ("-0.50", "-0.50", charge["charge_id"])
    assert refund["payment_metadata[checkout_id]"] == "co_0"  # the charge it refunds
    assert refund["refund_metadata[reason_id]"] == "r1"
    assert (transfer["gross"], transfer["fee"]) == ("-10.00", "0.00")
    assert transfer["connected_account_id"] == books.state.transfers[transfer["source_id"]].destination
    assert transfer["transfer_metadata[payout_id]"] == "p1"


def test_amounts_add_up_to_the_books(books):
    rows = _rows(build_report(books.state, decimal_style="minimal").to_csv())
    assert rows[4]["gross"] == "-0.5"
    net = sum((Money.from_decimal(r["net"], r["currency"]) for r in rows), Money.zero("USD"))
    assert net.minor == _platform_total(books.state, "usd")


def test_zero_decimal_currency(client, sandbox):
    pay(client, amount=5000, currency="jpy")
    row = _rows(build_report(sandbox.state).to_csv())[0]
    assert (row["gross"], row["fee"], row["currency"]) == ("5000", "175", "jpy")


def test_payout_reconciliation_report(books):
    rows = _rows(build_report(books.state, PAYOUT_REPORT).to_csv())
    header = list(rows[0])
    assert header[:4] == [
        "automatic_payout_id",
        "automatic_payout_effective_at",
        "balance_transaction_id",
        "created_utc",
    ]
    assert {"order_id", "destination_payment_id", "payment_metadata[checkout_id]"} <= set(header)
    assert all(r["automatic_payout_id"].startswith("po_") for r in rows)
    assert rows[-1]["destination_payment_id"].startswith("py_")


def test_separate_fee_rows(books):
    rows = _rows(build_report(books.state, separate_fees=True).to_csv())
    fees = [r for r in rows if r["reporting_category"] == "fee"]
    assert len(fees) == 4
    assert fees[0]["gross"] == "-1.03" and fees[0]["source_id"] == ""
    assert all(r["fee"] == "0.00" for r in rows if r["reporting_category"] == "charge")
    net = sum(Money.from_decimal(r["net"], "usd").minor for r in rows)
    assert net == _platform_total(books.state, "usd")


def test_each_plant_on_a_chosen_row(books):
    clean = {r["balance_transaction_id"]: r for r in _rows(build_report(books.state).to_csv())}
    targets = {
        "amount_mismatch": "co_0",
        "currency_mismatch": "co_1",
        "missing_row": "co_2",
        "duplicate_row": "co_3",
        "malformed_row": "co_3",
        "refund_not_in_ledger": "co_1",
        "unknown_charge": "co_0",
        "intent_only": "co_1#USD",
        "checkout_only": "co_3",
    }
    export = build_report(books.state, plant=list(PLANT_KINDS), targets=targets)
    rows = _rows(export.to_csv())
    planted = {p.kind: p for p in export.planted}

    assert set(planted) == set(PLANT_KINDS)
    assert all(planted[k].checkout_id == targets[k].split("#")[0] for k in targets if k != "unknown_charge")

    def at(kind):
        return rows[planted[kind].row - 1]

    mismatch = at("amount_mismatch")
    assert mismatch["gross"] == "25.01" and clean[mismatch["balance_transaction_id"]]["gross"] == "25.00"
    assert at("currency_mismatch")["currency"] == "eur"
    assert planted["missing_row"].row is None
    assert planted["missing_row"].balance_transaction_id not in {r["balance_transaction_id"] for r in rows}
    twin = at("duplicate_row")
    assert sum(r["balance_transaction_id"] == twin["balance_transaction_id"] for r in rows) == 2
    assert any(r["gross"] == MALFORMED_AMOUNT for r in rows)
    refund = at("refund_not_in_ledger")
    assert (refund["reporting_category"], refund["gross"]) == ("refund", "-25.01")
    assert refund["charge_id"] == planted["refund_not_in_ledger"].charge_id
    assert refund["source_id"] not in books.state.refunds
    unknown = at("unknown_charge")
    assert (unknown["payment_metadata[checkout_id]"], unknown["payment_metadata[charge_key]"]) == (
        "co_unknown_1", "co_unknown_1#USD")
    assert unknown["charge_id"] not in books.state.charges
    intent_only, checkout_only = at("intent_only"), at("checkout_only")
    assert intent_only["payment_metadata[checkout_id]"] == intent_only["payment_metadata[charge_key]"] == ""
    assert intent_only["payment_intent_id"] == planted["intent_only"].payment_intent_id
    assert (checkout_only["payment_intent_id"], checkout_only["payment_metadata[checkout_id]"]) == ("", "co_3")
    assert checkout_only["charge_id"] == planted["checkout_only"].charge_id
    assert len(rows) == len(clean) - 1 + 3  # one dropped; duplicate, unknown charge, refund added


def test_seeded_plants_are_deterministic_and_on_distinct_rows(books):
    kinds = ["amount_mismatch", "currency_mismatch", "malformed_row", "missing_row"]
    first = build_report(books.state, plant=kinds, seed=5)
    again = build_report(books.state, plant=kinds, seed=5)

    assert first.planted == again.planted
    assert first.to_csv() == again.to_csv()
    assert len({p.charge_id for p in first.planted}) == 4
    others = [build_report(books.state, plant=kinds, seed=s).planted for s in range(6, 12)]
    assert any(p != first.planted for p in others)


def test_plant_errors(books):
    with pytest.raises(SettlementError):
        build_report(books.state, plant=["meteor"])
    with pytest.raises(SettlementError):
        build_report(books.state, plant=["missing_row"] * 5)  # only four charge rows
    with pytest.raises(SettlementError):
        build_report(books.state, plant=["missing_row"], targets={"missing_row": "po_nobody"})
    with pytest.raises(SettlementError):
        build_report(books.state, "payouts.itemized.9")


def test_write_to_a_file(books, tmp_path):
    path = tmp_path / "settlement.csv"
    export = write_settlement_report(books.state, path, plant=["duplicate_row"], seed=1)
    assert path.read_text() == export.to_csv()
    assert len(_rows(path.read_text())) == 7


def test_settlement_over_http(books):
    url = f"{books.url}/_sandbox/settlement?report={BALANCE_REPORT}&plant=amount_mismatch,duplicate_row&seed=1"
    with urllib.request.urlopen(url) as answer:
        assert answer.headers["Content-Type"].startswith("text/csv")
        text = answer.read().decode()
    assert text == build_report(books.state, plant=["amount_mismatch", "duplicate_row"], seed=1).to_csv()

    with urllib.request.urlopen(url + "&format=json") as answer:
        body = json.load(answer)
    assert [p["kind"] for p in body["planted"]] == ["amount_mismatch", "duplicate_row"]
    assert body["csv"] == text


@pytest.fixture
def payouts(client, sandbox):
    """One checkout charged, 20.00 of it transferred to the seller, 5.00 of that reversed."""
    pi = charge_checkout(client, "co_9", 2500)
    seller = client.v1.accounts.create(params={"type": "express", "capabilities": {"transfers": {"requested": True}}})
    made = client.v1.transfers.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "destination": seller.id,
            "source_transaction": pi.latest_charge,
            "transfer_group": "co_9",
            "metadata": {"payment_order_id": "po_9", "checkout_id": "co_9"},
        },
        options={"idempotency_key": "transfer:po_9"},
    )
    reversal = client.v1.transfers.reversals.create(made.id, params={"amount": 500})
    return sandbox, seller.id, made.id, reversal.id


@pytest.mark.parametrize("report", [BALANCE_REPORT, PAYOUT_REPORT])
def test_transfer_and_reversal_rows(payouts, report):
    sandbox, account_id, transfer_id, reversal_id = payouts
    export = build_report(sandbox.state, report)
    assert export.columns[-2:] == ["transfer_metadata[checkout_id]", "transfer_metadata[payment_order_id]"]
    rows = _rows(export.to_csv())
    assert [r["reporting_category"] for r in rows] == ["charge", "transfer", "transfer_reversal"]
    sent, back = rows[1], rows[2]

    assert (sent["source_id"], sent["gross"], sent["fee"], sent["net"]) == (transfer_id, "-20.00", "0.00", "-20.00")
    assert (back["source_id"], back["gross"], back["fee"], back["net"]) == (reversal_id, "5.00", "0.00", "5.00")
    for row in (sent, back):
        assert row["connected_account_id"] == account_id
        assert (row["transfer_metadata[payment_order_id]"], row["transfer_metadata[checkout_id]"]) == ("po_9", "co_9")
        assert row["payment_metadata[checkout_id]"] == ""  # a transfer's row is not the charge's
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["created_utc"])
    if report == PAYOUT_REPORT:
        assert sent["destination_payment_id"] == back["destination_payment_id"] != ""


@pytest.mark.parametrize("report", [BALANCE_REPORT, PAYOUT_REPORT])
def test_recon_parser_reads_transfer_rows(payouts, report):
    from functions.recon import parsers
    from functions.recon.rows import RowKind, SettlementRow

    sandbox, _account_id, transfer_id, reversal_id = payouts
    text = build_report(sandbox.state, report).to_csv()
    parsed = [r for r in parsers.parse("stripe", io.BytesIO(text.encode())) if isinstance(r, SettlementRow)]
    moves = {r.source_id: (r.kind, r.gross) for r in parsed if r.kind is RowKind.BATCH}
    assert moves == {
        transfer_id: (RowKind.BATCH, Money.from_decimal("-20.00", "USD")),
        reversal_id: (RowKind.BATCH, Money.from_decimal("5.00", "USD")),
    }
