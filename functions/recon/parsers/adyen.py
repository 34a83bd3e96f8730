"""Adyen settlement details report (classic 30 columns, or the newer layout with extra columns, any order).

Amounts are unsigned: direction comes from the Debit or the Credit column. Batch-level rows (Fee,
MerchantPayout, Balancetransfer...) have no PSP reference; the batch's net must equal its payout.

The Merchant Reference is the payment's reference, on its own rows and on the rows of its refunds and disputes.
Our adapter sends the charge key (`<checkout_id>#<CUR>`, functions/shared/names.py): such a row names the checkout
and settles (or undoes) the checkout's charge in that currency; any other reference is a payment_order_id (the
per-order format). A refund's own reference (the refund_id the adapter sent) is the Modification Merchant Reference.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

from functions.recon.errors import UnparseableFile
from functions.recon.parsers.text import cell, column_index, minor_units
from functions.recon.rows import MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared.money import CURRENCY_EXPONENTS, Money, MoneyError
from functions.shared.names import charge_of_key

COLUMNS: dict[str, tuple[str, ...]] = {
    "psp_reference": ("Psp Reference",),
    "merchant_reference": ("Merchant Reference",),
    "created": ("Creation Date",),
    "timezone": ("TimeZone", "Time Zone"),
    "type": ("Type",),
    "modification_reference": ("Modification Reference",),
    "gross_currency": ("Gross Currency",),
    "gross_debit": ("Gross Debit (GC)",),
    "gross_credit": ("Gross Credit (GC)",),
    "net_currency": ("Net Currency",),
    "net_debit": ("Net Debit (NC)",),
    "net_credit": ("Net Credit (NC)",),
    "commission": ("Commission (NC)",),
    "markup": ("Markup (NC)",),
    "scheme_fees": ("Scheme Fees (NC)",),
    "interchange": ("Interchange (NC)",),
    "batch": ("Batch Number",),
    "merchant_order_reference": ("Merchant Order Reference",),
    "modification_merchant_reference": ("Modification Merchant Reference",),
}
REQUIRED = ("psp_reference", "merchant_reference", "created", "type", "gross_currency", "gross_debit",
            "gross_credit", "net_currency", "net_debit", "net_credit")
FEE_COLUMNS = ("commission", "markup", "scheme_fees", "interchange")
# A refund's Modification Merchant Reference is our refund_id (the `reference` the adapter sends), its ledger
# transaction's id. A dispute has none of ours; a reversed refund's would name the refund it reverses, not itself.
OWN_REFERENCE_TYPES = frozenset({"refunded", "refundedbulk"})

KINDS: dict[str, RowKind] = {
    "settled": RowKind.CHARGE,
    "settledbulk": RowKind.CHARGE,
    "refunded": RowKind.REFUND,
    "refundedbulk": RowKind.REFUND,
    "refundedreversed": RowKind.REFUND,
    "chargeback": RowKind.CHARGEBACK,
    "secondchargeback": RowKind.CHARGEBACK,
    "chargebackreversed": RowKind.CHARGEBACK_REVERSAL,
    "fee": RowKind.FEE,
    "misccosts": RowKind.FEE,
    "paymentcost": RowKind.FEE,
    "invoicededuction": RowKind.FEE,
    "merchantpayout": RowKind.PAYOUT,
    "paidout": RowKind.PAYOUT,
    "paidoutreversed": RowKind.PAYOUT,
    **{name: RowKind.BATCH for name in (
        "balancetransfer", "depositcorrection", "matchedstatement", "manualcorrected",
        "bankinstructionreturned", "epapaid", "reserveadjustment",
    )},
}

# Adyen writes the zone as an abbreviation; only these are accepted, an unknown one makes the row malformed.
ZONES = {name: timezone(timedelta(hours=hours)) for name, hours in {
    "UTC": 0, "GMT": 0, "WET": 0, "BST": 1, "WEST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AEST": 10, "AEDT": 11, "SGT": 8, "HKT": 8, "JST": 9,
}.items()}


def parse(text: io.TextIOWrapper) -> Iterator[ParsedRow]:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        raise UnparseableFile("empty file: no header row")
    at = column_index(header, COLUMNS, REQUIRED)
    width = len(header)
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            yield MalformedRow(line, f"row has {len(row)} fields, the header has {width}")
            continue
        yield _row(line, row, at)


def _signed(row: list[str], at: dict[str, int], debit: str, credit: str, currency: str) -> int:
    exponent = CURRENCY_EXPONENTS[currency]
    debit_text, credit_text = cell(row, at.get(debit)), cell(row, at.get(credit))
    if debit_text and credit_text:
        raise MoneyError("invalid_amount", f"both {debit} and {credit} are set")
    amount = minor_units(credit_text or debit_text or "0", exponent)
    if amount < 0:
        raise MoneyError("invalid_amount", "Adyen amounts are unsigned")
    return -amount if debit_text else amount


def _row(line: int, row: list[str], at: dict[str, int]) -> ParsedRow:
    order_id = cell(row, at["merchant_reference"]) or cell(row, at.get("merchant_order_reference"))
    charge = charge_of_key(order_id)
    checkout_id = ""
    if charge is not None:
        order_id, checkout_id = "", charge[0]
    psp_reference = cell(row, at["psp_reference"])
    try:
        psp_type = cell(row, at["type"])
        kind = KINDS.get(psp_type.lower())
        if kind is None:
            raise ValueError(f"unknown Type {psp_type!r}")
        net_currency = cell(row, at["net_currency"]).upper()
        gross_currency = cell(row, at["gross_currency"]).upper() or net_currency
        for currency in {net_currency, gross_currency}:
            if currency not in CURRENCY_EXPONENTS:
                raise MoneyError("unsupported_currency", f"currency {currency!r} is not supported")
        if charge is not None and charge[1] != gross_currency:
            raise ValueError(f"the Merchant Reference names the charge in {charge[1]}, the row is in {gross_currency}")
        gross = Money(_signed(row, at, "gross_debit", "gross_credit", gross_currency), gross_currency)
        net = Money(_signed(row, at, "net_debit", "net_credit", net_currency), net_currency)
        exponent = CURRENCY_EXPONENTS[net_currency]
        fee_minor = sum(minor_units(cell(row, at.get(name)) or "0", exponent) for name in FEE_COLUMNS)
        if kind is RowKind.FEE:
            fee_minor = -net.minor  # a fee row's amount is the fee; it carries no commission columns
        occurred = _timestamp(cell(row, at["created"]), cell(row, at.get("timezone")))
    except (MoneyError, ValueError) as error:
        return MalformedRow(line, str(error), order_id, psp_reference, checkout_id)
    modification = cell(row, at.get("modification_reference"))
    if kind in (RowKind.FEE, RowKind.PAYOUT, RowKind.BATCH):
        order_id = psp_reference = checkout_id = ""
    batch = cell(row, at.get("batch"))
    return SettlementRow(
        line=line, kind=kind, row_id=f"{batch}:{line}" if not modification else f"{batch}:{modification}",
        payment_order_id=order_id, psp_reference=psp_reference,
        source_id=modification if kind is not RowKind.CHARGE else psp_reference,
        gross=gross, fee=Money(fee_minor, net_currency) if fee_minor else None, net=net, occurred_at=occurred,
        batch_id=batch, psp_type=psp_type, checkout_id=checkout_id,
        own_reference=cell(row, at.get("modification_merchant_reference"))
        if psp_type.lower() in OWN_REFERENCE_TYPES else "",
    )


def _timestamp(text: str, zone: str) -> datetime | None:
    if not text:
        return None
    moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    if not zone:
        return moment.replace(tzinfo=UTC)
    if zone.upper() not in ZONES:
        raise ValueError(f"unknown TimeZone {zone!r}")
    return moment.replace(tzinfo=ZONES[zone.upper()]).astimezone(UTC)
