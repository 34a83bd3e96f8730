"""PayPal settlement report (STL): typed records (RH, FH, SH, CH, SB, SF, SC, RF, RC, FF).

Amounts are unsigned minor units with a DR/CR column. The SC (per section) and RC (per report) counts of
body records are checked: a file whose counts disagree was cut short or garbled and is refused whole.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import cell, column_index
from functions.recon.rows import MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import Money, MoneyError, normalize_currency

COLUMNS: dict[str, tuple[str, ...]] = {
    "transaction_id": ("Transaction ID",),
    "invoice_id": ("Invoice ID",),
    "reference_id": ("PayPal Reference ID",),
    "event_code": ("Transaction Event Code",),
    "initiated": ("Transaction Initiation Date",),
    "completed": ("Transaction Completion Date",),
    "direction": ("Transaction Debit or Credit",),
    "gross": ("Gross Transaction Amount",),
    "currency": ("Gross Transaction Currency",),
    "fee_direction": ("Fee Debit or Credit",),
    "fee": ("Fee Amount",),
    "fee_currency": ("Fee Currency",),
    "custom": ("Custom Field",),
}
REQUIRED = ("transaction_id", "event_code", "direction", "gross", "currency")


def kind_of(code: str) -> RowKind:
    """PayPal event codes: T00xx payments, T01xx fees, T02xx conversions, T04xx withdrawals, T11xx reversals."""
    code = code.upper()
    exact = {"T1107": RowKind.REFUND, "T1201": RowKind.CHARGEBACK, "T1106": RowKind.CHARGEBACK,
             "T1202": RowKind.CHARGEBACK_REVERSAL, "T1108": RowKind.FEE, "T1109": RowKind.FEE}
    if code in exact:
        return exact[code]
    prefixes = {"T00": RowKind.CHARGE, "T01": RowKind.FEE, "T02": RowKind.BATCH, "T04": RowKind.PAYOUT,
                "T03": RowKind.BATCH, "T05": RowKind.CHARGE, "T06": RowKind.BATCH}
    if code[:3] in prefixes and len(code) == 5:
        return prefixes[code[:3]]
    raise ValueError(f"unknown Transaction Event Code {code!r}")


def parse(text: io.TextIOWrapper) -> Iterator[ParsedRow]:
    reader = csv.reader(text)
    at: dict[str, int] | None = None
    in_section = in_report = 0
    seen_footer = False
    for row in reader:
        line = reader.line_num
        if not row or not row[0].strip():
            continue
        record = row[0].strip().upper()
        if record == "CH":
            at = column_index(row[1:], COLUMNS, REQUIRED)
        elif record == "SB":
            if at is None:
                raise UnparseableFile(f"line {line}: a body record before the column header (CH)")
            in_section += 1
            in_report += 1
            yield _row(line, row[1:], at)
        elif record == "SC":
            _check_count(row, in_section, "section", line)
            in_section = 0
        elif record == "RC":
            _check_count(row, in_report, "report", line)
            seen_footer = True
        elif record not in {"RH", "FH", "SH", "SF", "RF", "FF"}:
            raise UnparseableFile(f"line {line}: unknown record type {record!r}")
    if at is None:
        raise UnparseableFile("no column header (CH) record: not a PayPal settlement report")
    if not seen_footer:
        raise UnparseableFile("no report count (RC) record: the file is incomplete")


def _check_count(row: list[str], counted: int, scope: str, line: int) -> None:
    stated = cell(row, 1)
    if not stated.isdigit() or int(stated) != counted:
        raise UnparseableFile(f"line {line}: the {scope} count says {stated!r}, the file has {counted} records")


def _row(line: int, row: list[str], at: dict[str, int]) -> ParsedRow:
    order_id = cell(row, at.get("invoice_id")) or cell(row, at.get("custom"))
    transaction = cell(row, at["transaction_id"])
    try:
        kind = kind_of(cell(row, at["event_code"]))
        currency = normalize_currency(cell(row, at["currency"]))
        gross = _signed(cell(row, at["gross"]), cell(row, at["direction"]), currency)
        fee_text = cell(row, at.get("fee"))
        fee = None
        if fee_text and fee_text != "0":
            # A fee the PSP takes (DR) is a positive fee; a fee given back (CR) a negative one.
            fee = -_signed(fee_text, cell(row, at.get("fee_direction")) or "DR",
                           cell(row, at.get("fee_currency")) or currency)
        occurred = _timestamp(cell(row, at.get("completed")) or cell(row, at.get("initiated")))
    except (MoneyError, ValueError) as error:
        return MalformedRow(line, str(error), order_id, transaction)
    reference = cell(row, at.get("reference_id"))
    if kind is RowKind.FEE and gross.minor:
        fee, gross = -gross, gross  # a fee-only record: its amount is the fee
    parent = transaction if kind is RowKind.CHARGE else (reference or transaction)
    net = gross - fee if fee is not None and fee.currency == gross.currency and kind is not RowKind.FEE else gross
    return SettlementRow(
        line=line, kind=kind, row_id=transaction, payment_order_id=order_id, psp_reference=parent,
        source_id=transaction, gross=gross, fee=fee, net=net, occurred_at=occurred, batch_id="",
        psp_type=cell(row, at["event_code"]),
    )


def _signed(amount: str, direction: str, currency: str) -> Money:
    money = Money.from_minor_str(amount, currency)
    if money.minor < 0:
        raise MoneyError("invalid_amount", "PayPal amounts are unsigned")
    direction = direction.upper()
    if direction not in {"DR", "CR"}:
        raise ValueError(f"debit or credit must be DR or CR, got {direction!r}")
    return money if direction == "CR" else -money


def _timestamp(text: str) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y/%m/%d %H:%M:%S %z").astimezone(UTC)
