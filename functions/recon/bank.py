"""A bank deposit file (issue 17) against the checks and money orders we recorded: `incoming/bank/<day>.csv`.

Each deposit names its charge by the reference the buyer wrote (the orders' reference index finds the charge):
- matched: the charge's amount and currency, its funds recorded;
- amount_mismatch / currency_mismatch: the charge, for another amount (a human decides: nothing is recorded);
- deposit_not_recorded: the charge waits (or failed unpaid): the operator records it, or returns the money;
- deposit_without_charge: no charge has this reference (a typo on the check, someone else's money);
- duplicate_settlement: a second deposit of one reference in the file.
Then the day's receipts (the charges whose funds were recorded that UTC day, the sparse receipts index) without a
deposit in the file: recorded_without_deposit (recorded from a check that never reached the bank, or in the wrong
charge). The day is the file's name (`2026-12-06.csv`), else its latest deposit date. Every discrepancy goes to
review; nothing is fixed automatically (moving money by a bank line is an operator's decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from functions.recon.outcomes import Category, Outcome
from functions.recon.rows import ChargeBlock, MalformedRow, ParsedRow
from functions.shared.money import Money
from functions.shared.names import charge_key
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables


def file_day(name: str, latest: datetime | None) -> str:
    """The UTC day a deposit file covers: its name when it is one (YYYY-MM-DD[.csv]), else its latest deposit."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return datetime.strptime(stem, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        return latest.strftime("%Y-%m-%d") if latest else ""


def match_deposits(rows: Iterable[ParsedRow | ChargeBlock], day: str, payments: PaymentTables,
                   emit: Callable[[Outcome], None]) -> None:
    seen: set[str] = set()
    for row in rows:
        if isinstance(row, ChargeBlock):  # no columnar reader for this format
            raise TypeError("a bank deposit file is read as rows")
        if isinstance(row, MalformedRow):
            emit(Outcome(Category.MALFORMED_ROW, psp_reference=row.psp_reference, line=row.line,
                         explanation=row.reason, row_kind="deposit", review=True))
            continue
        reference = row.psp_reference
        if reference in seen:
            emit(Outcome(Category.DUPLICATE_SETTLEMENT, psp_reference=reference, theirs=row.gross, line=row.line,
                         explanation="a second deposit of this reference in the file", row_kind="deposit",
                         review=True))
            continue
        seen.add(reference)
        emit(_deposit(row.psp_reference, row.gross, row.line, payments))
    for key in payments.charges_with_receipts_of(day) if day else []:
        charge = payments.get_charge(key) or {}
        receipt = charge.get("offline_receipt") or {}
        if charge.get("offline_reference") in seen:
            continue
        emit(Outcome(Category.RECORDED_WITHOUT_DEPOSIT, psp_reference=str(charge.get("offline_reference", "")),
                     checkout_id=str(charge.get("checkout_id", "")),
                     ours=Money(int(receipt.get("amount_minor", charge.get("amount_minor", 0))),
                                str(receipt.get("currency", charge.get("currency", "")))),
                     explanation=f"funds recorded {receipt.get('recorded_at', '?')}; no deposit in the file of {day}",
                     row_kind="deposit", review=True))


def _deposit(reference: str, amount: Money, line: int, payments: PaymentTables) -> Outcome:
    charge = _charge_of(reference, payments)
    if charge is None:
        return Outcome(Category.DEPOSIT_WITHOUT_CHARGE, psp_reference=reference, theirs=amount, line=line,
                       explanation="no charge of ours has this reference", row_kind="deposit", review=True)
    ours = Money(int(charge["amount_minor"]), charge["currency"])
    found = {"psp_reference": reference, "checkout_id": charge["checkout_id"], "ours": ours, "theirs": amount,
             "line": line, "row_kind": "deposit"}
    if amount.currency != ours.currency:
        return Outcome(Category.CURRENCY_MISMATCH, explanation="deposited in another currency than the charge's",
                       review=True, **found)
    if amount != ours:
        return Outcome(Category.AMOUNT_MISMATCH, explanation=f"deposited {amount}, the charge is {ours}",
                       review=True, **found)
    if not charge.get("offline_receipt"):
        state = ("failed unpaid: return the money or reopen by hand"
                 if charge.get("charge_status") == OrderStatus.FAILED.value
                 else "waiting: record it (ops offline record)")
        return Outcome(Category.DEPOSIT_NOT_RECORDED, review=True, **found,
                       explanation=f"the funds were never recorded; the charge is {state}")
    return Outcome(Category.MATCHED, **found)


def _charge_of(reference: str, payments: PaymentTables) -> dict[str, Any] | None:
    for order_id in payments.order_ids_with_reference(reference):
        order = payments.get_order(order_id)
        if order is None:
            continue
        charge = payments.get_charge(order.get("charge_key") or charge_key(order["checkout_id"], order["currency"]))
        if charge is not None and charge.get("offline_reference") == reference:
            return charge
    return None
