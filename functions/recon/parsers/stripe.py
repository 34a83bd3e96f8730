"""Stripe itemized reports: balance_change_from_activity.itemized.3 and payout_reconciliation.itemized.5.

Both share the columns we need, read by header name; amounts are signed decimal major units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import cell, column_index, guarded_lines, minor_units, utc_timestamp
from functions.recon.rows import MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError

COLUMNS: dict[str, tuple[str, ...]] = {
    "balance_transaction_id": ("balance_transaction_id",),
    "created": ("created_utc", "created"),
    "currency": ("currency",),
    "gross": ("gross", "amount"),
    "fee": ("fee",),
    "net": ("net",),
    "category": ("reporting_category",),
    "source_id": ("source_id", "source"),
    "charge_id": ("charge_id",),
    "payment_intent_id": ("payment_intent_id",),
    "payout_id": ("automatic_payout_id", "payout_id"),
    "order_id": ("payment_metadata[payment_order_id]", "charge_metadata[payment_order_id]",
                 "metadata[payment_order_id]"),
    "refund_order_id": ("refund_metadata[payment_order_id]",),
}
REQUIRED = ("balance_transaction_id", "currency", "gross", "category")

KINDS: dict[str, RowKind] = {
    "charge": RowKind.CHARGE,
    "payment": RowKind.CHARGE,
    "refund": RowKind.REFUND,
    "partial_capture_reversal": RowKind.REFUND,
    "refund_failure": RowKind.REFUND,
    "charge_failure": RowKind.CHARGEBACK,
    "dispute": RowKind.CHARGEBACK,
    "dispute_reversal": RowKind.CHARGEBACK_REVERSAL,
    "fee": RowKind.FEE,
    "tax": RowKind.FEE,
    "payout": RowKind.PAYOUT,
    "payout_reversal": RowKind.PAYOUT,
    **{name: RowKind.BATCH for name in (
        "advance", "advance_funding", "connect_collection_transfer", "connect_reserved_funds",
        "issuing_authorization_hold", "issuing_authorization_release", "issuing_transaction",
        "other_adjustment", "platform_earning", "platform_earning_refund", "risk_reserved_funds", "topup",
        "topup_reversal", "transfer", "transfer_reversal",
    )},
}


def parse(text: io.TextIOWrapper) -> Iterator[ParsedRow]:
    reader = csv.reader(guarded_lines(text))
    header = next(reader, None)
    if header is None:
        raise UnparseableFile("empty file: no header row")
    at = column_index(header, COLUMNS, REQUIRED)
    width = len(header)
    get = at.get
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            yield MalformedRow(line, f"row has {len(row)} fields, the header has {width}")
            continue
        yield _row(line, row, get)


def _row(line: int, row: list[str], get) -> ParsedRow:  # type: ignore[no-untyped-def]
    order_id = cell(row, get("order_id")) or cell(row, get("refund_order_id"))
    intent = cell(row, get("payment_intent_id"))
    charge = cell(row, get("charge_id"))
    try:
        category = cell(row, get("category")).lower()
        kind = KINDS.get(category)
        if kind is None:
            raise ValueError(f"unknown reporting_category {category!r}")
        currency = cell(row, get("currency")).upper()
        exponent = CURRENCY_EXPONENTS.get(currency)
        if exponent is None:
            raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
        gross = Money(minor_units(cell(row, get("gross")), exponent), currency)
        fee_text, net_text = cell(row, get("fee")), cell(row, get("net"))
        fee = Money(minor_units(fee_text, exponent), currency) if fee_text else None
        net = Money(minor_units(net_text, exponent), currency) if net_text else None
        occurred = utc_timestamp(cell(row, get("created")))
    except (MoneyError, ValueError) as error:
        return MalformedRow(line, str(error), order_id, intent or charge)
    source = cell(row, get("source_id"))
    payout = cell(row, get("payout_id"))
    return SettlementRow(
        line=line, kind=kind, row_id=cell(row, get("balance_transaction_id")), payment_order_id=order_id,
        psp_reference=intent or charge, source_id=source, gross=gross, fee=fee, net=net, occurred_at=occurred,
        batch_id=source if kind is RowKind.PAYOUT else payout, psp_type=category,
    )
