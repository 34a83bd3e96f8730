"""Stripe itemized reports: balance_change_from_activity.itemized.3 and payout_reconciliation.itemized.5.

Both share the columns we need, read by header name; amounts are signed decimal major units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import MONEY_MAKER, column_index, csv_record, minor_units, utc_timestamp
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
    """Rows of the report, in file order, with their line numbers as csv.reader counts them.

    This loop runs for every row of files of millions of rows, so it is written for speed: a line without a
    double quote cannot hold a quoted comma or a line break, and `split(",")` reads it exactly as csv.reader
    would, twice as fast; any other line (or one longer than csv's field limit) goes through csv.reader. The
    column positions are bound to local names once and each row is read inline, without a call per cell.
    """
    lines = iter(text)
    first = next(lines, None)
    if first is None:
        raise UnparseableFile("empty file: no header row")
    header, line = csv_record(first, lines)
    at = column_index(header, COLUMNS, REQUIRED)
    width = len(header)
    # Each row gets one empty cell appended at position `width`: a column the file lacks points there.
    bt, created, currency_at, gross_at, fee_at, net_at, category_at, source_at, charge_at, intent_at, payout_at, \
        order_at, refund_order_at = (at.get(name, width) for name in (
            "balance_transaction_id", "created", "currency", "gross", "fee", "net", "category", "source_id",
            "charge_id", "payment_intent_id", "payout_id", "order_id", "refund_order_id"))
    payout, exponents, kinds, limit, from_iso = RowKind.PAYOUT, CURRENCY_EXPONENTS, KINDS, csv.field_size_limit(), \
        datetime.fromisoformat
    new_money, set_minor, set_currency = MONEY_MAKER
    currencies = {spelling: code for code in exponents for spelling in (code, code.lower())}
    last_moment, last_occurred = None, None
    for text_line in lines:
        line += 1
        if '"' in text_line or len(text_line) > limit:
            row, taken = csv_record(text_line, lines)
            line += taken - 1
        else:
            row = text_line.split(",")  # the last cell keeps the line break: every cell read is stripped
        if len(row) != width:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            yield MalformedRow(line, f"row has {len(row)} fields, the header has {width}")
            continue
        row.append("")
        order_id = row[order_at].strip() or row[refund_order_at].strip()
        intent = row[intent_at].strip() or row[charge_at].strip()
        try:
            # Common spellings map to shared objects (no new string per row); others are normalised here.
            category = row[category_at].strip()
            kind = kinds.get(category)
            if kind is None:
                category = category.lower()
                kind = kinds.get(category)
                if kind is None:
                    raise ValueError(f"unknown reporting_category {category!r}")
            cell = row[currency_at].strip()
            currency = currencies.get(cell) or cell.upper()
            exponent = exponents.get(currency)
            if exponent is None:
                raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
            # The usual amount, `1234.56` with exactly the currency's decimals, inline: the dot in its place and
            # ASCII digits around it (replace takes the first dot; a second one fails isdigit). Any other
            # form, signed or padded, goes to minor_units.
            cut = -1 - exponent
            text = row[gross_at]
            gross = int(digits) if text[cut:cut + 1] == "." and (digits := text.replace(".", "", 1)).isdigit() \
                and digits.isascii() else minor_units(text, exponent)
            text = row[fee_at]
            if text and not text.isspace():  # Stripe's net is gross - fee by definition: computed, not parsed
                fee = int(digits) if text[cut:cut + 1] == "." and (digits := text.replace(".", "", 1)).isdigit() \
                    and digits.isascii() else minor_units(text, exponent)
                net: int | None = gross - fee
            else:
                fee, net_text = 0, row[net_at].strip()
                net = minor_units(net_text, exponent) if net_text else None
            # The usual `2026-01-30 10:11:12` of Stripe's *_utc columns, inline; any other form in utc_timestamp.
            # A file of a day's activity has rows of the same second one after another: the last one is reused.
            moment = row[created].strip()
            if moment != last_moment:
                last_occurred = from_iso(moment + "+00:00") if len(moment) == 19 and moment[10] == " " \
                    and moment[13] == ":" == moment[16] else utc_timestamp(moment)
                last_moment = moment
            occurred = last_occurred
        except (MoneyError, ValueError) as error:
            yield MalformedRow(line, str(error), order_id, intent)
            continue
        source = row[source_at].strip()
        # Money of an int and a currency already checked, as known_money makes it, without a call per amount.
        gross_money = new_money(Money)
        set_minor(gross_money, gross)
        set_currency(gross_money, currency)
        fee_money = net_money = None
        if fee:
            fee_money = new_money(Money)
            set_minor(fee_money, fee)
            set_currency(fee_money, currency)
        if net == gross:
            net_money = gross_money
        elif net is not None:
            net_money = new_money(Money)
            set_minor(net_money, net)
            set_currency(net_money, currency)
        yield SettlementRow(line, kind, row[bt].strip(), order_id, intent, source, gross_money, fee_money, net_money,
                            occurred, source if kind is payout else row[payout_at].strip(), category)
