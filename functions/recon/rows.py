"""What a parser yields: one settlement row in PSP-neutral terms, or a malformed row with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from functions.shared.money import Money


class RowKind(StrEnum):
    CHARGE = "charge"
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHARGEBACK_REVERSAL = "chargeback_reversal"
    FEE = "fee"
    PAYOUT = "payout"
    BATCH = "batch"  # transfers, adjustments, currency conversions: checked only inside their batch


@dataclass(slots=True)
class SettlementRow:
    """One money movement at the PSP. Amounts are signed from our side: + the PSP owes us more.

    `psp_reference` names the payment (Stripe PaymentIntent, Adyen PSP reference, PayPal transaction);
    `source_id` names this row's own object (a refund `re_...`, a dispute, a PayPal refund transaction).
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


ParsedRow = SettlementRow | MalformedRow
