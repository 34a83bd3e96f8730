"""The matching rules: pure functions of a row and the records it names, returning outcomes (no I/O).

A rule that needs an effect before it can decide says so with data: `charge_order_outcome` returns `HAND_BACK`
for an order still in progress, and the matcher hands its charge back, then asks `handed_back_outcome`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, count, repeat
from operator import and_, eq, itemgetter, not_
from typing import Any, Final

from functions.recon.outcomes import Category, Fix, Outcome, Restart
from functions.recon.ports import LedgerRecords, Listing, Records, ledger_id, sent_minor
from functions.recon.rows import ChargeBlock, RowKind, SettlementRow
from functions.shared.lazy import deferred
from functions.shared.money import Money
from functions.shared.status import OrderStatus, PayoutStatus

np = deferred("numpy")  # on first use: recon starts without it (tests/infra/test_cold_start.py)

_SUCCESS = OrderStatus.SUCCESS.value  # a plain str: tuples of it compare faster
_IN_PROGRESS = (OrderStatus.NOT_STARTED, OrderStatus.EXECUTING)


def charge_ids(listing: Listing | None, currency: str) -> list[str] | None:
    """The orders a checkout's charge in `currency` settles: its orders in that currency; when it has none there
    and all its orders are in one other currency, those (the charge is then in the wrong currency); else none.
    None when the checkout is unknown."""
    if listing is None:
        return None
    ids = listing.get(currency)
    if ids is None:
        return next(iter(listing.values())) if len(listing) == 1 else []
    return ids


@dataclass(frozen=True, slots=True)
class ChargeOrders:
    """The orders one charge row settles: those found, and those its checkout lists that the orders table
    lacks. `checkout_id` is empty for a charge of one order."""

    checkout_id: str
    orders: list[dict[str, Any]]
    missing: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [order["payment_order_id"] for order in self.orders] + self.missing


def charge_of(row: SettlementRow, records: Records) -> ChargeOrders | None:
    """The orders a charge row settles, from what the batch read; None when it names none we know."""
    orders = records.orders
    if row.payment_order_id:
        order = orders.get(row.payment_order_id)
        return ChargeOrders("", [order]) if order is not None else None
    ids = charge_ids(records.checkouts.get(row.checkout_id), row.gross.currency) if row.checkout_id else None
    if ids is None:
        return None
    return ChargeOrders(row.checkout_id, [orders[i] for i in ids if i in orders], [i for i in ids if i not in orders])


# -- the agreeing-charge rule ---------------------------------------------------------------------------------

def reference_agrees(order: dict[str, Any], reference: str) -> bool:
    """The charge's PSP reference is the one the order records (or its charge id: a report without the
    PaymentIntent names the charge, ch_...); an order or a row without a reference does not contradict."""
    recorded = order.get("psp_reference")
    return not recorded or not reference or reference == recorded or reference == order.get("charge_id")


def order_agrees(order: dict[str, Any], currency: str, reference: str, paid: set[str]) -> bool:
    """An order agrees with a charge when it records the charge's reference and currency, it is SUCCESS, and the
    ledger holds its pay-in. A charge agrees when all the orders it settles agree and their amounts sum to its
    gross (`charge_agrees`); its orders are then MATCHED, without explanation. This is the one rule: the block
    path applies it to a batch at once (`block_agreement`), the row path to one charge (`charge_order_outcome`)."""
    return (order["currency"] == currency and order.get("payment_order_status") == _SUCCESS
            and reference_agrees(order, reference) and order["payment_order_id"] in paid)


def sums_agree(group: ChargeOrders, total: int, gross: int) -> bool:
    """The amounts of a charge's orders sum to its gross, and none it lists is missing."""
    return total == gross and not group.missing


def charge_agrees(row: SettlementRow, group: ChargeOrders, total: int, paid: set[str]) -> bool:
    currency, reference = row.gross.currency, row.psp_reference
    return sums_agree(group, total, row.gross.minor) and all(
        order_agrees(order, currency, reference, paid) for order in group.orders)


# Nearly every order records exactly (the charge's currency, its reference, SUCCESS): one tuple comparison in C
# admits those; `order_agrees` decides the others.
_AGREEING = itemgetter("currency", "psp_reference", "payment_order_status")
# No such order: it agrees with no charge (its currency is None), and adds nothing to a sum.
_NOBODY: Final = {"payment_order_id": "", "amount_minor": 0, "currency": None, "psp_reference": None,
                  "payment_order_status": None}
_AMOUNT = itemgetter("amount_minor")


def block_agreement(block: ChargeBlock, start: int, end: int, groups: list[list[str] | None],
                    records: Records) -> list[bool]:
    """Which plain charges start..end of the block agree (`order_agrees` for each order, `sums_agree` for the
    charge). Every order of the batch is checked in one pass, in C (`map`); each charge's orders are then
    combined by numpy."""
    get, paid = records.orders.get, records.ledger.paid
    sizes = [len(ids) if ids else 0 for ids in groups]
    ids = list(chain.from_iterable(filter(None, groups)))
    found = list(map(get, ids, repeat(_NOBODY)))
    try:
        wanted = chain.from_iterable(map(repeat, zip(block.currencies[start:end], block.references[start:end],
                                                     repeat(_SUCCESS)), sizes))
        each = list(map(and_, map(eq, map(_AGREEING, found), wanted), map(paid.__contains__, ids)))
    except KeyError:  # an order that never reached the PSP has no PSP reference
        each = [False] * len(ids)
    if failed := list(compress(count(), map(not_, each))):
        ends = list(accumulate(sizes))  # order i is of charge start + bisect_right(ends, i)
        currencies, references = block.currencies, block.references
        for i in failed:
            at = start + bisect_right(ends, i)
            each[i] = order_agrees(found[i], currencies[at], references[at], paid)
    agreeing = np.fromiter(each, bool, len(ids))
    amounts = np.fromiter(map(_AMOUNT, found), np.int64, len(ids))
    counted = np.array(sizes) > 0
    starts = np.cumsum([0, *sizes])[:-1][counted]
    agrees = np.zeros(len(sizes), bool)
    if len(starts):
        agrees[counted] = np.logical_and.reduceat(agreeing, starts) & (
            np.add.reduceat(amounts, starts) == np.array(block.gross[start:end], np.int64)[counted])
    return agrees.tolist()


# -- outcomes of a charge's orders -----------------------------------------------------------------------------

HAND_BACK: Final = "hand back"  # the order is still in progress: hand its charge back, then `handed_back_outcome`


def charge_order_outcome(row: SettlementRow, order: dict[str, Any], group: ChargeOrders, total: int,
                         paid: set[str]) -> Outcome | str:
    """One order of a charge: MATCHED when the charge agrees for it (`order_agrees`, `sums_agree`), else the
    first reason it does not, in this order: reference, currency, amount, FAILED, in progress, pay-in."""
    gross = row.gross
    outcome = _order_outcome(row, order, group, total)
    if sums_agree(group, total, gross.minor) and order_agrees(order, gross.currency, row.psp_reference, paid):
        return outcome(Category.MATCHED, "")
    status = order.get("payment_order_status")
    if not reference_agrees(order, row.psp_reference):
        return outcome(Category.MISSING_IN_LEDGER,
                       f"the PSP settled {row.psp_reference}; the order records {order.get('psp_reference')}",
                       review=True)
    if order["currency"] != gross.currency:
        return outcome(Category.CURRENCY_MISMATCH, "settled in another currency", review=True)
    if not sums_agree(group, total, gross.minor):
        return outcome(Category.AMOUNT_MISMATCH, _amount_difference(row, group, total, _ours(row, order)),
                       review=True)
    if status in _IN_PROGRESS:
        return HAND_BACK
    if status != _SUCCESS:
        return outcome(Category.MISSING_IN_LEDGER, f"the PSP settled a charge we recorded as {status}", review=True)
    return outcome(Category.MISSING_IN_LEDGER, "order SUCCESS but the ledger has no pay-in transaction",
                   review=True)


def handed_back_outcome(row: SettlementRow, order: dict[str, Any], group: ChargeOrders, total: int,
                        restart: Restart) -> Outcome:
    """An order in progress whose charge was handed back to its workflow (`restart` is what that did)."""
    outcome, status = _order_outcome(row, order, group, total), order.get("payment_order_status")
    if restart is Restart.FINISHED:
        return outcome(Category.MATCHED, f"order {status} when read, completed by its workflow since")
    if restart is Restart.MOVED_ON:
        return outcome(Category.MISSING_IN_LEDGER, f"order {status} when read and settled by the PSP, but no longer "
                       "in progress and not SUCCESS", review=True)
    if restart is Restart.NO_CHARGE:
        return outcome(Category.MISSING_IN_LEDGER, f"order {status} and settled by the PSP, but no charge of it is "
                       "stored to hand back", review=True)
    note = "its charge was handed back to its workflow" if restart is Restart.STARTED else \
        "its charge is already in the sweeper's hands"
    return outcome(Category.MISSING_IN_LEDGER, f"order {status} but settled by the PSP: {note} to complete it",
                   fix=Fix.WORKFLOW_RESTARTED)


def _ours(row: SettlementRow, order: dict[str, Any]) -> Money:
    # When the order's amount equals the row's (nearly always) the row's Money stands for it.
    gross = row.gross
    if order["currency"] == gross.currency and order["amount_minor"] == gross.minor:
        return gross
    return Money(int(order["amount_minor"]), order["currency"])


def _order_outcome(row: SettlementRow, order: dict[str, Any], group: ChargeOrders,
                   total: int) -> Callable[..., Outcome]:
    """The outcome maker of one order of a charge. `ours` is the order's amount; `theirs` is the charge's gross
    when the charge settles this one order, the order's share when the charge's sum agrees, and unknown (None)
    otherwise."""
    ours = _ours(row, order)
    single = not group.missing and len(group.orders) == 1
    theirs = row.gross if single else (ours if sums_agree(group, total, row.gross.minor) else None)

    def outcome(category: Category, explanation: str, *, review: bool = False, fix: Fix = Fix.NONE) -> Outcome:
        return Outcome(category, order["payment_order_id"], row.psp_reference or row.reference, ours, theirs,
                       explanation, row.line, row.psp_type, fix, review, checkout_id=group.checkout_id)

    return outcome


def _amount_difference(row: SettlementRow, group: ChargeOrders, total: int, ours: Money) -> str:
    if len(group.orders) == 1 and not group.missing:
        return f"settled {row.gross}, the order is for {ours}"
    held = f"its {len(group.orders)} order{'s' if len(group.orders) != 1 else ''} we hold sum to " \
           f"{Money(total, row.gross.currency)}"
    missing = f" ({len(group.missing)} more it lists are missing)" if group.missing else ""
    return f"the charge of checkout {group.checkout_id} settled {row.gross}; {held}{missing}"


def lost_order_outcome(row: SettlementRow, group: ChargeOrders, order_id: str) -> Outcome:
    """An order a charge's checkout lists that the orders table lacks."""
    return Outcome(Category.MISSING_IN_LEDGER, order_id, row.psp_reference or row.reference,
                   explanation=f"checkout {group.checkout_id} lists this order, the orders table has no such order",
                   line=row.line, row_kind=row.psp_type, review=True, checkout_id=group.checkout_id)


def duplicate_charge_outcome(row: SettlementRow, group: ChargeOrders) -> Outcome:
    first = group.orders[0] if group.orders else None
    if row.psp_reference == (first or {}).get("psp_reference"):
        explanation = f"{row.psp_type} {row.reference} is settled more than once in this file"
    elif group.checkout_id:
        explanation = f"a second charge of checkout {group.checkout_id} in {row.gross.currency} is settled in this " \
                      "file"
    else:
        explanation = "a second charge of this order is settled in this file"
    return row_outcome(row, Category.DUPLICATE_SETTLEMENT, first if not group.checkout_id else None, explanation,
                       review=True)


def no_order_in_currency_outcome(row: SettlementRow, group: ChargeOrders) -> Outcome:
    return row_outcome(row, Category.CURRENCY_MISMATCH, None, f"checkout {group.checkout_id} has no order in "
                       f"{row.gross.currency} (its orders are in several other currencies)", review=True)


# -- other rows ------------------------------------------------------------------------------------------------

def row_outcome(row: SettlementRow, category: Category, order: dict[str, Any] | None, explanation: str,
                *, review: bool = False, fix: Fix = Fix.NONE, ours: Money | None = None) -> Outcome:
    """The outcome of a row as a whole; `ours` defaults to the order's amount."""
    if ours is None and order is not None:
        ours = Money(int(order["amount_minor"]), order["currency"])
    return Outcome(category, order["payment_order_id"] if order else row.payment_order_id,
                   row.psp_reference or row.reference, ours, row.gross, explanation, row.line, row.psp_type, fix,
                   review, checkout_id=row.checkout_id)


def ledger_amount(transaction: dict[str, Any]) -> Money | None:
    """The amount a transaction moves: the sum of its debits (positive entries), in its first currency."""
    entries = transaction.get("entries") or []
    if not entries:
        return None
    currency = entries[0]["currency"]
    total = sum(int(e["amount_minor"]) for e in entries if e["currency"] == currency and int(e["amount_minor"]) > 0)
    return Money(total, currency)


def against_order_outcome(row: SettlementRow, order: dict[str, Any], ledger: LedgerRecords) -> Outcome | None:
    """A refund's or a dispute's row against its order's ledger records. None for a refund the ledger does not
    hold under its own id: it is searched by order at the end of the file (`refund_outcome`)."""
    tx = ledger.transactions.get(ledger_id(row))
    if tx is not None:
        recorded = ledger_amount(tx)
        if recorded is not None and recorded.currency != row.gross.currency:
            return row_outcome(row, Category.CURRENCY_MISMATCH, order,
                               f"ledger records the {row.kind} in {recorded.currency}", review=True, ours=recorded)
        if recorded is not None and recorded.minor != abs(row.gross.minor):
            return row_outcome(row, Category.AMOUNT_MISMATCH, order, f"ledger records {recorded} for this {row.kind}",
                               review=True, ours=recorded)
        return row_outcome(row, Category.MATCHED, order, "", ours=recorded)
    if row.kind is RowKind.REFUND:
        return None
    return row_outcome(row, Category.STATUS_MISMATCH, order,
                       f"a {row.kind.replace('_', ' ')} at the PSP that our ledger lacks", review=True)


def undone_order(row: SettlementRow, records: Records) -> dict[str, Any] | Outcome:
    """The order a refund's or a dispute's row undoes when the row names its charge (checkout and currency), not an
    order: Adyen's Merchant Reference is the payment's, our charge key. The order the row's own ledger transaction
    names (a refund's refund_id, its Modification Merchant Reference), else the charge's one order. Never a guess:
    a row of a charge of several orders that no transaction of ours explains, a transaction naming an order outside
    the charge, or a checkout we do not hold is an unexplained outcome."""
    checkout, currency, what = row.checkout_id, row.gross.currency, row.kind.replace("_", " ")
    charge = f"the charge of checkout {checkout} in {currency}"
    listing = records.checkouts.get(checkout)
    if listing is None:
        return row_outcome(row, Category.MISSING_IN_LEDGER, None, f"a {what} of {charge}, a checkout we do not hold",
                           review=True)
    ids, orders = listing.get(currency, []), records.orders
    transaction = records.ledger.transactions.get(ledger_id(row))
    named = transaction.get("payment_order_id") if transaction is not None else None
    if named:
        if named in ids and named in orders:
            return orders[named]
        return row_outcome(row, Category.STATUS_MISMATCH, None, f"the ledger's {ledger_id(row)} names order {named}, "
                           f"which is not an order of {charge}", review=True)
    if len(ids) == 1:
        if ids[0] in orders:
            return orders[ids[0]]
        return row_outcome(row, Category.MISSING_IN_LEDGER, None, f"checkout {checkout} lists order {ids[0]} for "
                           f"this {what}, the orders table has no such order", review=True)
    if not ids:
        return row_outcome(row, Category.CURRENCY_MISMATCH, None, f"a {what} in {currency}: checkout {checkout} has "
                           f"no order in {currency}", review=True)
    ours = f"names our {what} {row.own_reference}, which our ledger does not hold" if row.own_reference \
        else f"names no {what} of ours"
    return row_outcome(row, Category.STATUS_MISMATCH, None, f"a {what} of {charge}, which settled {len(ids)} "
                       f"orders; the row {ours}: which order it undoes is not known", review=True)


def refund_outcome(row: SettlementRow, order: dict[str, Any], recorded: bool) -> Outcome:
    """A refund searched by its order: `recorded` when the ledger holds a refund of that order."""
    if recorded:
        return row_outcome(row, Category.MATCHED, order, "refund recorded in the ledger for this order")
    return row_outcome(row, Category.STATUS_MISMATCH, order, "a refund at the PSP that our ledger lacks", review=True)


def unknown_row_outcome(row: SettlementRow) -> Outcome:
    """A row that names no order we hold, not even by its PSP reference."""
    what = f"payment_order_id {row.payment_order_id!r}" if row.payment_order_id else "no payment_order_id"
    return row_outcome(row, Category.MISSING_IN_LEDGER, None, f"the PSP moved money we have no order for ({what}, "
                       f"reference {row.psp_reference or '-'})", review=True)


def payout_outcome(row: SettlementRow, batch_net: dict[tuple[str, str], int]) -> Outcome:
    """A payout row against the net of its batch's activity in the file."""
    paid = row.net if row.net is not None else row.gross
    key = (row.batch_id, paid.currency)
    if key not in batch_net:
        return row_outcome(row, Category.MATCHED, None, "payout of activity outside this file: nothing to check it "
                           "against")
    activity = Money(batch_net[key], paid.currency)
    if activity.minor + paid.minor == 0:
        return row_outcome(row, Category.MATCHED, None, "the batch's net equals its payout")
    return row_outcome(row, Category.AMOUNT_MISMATCH, None, f"the batch's net is {activity}, the payout {-paid}",
                       review=True, ours=activity)


def transfer_outcome(row: SettlementRow, payout: dict[str, Any] | None) -> Outcome:
    """A transfer row against our payout of the order it names. `theirs` is the amount the PSP sent (the row's
    gross, negative, turned round); `ours` what the payout's transfer sent: its net less what was netted."""
    theirs = -row.gross
    ours = Money(sent_minor(payout), payout["currency"]) \
        if payout is not None and payout.get("net_minor") is not None else None

    def outcome(category: Category, explanation: str, *, review: bool = True) -> Outcome:
        return Outcome(category, row.payment_order_id, row.reference, ours, theirs, explanation, row.line,
                       row.psp_type, review=review)

    sent = f"the PSP transferred {theirs}{f' to {row.destination}' if row.destination else ''}"
    if not row.payment_order_id:
        return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS, f"{sent}, naming no order")
    if payout is None:
        return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS, f"{sent}; we hold no payout of this order")
    status, recorded = payout.get("payout_status"), payout.get("transfer_id")
    if recorded != row.reference:
        if recorded:
            return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS,
                           f"{sent}: a second transfer of this order, our payout records {recorded}")
        if status == PayoutStatus.TRANSFERRING:  # its answer was lost: its next attempt finds it by its key
            return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS,
                           f"{sent}; our payout is {status}: its next attempt records it", review=False)
        return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS, f"{sent}; our payout is {status} and records no transfer")
    if ours is None or ours.currency != theirs.currency:
        return outcome(Category.TRANSFER_CURRENCY_MISMATCH,
                       f"{sent}; our payout's net is {ours if ours is not None else 'not set'}")
    if ours.minor != theirs.minor:
        netted = int(payout.get("netted_minor") or 0)
        what = f"net less {Money(netted, ours.currency)} netted" if netted else "net"
        return outcome(Category.TRANSFER_AMOUNT_MISMATCH, f"{sent}; our payout's {what} is {ours}")
    ours_to = payout.get("destination")
    if row.destination and ours_to and row.destination != ours_to:
        return outcome(Category.TRANSFER_DESTINATION_MISMATCH, f"{sent}; our payout sent it to {ours_to}")
    return outcome(Category.MATCHED, "" if status == PayoutStatus.TRANSFERRED else f"our payout is {status}",
                   review=False)
