"""Settlement export: what the sandbox charged, refunded, transferred and reversed, as Stripe itemized report CSVs.

Reports: `balance_change_from_activity.itemized.3` and `payout_reconciliation.itemized.5` (columns in the
documented order, see docs/settlement-formats.md). One row per balance transaction; amounts are signed decimal
major units (`25.00`, `-0.50`; `decimal_style="minimal"` writes `25`, `-0.5`); times are UTC `YYYY-MM-DD HH:MM:SS`.
A charge row is a checkout's charge in one currency: its PaymentIntent's metadata (`checkout_id`, `charge_key`)
fills the `payment_metadata[...]` columns, of the charge and of its refunds. A `transfer` row (source `tr_…`, gross
and net negative, fee 0) and a `transfer_reversal` row (source `trr_…`, positive) carry the connected account
(`connected_account_id`) and the transfer's metadata (`transfer_metadata[...]`).

For reconciliation tests, discrepancies can be planted on chosen or seeded charge rows; the export says which
row got what (`SettlementExport.planted`):
amount_mismatch (gross off by one minor unit), currency_mismatch (another currency of the same exponent),
missing_row (a charge left out), unknown_charge (a charge of a checkout nobody placed), duplicate_row (a row
twice), refund_not_in_ledger (a refund row for a charge that was never refunded), malformed_row (garbage amount),
intent_only (the charge's metadata left out: only its PaymentIntent names it), checkout_only (its PaymentIntent
left out: only its checkout names it).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .models import Charge, PaymentIntent, Refund, Transfer, TransferReversal, currency_exponent
from .state import SandboxState

BALANCE_REPORT = "balance_change_from_activity.itemized.3"
PAYOUT_REPORT = "payout_reconciliation.itemized.5"
REPORTS = (BALANCE_REPORT, PAYOUT_REPORT)
PLANT_KINDS = (
    "amount_mismatch",
    "currency_mismatch",
    "missing_row",
    "unknown_charge",
    "duplicate_row",
    "refund_not_in_ledger",
    "malformed_row",
    "intent_only",
    "checkout_only",
)
# A PaymentIntent's metadata (functions/shared/psp.py): the checkout it charges and its charge key,
# `<checkout_id>#<CURRENCY>`. Other keys a PaymentIntent carries follow, sorted.
DEFAULT_METADATA_KEYS = ("checkout_id", "charge_key")
MALFORMED_AMOUNT = "12,3O.x"

_ADDRESS = ("line1", "line2", "city", "state", "postal_code", "country")
_CUSTOMER = ["customer_id", "customer_email", "customer_name", "customer_description"]
_ADDRESSES = [
    f"{prefix}_{part}"
    for prefix in ("customer_shipping_address", "customer_address", "shipping_address", "card_address")
    for part in _ADDRESS
]
_CHARGE_FACTS = [
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
]
_CONNECT = [
    "connected_account_id",
    "connected_account_name",
    "connected_account_country",
    "connected_account_direct_charge_id",
]

_BALANCE_FACTS = [
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
]

BALANCE_COLUMNS = [
    *_BALANCE_FACTS,
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "automatic_payout_effective_at",
    *_CUSTOMER,
    *_ADDRESSES,
    *_CHARGE_FACTS,
    *_CONNECT,
]
# payout_reconciliation.itemized.5: the payout first, then the balance columns, plus order_id and
# destination_payment_id (placed next to the facts they belong with; parsers must go by header name).
PAYOUT_COLUMNS = [
    "automatic_payout_id",
    "automatic_payout_effective_at",
    *_BALANCE_FACTS,
    *_CUSTOMER,
    *_ADDRESSES,
    *_CHARGE_FACTS[:6],
    "order_id",
    *_CHARGE_FACTS[6:],
    *_CONNECT,
    "destination_payment_id",
]
_SAME_EXPONENT_SWAP = {0: ("jpy", "krw"), 2: ("usd", "eur"), 3: ("kwd", "bhd")}


class SettlementError(ValueError):
    """The report cannot be built as asked (unknown report or plant, no row to plant on)."""


@dataclass(frozen=True, slots=True)
class Planted:
    """One planted discrepancy. `row` is the 1-based data row in the file (None for a missing row)."""

    kind: str
    row: int | None
    balance_transaction_id: str
    charge_id: str
    payment_intent_id: str
    checkout_id: str | None
    charge_key: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "row": self.row,
            "balance_transaction_id": self.balance_transaction_id,
            "charge_id": self.charge_id,
            "payment_intent_id": self.payment_intent_id,
            "checkout_id": self.checkout_id,
            "charge_key": self.charge_key,
            "detail": self.detail,
        }


@dataclass(slots=True)
class SettlementExport:
    report: str
    columns: list[str]
    rows: list[dict[str, str]]
    planted: list[Planted] = field(default_factory=list)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


def format_amount(minor: int, currency: str, style: str = "fixed") -> str:
    exponent = currency_exponent(currency)
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(exponent + 1, "0")
    text = f"{digits[:-exponent]}.{digits[-exponent:]}" if exponent else digits
    if style == "minimal" and "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text}"


def format_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stripe_like_id(prefix: str, *parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{prefix}_3Sbx{digest[:20]}"


def build_report(
    state: SandboxState,
    report: str = BALANCE_REPORT,
    *,
    plant: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    targets: dict[str, str] | None = None,
    decimal_style: str = "fixed",
    metadata_keys: tuple[str, ...] = DEFAULT_METADATA_KEYS,
    separate_fees: bool = False,
) -> SettlementExport:
    """The report's rows from the sandbox's books, with the asked-for discrepancies planted.

    `targets` maps a plant kind to the charge id, PaymentIntent id, checkout_id or charge key to plant it on;
    other kinds go on distinct charge rows drawn with `seed`. `separate_fees` moves each charge's Stripe fee
    to its own `fee` row (no source), as some accounts receive them.
    """
    if report not in REPORTS:
        raise SettlementError(f"unknown report {report!r}; known: {', '.join(REPORTS)}")
    if decimal_style not in ("fixed", "minimal"):
        raise SettlementError("decimal_style is 'fixed' or 'minimal'")
    unknown = [k for k in plant if k not in PLANT_KINDS]
    if unknown:
        raise SettlementError(f"unknown plant kind(s) {unknown}; known: {', '.join(PLANT_KINDS)}")
    books = state.snapshot()
    builder = _RowBuilder(books, report, decimal_style, metadata_keys)
    rows: list[_Row] = []
    for txn in books["balance_transactions"]:
        rows.extend(builder.rows_for(txn, separate_fees))
    planted = _Planter(builder, rows, random.Random(seed), targets or {}).plant(list(plant))
    return SettlementExport(report, builder.columns, [row.values for row in rows], planted)


def write_settlement_report(
    state: SandboxState, destination: str | Path | IO[str], report: str = BALANCE_REPORT, **options: Any
) -> SettlementExport:
    """Write the report CSV to a path or text stream; returns the export (its `planted` says what went where)."""
    export = build_report(state, report, **options)
    text = export.to_csv()
    if isinstance(destination, str | Path):
        Path(destination).write_text(text, encoding="utf-8", newline="")
    else:
        destination.write(text)
    return export


@dataclass(slots=True)
class _Row:
    values: dict[str, str]
    category: str
    charge_id: str = ""
    payment_intent_id: str = ""
    checkout_id: str | None = None
    charge_key: str | None = None
    minor: int = 0
    fee_minor: int = 0
    currency: str = ""


class _RowBuilder:
    def __init__(self, books: dict[str, list[Any]], report: str, style: str, metadata_keys: tuple[str, ...]):
        self.report = report
        self.style = style
        self.pis: dict[str, PaymentIntent] = {pi.id: pi for pi in books["payment_intents"]}
        self.charges: dict[str, Charge] = {c.id: c for c in books["charges"]}
        self.refunds: dict[str, Refund] = {r.id: r for r in books["refunds"]}
        self.transfers: dict[str, Transfer] = {t.id: t for t in books["transfers"]}
        self.reversals: dict[str, TransferReversal] = {r.id: r for r in books["transfer_reversals"]}
        extra = sorted({k for pi in self.pis.values() for k in pi.metadata} - set(metadata_keys))
        self.payment_keys = [*metadata_keys, *extra]
        self.refund_keys = sorted({k for r in self.refunds.values() for k in r.metadata})
        self.transfer_keys = sorted({k for t in self.transfers.values() for k in t.metadata})
        base = BALANCE_COLUMNS if report == BALANCE_REPORT else PAYOUT_COLUMNS
        self.columns = [
            *base,
            *(f"payment_metadata[{k}]" for k in self.payment_keys),
            *(f"refund_metadata[{k}]" for k in self.refund_keys),
            *(f"transfer_metadata[{k}]" for k in self.transfer_keys),
        ]

    def amount(self, minor: int, currency: str) -> str:
        return format_amount(minor, currency, self.style)

    def rows_for(self, txn: Any, separate_fees: bool) -> list[_Row]:
        values = dict.fromkeys(self.columns, "")
        fee = 0 if separate_fees else txn.fee
        values.update(
            balance_transaction_id=txn.id,
            created_utc=format_time(txn.created),
            created=format_time(txn.created),
            available_on_utc=format_time(txn.available_on),
            available_on=format_time(txn.available_on),
            currency=txn.currency,
            gross=self.amount(txn.amount, txn.currency),
            fee=self.amount(fee, txn.currency),
            net=self.amount(txn.amount - fee, txn.currency),
            reporting_category=txn.reporting_category,
            source_id=txn.source,
            description=txn.description or "",
        )
        payout_id = _stripe_like_id("po", txn.currency, txn.available_on // 86400)
        payout_day = format_time(txn.available_on // 86400 * 86400)
        if self.report == BALANCE_REPORT:
            values.update(
                automatic_payout_id=payout_id,
                automatic_payout_effective_at_utc=payout_day,
                automatic_payout_effective_at=payout_day,
            )
        else:
            values.update(automatic_payout_id=payout_id, automatic_payout_effective_at=payout_day)
        row = _Row(values, txn.reporting_category, minor=txn.amount, fee_minor=fee, currency=txn.currency)
        if txn.reporting_category in ("charge", "charge_failure"):  # charge_failure: a bank debit returned
            self._charge_facts(row, self.charges[txn.source])
            values.update(customer_facing_amount=values["gross"], customer_facing_currency=txn.currency)
        elif txn.reporting_category in ("refund", "refund_failure"):  # a failed refund gives it back
            refund = self.refunds[txn.source]
            self._charge_facts(row, self.charges[refund.charge])
            for key in self.refund_keys:
                values[f"refund_metadata[{key}]"] = refund.metadata.get(key, "")
        elif txn.reporting_category in ("transfer", "transfer_reversal"):
            # a reversal's row names the transfer it takes back from: its account, payment and metadata
            reversal = self.reversals.get(txn.source)
            transfer = self.transfers[reversal.transfer if reversal else txn.source]
            values["connected_account_id"] = transfer.destination
            if "destination_payment_id" in values:
                values["destination_payment_id"] = transfer.destination_payment
            for key in self.transfer_keys:
                values[f"transfer_metadata[{key}]"] = transfer.metadata.get(key, "")
        rows = [row]
        if separate_fees and txn.fee:
            fee_values = dict.fromkeys(self.columns, "")
            for name in ("created_utc", "created", "available_on_utc", "available_on", "currency"):
                fee_values[name] = values[name]
            for name in ("automatic_payout_id", "automatic_payout_effective_at_utc", "automatic_payout_effective_at"):
                if name in fee_values:
                    fee_values[name] = values[name]
            fee_values.update(
                balance_transaction_id=_stripe_like_id("txn", "fee", txn.id),
                gross=self.amount(-txn.fee, txn.currency),
                fee=self.amount(0, txn.currency),
                net=self.amount(-txn.fee, txn.currency),
                reporting_category="fee",
                description="Stripe processing fees",
            )
            rows.append(_Row(fee_values, "fee", minor=-txn.fee, currency=txn.currency))
        return rows

    def _charge_facts(self, row: _Row, charge: Charge) -> None:
        pi = self.pis.get(charge.payment_intent)
        metadata = (pi.metadata if pi and pi.metadata else None) or charge.metadata  # falls back like Stripe
        row.charge_id, row.payment_intent_id = charge.id, charge.payment_intent
        row.checkout_id, row.charge_key = metadata.get("checkout_id"), metadata.get("charge_key")
        row.values.update(
            charge_id=charge.id,
            payment_intent_id=charge.payment_intent,
            charge_created_utc=format_time(charge.created),
            charge_created=format_time(charge.created),
            payment_method_type="card",
            is_link="false",
            card_brand=charge.card.brand,
            card_funding=charge.card.funding,
            card_country=charge.card.country,
        )
        for key in self.payment_keys:
            row.values[f"payment_metadata[{key}]"] = metadata.get(key, "")


class _Planter:
    def __init__(self, builder: _RowBuilder, rows: list[_Row], rng: random.Random, targets: dict[str, str]):
        self.builder = builder
        self.rows = rows
        self.rng = rng
        self.targets = targets
        self.used: set[int] = set()

    def plant(self, kinds: list[str]) -> list[Planted]:
        marks: list[tuple[str, _Row, str]] = []
        removed: list[Planted] = []
        for kind in kinds:
            target = self._target(kind)
            row, detail = getattr(self, f"_{kind}")(target)
            if kind == "missing_row":
                removed.append(self._describe(kind, None, target, detail))
            else:
                marks.append((kind, row, detail))
        found = [self._describe(k, self._position(r), r, d) for k, r, d in marks]
        return found + removed

    def _position(self, row: _Row) -> int:
        return next(i for i, r in enumerate(self.rows, start=1) if r is row)

    @staticmethod
    def _describe(kind: str, position: int | None, row: _Row, detail: str) -> Planted:
        return Planted(
            kind,
            position,
            row.values["balance_transaction_id"],
            row.charge_id,
            row.payment_intent_id,
            row.checkout_id,
            row.charge_key,
            detail,
        )

    def _target(self, kind: str) -> _Row:
        charges = [i for i, r in enumerate(self.rows) if r.category == "charge"]
        wanted = self.targets.get(kind)
        if wanted is not None:
            for i in charges:
                row = self.rows[i]
                if wanted in (row.charge_id, row.payment_intent_id, row.checkout_id, row.charge_key):
                    self.used.add(id(row))
                    return row
            raise SettlementError(f"no charge row for {wanted!r} to plant {kind} on")
        free = [i for i in charges if id(self.rows[i]) not in self.used]
        if not free:
            raise SettlementError(f"no charge row left to plant {kind} on")
        row = self.rows[self.rng.choice(free)]
        self.used.add(id(row))
        return row

    def _insert_after(self, anchor: _Row, row: _Row) -> None:
        index = next(i for i, r in enumerate(self.rows) if r is anchor)
        self.rows.insert(index + 1, row)

    def _amount_mismatch(self, row: _Row) -> tuple[_Row, str]:
        before = row.values["gross"]
        gross = row.minor + 1
        row.values["gross"] = self.builder.amount(gross, row.currency)
        row.values["net"] = self.builder.amount(gross - row.fee_minor, row.currency)
        return row, f"gross {before} -> {row.values['gross']}"

    def _currency_mismatch(self, row: _Row) -> tuple[_Row, str]:
        first, second = _SAME_EXPONENT_SWAP[currency_exponent(row.currency)]
        other = second if row.currency == first else first
        row.values["currency"] = other
        if row.values["customer_facing_currency"]:
            row.values["customer_facing_currency"] = other
        return row, f"currency {row.currency} -> {other}"

    def _missing_row(self, row: _Row) -> tuple[_Row, str]:
        self.rows.remove(row)
        return row, f"charge row {row.values['balance_transaction_id']} left out"

    def _duplicate_row(self, row: _Row) -> tuple[_Row, str]:
        twin = copy.deepcopy(row)
        self._insert_after(row, twin)
        self.used.add(id(twin))
        return twin, f"row {row.values['balance_transaction_id']} written twice"

    def _malformed_row(self, row: _Row) -> tuple[_Row, str]:
        row.values["gross"] = MALFORMED_AMOUNT
        return row, f"gross is {MALFORMED_AMOUNT!r}"

    def _unknown_charge(self, template: _Row) -> tuple[_Row, str]:
        n = sum(1 for r in self.rows if r.checkout_id and r.checkout_id.startswith("co_unknown_"))
        row = copy.deepcopy(template)
        row.charge_id = _stripe_like_id("ch", "unknown", n)
        row.payment_intent_id = _stripe_like_id("pi", "unknown", n)
        row.checkout_id = f"co_unknown_{n + 1}"
        row.charge_key = f"{row.checkout_id}#{row.currency.upper()}"
        row.values.update(
            balance_transaction_id=_stripe_like_id("txn", "unknown", n),
            source_id=row.charge_id,
            charge_id=row.charge_id,
            payment_intent_id=row.payment_intent_id,
        )
        for key in self.builder.payment_keys:
            row.values[f"payment_metadata[{key}]"] = ""
        row.values.update({"payment_metadata[checkout_id]": row.checkout_id,
                           "payment_metadata[charge_key]": row.charge_key})
        self._insert_after(template, row)
        self.used.discard(id(template))  # the template only lent its shape
        self.used.add(id(row))  # a row planted to be unknown takes no other plant
        return row, f"charge {row.charge_id} of unknown checkout {row.checkout_id}"

    def _intent_only(self, row: _Row) -> tuple[_Row, str]:
        for key in self.builder.payment_keys:
            row.values[f"payment_metadata[{key}]"] = ""
        return row, f"charge {row.charge_id} without its metadata: only {row.payment_intent_id} names it"

    def _checkout_only(self, row: _Row) -> tuple[_Row, str]:
        row.values["payment_intent_id"] = ""
        return row, f"charge {row.charge_id} without its PaymentIntent: only checkout {row.checkout_id} names it"

    def _refund_not_in_ledger(self, charge_row: _Row) -> tuple[_Row, str]:
        row = copy.deepcopy(charge_row)
        refund_id = _stripe_like_id("re", "planted", charge_row.charge_id)
        row.category = "refund"
        row.minor, row.fee_minor = -charge_row.minor, 0
        amount = self.builder.amount(-charge_row.minor, charge_row.currency)
        row.values.update(
            balance_transaction_id=_stripe_like_id("txn", "planted", refund_id),
            reporting_category="refund",
            source_id=refund_id,
            gross=amount,
            fee=self.builder.amount(0, charge_row.currency),
            net=amount,
            customer_facing_amount="",
            customer_facing_currency="",
        )
        self._insert_after(charge_row, row)
        return row, f"refund {refund_id} of {amount} on {charge_row.charge_id}, never made"
