"""Stripe itemized reports: balance_change_from_activity.itemized.3 and payout_reconciliation.itemized.5.

Both share the columns we need, read by header name; amounts are signed decimal major units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import column_index, known_money, minor_units, utc_timestamp
from functions.recon.rows import MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import CURRENCY_EXPONENTS, MoneyError

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
    """Rows of the report, in file order. This loop runs for every row of files of millions of rows, so the
    column positions are bound to local names once and each row is read inline (no call per row)."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        raise UnparseableFile("empty file: no header row")
    at = column_index(header, COLUMNS, REQUIRED)
    width = len(header)
    # Each row gets one empty cell appended at position `width`: a column the file lacks points there.
    bt, created, currency_at, gross_at, fee_at, net_at, category_at, source_at, charge_at, intent_at, payout_at, \
        order_at, refund_order_at = (at.get(name, width) for name in (
            "balance_transaction_id", "created", "currency", "gross", "fee", "net", "category", "source_id",
            "charge_id", "payment_intent_id", "payout_id", "order_id", "refund_order_id"))
    payout = RowKind.PAYOUT
    for row in reader:
        line = reader.line_num
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield MalformedRow(line, f"row has {len(row)} fields, the header has {width}")
            continue
        row.append("")
        order_id = row[order_at].strip() or row[refund_order_at].strip()
        intent = row[intent_at].strip() or row[charge_at].strip()
        try:
            category = row[category_at].strip().lower()
            kind = KINDS.get(category)
            if kind is None:
                raise ValueError(f"unknown reporting_category {category!r}")
            currency = row[currency_at].strip().upper()
            exponent = CURRENCY_EXPONENTS.get(currency)
            if exponent is None:
                raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
            gross = minor_units(row[gross_at], exponent)
            fee_text = row[fee_at].strip()
            if fee_text:  # Stripe's net is gross - fee by definition: computed, not parsed again
                fee = minor_units(fee_text, exponent)
                net: int | None = gross - fee
            else:
                fee, net_text = 0, row[net_at].strip()
                net = minor_units(net_text, exponent) if net_text else None
            occurred = utc_timestamp(row[created].strip())
        except (MoneyError, ValueError) as error:
            yield MalformedRow(line, str(error), order_id, intent)
            continue
        source = row[source_at].strip()
        gross_money = known_money(gross, currency)
        yield SettlementRow(
            line, kind, row[bt].strip(), order_id, intent, source, gross_money,
            known_money(fee, currency) if fee else None,
            None if net is None else gross_money if net == gross else known_money(net, currency),
            occurred, source if kind is payout else row[payout_at].strip(), category,
        )
