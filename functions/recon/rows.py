"""What a parser yields: one settlement row in PSP-neutral terms, or a malformed row with its reason."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from functions.shared.money import Money


class RowKind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHARGEBACK_REVERSAL = "chargeback_reversal"
    FEE = "fee"
    PAYOUT = "payout"
    TRANSFER = "transfer"  # the platform's transfer of a seller's net share to the seller's connected account
    TRANSFER_REVERSAL = "transfer_reversal"
    BATCH = "batch"  # adjustments, currency conversions: checked only inside their batch


@dataclass(slots=True)
class SettlementRow:
    """One money movement at the PSP. Amounts are signed from our side: + the PSP owes us more.

    `psp_reference` names the payment (Stripe PaymentIntent, Adyen PSP reference, PayPal transaction);
    `source_id` names this row's own object (a refund `re_...`, a dispute, a PayPal refund transaction).
    A Stripe charge names its checkout (`checkout_id`): it is the charge of that checkout in its currency, and
    settles all of the checkout's orders in that currency. A per-order format's charge names its order.
    A transfer names the order whose net share it pays out (its metadata) and the account paid (`destination`).
    A row of a format that names the charge, not the order (Adyen: the Merchant Reference is our charge key) names
    its checkout; a refund's row there may carry our own reference of the refund (`own_reference`, Adyen's
    Modification Merchant Reference: the refund_id the adapter sent), the id of its ledger transaction.
    """

    line: int
    kind: RowKind
    row_id: str
    payment_order_id: str
    psp_reference: str
    source_id: str
    gross: Money
    fee: Money | None
    net: Money | None
    occurred_at: datetime | None
    batch_id: str
    psp_type: str
    checkout_id: str = ""
    destination: str = ""
    own_reference: str = ""

    @property
    def reference(self) -> str:
        """The PSP object this row settles; two rows settling the same object twice are a duplicate."""
        if self.kind is RowKind.CHARGE:
            return self.psp_reference or self.source_id or self.row_id
        return self.source_id or self.row_id


@dataclass(slots=True)
class MalformedRow:
    line: int
    reason: str
    payment_order_id: str = ""
    psp_reference: str = ""
    checkout_id: str = ""


ParsedRow = SettlementRow | MalformedRow


@dataclass(slots=True)
class ChargeBlock:
    """A stretch of a file read as columns: its plain charges (the rows a columnar reader checked in bulk: a
    known currency, amounts `123.45`, a checkout id and a PSP reference) one sequence per field, and every other row
    of the stretch as a ParsedRow, in file order. A block stands for exactly the rows `rows()` gives back.

    `sources` and `seconds` are only read for the few charges made rows: a reader may hand them over as
    sequences that read each value on demand; `span` is the earliest and latest of `seconds`."""

    psp_type: str
    line_count: int  # lines of the file the block covers
    lines: list[int]
    row_ids: list[str]
    checkout_ids: list[str]
    references: list[str]
    sources: Sequence[str]
    gross: list[int]  # minor units
    fees: list[int]  # minor units; the net is gross - fee
    currencies: list[str]
    batch_ids: list[str]
    seconds: Sequence[int]  # the row's time, in seconds since the epoch (UTC)
    others: list[ParsedRow]
    span: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.lines) + len(self.others)

    def charge(self, i: int) -> SettlementRow:
        """Plain charge `i` as the row parser would have made it."""
        currency = self.currencies[i]
        gross, fee = Money(self.gross[i], currency), self.fees[i]
        return SettlementRow(self.lines[i], RowKind.CHARGE, self.row_ids[i], "", self.references[i],
                             self.sources[i], gross, Money(fee, currency) if fee else None,
                             Money(gross.minor - fee, currency) if fee else gross,
                             datetime.fromtimestamp(self.seconds[i], UTC), self.batch_ids[i], self.psp_type,
                             self.checkout_ids[i])

    def rows(self) -> Iterator[ParsedRow]:
        """All rows of the block, in file order."""
        others, at = self.others, 0
        for i, line in enumerate(self.lines):
            while at < len(others) and others[at].line < line:
                yield others[at]
                at += 1
            yield self.charge(i)
        yield from others[at:]
