"""Matching settlement rows against our orders and ledger, in batches, with flat memory.

A charge row of a format charged per checkout (Stripe, Adyen) is the checkout's charge in one currency: it settles
every order of that checkout in that currency, and is matched against their sum (amount, currency, PSP
reference), each order reported. It is found by its checkout (Stripe's metadata, Adyen's Merchant Reference: our
charge key), else by its PSP reference (the order that records the PaymentIntent or pspReference leads to its
checkout). A charge naming one order (PayPal, Adyen's per-order references, and Stripe charges made before
checkouts were charged once) settles that order. Other rows (refunds, disputes) are matched by payment_order_id,
then by PSP reference; in a format whose such rows name the charge they undo (Adyen), by the order their own
ledger transaction names, else the charge's one order, never a guess (`rules.undone_order`). Rows arrive in file
order; every
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
from itertools import chain, compress, islice
from operator import attrgetter
from typing import Any

from functions.recon import closing, rules
from functions.recon.closing import CarryCounts, Window
from functions.recon.gctune import batch_collection
from functions.recon.outcomes import Category, Fix, Outcome

# The adapters (functions/recon/adapters.py) still import the port's names from here (`X as X`); their home is
# `ports`.
from functions.recon.ports import CHECKOUT_ATTRIBUTES as CHECKOUT_ATTRIBUTES
from functions.recon.ports import LEDGER_KIND as LEDGER_KIND
from functions.recon.ports import ORDER_ATTRIBUTES as ORDER_ATTRIBUTES
from functions.recon.ports import PAYIN_ATTRIBUTES as PAYIN_ATTRIBUTES
from functions.recon.ports import PAYOUT_ATTRIBUTES as PAYOUT_ATTRIBUTES
from functions.recon.ports import ROW_TRANSACTION_ATTRIBUTES as ROW_TRANSACTION_ATTRIBUTES
from functions.recon.ports import WINDOW_ORDER_ATTRIBUTES as WINDOW_ORDER_ATTRIBUTES
from functions.recon.ports import Carries, Fixes, LedgerRecords, Lookup, Records, names_its_charge, read_records
from functions.recon.ports import Listing as Listing
from functions.recon.rows import ChargeBlock, MalformedRow, ParsedRow, RowKind, SettlementRow
from functions.recon.rules import ChargeOrders, charge_ids, charge_of, row_outcome
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.names import UNRECORDED_PSP

_line = attrgetter("line")


@dataclass
class Policy:
    psp: str
    default_order_psp: str = UNRECORDED_PSP  # the PSP of a record that names none: items written before routing
    missing_after: timedelta = timedelta(days=3)
    batch_size: int = 1000
    # A charge found only by its PSP reference settles its checkout's orders in its currency (Stripe, Adyen); in a
    # per-order format, the one order that records the reference.
    charged_per_checkout: bool = True
    # A refund's or a dispute's row that names the charge it undoes (Adyen) is matched to the order its own ledger
    # transaction names, else to the charge's one order (`rules.undone_order`); one found only by its PSP reference
    # too. Otherwise (Stripe) such a row is matched against the first order the reference index gives.
    undoings_name_their_charge: bool = False


@dataclass
class Matcher:
    """Feed it parsed rows, then call finish(): every order a charge row settles, every other row and every order
    of the window is counted in exactly one Outcome (the agreeing charges of a block batch share one, with the
    count of their orders). A charge row that settles no order of ours (unknown, a duplicate, a currency its
    checkout does not have) is one outcome.

    The rules are in `rules` (pure), the reads and writes go through the ports (`ports`), the end-of-file work
    is in `closing`; the matcher keeps the file's state and applies the effects."""

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

    def _flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if rows:
            self._settle_all(rows, read_records(self.lookup, rows, undoing=self._undoing(rows)))

    def _undoing(self, rows: list[SettlementRow]) -> list[SettlementRow]:
        """The refunds' and disputes' rows that name the charge they undo, in a format where they do (Adyen)."""
        return [row for row in rows if names_its_charge(row)] if self.policy.undoings_name_their_charge else []

    def _settle_all(self, rows: list[SettlementRow], records: Records) -> None:
        """Each row of a batch in file order, then the batch's transfer rows in one read."""
        settle = self._settle
        for row in rows:
            settle(row, records)
        if self._transfers:
            self._check_transfers()

    # -- the block path ------------------------------------------------------------------------------

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
        first. The plain charges that agree with their checkout's orders (`rules.block_agreement`) are then
        decided together: they and their orders are settled, their fees recorded and their orders reported as one
        MATCHED outcome per currency. Every other row goes to `_settle`, in file order.

        Deciding the agreeing charges together, out of file order, gives what `_settle` would: the one thing a
        charge's outcome depends on beyond its orders is whether one of them was settled before it, and a charge
        with an order charged twice in the batch, or settled before it, is never among them."""
        rows = self._well_formed(others)
        checkouts, currencies = block.checkout_ids[start:end], block.currencies[start:end]
        records = read_records(self.lookup, rows, checkouts, self._undoing(rows))
        groups = list(map(charge_ids, map(records.checkouts.get, checkouts), currencies))
        agrees = self._charged_once(rows, records, groups, rules.block_agreement(block, start, end, groups, records))
        if not all(agrees):
            charge_row = block.charge
            rows = rows + [charge_row(i) for i, agreed in zip(range(start, end), agrees, strict=True) if not agreed]
            rows.sort(key=_line)
        self._settle_all(rows, records)
        if any(agrees):
            self._settled.update(map(hash, chain.from_iterable(compress(groups, agrees))))
            self._agreeing(block, start, end, agrees, list(map(len, compress(groups, agrees))))

    def _charged_once(self, rows: list[SettlementRow], records: Records, groups: list[list[str] | None],
                      agrees: list[bool]) -> list[bool]:
        """`agrees`, less the charges with an order settled before, or charged again in the batch."""
        charged = list(chain.from_iterable(filter(None, groups)))
        for row in rows:
            if row.kind is RowKind.CHARGE and (group := charge_of(row, records)) is not None:
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

    # -- one row -------------------------------------------------------------------------------------

    def _settle(self, row: SettlementRow, records: Records) -> None:
        kind = row.kind
        if kind is RowKind.PAYOUT:
            self._payouts.append(row)
            return
        net = row.net
        if row.batch_id and net is not None:
            self._batch_net[(row.batch_id, net.currency)] += net.minor
        if kind is RowKind.CHARGE and (group := charge_of(row, records)) is not None:
            self._charge(row, group, records.ledger)  # a known order's charges are counted in `_settled`
            return
        order = records.orders.get(row.payment_order_id) if kind is not RowKind.CHARGE else None
        key = hash((row.psp_type, row.reference))
        if key in self._seen:
            self.emit(row_outcome(row, Category.DUPLICATE_SETTLEMENT, order,
                                  f"{row.psp_type} {row.reference} is settled more than once in this file",
                                  review=True))
            return
        self._seen.add(key)
        if kind is RowKind.TRANSFER:
            self._transfers.append(row)  # checked once the batch is settled, all in one read
            return
        if kind is RowKind.TRANSFER_REVERSAL:
            self.emit(row_outcome(row, Category.STATUS_MISMATCH, None, "a transfer reversal at the PSP: "
                                  "reversals are not recorded by us yet (refunds)", review=True))
            return
        if kind is RowKind.FEE:
            fee = -(row.net if row.net is not None else row.gross)
            if fee.minor:
                self._fee(row.row_id, fee)
            self.emit(row_outcome(row, Category.MATCHED, None, "PSP fee recorded in the ledger",
                                  fix=Fix.FEE_RECORDED))
            return
        if kind is RowKind.BATCH:
            self.emit(row_outcome(row, Category.MATCHED, None, f"batch row ({row.psp_type}), checked with its batch"))
            return
        if order is None and row.checkout_id in records.checkouts and self._undoing([row]):
            order = self._undone_order(row, records)
            if order is None:
                return
        if order is None:
            self._deferred.append(row)  # a checkout we do not hold: its PSP reference may still name an order
            return
        self._against_order(row, order, records.ledger)

    def _undone_order(self, row: SettlementRow, records: Records) -> dict[str, Any] | None:
        """The order a row naming the charge it undoes is matched against; None when there is none to name, the
        row's outcome emitted (and its fee recorded: the PSP kept it all the same)."""
        found = rules.undone_order(row, records)
        if isinstance(found, Outcome):
            self._record_fee(row)
            self.emit(found)
            return None
        return found

    def _check_transfers(self) -> None:
        """The batch's transfer rows against the payouts of the orders they name."""
        rows, self._transfers = self._transfers, []
        named = [row.payment_order_id for row in rows if row.payment_order_id]
        payouts = self.lookup.payouts(named) if named else {}
        self._transferred.update(map(hash, named))
        for row in rows:
            self.emit(rules.transfer_outcome(row, payouts.get(row.payment_order_id)))

    def _record_fee(self, row: SettlementRow) -> None:
        """The fee the PSP kept on a row it settled once (a duplicate row's fee is not recorded again)."""
        if row.fee is not None and row.fee.minor:
            self._fee(row.row_id, row.fee)

    def _fee(self, reference: str, fee: Money) -> None:
        self.fixes.record_fees(fee.currency, [(reference, fee.minor)])

    def _against_order(self, row: SettlementRow, order: dict[str, Any], ledger: LedgerRecords) -> None:
        """A refund's or a dispute's row against its order's ledger records."""
        self._record_fee(row)
        outcome = rules.against_order_outcome(row, order, ledger)
        if outcome is None:
            self._refund_checks.append((row, order))
        else:
            self.emit(outcome)

    def _charge(self, row: SettlementRow, group: ChargeOrders, ledger: LedgerRecords) -> None:
        """A charge of known orders: each order once in a file, then each checked against the charge and the
        ledger. A charge whose checkout has no order it can settle is one outcome."""
        ids = group.ids
        if not ids:
            self._record_fee(row)
            self.emit(rules.no_order_in_currency_outcome(row, group))
            return
        keys = list(map(hash, ids))
        if not self._settled.isdisjoint(keys):
            self.emit(rules.duplicate_charge_outcome(row, group))
            return
        self._settled.update(keys)
        self._record_fee(row)
        total = sum(int(order["amount_minor"]) for order in group.orders)
        for order_id in group.missing:
            self.emit(rules.lost_order_outcome(row, group, order_id))
        for order in group.orders:
            outcome = rules.charge_order_outcome(row, order, group, total, ledger.paid)
            if outcome is rules.HAND_BACK:
                outcome = rules.handed_back_outcome(row, order, group, total, self.fixes.restart_order(order))
            self.emit(outcome)  # type: ignore[arg-type]

    # -- end of file ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Decide what needs the whole file: payouts, rows found only by reference, refunds, the window."""
        with batch_collection():
            self._finish()

    def _finish(self) -> None:
        self._flush()
        emit, policy = self.emit, self.policy
        for row in self._payouts:
            emit(rules.payout_outcome(row, self._batch_net))
        if self.transfer_window is not None:
            for outcome in closing.unsettled_transfers(self.lookup, self.transfer_window, self._transferred,
                                                       policy.psp, policy.default_order_psp, policy.batch_size):
                emit(outcome)
        carried = self.carries.carried()
        candidates = self._read_window()
        checks, self._refund_checks = self._refund_checks, []
        for outcome in closing.refund_outcomes(self.lookup, checks):
            emit(outcome)
        for outcome in closing.fee_conflict_outcomes(self.fixes.fee_conflicts()):
            emit(outcome)
        carrying = closing.Carrying(self.carries, self._settled, self.now, policy.missing_after, self.carry_counts)
        for outcome in carrying.outcomes(candidates, carried):
            emit(outcome)

    def _read_window(self) -> list[dict[str, Any]]:
        """Settle the rows found only by PSP reference; return the window's SUCCESS orders the file did not
        settle."""
        if self.window is None and not self._deferred:
            return []
        deferred, self._deferred = self._deferred, []
        policy = self.policy
        reading = closing.read_window(
            self.lookup, self.window, {row.psp_reference for row in deferred if row.psp_reference},
            closing.Named(self._settled, self._named_by_malformed, self._checkouts_named_by_malformed),
            policy.psp, policy.default_order_psp, policy.batch_size)
        if deferred:
            self._settle_deferred(deferred, reading.by_reference)
        return reading.unsettled

    def _settle_deferred(self, rows: list[SettlementRow], by_reference: dict[str, dict[str, Any]]) -> None:
        found = [row for row in rows if row.psp_reference in by_reference]
        for row in rows:
            if row.psp_reference not in by_reference:
                self._record_fee(row)
                self.emit(rules.unknown_row_outcome(row))
        for start in range(0, len(found), self.policy.batch_size):
            batch = [self._named(row, by_reference[row.psp_reference])
                     for row in found[start : start + self.policy.batch_size]]
            records = read_records(self.lookup, batch, undoing=self._undoing(batch))
            for row in batch:
                group = charge_of(row, records) if row.kind is RowKind.CHARGE else None
                if group is not None:
                    self._charge(row, group, records.ledger)
                    continue
                order = records.orders.get(row.payment_order_id)
                if order is None and self._undoing([row]):
                    order = self._undone_order(row, records)
                    if order is None:
                        continue
                if order is None:  # its order's checkout has no payment event to list it
                    self._record_fee(row)
                    self.emit(rules.unknown_row_outcome(row))
                    continue
                self._against_order(row, order, records.ledger)

    def _named(self, row: SettlementRow, order: dict[str, Any]) -> SettlementRow:
        """A row found by its PSP reference, as if it named what it settles: a charge charged per checkout its
        order's checkout; a refund or dispute, where such rows name the charge they undo (Adyen), that checkout too
        (its order is then found as `rules.undone_order` says); any other row that order. (Otherwise, Stripe, a
        refund or dispute of a PaymentIntent shared by several orders, which names none of them, is matched against
        the first order the reference index gives.)"""
        policy, checkout_id = self.policy, order.get("checkout_id")
        if checkout_id and (policy.charged_per_checkout if row.kind is RowKind.CHARGE
                            else policy.undoings_name_their_charge and row.kind in LEDGER_KIND):
            return replace(row, payment_order_id="", checkout_id=checkout_id)
        return replace(row, payment_order_id=order["payment_order_id"])
