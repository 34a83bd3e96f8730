"""Double-entry transactions: immutable, balanced per currency, written once under a deterministic id.

Sign convention: an entry's amount is signed minor units, debit positive, credit negative. Every transaction,
and therefore all accounts together, sum to zero per currency. A pay-in debits the PSP receivable (the PSP owes
us the money) and credits the seller payable (we owe it to the seller); so a seller's wallet balance equals
minus the sum of that seller's `seller_payable` entries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from functions.shared import clock
from functions.shared.errors import LedgerConflict, UnbalancedTransaction
from functions.shared.money import Money
from functions.shared.tables import LedgerTable


def psp_receivable(psp: str) -> str:
    return f"psp_receivable:{psp}"


def seller_payable(seller_account: str) -> str:
    return f"seller_payable:{seller_account}"


def psp_fees(psp: str) -> str:
    return f"psp_fees:{psp}"


@dataclass(frozen=True)
class Entry:
    account: str
    amount: Money


@dataclass(frozen=True)
class Transaction:
    """`payment_order_id`: the order a transaction recorded under a PSP object's own id belongs to (a refund
    `refund#<PSP refund id>` names its order here), so it can be found by order; a pay-in's reference is its
    order already."""

    kind: str
    reference: str
    entries: tuple[Entry, ...]
    description: str = ""
    payment_order_id: str = ""

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise UnbalancedTransaction(f"{self.transaction_id}: a transaction needs at least two entries")
        totals: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            if entry.amount.minor == 0:
                raise UnbalancedTransaction(f"{self.transaction_id}: zero entry on {entry.account}")
            totals[entry.amount.currency] += entry.amount.minor
        unbalanced = {currency: total for currency, total in totals.items() if total != 0}
        if unbalanced:
            raise UnbalancedTransaction(f"{self.transaction_id} does not balance: {unbalanced}")

    @property
    def transaction_id(self) -> str:
        return f"{self.kind}#{self.reference}"

    def to_item(self) -> dict[str, Any]:
        item = {
            "transaction_id": self.transaction_id,
            "kind": self.kind,
            "reference": self.reference,
            "description": self.description or None,
            "entries": [
                {"account": e.account, "amount_minor": e.amount.minor, "currency": e.amount.currency}
                for e in self.entries
            ],
            "created_at": clock.iso(),
        }
        if self.payment_order_id:  # the key of a sparse index: absent, never empty or null
            item["payment_order_id"] = self.payment_order_id
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Transaction:
        return cls(
            kind=item["kind"],
            reference=item["reference"],
            description=item.get("description") or "",
            payment_order_id=item.get("payment_order_id") or "",
            entries=tuple(Entry(e["account"], Money(int(e["amount_minor"]), e["currency"])) for e in item["entries"]),
        )


def payin(payment_order_id: str, seller_account: str, amount: Money, psp: str) -> Transaction:
    return Transaction(
        kind="payin",
        reference=payment_order_id,
        entries=(Entry(psp_receivable(psp), amount), Entry(seller_payable(seller_account), -amount)),
    )


def psp_fee(reference: str, fee: Money, psp: str) -> Transaction:
    """A fee the PSP kept: our fee expense grows, what the PSP owes us shrinks."""
    return Transaction(
        kind="fee", reference=reference,
        entries=(Entry(psp_fees(psp), fee), Entry(psp_receivable(psp), -fee)),
    )


def record(transaction: Transaction, table: LedgerTable | None = None) -> bool:
    """Write the transaction once. True if written now, False if an identical one was there already.

    A different transaction under the same id raises LedgerConflict: history is never overwritten.
    """
    table = table or LedgerTable.from_settings()
    existing = table.put_once(transaction.to_item())
    if existing is None:
        return True
    if Transaction.from_item(existing).entries != transaction.entries:
        raise LedgerConflict(f"{transaction.transaction_id} exists with different entries")
    return False
