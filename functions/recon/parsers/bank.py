"""A bank deposit file (issue 17): the checks and money orders the platform's bank account received in a day.

`incoming/bank/<YYYY-MM-DD>.csv`, columns date, amount, currency, reference (any order, any case; more columns are
ignored). One row per deposit, amounts in major units (`45.00`, positive), the date as YYYY-MM-DD. A deposit is a
`charge` row whose psp_reference is the reference as printed (functions/shared/names.normal_offline_reference: what
the buyer wrote, typed in any case, is still the same reference).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import cell, column_index, decimal_text
from functions.recon.rows import MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import Money, MoneyError, normalize_currency
from functions.shared.names import normal_offline_reference

COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("date", "deposit date"), "amount": ("amount",), "currency": ("currency",), "reference": ("reference",),
}
REQUIRED = ("date", "amount", "currency", "reference")
DEPOSIT = "deposit"


def parse(text: io.TextIOWrapper) -> Iterator[ParsedRow]:
    reader = csv.reader(text)
    at: dict[str, int] | None = None
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        if at is None:
            at = column_index(row, COLUMNS, REQUIRED)
            continue
        yield _row(reader.line_num, row, at)
    if at is None:
        raise UnparseableFile("no header row (date, amount, currency, reference): not a bank deposit file")


def _row(line: int, row: list[str], at: dict[str, int]) -> ParsedRow:
    reference = normal_offline_reference(cell(row, at["reference"]))
    try:
        currency = normalize_currency(cell(row, at["currency"]))
        amount = Money.from_major(decimal_text(cell(row, at["amount"])), currency)
        if not amount.is_positive():
            raise MoneyError("amount_not_positive", f"a deposit is positive, got {amount}")
        occurred = datetime.strptime(cell(row, at["date"]), "%Y-%m-%d").replace(tzinfo=UTC)
    except (MoneyError, ValueError) as error:
        return MalformedRow(line, str(error), psp_reference=reference)
    if not reference:
        return MalformedRow(line, "no reference")
    return SettlementRow(line=line, kind=RowKind.CHARGE, row_id=f"line-{line}", payment_order_id="",
                         psp_reference=reference, source_id="", gross=amount, fee=None, net=amount,
                         occurred_at=occurred, batch_id="", psp_type=DEPOSIT)
