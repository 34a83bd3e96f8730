"""Matching settlement rows against our orders and ledger, in batches, with flat memory.

A charge row of a format charged per checkout (Stripe) is the checkout's charge in one currency: it settles
every order of that checkout in that currency, and is matched against their sum (amount, currency, PSP
reference), each order reported. It is found by its checkout (metadata), else by its PSP reference (the order
that records the PaymentIntent leads to its checkout). A charge naming one order (the per-order formats, Adyen
and PayPal, and Stripe charges made before checkouts were charged once) settles that order. Other rows
(refunds, disputes) are matched by payment_order_id, then by PSP reference. Rows arrive in file order; every
`batch_size` rows the checkouts, orders and ledger transactions they name are read in one batch (one BatchGet
per 100 keys), so a file of any size never holds more than one batch of orders.

What the matcher keeps for the whole file, and why:
- `settled`: one 64-bit hash per order id charged in the file, to recognise a charge settled twice or a
  second charge of one order (`duplicate_settlement`), and to find the orders of the file's window the file
  does not settle (`missing_in_settlement`);
- `seen`: one 64-bit hash per (PSP row type, PSP object) of the other rows (refunds, disputes, fees, batch
  rows, charges of no known order), for their duplicates.
Python's `hash()` of a str is 64 bits: two different keys collide with probability about n²/2⁶⁵ (3·10⁻⁸
for a million keys). A set costs about 60 bytes per key (the int and its slot): ~60 MB per million orders.
- rows that name no known order (`deferred`) and refunds whose ledger record must be searched by order:
  a handful in a healthy file; they are resolved once, at the end, through indexes (PSP reference, order);
- `transferred`: one 64-bit hash per order a transfer row names, to find our transfers of the file's window
  the file lacks (`transfer_missing_in_settlement`).

Transfers (Stripe Connect: a seller's net share of an order sent to the seller's account) are matched to our
payout of the order they name (its metadata), a batch at a time: its transfer id, currency and net. The ledger
is not touched (the Transfer worker journals each transfer); a transfer reversal is reported, unexplained, until
refunds record reversals.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import chain, compress, islice, repeat
from operator import and_, attrgetter, eq, itemgetter, not_
from typing import Any, Protocol

from functions.recon.gctune import batch_collection
from functions.recon.outcomes import Category, Fix, Outcome, Restart
from functions.recon.rows import ChargeBlock, MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.shared import clock
from functions.shared.lazy import deferred
from functions.shared.money import Money
from functions.shared.status import OrderStatus, PayoutStatus

np = deferred("numpy")  # on first use: recon starts without it (tests/infra/test_cold_start.py)

# Ledger transaction kinds that record a PSP row of an order (`<kind>#<PSP object id>`).
LEDGER_KIND = {
    RowKind.REFUND: "refund",
    RowKind.CHARGEBACK: "chargeback",
    RowKind.CHARGEBACK_REVERSAL: "chargeback_reversal",
}


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
# A pay-in is only checked to exist; a refund's or a dispute's transaction is compared by `ledger_amount`.
PAYIN_ATTRIBUTES = ("transaction_id",)
ROW_TRANSACTION_ATTRIBUTES = ("transaction_id", "entries")
# A payout (the Payouts table) against a transfer row, or as one of the window's transfers.
PAYOUT_ATTRIBUTES = ("payment_order_id", "psp", "currency", "net_minor", "payout_status", "transfer_id",
                     "first_transfer_at", "transferred_at")


_line = attrgetter("line")
_SHARED_FIELDS = itemgetter("currency", "psp_reference", "payment_order_status")  # every order of a charge's
_AMOUNT = itemgetter("amount_minor")


def _shared_fields(order: dict[str, Any]) -> tuple[Any, ...]:
    """_SHARED_FIELDS of an order that may lack some of them."""
    return order["currency"], order.get("psp_reference"), order.get("payment_order_status")


Listing = dict[str, list[str]]  # a checkout's order ids by currency


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


_SUCCESS = OrderStatus.SUCCESS.value  # a plain str: tuples of it compare faster
# No such order: it agrees with no charge (its currency is None), and adds nothing to a sum.
_NOBODY = {"amount_minor": 0, "currency": None, "psp_reference": None, "payment_order_status": None}


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


class Lookup(Protocol):
    """Read side: our orders and ledger (DynamoDB in production, fakes in tests and the benchmark).

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
class Policy:
    psp: str
    default_order_psp: str = "stripe"
    missing_after: timedelta = timedelta(days=3)
    batch_size: int = 1000
    # A charge found only by its PSP reference settles its checkout's orders in its currency (Stripe); in a
    # per-order format, the one order that records the reference.
    charged_per_checkout: bool = True


@dataclass
class CarryCounts:
    cleared: int = 0
    still_carried: int = 0
    raised: int = 0


@dataclass
class Matcher:
    """Feed it parsed rows, then call finish(): every order a charge row settles, every other row and every order
    of the window is counted in exactly one Outcome (the agreeing charges of a block batch share one, with the
    count of their orders). A charge row that settles no order of ours (unknown, a duplicate, a currency its
    checkout does not have) is one outcome."""

    policy: Policy
    lookup: Lookup
    fixes: Fixes
    carries: Carries
    emit: Callable[[Outcome], None]
    window: Window | None = None
    now: datetime = field(default_factory=clock.now)
    # Our transfers recorded in [start, end) should be in the file (a format that carries transfers only).
    transfer_window: Window | None = None
    carry_counts: CarryCounts = field(default_factory=CarryCounts)
    _buffer: list[SettlementRow] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)
    _settled: set[int] = field(default_factory=set)
    _batch_net: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _payouts: list[SettlementRow] = field(default_factory=list)
    _deferred: list[SettlementRow] = field(default_factory=list)
    _refund_checks: list[tuple[SettlementRow, dict[str, Any]]] = field(default_factory=list)
    _named_by_malformed: set[str] = field(default_factory=set)
    _checkouts_named_by_malformed: set[str] = field(default_factory=set)
    _transfers: list[SettlementRow] = field(default_factory=list)
    _transferred: set[int] = field(default_factory=set)

    # -- rows --------------------------------------------------------------------------------------

    def feed(self, row: ParsedRow) -> None:
        self._feed_all((row,))

    def feed_all(self, rows: Iterable[ParsedRow]) -> None:
        """Feed rows in file order: the same as feed() for each, without a method call per row."""
        with batch_collection():
            self._feed_all(rows)

    def _feed_all(self, items: Iterable[ParsedRow | ChargeBlock]) -> None:
        """Rows are taken from the parser a batch at a time (islice, no Python loop per row); malformed ones are
        reported at once, as they come, the others matched when the batch is full. A ChargeBlock is matched as
        it comes, after the rows before it; while blocks come, they are taken one at a time."""
        source, size, take = iter(items), self.policy.batch_size, 1
        while chunk := list(islice(source, take)):
            if any(type(item) is ChargeBlock for item in chunk):
                for item in chunk:
                    if type(item) is ChargeBlock:
                        self._flush()
                        self._match_block(item)
                    else:
                        self._take([item])
                take = 1
            else:
                self._take(chunk)
                take = size - len(self._buffer)

    def _take(self, chunk: list[ParsedRow]) -> None:
        self._buffer += self._well_formed(chunk)
        if len(self._buffer) >= self.policy.batch_size:
            self._flush()

    def _well_formed(self, rows: list[ParsedRow]) -> list[SettlementRow]:
        """The rows that are not malformed; the malformed ones are reported here, as they come."""
        if not any(isinstance(row, MalformedRow) for row in rows):
            return rows  # type: ignore[return-value]
        for row in rows:
            if isinstance(row, MalformedRow):
                self._malformed(row)
        return [row for row in rows if not isinstance(row, MalformedRow)]

    def _malformed(self, row: MalformedRow) -> None:
        # The orders it names are reported here: not again as unsettled by the window check.
        if row.payment_order_id:
            self._named_by_malformed.add(row.payment_order_id)
        elif row.checkout_id:
            self._checkouts_named_by_malformed.add(row.checkout_id)
        self.emit(Outcome(Category.MALFORMED_ROW, row.payment_order_id, row.psp_reference,
                          explanation=row.reason, line=row.line, review=True, checkout_id=row.checkout_id))

    def _read(self, rows: list[SettlementRow], checkouts: Iterable[str] = ()) -> Records:
        """What `rows` and the block charges of `checkouts` name: the checkouts' listings, the orders (those the
        checkouts list, those the rows name), the pay-ins of the charged ones, the refunds' and disputes' own
        transactions."""
        charge = RowKind.CHARGE
        named = {*checkouts, *(row.checkout_id for row in rows
                               if row.kind is charge and row.checkout_id and not row.payment_order_id)}
        listings = self.lookup.checkout_orders(list(named)) if named else {}
        charged = {row.payment_order_id for row in rows if row.kind is charge and row.payment_order_id}
        charged.update(chain.from_iterable(chain.from_iterable(map(dict.values, listings.values()))))
        ids = list(charged.union(row.payment_order_id for row in rows if row.kind in LEDGER_KIND
                                 and row.payment_order_id))
        orders = self.lookup.orders(ids) if ids else {}
        known = list(filter(orders.__contains__, charged))
        wanted = [f"{LEDGER_KIND[row.kind]}#{row.source_id}" for row in rows
                  if row.kind in LEDGER_KIND and row.source_id and row.payment_order_id in orders]
        return Records(orders, listings, LedgerRecords(self.lookup.payins(known) if known else set(),
                                                       self.lookup.transactions(wanted) if wanted else {}))

    def _flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        records, settle = self._read(rows), self._settle
        for row in rows:
            settle(row, records)
        if self._transfers:
            self._check_transfers()

    def _match_block(self, block: ChargeBlock) -> None:
        """A block's rows, a batch of its plain charges at a time with the other rows between them, in file order."""
        size, lines, others, at = self.policy.batch_size, block.lines, block.others, 0
        for start in range(0, max(len(lines), 1), size):
            end = min(start + size, len(lines))
            bound = lines[end] if end < len(lines) else None
            stop = at
            while stop < len(others) and (bound is None or others[stop].line < bound):
                stop += 1
            self._match_block_batch(block, start, end, others[at:stop])
            at = stop

    def _match_block_batch(self, block: ChargeBlock, start: int, end: int, others: list[ParsedRow]) -> None:
        """Plain charges start..end of the block and the other rows among them. The malformed rows are reported
        first. The plain charges that agree with their checkout's orders (see `_agreement`) are then decided
        together: they and their orders are settled, their fees recorded and their orders reported as one MATCHED
        outcome per currency. Every other row goes to `_settle`, in file order.

        Deciding the agreeing charges together, out of file order, gives what `_settle` would: the one thing a
        charge's outcome depends on beyond its orders is whether one of them was settled before it, and a charge
        with an order charged twice in the batch, or settled before it, is never among them."""
        rows = self._well_formed(others)
        checkouts, currencies = block.checkout_ids[start:end], block.currencies[start:end]
        records = self._read(rows, checkouts)
        groups = list(map(charge_ids, map(records.checkouts.get, checkouts), currencies))
        try:
            agrees = self._agreement(block, start, end, groups, records, _SHARED_FIELDS)
        except KeyError:  # an order that never reached the PSP has no PSP reference
            agrees = self._agreement(block, start, end, groups, records, _shared_fields)
        agrees = self._charged_once(rows, records, groups, agrees)
        if not all(agrees):
            charge_row = block.charge
            rows = rows + [charge_row(i) for i, agreed in zip(range(start, end), agrees, strict=True) if not agreed]
            rows.sort(key=_line)
        settle = self._settle
        for row in rows:
            settle(row, records)
        if self._transfers:
            self._check_transfers()
        if any(agrees):
            self._settled.update(map(hash, chain.from_iterable(compress(groups, agrees))))
            self._agreeing(block, start, end, agrees, list(map(len, compress(groups, agrees))))

    @staticmethod
    def _agreement(block: ChargeBlock, start: int, end: int, groups: list[list[str] | None], records: Records,
                   shared: Callable[[dict[str, Any]], tuple[Any, ...]]) -> list[bool]:
        """Which plain charges agree: each of their orders is there and records (the charge's currency, its PSP
        reference, SUCCESS), its pay-in is in the ledger, and the orders' amounts sum to the charge's. Every order
        of the batch is checked in one pass, in C (`map`); each charge's orders are then combined by numpy."""
        get, paid = records.orders.get, records.ledger.paid
        sizes = [len(ids) if ids else 0 for ids in groups]
        ids = list(chain.from_iterable(filter(None, groups)))
        found = list(map(get, ids, repeat(_NOBODY)))
        wanted = chain.from_iterable(map(repeat, zip(block.currencies[start:end], block.references[start:end],
                                                     repeat(_SUCCESS)), sizes))
        each = np.fromiter(map(and_, map(eq, map(shared, found), wanted), map(paid.__contains__, ids)), bool,
                           len(ids))
        amounts = np.fromiter(map(_AMOUNT, found), np.int64, len(ids))
        counted = np.array(sizes) > 0
        starts = np.cumsum([0, *sizes])[:-1][counted]
        agrees = np.zeros(len(sizes), bool)
        if len(starts):
            agrees[counted] = np.logical_and.reduceat(each, starts) & (
                np.add.reduceat(amounts, starts) == np.array(block.gross[start:end], np.int64)[counted])
        return agrees.tolist()

    def _charged_once(self, rows: list[SettlementRow], records: Records, groups: list[list[str] | None],
                      agrees: list[bool]) -> list[bool]:
        """`agrees`, less the charges with an order settled before, or charged again in the batch."""
        charged = list(chain.from_iterable(filter(None, groups)))
        for row in rows:
            if row.kind is RowKind.CHARGE and (group := self._charge_of(row, records)) is not None:
                charged += group.ids
        keys = list(map(hash, charged))
        distinct = set(keys)
        repeated = self._settled.intersection(distinct)
        if len(distinct) < len(keys):
            repeated.update(key for key, times in Counter(keys).items() if times > 1)
        if not repeated:
            return agrees
        return [agreed and repeated.isdisjoint(map(hash, ids))  # type: ignore[arg-type]
                for agreed, ids in zip(agrees, groups, strict=True)]

    def _agreeing(self, block: ChargeBlock, start: int, end: int, agrees: list[bool], sizes: list[int]) -> None:
        """The effects and the outcome of the plain charges start..end of the block that `agrees` selects, as
        `_settle` gives each: its net counted in its payout batch, its fee recorded, its orders MATCHED (here one
        outcome per currency, counting the orders; `sizes` is how many orders each agreeing charge settles)."""
        row_ids, gross, fees = block.row_ids[start:end], block.gross[start:end], block.fees[start:end]
        currencies = list(compress(block.currencies[start:end], agrees))
        batch_ids = list(compress(block.batch_ids[start:end], agrees))
        totals: dict[str, list[int]] = {}
        fees_by_currency: dict[str, list[tuple[str, int]]] = defaultdict(list)
        count = len(currencies)
        if currencies.count(currencies[0]) == count and batch_ids.count(batch_ids[0]) == count:  # nearly always
            currency, batch_id = currencies[0], batch_ids[0]
            minor, fee_total = sum(compress(gross, agrees)), sum(compress(fees, agrees))
            totals[currency] = [sum(sizes), minor]
            if fee_total:  # fees are never negative here
                charged = list(compress(zip(row_ids, fees, strict=True), agrees))
                fees_by_currency[currency] = [pair for pair in charged if pair[1]] if 0 in fees else charged
            if batch_id:
                self._batch_net[(batch_id, currency)] += minor - fee_total
        else:
            batch_net = self._batch_net
            for row_id, minor, fee, currency, batch_id, size in zip(
                    compress(row_ids, agrees), compress(gross, agrees), compress(fees, agrees), currencies, batch_ids,
                    sizes, strict=True):
                total = totals.setdefault(currency, [0, 0])
                total[0] += size
                total[1] += minor
                if fee:
                    fees_by_currency[currency].append((row_id, fee))
                if batch_id:
                    batch_net[(batch_id, currency)] += minor - fee
        for currency, charged_fees in fees_by_currency.items():
            self.fixes.record_fees(currency, charged_fees)
        for currency, (count, minor) in totals.items():
            amount = Money(minor, currency)
            self.emit(Outcome(Category.MATCHED, ours=amount, theirs=amount, row_kind=block.psp_type, count=count))

    def _charge_of(self, row: SettlementRow, records: Records) -> ChargeOrders | None:
        """The orders a charge row settles, from what the batch read; None when it names none we know."""
        orders = records.orders
        if row.payment_order_id:
            order = orders.get(row.payment_order_id)
            return ChargeOrders("", [order]) if order is not None else None
        ids = charge_ids(records.checkouts.get(row.checkout_id), row.gross.currency) if row.checkout_id else None
        if ids is None:
            return None
        return ChargeOrders(row.checkout_id, [orders[i] for i in ids if i in orders],
                            [i for i in ids if i not in orders])

    def _settle(self, row: SettlementRow, records: Records) -> None:
        kind = row.kind
        if kind is RowKind.PAYOUT:
            self._payouts.append(row)
            return
        net = row.net
        if row.batch_id and net is not None:
            self._batch_net[(row.batch_id, net.currency)] += net.minor
        if kind is RowKind.CHARGE and (group := self._charge_of(row, records)) is not None:
            self._charge(row, group, records.ledger)  # a known order's charges are counted in `_settled`
            return
        order = records.orders.get(row.payment_order_id) if kind is not RowKind.CHARGE else None
        key = hash((row.psp_type, row.reference))
        if key in self._seen:
            self.emit(self._outcome(row, Category.DUPLICATE_SETTLEMENT, order,
                                    f"{row.psp_type} {row.reference} is settled more than once in this file",
                                    review=True))
            return
        self._seen.add(key)
        if kind is RowKind.TRANSFER:
            self._transfers.append(row)  # checked once the batch is settled, all in one read
            return
        if kind is RowKind.TRANSFER_REVERSAL:
            self.emit(self._outcome(row, Category.STATUS_MISMATCH, None, "a transfer reversal at the PSP: "
                                    "reversals are not recorded by us yet (refunds)", review=True))
            return
        if kind is RowKind.FEE:
            fee = -(row.net if row.net is not None else row.gross)
            if fee.minor:
                self._fee(row.row_id, fee)
            self.emit(self._outcome(row, Category.MATCHED, None, "PSP fee recorded in the ledger",
                                    fix=Fix.FEE_RECORDED))
            return
        if kind is RowKind.BATCH:
            self.emit(self._outcome(row, Category.MATCHED, None, f"batch row ({row.psp_type}), checked with its batch"))
            return
        if order is None:
            self._deferred.append(row)
            return
        self._against_order(row, order, records.ledger)

    def _check_transfers(self) -> None:
        """The batch's transfer rows against the payouts of the orders they name."""
        rows, self._transfers = self._transfers, []
        named = [row.payment_order_id for row in rows if row.payment_order_id]
        payouts = self.lookup.payouts(named) if named else {}
        self._transferred.update(map(hash, named))
        for row in rows:
            self.emit(self._transfer_outcome(row, payouts.get(row.payment_order_id)))

    @staticmethod
    def _transfer_outcome(row: SettlementRow, payout: dict[str, Any] | None) -> Outcome:
        """`theirs` is the amount the PSP sent (the row's gross, negative, turned round); `ours` the payout's net."""
        theirs = -row.gross
        ours = Money(int(payout["net_minor"]), payout["currency"]) \
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
            return outcome(Category.TRANSFER_MISSING_IN_PAYOUTS,
                           f"{sent}; our payout is {status} and records no transfer")
        if ours is None or ours.currency != theirs.currency:
            return outcome(Category.TRANSFER_CURRENCY_MISMATCH, f"{sent}; our payout's net is "
                           f"{ours if ours is not None else 'not set'}")
        if ours.minor != theirs.minor:
            return outcome(Category.TRANSFER_AMOUNT_MISMATCH, f"{sent}; our payout's net is {ours}")
        return outcome(Category.MATCHED, "" if status == PayoutStatus.TRANSFERRED else f"our payout is {status}",
                       review=False)

    def _check_window_transfers(self) -> None:
        """Our transfers of the transfer window that no transfer row of the file names. A payout whose first
        transfer attempt came before the window may have been transferred (and settled) before it: left out."""
        if self.transfer_window is None:
            return
        start, end = self.transfer_window.bounds()
        ids, transferred = iter(self.lookup.transferred_between(start, end)), self._transferred
        unsettled: list[str] = []
        while chunk := list(islice(ids, 65_536)):
            unsettled += compress(chunk, map(not_, map(transferred.__contains__, map(hash, chunk))))
        psp, default_psp, size = self.policy.psp, self.policy.default_order_psp, self.policy.batch_size
        for at in range(0, len(unsettled), size):
            payouts = self.lookup.payouts(unsettled[at : at + size])
            for order_id in unsettled[at : at + size]:
                payout = payouts.get(order_id)
                if payout is None or not payout.get("transfer_id") or (payout.get("psp") or default_psp) != psp \
                        or (payout.get("first_transfer_at") or payout.get("transferred_at") or start) < start:
                    continue
                self.emit(Outcome(Category.TRANSFER_MISSING_IN_SETTLEMENT, order_id, payout["transfer_id"],
                                  Money(int(payout["net_minor"]), payout["currency"]), None,
                                  f"recorded TRANSFERRED at {payout.get('transferred_at')}; the file has no such "
                                  "transfer", row_kind="payout", review=True))

    def _record_fee(self, row: SettlementRow) -> None:
        """The fee the PSP kept on a row it settled once (a duplicate row's fee is not recorded again)."""
        if row.fee is not None and row.fee.minor:
            self._fee(row.row_id, row.fee)

    def _fee(self, reference: str, fee: Money) -> None:
        self.fixes.record_fees(fee.currency, [(reference, fee.minor)])

    def _against_order(self, row: SettlementRow, order: dict[str, Any], ledger: LedgerRecords) -> None:
        """A refund's or a dispute's row against its order's ledger records."""
        self._record_fee(row)
        tx = ledger.transactions.get(f"{LEDGER_KIND[row.kind]}#{row.source_id}")
        if tx is not None:
            recorded = ledger_amount(tx)
            if recorded is not None and recorded.currency != row.gross.currency:
                self.emit(self._outcome(row, Category.CURRENCY_MISMATCH, order,
                                        f"ledger records the {row.kind} in {recorded.currency}", review=True,
                                        ours=recorded))
            elif recorded is not None and recorded.minor != abs(row.gross.minor):
                self.emit(self._outcome(row, Category.AMOUNT_MISMATCH, order,
                                        f"ledger records {recorded} for this {row.kind}", review=True,
                                        ours=recorded))
            else:
                self.emit(self._outcome(row, Category.MATCHED, order, "", ours=recorded))
            return
        if row.kind is RowKind.REFUND:
            self._refund_checks.append((row, order))
            return
        self.emit(self._outcome(row, Category.STATUS_MISMATCH, order,
                                f"a {row.kind.replace('_', ' ')} at the PSP that our ledger lacks", review=True))

    def _charge(self, row: SettlementRow, group: ChargeOrders, ledger: LedgerRecords) -> None:
        """A charge of known orders: each order once in a file, then each checked against the charge and the
        ledger. A charge whose checkout has no order it can settle is one outcome."""
        ids = group.ids
        if not ids:
            self._record_fee(row)
            self.emit(self._outcome(row, Category.CURRENCY_MISMATCH, None,
                                    f"checkout {group.checkout_id} has no order in {row.gross.currency} "
                                    "(its orders are in several other currencies)", review=True))
            return
        keys = list(map(hash, ids))
        if not self._settled.isdisjoint(keys):
            self.emit(self._duplicate(row, group))
            return
        self._settled.update(keys)
        self._record_fee(row)
        total = sum(int(order["amount_minor"]) for order in group.orders)
        for order_id in group.missing:
            self.emit(Outcome(Category.MISSING_IN_LEDGER, order_id, row.psp_reference or row.reference,
                              explanation=f"checkout {group.checkout_id} lists this order, the orders table has "
                                          "no such order", line=row.line, row_kind=row.psp_type, review=True,
                              checkout_id=group.checkout_id))
        for order in group.orders:
            self.emit(self._charge_outcome(row, order, group, total, ledger))

    def _duplicate(self, row: SettlementRow, group: ChargeOrders) -> Outcome:
        first = group.orders[0] if group.orders else None
        if row.psp_reference == (first or {}).get("psp_reference"):
            explanation = f"{row.psp_type} {row.reference} is settled more than once in this file"
        elif group.checkout_id:
            explanation = f"a second charge of checkout {group.checkout_id} in {row.gross.currency} is settled " \
                          "in this file"
        else:
            explanation = "a second charge of this order is settled in this file"
        return self._outcome(row, Category.DUPLICATE_SETTLEMENT, first if not group.checkout_id else None,
                             explanation, review=True)

    def _charge_outcome(self, row: SettlementRow, order: dict[str, Any], group: ChargeOrders, total: int,
                        ledger: LedgerRecords) -> Outcome:
        """One order of a charge. `ours` is the order's amount; `theirs` is the charge's gross when the charge
        settles this one order, the order's share when the charge's sum agrees, and unknown (None) otherwise."""
        gross = row.gross
        single = not group.missing and len(group.orders) == 1
        # When the order's amount equals the row's (nearly always) the row's Money stands for it.
        same = order["currency"] == gross.currency and order["amount_minor"] == gross.minor
        ours = gross if same else Money(int(order["amount_minor"]), order["currency"])
        agrees = total == gross.minor and not group.missing
        theirs = gross if single else (ours if agrees else None)

        def outcome(category: Category, explanation: str, *, review: bool = False, fix: Fix = Fix.NONE) -> Outcome:
            return Outcome(category, order["payment_order_id"], row.psp_reference or row.reference, ours, theirs,
                           explanation, row.line, row.psp_type, fix, review, checkout_id=group.checkout_id)

        status = order.get("payment_order_status")
        recorded_reference = order.get("psp_reference") or ""
        # A report without the PaymentIntent names the charge (ch_...), which the order records as its charge_id.
        if recorded_reference and row.psp_reference and row.psp_reference not in (recorded_reference,
                                                                                 order.get("charge_id")):
            return outcome(Category.MISSING_IN_LEDGER,
                           f"the PSP settled {row.psp_reference}; the order records {recorded_reference}", review=True)
        if ours.currency != gross.currency:
            return outcome(Category.CURRENCY_MISMATCH, "settled in another currency", review=True)
        if not agrees:
            return outcome(Category.AMOUNT_MISMATCH, self._amount_difference(row, group, total, ours), review=True)
        if status == OrderStatus.FAILED:
            return outcome(Category.MISSING_IN_LEDGER, "the PSP settled a charge we recorded as FAILED", review=True)
        if status in (OrderStatus.NOT_STARTED, OrderStatus.EXECUTING):
            restart = self.fixes.restart_order(order)
            if restart is Restart.FINISHED:
                return outcome(Category.MATCHED, f"order {status} when read, completed by its workflow since")
            if restart is Restart.MOVED_ON:
                return outcome(Category.MISSING_IN_LEDGER,
                               f"order {status} when read and settled by the PSP, but no longer in progress "
                               "and not SUCCESS", review=True)
            if restart is Restart.NO_CHARGE:
                return outcome(Category.MISSING_IN_LEDGER, f"order {status} and settled by the PSP, but no charge "
                               "of it is stored to hand back", review=True)
            note = "its charge was handed back to its workflow" if restart is Restart.STARTED else \
                "its charge is already in the sweeper's hands"
            return outcome(Category.MISSING_IN_LEDGER, f"order {status} but settled by the PSP: {note} to complete it",
                           fix=Fix.WORKFLOW_RESTARTED)
        if order["payment_order_id"] not in ledger.paid:
            return outcome(Category.MISSING_IN_LEDGER, "order SUCCESS but the ledger has no pay-in transaction",
                           review=True)
        return outcome(Category.MATCHED, "")

    @staticmethod
    def _amount_difference(row: SettlementRow, group: ChargeOrders, total: int, ours: Money) -> str:
        if len(group.orders) == 1 and not group.missing:
            return f"settled {row.gross}, the order is for {ours}"
        held = f"its {len(group.orders)} order{'s' if len(group.orders) != 1 else ''} we hold sum to " \
               f"{Money(total, row.gross.currency)}"
        missing = f" ({len(group.missing)} more it lists are missing)" if group.missing else ""
        return f"the charge of checkout {group.checkout_id} settled {row.gross}; {held}{missing}"

    def _outcome(self, row: SettlementRow, category: Category, order: dict[str, Any] | None, explanation: str,
                 *, review: bool = False, fix: Fix = Fix.NONE, ours: Money | None = None) -> Outcome:
        if ours is None and order is not None:
            ours = Money(int(order["amount_minor"]), order["currency"])
        return Outcome(category, order["payment_order_id"] if order else row.payment_order_id,
                       row.psp_reference or row.reference, ours, row.gross, explanation, row.line, row.psp_type, fix,
                       review, checkout_id=row.checkout_id)

    # -- end of file ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Decide what needs the whole file: payouts, rows found only by reference, refunds, the window."""
        with batch_collection():
            self._finish()

    def _finish(self) -> None:
        self._flush()
        self._check_payouts()
        self._check_window_transfers()
        carried = self.carries.carried()
        candidates = self._read_window()
        self._check_refunds()
        for reference, fee in self.fixes.fee_conflicts():
            self.emit(Outcome(Category.AMOUNT_MISMATCH, psp_reference=reference, theirs=fee, review=True,
                              explanation=f"the ledger's fee#{reference} records a different fee",
                              row_kind="fee"))
        self._carry(candidates, carried)

    def _check_payouts(self) -> None:
        for row in self._payouts:
            key = (row.batch_id, (row.net or row.gross).currency)
            paid = row.net if row.net is not None else row.gross
            if key not in self._batch_net:
                self.emit(self._outcome(row, Category.MATCHED, None,
                                        "payout of activity outside this file: nothing to check it against"))
                continue
            activity = Money(self._batch_net[key], paid.currency)
            if activity.minor + paid.minor == 0:
                self.emit(self._outcome(row, Category.MATCHED, None, "the batch's net equals its payout"))
            else:
                self.emit(self._outcome(row, Category.AMOUNT_MISMATCH, None,
                                        f"the batch's net is {activity}, the payout {-paid}", review=True,
                                        ours=activity))

    def _read_window(self) -> list[dict[str, Any]]:
        """Resolve the rows found only by PSP reference; return the window's SUCCESS orders the file did not
        settle. Only those orders are read: the window's ids come from the created index and nearly all of them
        are settled by the file."""
        if self.window is None and not self._deferred:
            return []
        references = {row.psp_reference for row in self._deferred if row.psp_reference}
        named = self.lookup.order_ids_by_reference(references) if references else {}
        unsettled: list[str] = []
        if self.window is not None:
            settled, ids = self._settled, iter(self.lookup.created_between(*self.window.bounds()))
            while chunk := list(islice(ids, 65_536)):
                unsettled += compress(chunk, map(not_, map(settled.__contains__, map(hash, chunk))))
            unsettled = [order_id for order_id in unsettled if order_id not in self._named_by_malformed]
        ids = list(dict.fromkeys([*named.values(), *unsettled]))
        orders: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), self.policy.batch_size):
            orders.update(self.lookup.window_orders(ids[start : start + self.policy.batch_size]))
        psp, default_psp = self.policy.psp, self.policy.default_order_psp
        ours = {order_id: order for order_id, order in orders.items() if (order.get("psp") or default_psp) == psp}
        by_reference = {reference: ours[order_id] for reference, order_id in named.items() if order_id in ours}
        deferred, self._deferred = self._deferred, []
        if deferred:
            self._settle_deferred(deferred, by_reference)
        malformed = self._checkouts_named_by_malformed
        return [order for order_id in unsettled if (order := ours.get(order_id)) is not None
                and order.get("payment_order_status") == OrderStatus.SUCCESS
                and order.get("checkout_id") not in malformed]

    def _settle_deferred(self, rows: list[SettlementRow], by_reference: dict[str, dict[str, Any]]) -> None:
        found = [row for row in rows if row.psp_reference in by_reference]
        for row in rows:
            if row.psp_reference not in by_reference:
                self._record_fee(row)
                what = f"payment_order_id {row.payment_order_id!r}" if row.payment_order_id else "no payment_order_id"
                self.emit(self._outcome(row, Category.MISSING_IN_LEDGER, None,
                                        f"the PSP moved money we have no order for ({what}, "
                                        f"reference {row.psp_reference or '-'})", review=True))
        for start in range(0, len(found), self.policy.batch_size):
            batch = [self._named(row, by_reference[row.psp_reference])
                     for row in found[start : start + self.policy.batch_size]]
            records = self._read(batch)
            for row in batch:
                group = self._charge_of(row, records) if row.kind is RowKind.CHARGE else None
                if group is not None:
                    self._charge(row, group, records.ledger)
                else:
                    self._against_order(row, records.orders[row.payment_order_id], records.ledger)

    def _named(self, row: SettlementRow, order: dict[str, Any]) -> SettlementRow:
        """A row found by its PSP reference, as if it named what it settles: a charge charged per checkout its
        order's checkout, any other row that order. (A refund or dispute of a PaymentIntent shared by several
        orders, which names none of them, is matched against the first order the reference index gives.)"""
        if row.kind is RowKind.CHARGE and self.policy.charged_per_checkout and order.get("checkout_id"):
            return replace(row, payment_order_id="", checkout_id=order["checkout_id"])
        return replace(row, payment_order_id=order["payment_order_id"])

    def _check_refunds(self) -> None:
        checks, self._refund_checks = self._refund_checks, []
        if not checks:
            return
        recorded = self.lookup.refunds_of({order["payment_order_id"] for _, order in checks})
        for row, order in checks:
            if recorded.get(order["payment_order_id"]):
                self.emit(self._outcome(row, Category.MATCHED, order, "refund recorded in the ledger for this order"))
            else:
                self.emit(self._outcome(row, Category.STATUS_MISMATCH, order,
                                        "a refund at the PSP that our ledger lacks", review=True))

    def _carry(self, candidates: list[dict[str, Any]], carried: dict[str, dict[str, Any]]) -> None:
        """Orders of the window the file did not settle are carried; raised once they are old enough.

        A carried order settled by this file is cleared; one outside this window is raised when its age passes
        `missing_after`, and only once (the `raised_at` mark is a conditional write).
        """
        now = clock.iso(self.now)
        handled: set[str] = set()
        for order in candidates:
            order_id = order["payment_order_id"]
            if hash(order_id) in self._settled:
                continue
            handled.add(order_id)
            carry = carried.get(order_id)
            if carry is None:
                self.carries.carry(order, now)
                carry = {"first_seen": now}
            self.emit(self._missing(order, carry, now))
        for order_id, carry in carried.items():
            if order_id in handled:
                continue
            if hash(order_id) in self._settled:
                self.carries.clear(order_id)
                self.carry_counts.cleared += 1
            elif self._due(carry) and not carry.get("raised_at"):
                self.emit(self._missing(carry, carry, now))
            else:
                self.carry_counts.still_carried += 1

    def _due(self, carry: dict[str, Any]) -> bool:
        return self.now - clock.parse_iso(carry["first_seen"]) >= self.policy.missing_after

    def _missing(self, order: dict[str, Any], carry: dict[str, Any], now: str) -> Outcome:
        first_seen = carry["first_seen"]
        outcome = Outcome(Category.MISSING_IN_SETTLEMENT, order["payment_order_id"], order.get("psp_reference", ""),
                          Money(int(order["amount_minor"]), order["currency"]), None, row_kind="order")
        days = self.policy.missing_after.days
        if carry.get("raised_at"):
            outcome.explanation = f"not settled since {first_seen}; raised on {carry['raised_at']}"
        elif self._due(carry) and self.carries.mark_raised(order["payment_order_id"], now):
            outcome.explanation = f"recorded SUCCESS, not settled since {first_seen} ({days}+ days): raised"
            outcome.review = True
            self.carry_counts.raised += 1
        else:
            outcome.explanation = (f"recorded SUCCESS, not settled yet (first seen {first_seen}); "
                                   f"raised after {days} days")
        return outcome


def ledger_amount(transaction: dict[str, Any]) -> Money | None:
    """The amount a transaction moves: the sum of its debits (positive entries), in its first currency."""
    entries = transaction.get("entries") or []
    if not entries:
        return None
    currency = entries[0]["currency"]
    total = sum(int(e["amount_minor"]) for e in entries if e["currency"] == currency and int(e["amount_minor"]) > 0)
    return Money(total, currency)
