"""Internal reconciliation (issue 19): orders, wallets, ledger, pay-outs and refunds checked against each other,
per seller and currency, so that what a step that died half-way left behind is found, named and, where one of the
workflow's own idempotent steps can redo it, fixed.

The rules are the product's version of verification/invariants.py (the harness is not deployed). Every table is
read through its class in functions/shared/tables.py, page by page; what is kept in memory is one total per
(seller, currency, bucket) plus the pay-in references and the orders' (status, amount) to match them against.

Categories (each finding: category, seller, currency, amount in minor units, ids, fixed or not):
- order_success_without_wallet_credit: a SUCCESS order whose pay-in never reached the seller's wallet (the
  wallet step died). Fixed by running the wallet step of its charge again (idempotent per order).
- order_success_without_ledger_entry: a SUCCESS order without its pay-in transaction (the ledger step died).
  Fixed by running the ledger step of its charge again (written once, id payin#<order>).
- failed_order_with_ledger_entry: a FAILED order the ledger books as paid in.
- ledger_unbalanced: a transaction whose entries do not sum to zero in a currency.
- wallet_ledger_mismatch: a seller's wallet bucket differs from its ledger entries by more than the findings
  above explain.
- transfer_without_paid_order: a pay-out TRANSFERRED (or transferring) for an order that is not SUCCESS.
- refund_exceeds_charge: PENDING and SUCCEEDED refunds committing more than the order's amount.
Anything not fixed is unexplained: it is counted in the UnexplainedFindings metric and alarmed on.

In flight: the tables are read one after the other while charges, releases and refunds go on, so what changed
after the cutoff (the run's start less SETTLE: a step writes within its function's timeout of its timestamp) is
not judged in this run: an order updated after it is skipped, and a seller and currency with a wallet or ledger
change after it is not compared (`checked` counts both). The next run sees them settled.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import IO, Any

from functions.recon import html
from functions.recon.report import upload
from functions.shared import clock
from functions.shared.config import Settings, settings
from functions.shared.models import ChargeWork
from functions.shared.money import Money
from functions.shared.names import BALANCE_SORT_PREFIX, INTERNAL_REPORTS_PREFIX, PAYIN, TRANSFER, charge_key
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, RefundsTable, WalletTable

WALLET_BUCKETS = ("pending", "available", "transferred", "owed")
SETTLE = timedelta(minutes=5)  # well past every function's timeout (the longest, recon's, is 5 min less margin)
_LEDGER_BUCKETS = {"seller_pending": "pending", "seller_available": "available"}


class Category(StrEnum):
    ORDER_SUCCESS_WITHOUT_WALLET_CREDIT = "order_success_without_wallet_credit"
    ORDER_SUCCESS_WITHOUT_LEDGER_ENTRY = "order_success_without_ledger_entry"
    FAILED_ORDER_WITH_LEDGER_ENTRY = "failed_order_with_ledger_entry"
    LEDGER_UNBALANCED = "ledger_unbalanced"
    WALLET_LEDGER_MISMATCH = "wallet_ledger_mismatch"
    TRANSFER_WITHOUT_PAID_ORDER = "transfer_without_paid_order"
    REFUND_EXCEEDS_CHARGE = "refund_exceeds_charge"


@dataclass
class Finding:
    category: Category
    seller_account: str
    currency: str
    amount_minor: int
    ids: list[str]
    detail: str = ""
    fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "category": self.category.value}


@dataclass
class InternalReport:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def unexplained(self) -> list[Finding]:
        return [f for f in self.findings if not f.fixed]

    @property
    def fixed(self) -> list[Finding]:
        return [f for f in self.findings if f.fixed]

    def totals(self) -> dict[str, dict[str, Any]]:
        """category -> {count, fixed, amounts: {currency: minor}} for every category (zeros included)."""
        result: dict[str, dict[str, Any]] = {c.value: {"count": 0, "fixed": 0, "amounts": {}} for c in Category}
        for finding in self.findings:
            row = result[finding.category.value]
            row["count"] += 1
            row["fixed"] += int(finding.fixed)
            row["amounts"][finding.currency] = row["amounts"].get(finding.currency, 0) + finding.amount_minor
        return result

    def summary(self) -> dict[str, Any]:
        return {"kind": "internal", "total": len(self.findings), "fixed": len(self.fixed),
                "unexplained": len(self.unexplained), "checked": dict(self.checked), "categories": self.totals()}


@dataclass
class Tables:
    payments: PaymentTables
    wallet: WalletTable
    ledger: LedgerTable
    payouts: PayoutsTable
    refunds: RefundsTable

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> Tables:
        config = config or settings()
        return cls(PaymentTables.from_settings(config), WalletTable.from_settings(config),
                   LedgerTable.from_settings(config), PayoutsTable.from_settings(config),
                   RefundsTable.from_settings(config))


Key = tuple[str, str, str]  # seller, currency, bucket


def reconcile(tables: Tables, *, fix: bool = False, cutoff: str = "", own: frozenset[str] = frozenset()
              ) -> InternalReport:
    """`cutoff` (ISO time, default now less SETTLE): what changed after it is in flight, not judged. `own`: the
    orders whose pay-in this run's fixes just wrote, which are no sign of work in flight."""
    cutoff = cutoff or clock.iso(clock.now() - SETTLE)
    report = InternalReport()
    active: set[tuple[str, str]] = set()  # seller, currency with a change after the cutoff
    ledger_buckets: dict[Key, int] = defaultdict(int)
    ledger_payins: dict[str, tuple[str, str, int]] = {}  # order id -> seller, currency, amount
    for tx in tables.ledger.scan():
        report.checked["ledger_transactions"] += 1
        _check_balanced(tx, report)
        _add_ledger(tx, ledger_buckets, ledger_payins)
        if str(tx.get("created_at", "")) > cutoff and not _own(tx, own):
            active.update((e["account"].partition(":")[2], e["currency"]) for e in tx.get("entries", []))

    wallet_buckets: dict[Key, int] = defaultdict(int)
    wallet_payins: set[str] = set()
    for item in tables.wallet.scan():
        if item["sk"].startswith(BALANCE_SORT_PREFIX):
            seller = item.get("seller_account") or item["account_id"].rpartition("#")[0]
            for bucket in WALLET_BUCKETS:
                wallet_buckets[(seller, item["currency"], bucket)] += int(item.get(f"{bucket}_minor", 0))
            continue
        if item.get("kind") == PAYIN:
            wallet_payins.add(item["reference"])
        # every balance change is written with its movement record: the movements say what is in flight
        if str(item.get("created_at") or "") > cutoff and not _own(item, own):
            active.add((item.get("seller_account", ""), item.get("currency", "")))

    orders: dict[str, tuple[str, int]] = {}  # order id -> status, amount
    no_credit: list[dict[str, Any]] = []  # SUCCESS orders without their wallet pay-in / ledger pay-in
    no_payin: list[dict[str, Any]] = []
    for order in tables.payments.scan_orders():
        report.checked["orders"] += 1
        order_id, status = order["payment_order_id"], order["payment_order_status"]
        orders[order_id] = (status, int(order["amount_minor"]))
        if str(order.get("updated_at", "")) > cutoff:
            report.checked["orders_in_flight"] += 1
            active.add((order["seller_account"], order["currency"]))
            continue
        if status == "SUCCESS" and order_id not in wallet_payins:
            no_credit.append(order)
        if status == "SUCCESS" and order_id not in ledger_payins:
            no_payin.append(order)
        if status == "FAILED" and order_id in ledger_payins:
            report.findings.append(_order_finding(Category.FAILED_ORDER_WITH_LEDGER_ENTRY, order,
                                                  "a FAILED order booked as paid in"))

    fixer = _Fixer(tables) if fix else None
    explained: dict[Key, int] = defaultdict(int)  # wallet minus ledger that the findings below account for
    # How much less the wallet holds pending than the ledger says, once every SUCCESS order is in the ledger.
    short: dict[tuple[str, str], int] = defaultdict(int)
    for (seller, currency, bucket), minor in ledger_buckets.items():
        if bucket == "pending":
            short[(seller, currency)] += minor - wallet_buckets.get((seller, currency, "pending"), 0)
    for order in no_payin:
        finding = _order_finding(Category.ORDER_SUCCESS_WITHOUT_LEDGER_ENTRY, order, "no payin transaction")
        finding.fixed = bool(fixer and fixer.redo(order, fixer.ledger_step))
        seller, currency, amount = finding.seller_account, finding.currency, finding.amount_minor
        short[(seller, currency)] += amount
        if not finding.fixed:
            explained[(seller, currency, "pending")] += amount
        report.findings.append(finding)
    for order in no_credit:
        finding = _order_finding(Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, order,
                                 "the wallet step of its charge did not apply the pay-in")
        seller, currency, amount = finding.seller_account, finding.currency, finding.amount_minor
        if short[(seller, currency)] >= amount:
            # The balance lacks it too: the step never ran, and running it applies it exactly once.
            short[(seller, currency)] -= amount
            finding.fixed = bool(fixer and fixer.redo(order, fixer.wallet_step))
            if not finding.fixed:
                explained[(seller, currency, "pending")] -= amount
        else:
            # The balance holds it but its movement record is gone: re-running would credit it twice.
            finding.detail = "the movement record is missing but the balance holds the pay-in: not re-driven"
        report.findings.append(finding)

    if fixer and fixer.changed:
        # The fixes moved wallet balances and ledger entries: everything is read again after them.
        return _with_fixed(reconcile(tables, fix=False, cutoff=cutoff, own=frozenset(fixer.redone)),
                           report.findings)

    for key in sorted(set(ledger_buckets) | set(wallet_buckets)):
        if key[:2] in active:
            report.checked["balances_in_flight"] += 1
            continue
        difference = wallet_buckets.get(key, 0) - ledger_buckets.get(key, 0) - explained.get(key, 0)
        if difference:
            report.findings.append(Finding(
                Category.WALLET_LEDGER_MISMATCH, key[0], key[1], abs(difference), [f"{key[0]}:{key[2]}"],
                f"{key[2]}: wallet {wallet_buckets.get(key, 0)}, ledger {ledger_buckets.get(key, 0)}"))

    for payout in tables.payouts.scan():
        report.checked["payouts"] += 1
        order_id = payout["payment_order_id"]
        if payout.get("payout_status") in ("TRANSFERRING", "TRANSFERRED") and payout.get("transfer_id") \
                and orders.get(order_id, ("",))[0] != "SUCCESS":
            report.findings.append(Finding(
                Category.TRANSFER_WITHOUT_PAID_ORDER, payout.get("seller_account", ""), payout.get("currency", ""),
                int(payout.get("net_minor", payout.get("amount_minor", 0))), [order_id, payout["transfer_id"]],
                f"order {orders.get(order_id, ('missing',))[0]}"))

    committed: dict[str, int] = defaultdict(int)
    refund_ids: dict[str, list[str]] = defaultdict(list)
    currency_of: dict[str, tuple[str, str]] = {}
    for refund in tables.refunds.scan():
        report.checked["refunds"] += 1
        if refund.get("refund_status") in ("PENDING", "SUCCEEDED"):
            order_id = refund["payment_order_id"]
            committed[order_id] += int(refund["amount_minor"])
            refund_ids[order_id].append(refund["refund_id"])
            currency_of[order_id] = (refund.get("seller_account", ""), refund.get("currency", ""))
    for order_id, minor in sorted(committed.items()):
        charged = orders.get(order_id, ("", 0))[1]
        if minor > charged:
            seller, currency = currency_of[order_id]
            report.findings.append(Finding(Category.REFUND_EXCEEDS_CHARGE, seller, currency, minor - charged,
                                           [order_id, *refund_ids[order_id]], f"refunds {minor} of {charged}"))
    return report


def _own(record: dict[str, Any], own: frozenset[str]) -> bool:
    return record.get("kind") == PAYIN and record.get("reference") in own


def _order_finding(category: Category, order: dict[str, Any], detail: str) -> Finding:
    return Finding(category, order["seller_account"], order["currency"], int(order["amount_minor"]),
                   [order["payment_order_id"]], detail)


def _with_fixed(second: InternalReport, first_pass: list[Finding]) -> InternalReport:
    """The fixes of the first pass, then what the second pass (after them) still finds."""
    second.findings = [f for f in first_pass if f.fixed] + second.findings
    return second


def _check_balanced(tx: dict[str, Any], report: InternalReport) -> None:
    sums: dict[str, int] = defaultdict(int)
    for entry in tx.get("entries", []):
        sums[entry["currency"]] += int(entry["amount_minor"])
    for currency, total in sorted(sums.items()):
        if total:
            seller = next((e["account"].partition(":")[2] for e in tx["entries"]
                           if e["account"].partition(":")[0] in _LEDGER_BUCKETS), "")
            report.findings.append(Finding(Category.LEDGER_UNBALANCED, seller, currency, abs(total),
                                           [tx["transaction_id"]], f"entries sum to {total}"))


def _add_ledger(tx: dict[str, Any], buckets: dict[Key, int], payins: dict[str, tuple[str, str, int]]) -> None:
    """As verification/invariants.py: pending = -sum(seller_pending:s), available = -sum(seller_available:s),
    transferred = the nets of `transfer` transactions, owed = sum(seller_receivable:s)."""
    for entry in tx.get("entries", []):
        prefix, _, seller = entry["account"].partition(":")
        amount = int(entry["amount_minor"])
        if prefix == "seller_receivable":
            buckets[(seller, entry["currency"], "owed")] += amount
        bucket = _LEDGER_BUCKETS.get(prefix)
        if bucket:
            buckets[(seller, entry["currency"], bucket)] -= amount
            if bucket == "available" and tx.get("kind") == TRANSFER:
                buckets[(seller, entry["currency"], "transferred")] += amount
            if tx.get("kind") == PAYIN and bucket == "pending":
                payins[tx["reference"]] = (seller, entry["currency"], -amount)


class _Fixer:
    """Redoes a step of the workflow for one order of a SUCCESS charge, through the step's own function (each
    applies once per order: the wallet's movement guard, the ledger's transaction id)."""

    def __init__(self, tables: Tables):
        self.tables = tables
        self.changed = False
        self.redone: set[str] = set()  # orders whose pay-in a step applied now

    def wallet_step(self, work: ChargeWork, share: Any) -> bool:
        from functions.wallet import handler as wallet_step

        return wallet_step.credit_pending(work, share, self.tables.wallet)

    def ledger_step(self, work: ChargeWork, share: Any) -> bool:
        from functions.ledger import handler as ledger_step

        return ledger_step.record_payin(work, share)[1]

    def redo(self, order: dict[str, Any], step: Callable[[ChargeWork, Any], bool]) -> bool:
        """True when the step applied now. False when it may not run (for a person), or found its work done:
        then the first pass read mid-write and the second pass (after the fixes) judges it again."""
        key = order.get("charge_key") or charge_key(order["checkout_id"], order["currency"])
        charge = self.tables.payments.get_charge(key)
        if not charge or charge.get("charge_status") != "SUCCESS":
            return False  # only a charge the PSP took is re-driven; anything else is for a person
        work = ChargeWork.from_charge_item(charge, attempt=int(charge.get("attempts", 1)) or 1)
        share = next((s for s in work.orders if s.payment_order_id == order["payment_order_id"]), None)
        if share is None:
            return False
        applied = step(work, share)
        self.changed = True  # read again after any redo, applied or not
        if applied:
            self.redone.add(order["payment_order_id"])
        return applied


# -- the report in the settlement bucket ---------------------------------------------------------------------

CSV_COLUMNS = ["record", "category", "seller_account", "currency", "amount", "count", "fixed", "ids", "detail"]


def write_json(report: InternalReport, out: IO[str]) -> None:
    json.dump({**report.summary(), "findings": [f.to_dict() for f in report.findings]}, out, indent=1)


def write_csv(report: InternalReport, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for category, values in report.totals().items():
        writer.writerow({"record": "summary", "category": category, "count": values["count"],
                         "fixed": values["fixed"]})
        for currency, minor in sorted(values["amounts"].items()):
            writer.writerow({"record": "amount", "category": category, "currency": currency,
                             "amount": Money(minor, currency).to_major()})
    for f in report.findings:
        writer.writerow({"record": "finding", "category": f.category.value, "seller_account": f.seller_account,
                         "currency": f.currency, "amount": Money(f.amount_minor, f.currency).to_major(),
                         "fixed": f.fixed, "ids": " ".join(f.ids), "detail": f.detail})


def write_html(report: InternalReport, out: IO[str]) -> None:
    summary = report.summary()
    html.render(out, "Internal reconciliation",
                {name: summary[name] for name in ("total", "fixed", "unexplained")}, report.totals())


def report_prefix(now: datetime) -> str:
    return f"{INTERNAL_REPORTS_PREFIX}{now.strftime('%Y-%m-%dT%H%M%SZ')}"


def run(*, fix: bool, config: Settings | None = None, now: datetime | None = None,
        tables: Tables | None = None, settle: timedelta | None = None) -> tuple[InternalReport, dict[str, str]]:
    """Reconcile, then write the JSON, CSV and HTML report to the settlement bucket; returns the keys.
    `settle` (default SETTLE): how long ago a change must be to be judged; 0 when the system is known quiet."""
    config = config or settings()
    now = now or clock.now()
    cutoff = clock.iso(now - (SETTLE if settle is None else settle))
    result = reconcile(tables or Tables.from_settings(config), fix=fix, cutoff=cutoff)
    prefix = report_prefix(now)
    keys = {"json": f"{prefix}.json", "csv": f"{prefix}.csv", "html": f"{prefix}.html"}
    upload(config.settlement_bucket, keys["json"], lambda out: write_json(result, out), "application/json")
    upload(config.settlement_bucket, keys["csv"], lambda out: write_csv(result, out), "text/csv")
    upload(config.settlement_bucket, keys["html"], lambda out: write_html(result, out), "text/html; charset=utf-8")
    return result, keys
