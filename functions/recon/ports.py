"""What the matcher reads and writes, as interfaces: the store (DynamoDB in production, fakes in tests and the
benchmark) satisfies them. Also the one batch read (`read_records`): what a batch of rows names, read once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

from functions.recon.outcomes import Restart
from functions.recon.rows import RowKind, SettlementRow
from functions.shared.money import Money

# Ledger transaction kinds that record a PSP row of an order (`<kind>#<PSP object id>`).
LEDGER_KIND = {
    RowKind.REFUND: "refund",
    RowKind.CHARGEBACK: "chargeback",
    RowKind.CHARGEBACK_REVERSAL: "chargeback_reversal",
}


def ledger_id(row: SettlementRow) -> str:
    """The ledger transaction that records a refund's or a dispute's row: under our own reference of it when the row
    carries one (an Adyen refund's refund_id), else under the PSP's object id."""
    return f"{LEDGER_KIND[row.kind]}#{row.own_reference or row.source_id}"


def names_its_charge(row: SettlementRow) -> bool:
    """A refund's or a dispute's row that names the charge it undoes (its checkout, in its currency), not an order."""
    return row.kind in LEDGER_KIND and not row.payment_order_id and bool(row.checkout_id)


# What the matcher reads of our records, and so all a read of them has to return (DynamoDB's
# ProjectionExpression): the one list the AWS adapter asks for and the fakes answer with. A record lacks an
# attribute it does not hold (psp, psp_reference), as a projected read leaves it out.
ORDER_ATTRIBUTES = ("payment_order_id", "amount_minor", "currency", "payment_order_status", "psp_reference",
                    "charge_id")
# The window's orders and those found by PSP reference are also filtered by PSP, a carried order keeps its
# creation time, and an order found by reference leads to its checkout.
WINDOW_ORDER_ATTRIBUTES = (*ORDER_ATTRIBUTES, "psp", "created_at", "checkout_id")
# A checkout's orders are listed by its payment event (`payment_orders`: id, amount and currency of each).
CHECKOUT_ATTRIBUTES = ("checkout_id", "payment_orders")
# A pay-in is only checked to exist; a refund's or a dispute's transaction is compared by `ledger_amount`, and
# names the order of a row that names only its charge (`names_its_charge`).
PAYIN_ATTRIBUTES = ("transaction_id",)
ROW_TRANSACTION_ATTRIBUTES = ("transaction_id", "entries", "payment_order_id")
# A payout (the Payouts table) against a transfer row, or as one of the window's transfers.
PAYOUT_ATTRIBUTES = ("payment_order_id", "psp", "currency", "net_minor", "payout_status", "transfer_id",
                     "first_transfer_at", "transferred_at", "destination", "netted_minor")


def sent_minor(payout: dict[str, Any]) -> int:
    """What the pay-out's transfer sent: its net less what was kept back for the seller's debt (`netted_minor`,
    functions/executor/netting.py)."""
    return int(payout["net_minor"]) - int(payout.get("netted_minor") or 0)

Listing = dict[str, list[str]]  # a checkout's order ids by currency


class Lookup(Protocol):
    """Read side: our orders and ledger.

    Each answer holds the attributes above, and only those need be there: `orders` ORDER_ATTRIBUTES,
    `window_orders` WINDOW_ORDER_ATTRIBUTES, `transactions` ROW_TRANSACTION_ATTRIBUTES (`payins` reads
    PAYIN_ATTRIBUTES, `checkout_orders` CHECKOUT_ATTRIBUTES). No read walks a whole table: the window comes from an
    index by creation time, rows without our id from one by reference.
    """

    def orders(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def checkout_orders(self, checkout_ids: list[str]) -> dict[str, Listing]:
        """For each checkout we hold, the ids of its orders by currency (as its payment event lists them)."""
        ...

    def payins(self, payment_order_ids: list[str]) -> set[str]:
        """The orders among these whose pay-in the ledger holds (its transaction `payin#<order>`)."""
        ...

    def transactions(self, transaction_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Ledger transactions of refunds and disputes (`<kind>#<PSP object id>`), by id."""
        ...

    def refunds_of(self, payment_order_ids: set[str]) -> dict[str, list[str]]:
        """Ids of the ledger refunds that name each order, for the orders that have any (the ledger's index by
        order: a refund is `refund#<PSP refund id>` and carries its `payment_order_id`)."""
        ...

    def window_orders(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def created_between(self, start: str, end: str) -> Iterable[str]:
        """Ids of the orders created in [start, end) (ISO timestamps)."""
        ...

    def order_ids_by_reference(self, psp_references: set[str]) -> dict[str, str]:
        """The order that records each PSP reference, for those some order records."""
        ...

    def payouts(self, payment_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The payouts of these orders we hold (PAYOUT_ATTRIBUTES), by order."""
        ...

    def transferred_between(self, start: str, end: str) -> Iterable[str]:
        """Ids of the orders whose payout was recorded TRANSFERRED in [start, end) (the Payouts table's
        `transferred` index)."""
        ...


class Fixes(Protocol):
    """Automatic fixes; each is idempotent, so a retried run applies nothing twice.

    `restart_order` gets the order as the Lookup answered it (its projected attributes only)."""

    def restart_order(self, order: dict[str, Any]) -> Restart: ...

    def record_fees(self, currency: str, fees: list[tuple[str, int]]) -> None:
        """A ledger fee transaction for each (PSP balance transaction, fee in minor units of `currency`)."""
        ...

    def fee_conflicts(self) -> list[tuple[str, Money]]: ...


class Carries(Protocol):
    """Orders we recorded as SUCCESS that no settlement file has settled yet (the Recon table)."""

    def carried(self) -> dict[str, dict[str, Any]]: ...

    def carry(self, order: dict[str, Any], first_seen: str) -> None: ...

    def mark_raised(self, payment_order_id: str, now: str) -> bool: ...

    def clear(self, payment_order_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class LedgerRecords:
    """What the ledger holds for a batch of rows: the orders whose pay-in it records, and the transactions of the
    refunds and disputes (by transaction id)."""

    paid: set[str] = field(default_factory=set)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Records:
    """What a batch of rows names: its checkouts' listings, the orders, and what the ledger holds of them."""

    orders: dict[str, dict[str, Any]]
    checkouts: dict[str, Listing]
    ledger: LedgerRecords


def read_records(lookup: Lookup, rows: list[SettlementRow], checkouts: Iterable[str] = (),
                 undoing: Iterable[SettlementRow] = ()) -> Records:
    """What `rows` and the block charges of `checkouts` name: the checkouts' listings, the orders (those the
    checkouts list, those the rows name), the pay-ins of the charged ones, the refunds' and disputes' own
    transactions. `undoing` are rows among `rows` that name the charge they undo (`names_its_charge`), in a format
    whose such rows are matched to an order (Adyen): their checkouts' listings, orders and own transactions are read
    too. One read of each kind per batch."""
    charge = RowKind.CHARGE
    undoing = list(undoing)
    named = {*checkouts, *(row.checkout_id for row in rows
                           if row.kind is charge and row.checkout_id and not row.payment_order_id)}
    listings = lookup.checkout_orders(list(named.union(row.checkout_id for row in undoing))) \
        if named or undoing else {}
    charged = {row.payment_order_id for row in rows if row.kind is charge and row.payment_order_id}
    charging = listings.values() if not undoing else [listings[c] for c in named if c in listings]
    charged.update(chain.from_iterable(chain.from_iterable(map(dict.values, charging))))
    ids = list(charged.union(row.payment_order_id for row in rows if row.kind in LEDGER_KIND
                             and row.payment_order_id))
    ids += chain.from_iterable(listings.get(row.checkout_id, {}).get(row.gross.currency, ()) for row in undoing)
    orders = lookup.orders(ids) if ids else {}
    known = list(filter(orders.__contains__, charged))
    wanted = [ledger_id(row) for row in rows
              if row.kind in LEDGER_KIND and row.source_id and row.payment_order_id in orders]
    wanted += [ledger_id(row) for row in undoing if row.source_id or row.own_reference]
    return Records(orders, listings, LedgerRecords(lookup.payins(known) if known else set(),
                                                   lookup.transactions(wanted) if wanted else {}))
