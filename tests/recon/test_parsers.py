"""The parsers on real-format quirks: encodings, header variants, quoting, padding, bad rows, bad files."""

from __future__ import annotations

import io
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.recon import parsers
from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import minor_units
from functions.recon.rows import MalformedRow, RowKind, SettlementRow
from functions.shared.money import Money
from tests.recon.conftest import FIXTURES

STRIPE = (FIXTURES / "stripe/balance_change_from_activity.itemized.3.csv").read_bytes()
ADYEN = (FIXTURES / "adyen/settlement_detail_report_batch_380.csv").read_bytes()
PAYPAL = (FIXTURES / "paypal/STL-20261124.01.009.CSV").read_bytes()


def rows(psp: str, data: bytes) -> list:
    return list(parsers.parse(psp, io.BytesIO(data)))


def shuffled_csv(data: bytes, encoding: str = "utf-8-sig", seed: int = 7) -> bytes:
    """The same report with its columns in another order (accounts choose their columns)."""
    import csv

    table = list(csv.reader(io.StringIO(data.decode(encoding))))
    order = list(range(len(table[0])))
    random.Random(seed).shuffle(order)
    out = io.StringIO()
    csv.writer(out).writerows([[line[i] for i in order] for line in table])
    return out.getvalue().encode()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be"])
def test_stripe_rows_are_the_same_in_every_encoding(encoding: str) -> None:
    text = STRIPE.decode("utf-8-sig")
    assert rows("stripe", text.encode(encoding)) == rows("stripe", STRIPE)


def test_stripe_columns_are_read_by_name_not_position() -> None:
    assert rows("stripe", shuffled_csv(STRIPE)) == rows("stripe", STRIPE)


def test_adyen_columns_are_read_by_name_not_position() -> None:
    shuffled = [(r.line, r) for r in rows("adyen", shuffled_csv(ADYEN, "utf-8"))]
    assert [r for _, r in shuffled] == rows("adyen", ADYEN)


def test_stripe_quirks_quoted_commas_padding_case_and_comma_decimals() -> None:
    data = (b" Balance_Transaction_ID ,REPORTING_CATEGORY,Gross,Fee,Currency,Description,payment_intent_id,"
            b"Payment_Metadata[payment_order_id], Created_UTC\n"
            b'txn_1,charge,"12,50",0.40, USD ,"Order, with a comma",pi_1, po_1 ,2026-01-30 10:11:12\n'
            b"txn_2,charge,100.5,0,jpy,,pi_2,po_2,2026-01-30 10:11:13\n"
            b"txn_3,charge,1.00,0,usd\n"
            b"txn_4,mystery,1.00,0,usd,,,,\n"
            b"\n")
    first, jpy, short, unknown = rows("stripe", data)
    assert isinstance(first, SettlementRow)
    assert (first.gross, first.fee, first.payment_order_id, first.kind) == (
        Money(1250, "USD"), Money(40, "USD"), "po_1", RowKind.CHARGE)
    assert first.occurred_at is not None and first.occurred_at.isoformat() == "2026-01-30T10:11:12+00:00"
    assert isinstance(jpy, MalformedRow) and "more decimals" in jpy.reason and jpy.payment_order_id == "po_2"
    assert isinstance(short, MalformedRow) and short.reason == "row has 5 fields, the header has 9"
    assert isinstance(unknown, MalformedRow) and "unknown reporting_category" in unknown.reason


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"balance_transaction_id,gross\ntxn_1,1.00\n", "missing columns: currency, category"),
    (b"balance_transaction_id,currency,gross,reporting_category\n\xc3\x28,usd,1,charge\n", "cannot decode"),
])
def test_stripe_files_that_cannot_be_read(data: bytes, message: str) -> None:
    with pytest.raises(UnparseableFile, match=message):
        rows("stripe", data)


def test_parsing_streams_instead_of_reading_the_whole_file() -> None:
    header = b"balance_transaction_id,currency,gross,reporting_category\n"
    body = b"".join(b"txn_%08d,usd,1.00,charge\n" % i for i in range(200_000))  # about 5 MB

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            Counting.consumed += len(data)
            return data

    source = Counting(header + body)
    stream = parsers.parse("stripe", source)
    next(stream)
    assert Counting.consumed < 1.5 * 2**20 < len(body)


def test_adyen_direction_comes_from_the_debit_or_credit_column() -> None:
    parsed = rows("adyen", ADYEN)
    refund = next(r for r in parsed if isinstance(r, SettlementRow) and r.kind is RowKind.REFUND)
    assert refund.gross == Money(-1000, "EUR") and refund.source_id == "2000000000000001"
    payout = parsed[-1]
    assert payout.kind is RowKind.PAYOUT and payout.net == Money(-33380, "EUR") and payout.batch_id == "380"
    fee = next(r for r in parsed if isinstance(r, SettlementRow) and r.kind is RowKind.FEE)
    assert fee.row_id == "380:Transaction fees, November" and fee.net == Money(-500, "EUR")


def test_adyen_bad_rows_keep_their_reason() -> None:
    text = ADYEN.decode()
    text = text.replace("2026-11-24 09:00:00,CET", "2026-11-24 09:00:00,XYZ", 1)
    text = text.replace(",EUR,,50.00,1,EUR,,49.00", ",EUR,1.00,50.00,1,EUR,,49.00", 1)
    parsed = rows("adyen", text.encode())
    assert parsed[0] == MalformedRow(2, "unknown TimeZone 'XYZ'", "po_a_match", "1000000000000001")
    assert isinstance(parsed[1], MalformedRow) and "both gross_debit and gross_credit" in parsed[1].reason


def test_paypal_stl_rows_and_utf16_files() -> None:
    parsed = rows("paypal", PAYPAL)
    charge = parsed[0]
    assert (charge.payment_order_id, charge.gross, charge.fee, charge.net) == (
        "po_y_match", Money(10000, "USD"), Money(320, "USD"), Money(9680, "USD"))
    refund = parsed[6]
    assert (refund.kind, refund.psp_reference, refund.source_id, refund.gross) == (
        RowKind.REFUND, "1AB00000000000001", "2CD00000000000001", Money(-1000, "USD"))
    assert parsed[2].payment_order_id == "po_y_cur"  # from the Custom Field when Invoice ID is empty
    assert rows("paypal", PAYPAL.decode("utf-8-sig").encode("utf-16")) == parsed


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace('"SC","13"', '"SC","12"'), "the section count says '12'"),
    (lambda t: t.replace('"RC","13"\r\n', ""), "no report count"),
    (lambda t: t.replace('"CH",', '"XX",', 1), "unknown record type 'XX'"),
])
def test_paypal_files_with_broken_structure_are_refused(change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnparseableFile, match=message):
        rows("paypal", change(PAYPAL.decode("utf-8-sig")).encode())


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2, allow_nan=False,
                   allow_infinity=False), st.sampled_from([2, 3]))
def test_minor_units_is_exact(value: Decimal, exponent: int) -> None:
    assert minor_units(f"{value:f}", exponent) == int(value.scaleb(exponent))


@pytest.mark.parametrize("text", ["", "-", ".", "1e3", "١٢", "1.2.3", "--1", "0x10"])
def test_minor_units_refuses_what_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(ValueError):
        minor_units(text, 2)


# -- the Stripe parser's fast paths read exactly what csv.reader and the general helpers read -------------------

STRIPE_HEADER = ["balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category",
                 "source_id", "description", "payment_intent_id", "payment_metadata[payment_order_id]"]
AMOUNTS = st.sampled_from(["12.34", "-12.34", " 12.34 ", "0.50", ".50", "12.3", "12.345", "12.340", "12", "+1.00",
                           "1_000.00", "1.2.34", "١٢.٣٤", "12,34", "", "abc", "100.00", "-0.01", "7.33"])
TIMES = st.sampled_from(["2026-01-30 10:11:12", "2026-01-30 10:11:12", " 2026-01-30 10:11:13 ", "2026-13-30 10:11:12",
                         "2026-01-30T10:11:12Z", "1700000000", "", "yesterday", "2026-01-30 10:11:12+01:00"])
CELLS = st.sampled_from(["", "txn_1", " padded ", "with, comma", 'a "quoted" word', "two\nlines", "cr\r\nlf", "x"])
STRIPE_ROWS = st.lists(st.fixed_dictionaries({
    "balance_transaction_id": CELLS, "created_utc": TIMES,
    "currency": st.sampled_from(["usd", "USD", " Usd ", "jpy", "kwd", "xyz", ""]), "gross": AMOUNTS, "fee": AMOUNTS,
    "net": AMOUNTS, "reporting_category": st.sampled_from(["charge", "Refund", " fee ", "payout", "mystery"]),
    "source_id": CELLS, "description": CELLS, "payment_intent_id": CELLS,
    "payment_metadata[payment_order_id]": CELLS,
}), max_size=12)


def stripe_file(table: list[dict[str, str]], quote_all: bool, terminator: str) -> bytes:
    """The rows as CSV; a cell is quoted when it must be (a comma, a quote, a line break) or when `quote_all`."""

    def cell(text: str) -> str:
        must = any(char in text for char in ',"\r\n')
        return '"' + text.replace('"', '""') + '"' if must or quote_all else text

    lines = [",".join(map(cell, STRIPE_HEADER))]
    for line in table:
        lines.append(",".join(cell(line[name]) for name in STRIPE_HEADER))
        if line["balance_transaction_id"] == "x":
            lines += ["", "short,row"]  # a blank line, then a row of the wrong width
    return (terminator.join(lines) + terminator).encode()


@given(STRIPE_ROWS, st.sampled_from(["\n", "\r\n", "\r"]))
def test_stripe_lines_split_on_commas_read_as_csv_reader_reads_them(table: list[dict[str, str]],
                                                                   terminator: str) -> None:
    # Quoting every cell sends every line through csv.reader; quoting only where needed, most through split.
    plain = rows("stripe", stripe_file(table, False, terminator))
    assert plain == rows("stripe", stripe_file(table, True, terminator))
    assert len(plain) == len(table) + sum(line["balance_transaction_id"] == "x" for line in table)


@given(STRIPE_ROWS)
def test_stripe_amounts_and_times_equal_the_general_helpers(table: list[dict[str, str]]) -> None:
    from functions.recon.parsers.text import utc_timestamp
    from functions.shared.money import CURRENCY_EXPONENTS, MoneyError

    parsed = [row for row in rows("stripe", stripe_file(table, False, "\n"))
              if not (isinstance(row, MalformedRow) and row.reason.startswith("row has"))]
    assert len(parsed) == len(table)
    for line, row in zip(table, parsed, strict=True):
        currency = line["currency"].strip().upper()
        try:
            exponent = CURRENCY_EXPONENTS[currency]
            gross = minor_units(line["gross"], exponent)
            fee = minor_units(line["fee"], exponent) if line["fee"].strip() else 0
            net = gross - fee if line["fee"].strip() else (
                minor_units(line["net"], exponent) if line["net"].strip() else None)
            occurred = utc_timestamp(line["created_utc"].strip())
            if line["reporting_category"].strip().lower() not in ("charge", "refund", "fee", "payout"):
                raise ValueError("unknown reporting_category")
        except (KeyError, MoneyError, ValueError):
            assert isinstance(row, MalformedRow)
            continue
        assert isinstance(row, SettlementRow)
        assert (row.gross, row.fee, row.net, row.occurred_at) == (
            Money(gross, currency), Money(fee, currency) if fee else None,
            None if net is None else Money(net, currency), occurred)


@pytest.mark.parametrize("currency", ["usd", "JPY", "kwd"])
@pytest.mark.parametrize("amount", ["12.34", "-12.34", " 12.34 ", "0.50", ".50", "12.3", "12.345", "12.340", "12",
                                    "+1.00", "1_000.00", "1.2.34", "١٢.٣٤", "12,34", "abc", "-0.01", "1.000"])
def test_each_stripe_amount_is_read_as_minor_units_reads_it(amount: str, currency: str) -> None:
    from functions.shared.money import CURRENCY_EXPONENTS, MoneyError

    data = (f"balance_transaction_id,created_utc,currency,gross,fee,reporting_category\n"
            f'txn_1,2026-01-30 10:11:12,{currency},"{amount}","{amount}",charge\n').encode()
    (row,) = rows("stripe", data)
    try:
        expected = minor_units(amount, CURRENCY_EXPONENTS[currency.upper()])
    except MoneyError:
        assert isinstance(row, MalformedRow)
        return
    assert isinstance(row, SettlementRow) and row.gross.minor == expected
    assert row.fee == (Money(expected, currency) if expected else None)
