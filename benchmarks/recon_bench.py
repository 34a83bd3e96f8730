"""Parse-and-match of a 1,000,000-row Stripe itemized report: the recon matcher against a pandas baseline.

    .venv/bin/python benchmarks/recon_bench.py [--rows 1000000] [--file /tmp/recon_bench.csv]

Both sides read the same generated file (balance_change_from_activity.itemized.3, every documented column)
and compute the same categories; the run checks that their counts agree. Each side runs in its own
subprocess, so its peak memory (ru_maxrss: interpreter, imports and data together) is its own. The sides take
turns for `--repeat` rounds (3): each one's fastest run is reported, with its highest peak.

Each charge row is a checkout's charge in one currency (checkouts of 1 to 5 orders, two on average, some with
orders in USD and EUR: two charges), matched to the sum of that checkout's orders in that currency.

- recon: `functions.recon.parsers` streams the file; `Matcher` reads the checkouts' order lists, the orders and
  ledger transactions of each 1,000-row batch from a fake that builds them from the ids (as a remote store would
  return them: the data lives outside the process, and each answer is a new dict per order, as BatchGetItem's),
  and lists
  the window's order ids as the created index would (the matcher then reads only the orders the file did not
  settle). Every answer holds only the attributes the adapter's reads ask for (its ProjectionExpression,
  from the lists in functions/recon/ports.py; a pay-in is only its key): the fake
  checks this against the whole stored records when it starts. The collector runs with its batch setting
  (functions/recon/gctune.py), as in production: the matcher and the survey pass set it themselves.
- pandas: `read_csv(usecols=...)` of the columns needed, then `merge` against the checkouts' order lists and an
  orders DataFrame, each charge's orders summed by `groupby(...).transform`, and ledger id sets (the ledger side
  prefetched: a merge needs both sides in memory). Amounts go through float and are
  rounded to cents, the fastest pandas route (exact for amounts below 2^53 cents).
The ledger side's cost is inside both timings. The fake's own cost (a projected order dict per order, an order
list per checkout, an id per order of the window, a key per pay-in) is part of the recon figure, as a real
store's client would be. What is planted is listed in `generate`.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import functools
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from operator import mod, not_
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = datetime(2026, 11, 24, tzinfo=UTC)
SPREAD_S = 86_400 * 0.9
CUTOFF = timedelta(minutes=120)

ADDRESS = ("line1", "line2", "city", "state", "postal_code", "country")
COLUMNS = [
    "balance_transaction_id", "created_utc", "created", "available_on_utc", "available_on", "currency", "gross",
    "fee", "net", "reporting_category", "source_id", "description", "customer_facing_amount",
    "customer_facing_currency", "regulatory_tag", "automatic_payout_id", "automatic_payout_effective_at_utc",
    "automatic_payout_effective_at", "customer_id", "customer_email", "customer_name", "customer_description",
    *[f"{p}_{a}" for p in ("customer_shipping_address", "customer_address", "shipping_address", "card_address")
      for a in ADDRESS],
    "charge_id", "payment_intent_id", "charge_created_utc", "charge_created", "invoice_id", "invoice_number",
    "subscription_id", "payment_method_type", "is_link", "card_brand", "card_funding", "card_country",
    "statement_descriptor", "dispute_reason", "connected_account_id", "connected_account_name",
    "connected_account_country", "connected_account_direct_charge_id", "payment_metadata[checkout_id]",
    "payment_metadata[charge_key]", "refund_metadata[payment_order_id]",
]


# -- the data set: checkouts, orders and rows derived from an index, so both sides (and the fake) agree ---------

# Checkout c has SIZES[c % 10] orders (1 to 5, two on average), numbered on from those of checkout c - 1; one of 3
# or more orders in an even decade has its last order in EUR, so two charges (USD and EUR). The pattern repeats
# every PERIOD checkouts, which hold ORDERS_PER_PERIOD orders.
SIZES = (1, 2, 1, 3, 1, 1, 5, 1, 4, 1)
PERIOD = 20
FIRST = [sum(SIZES[k % 10] for k in range(j)) for j in range(PERIOD + 1)]  # first order of each, in the period
ORDERS_PER_PERIOD = FIRST[PERIOD]
_POSITION_CHECKOUT = np.array([k for k in range(PERIOD) for _ in range(SIZES[k % 10])])
_POSITION_EUR = np.array([SIZES[k % 10] >= 3 and k // 10 == 0 and j == SIZES[k % 10] - 1
                          for k in range(PERIOD) for j in range(SIZES[k % 10])])
LOST = 1000  # the amount of the order a k == 13 checkout lists and the orders table lacks

_STATUS = {4: "FAILED", 5: "EXECUTING"}  # by checkout, c % 1000: the orders of a charge share its outcome
# The fake store's vectorised reading of ids `po_<8 digits>` and `co_<8 digits>`.
_POWERS = 10 ** np.arange(7, -1, -1, dtype=np.int64)


def amount_of(i: int) -> int:
    return 500 + (i * 7919) % 250_000


def first_order(c: int) -> int:
    return c // PERIOD * ORDERS_PER_PERIOD + FIRST[c % PERIOD]


def checkout_of(i: Any) -> Any:
    """The checkout of order i (an int or a numpy array of them)."""
    return i // ORDERS_PER_PERIOD * PERIOD + _POSITION_CHECKOUT[i % ORDERS_PER_PERIOD]


def is_eur(i: Any) -> Any:
    return _POSITION_EUR[i % ORDERS_PER_PERIOD]


def charges_of(c: int) -> list[tuple[str, list[int]]]:
    """The charges of checkout c: (currency, its orders)."""
    orders = list(range(first_order(c), first_order(c) + SIZES[c % 10]))
    if is_eur(orders[-1]):
        return [("USD", orders[:-1]), ("EUR", orders[-1:])]
    return [("USD", orders)]


def intent_of(c: int, eur: bool) -> str:
    return f"pi_{c:08d}{'e' if eur else ''}"


def charge_id_of(c: int, eur: bool) -> str:
    return f"ch_{c:08d}{'e' if eur else ''}"


def status_of(c: int) -> str:
    return _STATUS.get(c % 1000, "SUCCESS")


def moment(c: int, checkouts: int) -> datetime:
    return BASE + timedelta(seconds=SPREAD_S * c / checkouts)


def checkouts_for(rows: int) -> int:
    return rows * 1000 // 1202  # each 1,000 checkouts make about 1,202 rows


def generate(path: Path, rows: int) -> None:
    """Planted in every 1,000 checkouts (k = c % 1000): one order's amount off (k 1), a charge in the wrong
    currency (2), an unknown checkout and PaymentIntent (3), a FAILED (4) and an EXECUTING (5) checkout, a
    duplicated row (6), a malformed row (7), rows naming only the PaymentIntent (8), a checkout the file lacks (9),
    a row naming only the checkout (11), a checkout listing an order the orders table lacks (13), a fee row (0);
    every 20th checkout has a refund of its order (half of them known to the ledger)."""
    checkouts = checkouts_for(rows)
    template = dict.fromkeys(COLUMNS, "")
    written = 0
    with path.open("w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        c = 0
        while written < rows:
            lines = [] if c % 1000 == 9 else charge_rows(c, checkouts, template)
            if c % 1000 == 6:
                lines.append(lines[0])
            if c % 20 == 10:
                lines.append(refund_row(c, checkouts, template))
            if c % 1000 == 0:
                lines.append(fee_row(c, checkouts, template))
            for line in lines[: rows - written]:
                writer.writerow(line)
                written += 1
            c += 1


def charge_rows(c: int, checkouts: int, template: dict[str, str]) -> list[Any]:
    k, when, lines = c % 1000, moment(c, checkouts).strftime("%Y-%m-%d %H:%M:%S"), []
    for currency, orders in charges_of(c):
        eur = currency == "EUR"
        gross = sum(map(amount_of, orders)) + (k == 1) + (LOST if k == 13 else 0)
        fee = 30 + gross * 29 // 1000
        checkout = "" if k == 8 else (f"co_x{c:08d}" if k == 3 else f"co_{c:08d}")
        row = dict(template)
        row.update({
            "balance_transaction_id": f"txn_{c:08d}{currency}", "created_utc": when, "created": when,
            "currency": "eur" if eur or k == 2 else "usd", "gross": f"{gross / 100:.2f}" if k != 7 else "n/a",
            "fee": f"{fee / 100:.2f}", "net": f"{(gross - fee) / 100:.2f}", "reporting_category": "charge",
            "source_id": charge_id_of(c, eur), "description": "Order, marketplace" if c % 10 == 0 else "",
            "charge_id": charge_id_of(c, eur),
            "payment_intent_id": "" if k == 11 else ("pi_x" + intent_of(c, eur)[3:] if k == 3 else intent_of(c, eur)),
            "card_brand": "visa", "payment_method_type": "card", "automatic_payout_id": "po_bench",
            "payment_metadata[checkout_id]": checkout,
            "payment_metadata[charge_key]": f"{checkout}#{currency}" if checkout else "",
        })
        lines.append(row.values())
    return lines


def refund_row(c: int, checkouts: int, template: dict[str, str]) -> Any:
    when, order = moment(c, checkouts).strftime("%Y-%m-%d %H:%M:%S"), first_order(c)
    refund = dict(template)
    refund.update({
        "balance_transaction_id": f"txn_r{c:08d}", "created_utc": when, "created": when, "currency": "usd",
        "gross": f"-{amount_of(order) // 2 / 100:.2f}", "fee": "0.00", "net": f"-{amount_of(order) // 2 / 100:.2f}",
        "reporting_category": "refund", "source_id": f"re_{c:08d}", "charge_id": charge_id_of(c, False),
        "payment_intent_id": intent_of(c, False), "automatic_payout_id": "po_bench",
        "payment_metadata[checkout_id]": f"co_{c:08d}", "refund_metadata[payment_order_id]": f"po_{order:08d}",
    })
    return refund.values()


def fee_row(c: int, checkouts: int, template: dict[str, str]) -> Any:
    when = moment(c, checkouts).strftime("%Y-%m-%d %H:%M:%S")
    row = dict(template)
    row.update({"balance_transaction_id": f"txn_f{c:08d}", "created_utc": when, "created": when, "currency": "usd",
                "gross": "-2.00", "fee": "0.00", "net": "-2.00", "reporting_category": "fee",
                "description": "Radar fees", "automatic_payout_id": "po_bench"})
    return row.values()


def time_of_day(seconds: int) -> str:
    return f"2026-11-24T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.000Z"


@functools.cache
def times_of_day() -> list[str]:
    """Every time of day as text, once (5 MB), for the pandas side's million records."""
    return list(map(time_of_day, range(86_400)))


def created_at(c: int, checkouts: int) -> str:
    """The orders' creation: one second before their checkout's charge."""
    seconds = int(SPREAD_S * c / checkouts) - 1
    return time_of_day(seconds) if seconds >= 0 else "2026-11-23T23:59:59.000Z"


def stored_order(i: int, checkouts: int) -> dict[str, Any]:
    """Order `i` whole, as the orders table holds it."""
    c, eur = int(checkout_of(i)), bool(is_eur(i))
    return {"payment_order_id": f"po_{i:08d}", "checkout_id": f"co_{c:08d}", "seller_account": "seller",
            "amount_minor": amount_of(i), "currency": "EUR" if eur else "USD", "payment_method": "pm_card_visa",
            "payment_order_status": status_of(c), "psp_reference": intent_of(c, eur),
            "charge_id": charge_id_of(c, eur), "charge_key": f"co_{c:08d}#{'EUR' if eur else 'USD'}", "attempts": 1,
            "created_at": created_at(c, checkouts), "updated_at": created_at(c, checkouts)}


def stored_event(c: int) -> dict[str, Any]:
    """Checkout c's payment event, as the payment events table holds it: it lists every order it placed."""
    orders = [{"payment_order_id": f"po_{i:08d}", "seller_account": "seller", "amount_minor": amount_of(i),
               "currency": currency} for currency, ids in charges_of(c) for i in ids]
    if c % 1000 == 13:
        orders.append({"payment_order_id": f"po_m{c:08d}", "seller_account": "seller", "amount_minor": LOST,
                       "currency": "USD"})
    return {"checkout_id": f"co_{c:08d}", "payment_orders": orders, "is_payment_done": True}


def stored_transaction(tx_id: str, checkouts: int) -> dict[str, Any] | None:
    """Ledger transaction `tx_id` whole, if the ledger holds it: the pay-in of each SUCCESS order, half the
    refunds."""
    kind, _, reference = tx_id.partition("#")
    digits = reference[3:]
    if not (len(digits) == 8 and digits.isdigit()):
        return None
    i = int(digits)
    if kind == "payin" and reference.startswith("po_") and i < first_order(checkouts) \
            and status_of(int(checkout_of(i))) == "SUCCESS":
        amount, c = amount_of(i), int(checkout_of(i))
    elif kind == "refund" and reference.startswith("re_") and refund_in_ledger(i):
        amount, c = amount_of(first_order(i)) // 2, i
    else:
        return None
    return {"transaction_id": tx_id, "kind": kind, "reference": reference, "created_at": created_at(c, checkouts),
            "entries": [{"account": "psp_receivable", "amount_minor": amount, "currency": "USD"},
                        {"account": "seller", "amount_minor": -amount, "currency": "USD"}]}


def projected(record: dict[str, Any], attributes: tuple[str, ...]) -> dict[str, Any]:
    return {name: record[name] for name in attributes if name in record}


def same(answer: Any, expected: Any) -> None:
    if answer != expected:
        raise AssertionError(f"the fake store answers {answer}, a projected read would answer {expected}")


def refund_in_ledger(c: int) -> bool:
    return c % 40 == 10


# -- recon side -----------------------------------------------------------------------------------------------

def _indices(ids: list[str], prefix: str, below: int) -> tuple[Any, list[str]]:
    """The index of each id that is exactly `<prefix><8 digits>` below `below`, and the id, for a whole batch at
    once: the characters of the ids side by side in a numpy array (12 wide: an id of 12 characters or more has a
    twelfth)."""
    chars = np.array(ids, dtype="U12").view(np.uint32).reshape(len(ids), 12)
    digits = chars[:, 3:11] - ord("0")  # unsigned: a character below "0" becomes a huge number
    index = digits.astype(np.int64) @ _POWERS
    start = np.array([ord(character) for character in prefix], np.uint32)
    ours = (chars[:, :3] == start).all(axis=1) & (digits < 10).all(axis=1) & (chars[:, 11] == 0) & (index < below)
    return index[ours], list(compress(ids, ours.tolist()))


_REFERENCE = {(False, "pi"): "pi_%08d", (True, "pi"): "pi_%08de", (False, "ch"): "ch_%08d", (True, "ch"): "ch_%08de"}
_INTENT_FORMAT, _CHARGE_FORMAT = ("pi_%08d", "pi_%08de"), ("ch_%08d", "ch_%08de")
_USD_EUR = ("USD", "EUR")
_WITH_EUR = [bool(_POSITION_EUR[FIRST[k + 1] - 1]) for k in range(PERIOD)]  # by c % PERIOD


class FakeStore:
    """Checkouts, orders and ledger as a remote store would answer them: a new record per key found, computed from
    the ids (nothing held here), handed to the matcher as BatchGetItem's answer would be.

    Each answer is projected as the adapter's reads are (the attribute lists of functions.recon.ports): the
    records are written out inline for speed (this stands for a remote store and must cost next to nothing),
    and checked once, at construction, against the projection of the whole stored record."""

    def __init__(self, checkouts: int):
        from functions.recon.adapters import listing
        from functions.recon.ports import ORDER_ATTRIBUTES, ROW_TRANSACTION_ATTRIBUTES, WINDOW_ORDER_ATTRIBUTES

        self.checkouts = checkouts
        self.n = first_order(checkouts)
        self.batches = 0
        for c in sorted({c for c in (0, 3, 4, 5, 10, 13, 50, checkouts - 1) if 0 <= c < checkouts}):
            same(self.checkout_orders([f"co_{c:08d}"]), {f"co_{c:08d}": listing(stored_event(c)["payment_orders"])})
            for i in range(first_order(c), first_order(c + 1)):
                whole, order_id = stored_order(i, checkouts), f"po_{i:08d}"
                same(self.orders([order_id]), {order_id: projected(whole, ORDER_ATTRIBUTES)})
                same(self.window_orders([order_id]), {order_id: projected(whole, WINDOW_ORDER_ATTRIBUTES)})
                same(self.payins([order_id]), {order_id} if stored_transaction(f"payin#{order_id}", checkouts)
                     else set())
            tx_id = f"refund#re_{c:08d}"
            tx = stored_transaction(tx_id, checkouts)
            same(self.transactions([tx_id]), {tx_id: projected(tx, ROW_TRANSACTION_ATTRIBUTES)} if tx else {})
        self.batches = 0

    def orders(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.batches += 1
        index, found = _indices(ids, "po_", self.n)
        checkouts = checkout_of(index)
        eur, numbers = is_eur(index).tolist(), checkouts.tolist()
        return {order_id: {"payment_order_id": order_id, "amount_minor": amount, "currency": currency,
                           "payment_order_status": status, "psp_reference": reference, "charge_id": charge_id}
                for order_id, amount, currency, status, reference, charge_id in zip(
                    found, (500 + (index * 7919) % 250_000).tolist(), map(_USD_EUR.__getitem__, eur),
                    map(_STATUS.get, (checkouts % 1000).tolist(), repeat("SUCCESS")),
                    map(mod, map(_INTENT_FORMAT.__getitem__, eur), numbers),
                    map(mod, map(_CHARGE_FORMAT.__getitem__, eur), numbers), strict=True)}

    def checkout_orders(self, ids: list[str]) -> dict[str, dict[str, list[str]]]:
        """Each checkout's orders by currency, as the adapter makes them of the payment event."""
        index, found = _indices(ids, "co_", self.checkouts)
        if not found:
            return {}
        firsts = (index // PERIOD * ORDERS_PER_PERIOD + np.array(FIRST)[index % PERIOD]).tolist()
        low = min(firsts)
        names = list(map("po_%08d".__mod__, range(low, max(firsts) + 5)))  # the ids of the batch's orders, once
        answer = {}
        for checkout_id, c, first in zip(found, index.tolist(), firsts, strict=True):
            at, k = first - low, c % PERIOD
            end = at + SIZES[k % 10]
            answer[checkout_id] = {"USD": names[at : end - 1], "EUR": [names[end - 1]]} if _WITH_EUR[k] \
                else {"USD": names[at:end]}
            if c % 1000 == 13:
                answer[checkout_id]["USD"].append(f"po_m{c:08d}")
        return answer

    def payins(self, ids: list[str]) -> set[str]:
        """The orders we have whose status is SUCCESS: each has its pay-in."""
        index, found = _indices(ids, "po_", self.n)
        return set(compress(found, map(not_, map(_STATUS.__contains__, (checkout_of(index) % 1000).tolist()))))

    def transactions(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for tx_id in ids:
            if tx_id.startswith("refund#re_") and len(digits := tx_id[10:]) == 8 and digits.isdigit() \
                    and refund_in_ledger(int(digits)):
                amount = amount_of(first_order(int(digits))) // 2
                found[tx_id] = {"transaction_id": tx_id, "entries": [
                    {"account": "psp_receivable", "amount_minor": amount, "currency": "USD"},
                    {"account": "seller", "amount_minor": -amount, "currency": "USD"}]}
        return found

    def refunds_of(self, ids: set[str]) -> dict[str, list[str]]:
        return {}

    def window_orders(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        self.batches += 1
        n = self.n
        return {order_id: next(self._records(i, i + 1)) for order_id in ids
                if len(digits := order_id[3:]) == 8 and digits.isdigit() and (i := int(digits)) < n}

    def created_between(self, start: str, end: str):  # type: ignore[no-untyped-def]
        """The created index's answer: ids only, in creation order (order i is created no later than i + 1)."""
        def created(i: int) -> str:
            return created_at(int(checkout_of(i)), self.checkouts)

        first, end_ = (bisect.bisect_left(range(self.n), bound, key=created) for bound in (start, end))
        return map("po_%08d".__mod__, range(first, end_))

    def order_ids_by_reference(self, references: set[str]) -> dict[str, str]:
        """The first order of the charge each PaymentIntent `pi_<c>` (USD) or `pi_<c>e` (EUR) names."""
        found = {}
        for reference in references:
            digits, eur = reference[3:11], reference[11:] == "e"
            if reference.startswith("pi_") and len(reference) in (11, 12) and digits.isdigit() \
                    and (c := int(digits)) < self.checkouts and (eur or len(reference) == 11):
                ids = dict(charges_of(c)).get("EUR" if eur else "USD")
                if ids:
                    found[reference] = f"po_{ids[0]:08d}"
        return found

    def all_orders(self):  # type: ignore[no-untyped-def]
        """Every order as the window reads it (the pandas side's prefetch)."""
        return self._records(0, self.n)

    def all_events(self):  # type: ignore[no-untyped-def]
        """Every checkout's order list (the pandas side's prefetch): (checkout_id, currency, payment_order_id)."""
        for c in range(self.checkouts):
            for checkout_id, by_currency in self.checkout_orders([f"co_{c:08d}"]).items():
                for currency, ids in by_currency.items():
                    for order_id in ids:
                        yield checkout_id, currency, order_id

    def _records(self, first: int, end: int):  # type: ignore[no-untyped-def]
        checkouts, spread = self.checkouts, SPREAD_S
        # the window reads a few orders, the pandas side all of them: that one formats each time of day once
        stamp = times_of_day().__getitem__ if end - first > 86_400 else time_of_day
        for i in range(first, end):
            c, eur = int(checkout_of(i)), bool(is_eur(i))
            seconds = int(spread * c / checkouts) - 1
            yield {"payment_order_id": f"po_{i:08d}", "amount_minor": 500 + (i * 7919) % 250_000,
                   "currency": _USD_EUR[eur], "payment_order_status": _STATUS.get(c % 1000, "SUCCESS"),
                   "psp_reference": _REFERENCE[eur, "pi"] % c, "charge_id": _REFERENCE[eur, "ch"] % c,
                   "created_at": stamp(seconds) if seconds >= 0 else "2026-11-23T23:59:59.000Z",
                   "checkout_id": f"co_{c:08d}"}


class Counting:
    def __init__(self) -> None:
        self.restarted = 0
        self.fees = 0
        self.carried: dict[str, dict[str, Any]] = {}

    def restart_order(self, order: dict[str, Any]) -> Any:
        from functions.recon.outcomes import Restart  # the pandas side imports none of the recon code

        self.restarted += 1
        return Restart.STARTED

    def record_fees(self, currency: str, fees: list[tuple[str, int]]) -> None:
        self.fees += len(fees)

    def fee_conflicts(self) -> list[Any]:
        return []

    def carry(self, order: dict[str, Any], first_seen: str) -> None:
        self.carried[order["payment_order_id"]] = {"first_seen": first_seen}

    def mark_raised(self, order_id: str, now: str) -> bool:
        return True

    def clear(self, order_id: str) -> None:
        self.carried.pop(order_id, None)

    def carried_items(self) -> dict[str, dict[str, Any]]:
        return {}


def run_recon(path: Path, checkouts: int) -> dict[str, Any]:
    from functions.recon import parsers
    from functions.recon.closing import Window
    from functions.recon.matching import Matcher, Policy
    from functions.recon.outcomes import Category, Outcome

    counts: dict[str, int] = dict.fromkeys((c.value for c in Category), 0)
    effects = Counting()

    def emit(outcome: Outcome) -> None:
        counts[outcome.category] += outcome.count

    class Carries:
        carried = staticmethod(effects.carried_items)
        carry = staticmethod(effects.carry)
        mark_raised = staticmethod(effects.mark_raised)
        clear = staticmethod(effects.clear)

    window = Window.of_file(moment(0, checkouts).replace(microsecond=0), latest_charge(path), CUTOFF)
    matcher = Matcher(Policy("stripe"), FakeStore(checkouts), effects, Carries(),
                      emit, window=window,
                      now=BASE + timedelta(days=1))
    with path.open("rb") as source:
        matcher.feed_all(parsers.stream("stripe", source))
    matcher.finish()
    return {"categories": {k: v for k, v in counts.items() if v}, "restarted": effects.restarted, "fees": effects.fees}


def latest_charge(path: Path) -> datetime:
    """The window's end comes from the file's survey pass in production; here the last row's time."""
    with path.open("rb") as source:
        source.seek(-4096, os.SEEK_END)
        last = source.read().decode().strip().splitlines()[-1]
    return datetime.fromisoformat(next(csv.reader([last]))[1]).replace(tzinfo=UTC)


# -- pandas side ------------------------------------------------------------------------------------------------

CHECKOUT_COL, REFUND_ORDER_COL = "payment_metadata[checkout_id]", "refund_metadata[payment_order_id]"


def run_pandas(path: Path, checkouts: int, *, records: bool = False) -> dict[str, Any]:
    """`records`: the ledger side built from the fake's order items (as a DynamoDB read returns them) instead of
    vectorised numpy arithmetic, which no real read of the orders can do."""
    import numpy as np
    import pandas as pd

    # With pyarrow installed, pandas 3 stores `str` columns in Arrow, which makes this baseline about twice as slow
    # and a third heavier: it keeps the storage it was written for, and that is fastest, Python strings.
    pd.set_option("mode.string_storage", "python")
    usecols = ["balance_transaction_id", "created_utc", "currency", "gross", "fee", "reporting_category",
               "source_id", "charge_id", "payment_intent_id", CHECKOUT_COL, REFUND_ORDER_COL]
    df = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    refund_ids = {f"re_{c:08d}" for c in range(10, checkouts, 40)}
    if records:
        store = FakeStore(checkouts)
        ords = pd.DataFrame.from_records(store.all_orders())
        ords["created_at"] = pd.to_datetime(ords.created_at, format="%Y-%m-%dT%H:%M:%S.%fZ", utc=True)
        listing = pd.DataFrame.from_records(store.all_events(), columns=["checkout_id", "currency", "order_id"])
    else:  # the ledger side, prefetched
        idx = np.arange(first_order(checkouts))
        c = checkout_of(idx)
        eur = is_eur(idx)
        digits = pd.Series(c).astype(str).str.zfill(8)
        suffix = np.where(eur, "e", "")
        created = (pd.Timestamp("2026-11-24", tz="UTC") + pd.to_timedelta(SPREAD_S * c / checkouts, unit="s")
                   ).floor("s") - pd.Timedelta(seconds=1)
        ords = pd.DataFrame({
            "payment_order_id": "po_" + pd.Series(idx).astype(str).str.zfill(8), "checkout_id": "co_" + digits,
            "psp_reference": "pi_" + digits + suffix, "charge_id": "ch_" + digits + suffix,
            "amount_minor": 500 + (idx * 7919) % 250_000, "currency": np.where(eur, "EUR", "USD"),
            "payment_order_status": np.where(c % 1000 == 4, "FAILED", np.where(c % 1000 == 5, "EXECUTING", "SUCCESS")),
            "created_at": created})
        lost = np.arange(13, checkouts, 1000)
        listing = pd.concat([ords[["checkout_id", "currency", "payment_order_id"]].rename(
            columns={"payment_order_id": "order_id"}), pd.DataFrame({
                "checkout_id": [f"co_{c:08d}" for c in lost], "currency": "USD",
                "order_id": [f"po_m{c:08d}" for c in lost]})], ignore_index=True)
    ords = ords.rename(columns={"payment_order_id": "order_id", "currency": "order_currency",
                                "payment_order_status": "status"})
    ords["has_payin"] = ords.status == "SUCCESS"
    return _match_pandas(df, ords, listing, refund_ids, checkouts)


def _match_pandas(df: Any, ords: Any, listing: Any, refund_ids: set[str], checkouts: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    counts: Counter[str] = Counter()
    df["minor"] = (pd.to_numeric(df.gross, errors="coerce") * 100).round()
    df["fee_minor"] = (pd.to_numeric(df.fee, errors="coerce") * 100).round()
    bad = df.minor.isna()
    counts["malformed_row"] += int(bad.sum())
    named_by_malformed = df.loc[bad, CHECKOUT_COL]
    df = df[~bad].copy()
    df["currency"] = df.currency.str.upper()
    charge = df.reporting_category == "charge"
    own = df.source_id.where(df.source_id != "", df.balance_transaction_id)
    df["ref"] = np.where(charge, df.payment_intent_id.where(df.payment_intent_id != "", df.charge_id), own)
    dup = df.duplicated(["reporting_category", "ref"])
    counts["duplicate_settlement"] += int(dup.sum())
    df = df[~dup]
    is_fee = df.reporting_category == "fee"
    fees = int(((df.fee_minor != 0) & ~is_fee).sum()) + int(is_fee.sum())
    counts["matched"] += int(is_fee.sum())

    settled, restarted = _charges_pandas(df[df.reporting_category == "charge"].copy(), ords, listing, counts)

    refunds = df[df.reporting_category == "refund"].merge(ords, how="left", left_on=REFUND_ORDER_COL,
                                                          right_on="order_id")
    unknown = refunds.order_id.isna()
    in_ledger = refunds.source_id.isin(refund_ids) & ~unknown
    counts["missing_in_ledger"] += int(unknown.sum())
    counts["matched"] += int(in_ledger.sum())
    counts["status_mismatch"] += int((~in_ledger & ~unknown).sum())

    start = pd.Timestamp(moment(0, checkouts).replace(microsecond=0))
    end = pd.Timestamp(df.created_utc.max(), tz="UTC") - CUTOFF
    unsettled = ~ords.order_id.isin(settled) & ~ords.checkout_id.isin(named_by_malformed)
    window = (ords.created_at >= start) & (ords.created_at < end)
    counts["missing_in_settlement"] += int((window & (ords.status == "SUCCESS") & unsettled).sum())
    return {"categories": {k: v for k, v in counts.items() if v}, "restarted": restarted, "fees": fees,
            "seconds_without_prefetch": time.perf_counter() - t0}


def _charges_pandas(charges: Any, ords: Any, listing: Any, counts: Counter[str]) -> tuple[Any, int]:
    """Each charge against its checkout's orders in its currency (or, for a checkout in one other currency, those):
    the checkout from the metadata, else from the order that records the PaymentIntent. Returns the orders the
    charges settle and how many are restarted."""
    import numpy as np
    import pandas as pd

    known = set(listing.checkout_id)
    by_reference = ords.drop_duplicates("psp_reference").set_index("psp_reference").checkout_id
    charges["checkout"] = charges[CHECKOUT_COL].where(charges[CHECKOUT_COL].isin(known),
                                                      charges.payment_intent_id.map(by_reference))
    found = charges.checkout.notna()
    counts["missing_in_ledger"] += int((~found).sum())
    charges = charges[found].reset_index(drop=True)
    charges["row"] = charges.index
    currencies = listing.groupby("checkout_id").currency.agg(["nunique", "first"])
    pairs = pd.MultiIndex.from_frame(listing[["checkout_id", "currency"]].drop_duplicates())
    has_currency = pd.MultiIndex.from_arrays([charges.checkout, charges.currency]).isin(pairs)
    single = charges.checkout.map(currencies["nunique"]) == 1
    charges["group_currency"] = np.where(has_currency, charges.currency,
                                         np.where(single, charges.checkout.map(currencies["first"]), ""))
    none = charges.group_currency == ""
    counts["currency_mismatch"] += int(none.sum())
    m = charges[~none].merge(listing, left_on=["checkout", "group_currency"], right_on=["checkout_id", "currency"],
                             suffixes=("", "_listed")).merge(ords, how="left", on="order_id", suffixes=("", "_order"))
    missing = m.amount_minor.isna()
    rows = m.groupby("row")
    m["agrees"] = (rows.amount_minor.transform("sum") == m.minor) & ~missing.groupby(m.row).transform("any")
    ref_differs = (m.ref != "") & (m.ref != m.psp_reference) & (m.ref != m.charge_id)
    stuck = m.status.isin(["EXECUTING", "NOT_STARTED"])
    category = np.select(
        [missing, ref_differs, m.currency != m.order_currency, ~m.agrees, m.status == "FAILED", stuck,
         ~m.has_payin.astype(bool)],
        ["missing_in_ledger", "missing_in_ledger", "currency_mismatch", "amount_mismatch", "missing_in_ledger",
         "missing_in_ledger", "missing_in_ledger"], "matched")
    counts.update(Counter(category))
    restarted = int((~missing & ~ref_differs & (m.currency == m.order_currency) & m.agrees & stuck).sum())
    return m.order_id, restarted


# -- driver -------------------------------------------------------------------------------------------------------

class _NoPandas:
    """An import finder for which pandas is not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def child(side: str, path: Path, rows: int) -> None:
    if side == "recon":
        # The recon function runs with the Lambda layer's packages, which have no pandas (a dev dependency, for the
        # baseline). Hidden, as there: pyarrow would otherwise import it on first use (~0.4 s and ~50 MB).
        sys.meta_path.insert(0, _NoPandas())
    start, cpu = time.perf_counter(), time.process_time()
    run = {"recon": run_recon, "pandas": run_pandas,
           "pandas-records": lambda p, n: run_pandas(p, n, records=True)}[side]
    result = run(path, checkouts_for(rows))
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(side: str, path: Path, rows: int) -> dict[str, Any]:
    answer = subprocess.run([sys.executable, __file__, "--child", side, "--file", str(path), "--rows", str(rows)],
                            check=True, capture_output=True, text=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with the highest peak memory of all runs."""
    fastest = dict(min(results, key=lambda result: result["seconds"]))
    fastest["peak_mb"] = max(result["peak_mb"] for result in results)
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, default=Path("/tmp/recon_bench_stripe.csv"))
    parser.add_argument("--child", choices=["recon", "pandas", "pandas-records"])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each side's fastest run is reported")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.rows)
        return
    marker = args.file.with_suffix(".rows")
    if not (args.file.exists() and marker.exists() and marker.read_text() == str(args.rows)):
        print(f"generating {args.rows:,} rows into {args.file} ...", flush=True)
        generate(args.file, args.rows)
        marker.write_text(str(args.rows))
    print(f"file: {args.file.stat().st_size / 1e6:.0f} MB", flush=True)
    # The sides take turns, round after round, so a slower spell of a shared machine falls on each of them alike;
    # each side's fastest run counts, as timeit's best of N does, and its highest peak.
    runs: dict[str, list[dict[str, Any]]] = {"recon": [], "pandas": [], "pandas-records": []}
    for _ in range(args.repeat):
        for side, results in runs.items():
            results.append(measure(side, args.file, args.rows))
    for side, results in runs.items():
        print(f"{side}: " + " ".join(f"{result['seconds']:.1f}" for result in results) + " s")
    ours, theirs, records = (best(results) for results in runs.values())
    for name, result in (("recon", ours), ("pandas", theirs), ("pandas, ledger side as records", records)):
        print(f"{name}: {result['seconds']:.1f} s (cpu {result['cpu_seconds']:.1f} s)  "
              f"peak {result['peak_mb']:7.0f} MB  "
              f"restarted={result['restarted']} fees={result['fees']} {dict(sorted(result['categories'].items()))}")
    print(f"pandas without building the ledger side: {theirs['seconds_without_prefetch']:.1f} s")
    same = all(ours[k] == other[k] for other in (theirs, records) for k in ("categories", "restarted", "fees"))
    print("categories agree" if same else "CATEGORIES DIFFER")
    print(f"on CPU time: recon {args.rows / ours['cpu_seconds']:.0f} rows/s, "
          f"pandas {args.rows / theirs['cpu_seconds']:.0f} rows/s, "
          f"pandas with the ledger side as records {args.rows / records['cpu_seconds']:.0f} rows/s")
    print(f"rows_per_s={args.rows / ours['seconds']:.0f} pandas_rows_per_s={args.rows / theirs['seconds']:.0f} "
          f"peak_mb={ours['peak_mb']:.0f} pandas_peak_mb={theirs['peak_mb']:.0f}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
