"""The end-of-file work: what needs the whole file read first. Our transfers of the transfer window the file
lacks, the window's orders the file did not settle (and the rows found only by PSP reference, read with them),
refunds searched by order, and the carried orders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import compress, islice
from operator import not_
from typing import Any

from functions.recon.outcomes import Category, Outcome
from functions.recon.ports import Carries, Lookup, sent_minor
from functions.recon.rows import SettlementRow
from functions.recon.rules import refund_outcome
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.status import OrderStatus

_IDS_PER_PASS = 65_536  # ids of an index read checked against a file's hashes at once


@dataclass(frozen=True)
class Window:
    """Orders created in [start, end) should be settled by the file: from its earliest row to its latest
    row minus the cut-off margin (a capture just before the PSP's cut-off settles in the next file)."""

    start: datetime
    end: datetime

    @classmethod
    def of_file(cls, earliest: datetime | None, latest: datetime | None, margin: timedelta) -> Window | None:
        if earliest is None or latest is None or latest - margin <= earliest:
            return None
        return cls(earliest, latest - margin)

    def bounds(self) -> tuple[str, str]:
        return clock.iso(self.start), clock.iso(self.end)


@dataclass
class CarryCounts:
    cleared: int = 0
    still_carried: int = 0
    raised: int = 0


def _not_in(ids: Iterator[str], hashes: set[int]) -> list[str]:
    """The ids whose hash is not in `hashes`, a pass at a time (no Python loop per id)."""
    left: list[str] = []
    while chunk := list(islice(ids, _IDS_PER_PASS)):
        left += compress(chunk, map(not_, map(hashes.__contains__, map(hash, chunk))))
    return left


def _of_psp(record: dict[str, Any], psp: str, default_psp: str) -> bool:
    return (record.get("psp") or default_psp) == psp


def unsettled_transfers(lookup: Lookup, window: Window, transferred: set[int], psp: str, default_psp: str,
                        batch_size: int) -> Iterator[Outcome]:
    """Our transfers of the transfer window that no transfer row of the file names. A payout whose first
    transfer attempt came before the window may have been transferred (and settled) before it: left out."""
    start, end = window.bounds()
    unsettled = _not_in(iter(lookup.transferred_between(start, end)), transferred)
    for at in range(0, len(unsettled), batch_size):
        payouts = lookup.payouts(unsettled[at : at + batch_size])
        for order_id in unsettled[at : at + batch_size]:
            payout = payouts.get(order_id)
            if payout is None or not payout.get("transfer_id") or not _of_psp(payout, psp, default_psp) \
                    or (payout.get("first_transfer_at") or payout.get("transferred_at") or start) < start:
                continue
            yield Outcome(Category.TRANSFER_MISSING_IN_SETTLEMENT, order_id, payout["transfer_id"],
                          Money(sent_minor(payout), payout["currency"]), None,
                          f"recorded TRANSFERRED at {payout.get('transferred_at')}; the file has no such transfer",
                          row_kind="payout", review=True)


@dataclass(frozen=True)
class WindowReading:
    """The orders of our PSP found by the PSP references of rows that named none (`by_reference`), and the
    window's SUCCESS orders the file did not settle (`unsettled`)."""

    by_reference: dict[str, dict[str, Any]]
    unsettled: list[dict[str, Any]]


@dataclass(frozen=True)
class Named:
    """What the file named: the hashes of the orders its charges settled, and the orders and checkouts its
    malformed rows named (reported with them, not again as unsettled)."""

    settled: set[int]
    by_malformed: set[str]
    checkouts_by_malformed: set[str]


def read_window(lookup: Lookup, window: Window | None, references: set[str], named: Named, psp: str,
                default_psp: str, batch_size: int) -> WindowReading:
    """The orders of `references` and the window's orders the file did not settle, in one read. Only those
    orders are read: the window's ids come from the created index and nearly all of them are settled by the
    file."""
    by_id = lookup.order_ids_by_reference(references) if references else {}
    unsettled: list[str] = []
    if window is not None:
        unsettled = _not_in(iter(lookup.created_between(*window.bounds())), named.settled)
        unsettled = [order_id for order_id in unsettled if order_id not in named.by_malformed]
    ids = list(dict.fromkeys([*by_id.values(), *unsettled]))
    orders: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), batch_size):
        orders.update(lookup.window_orders(ids[start : start + batch_size]))
    ours = {order_id: order for order_id, order in orders.items() if _of_psp(order, psp, default_psp)}
    return WindowReading(
        {reference: ours[order_id] for reference, order_id in by_id.items() if order_id in ours},
        [order for order_id in unsettled if (order := ours.get(order_id)) is not None
         and order.get("payment_order_status") == OrderStatus.SUCCESS
         and order.get("checkout_id") not in named.checkouts_by_malformed])


def refund_outcomes(lookup: Lookup, checks: list[tuple[SettlementRow, dict[str, Any]]]) -> Iterator[Outcome]:
    """Refunds the ledger does not hold under their own id, searched by their order."""
    if not checks:
        return
    recorded = lookup.refunds_of({order["payment_order_id"] for _, order in checks})
    for row, order in checks:
        yield refund_outcome(row, order, bool(recorded.get(order["payment_order_id"])))


def fee_conflict_outcomes(conflicts: list[tuple[str, Money]]) -> Iterator[Outcome]:
    for reference, fee in conflicts:
        yield Outcome(Category.AMOUNT_MISMATCH, psp_reference=reference, theirs=fee, review=True,
                      explanation=f"the ledger's fee#{reference} records a different fee", row_kind="fee")


@dataclass
class Carrying:
    """Orders of the window the file did not settle are carried; raised once they are old enough.

    A carried order settled by this file is cleared; one outside this window is raised when its age passes
    `missing_after`, and only once (the `raised_at` mark is a conditional write)."""

    carries: Carries
    settled: set[int]
    now: datetime
    missing_after: timedelta
    counts: CarryCounts

    def outcomes(self, candidates: list[dict[str, Any]], carried: dict[str, dict[str, Any]]) -> Iterator[Outcome]:
        now = clock.iso(self.now)
        handled: set[str] = set()
        for order in candidates:
            order_id = order["payment_order_id"]
            if hash(order_id) in self.settled:
                continue
            handled.add(order_id)
            carry = carried.get(order_id)
            if carry is None:
                self.carries.carry(order, now)
                carry = {"first_seen": now}
            yield self._missing(order, carry, now)
        for order_id, carry in carried.items():
            if order_id in handled:
                continue
            if hash(order_id) in self.settled:
                self.carries.clear(order_id)
                self.counts.cleared += 1
            elif self._due(carry) and not carry.get("raised_at"):
                yield self._missing(carry, carry, now)
            else:
                self.counts.still_carried += 1

    def _due(self, carry: dict[str, Any]) -> bool:
        return self.now - clock.parse_iso(carry["first_seen"]) >= self.missing_after

    def _missing(self, order: dict[str, Any], carry: dict[str, Any], now: str) -> Outcome:
        first_seen = carry["first_seen"]
        outcome = Outcome(Category.MISSING_IN_SETTLEMENT, order["payment_order_id"], order.get("psp_reference", ""),
                          Money(int(order["amount_minor"]), order["currency"]), None, row_kind="order")
        days = self.missing_after.days
        if carry.get("raised_at"):
            outcome.explanation = f"not settled since {first_seen}; raised on {carry['raised_at']}"
        elif self._due(carry) and self.carries.mark_raised(order["payment_order_id"], now):
            outcome.explanation = f"recorded SUCCESS, not settled since {first_seen} ({days}+ days): raised"
            outcome.review = True
            self.counts.raised += 1
        else:
            outcome.explanation = (f"recorded SUCCESS, not settled yet (first seen {first_seen}); "
                                   f"raised after {days} days")
        return outcome
