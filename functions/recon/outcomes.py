"""The categories a settlement row or an order can end in, and one outcome per row or order."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from functions.shared.money import Money


class Category(StrEnum):
    MATCHED = "matched"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_IN_SETTLEMENT = "missing_in_settlement"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE_SETTLEMENT = "duplicate_settlement"
    MALFORMED_ROW = "malformed_row"
    # A seller's transfer (Stripe Connect) against our payout of the order it names.
    TRANSFER_MISSING_IN_PAYOUTS = "transfer_missing_in_payouts"  # the PSP made it; our payout lacks it
    TRANSFER_MISSING_IN_SETTLEMENT = "transfer_missing_in_settlement"  # we recorded it; the PSP's file lacks it
    TRANSFER_AMOUNT_MISMATCH = "transfer_amount_mismatch"
    TRANSFER_CURRENCY_MISMATCH = "transfer_currency_mismatch"
    TRANSFER_DESTINATION_MISMATCH = "transfer_destination_mismatch"  # sent to another account than ours names
    # A bank deposit (checks and money orders, issue 17) against the offline charges and their recorded funds.
    DEPOSIT_WITHOUT_CHARGE = "deposit_without_charge"  # its reference names no charge of ours
    DEPOSIT_NOT_RECORDED = "deposit_not_recorded"  # the charge's funds were never recorded (or it failed unpaid)
    RECORDED_WITHOUT_DEPOSIT = "recorded_without_deposit"  # funds recorded that day, no deposit in the day's file


# Only a bank deposit file has these (functions/recon/bank.py); a PSP's file never does.
DEPOSIT_CATEGORIES = frozenset({Category.DEPOSIT_WITHOUT_CHARGE, Category.DEPOSIT_NOT_RECORDED,
                                Category.RECORDED_WITHOUT_DEPOSIT})


class Fix(StrEnum):
    """Automatic, idempotent corrections where the PSP's record is authoritative."""

    NONE = ""
    WORKFLOW_RESTARTED = "workflow_restarted"
    FEE_RECORDED = "fee_recorded"


class Restart(StrEnum):
    """What handing the charge of a settled but unfinished order back to its normal path did."""

    STARTED = "started"  # its message sent again, or back under the sweeper's watch (due now, or its next attempt)
    WATCHED = "watched"  # the sweeper watches it already (a run of this file, or its deadline, handed it back)
    FINISHED = "finished"  # its workflow made it SUCCESS after the matcher read it
    MOVED_ON = "moved_on"  # it became FAILED (or cannot be read) after the matcher read it
    NO_CHARGE = "no_charge"  # the charges table has no charge of the order: nothing to hand back


@dataclass(slots=True)
class Outcome:
    """Where one row (or one unsettled order) ended. `review` marks an unexplained discrepancy.

    An order settled by a charge of its checkout has its own outcome, naming the checkout. Charges that agree with
    their orders may be reported together: one MATCHED outcome of `count` orders, their total in `ours` and
    `theirs`, without ids or lines (the report lists discrepancies only)."""

    category: Category
    payment_order_id: str = ""
    psp_reference: str = ""
    ours: Money | None = None
    theirs: Money | None = None
    explanation: str = ""
    line: int | None = None
    row_kind: str = ""
    fix: Fix = Fix.NONE
    review: bool = False
    count: int = 1
    checkout_id: str = ""

    @property
    def is_discrepancy(self) -> bool:
        return self.category is not Category.MATCHED

    def to_dict(self) -> dict[str, object]:
        return {
            "category": self.category.value,
            "payment_order_id": self.payment_order_id,
            "checkout_id": self.checkout_id or None,
            "psp_reference": self.psp_reference,
            "our_amount": self.ours.to_major() if self.ours else None,
            "our_currency": self.ours.currency if self.ours else None,
            "their_amount": self.theirs.to_major() if self.theirs else None,
            "their_currency": self.theirs.currency if self.theirs else None,
            "explanation": self.explanation,
            "line": self.line,
            "row_kind": self.row_kind,
            "fix": self.fix.value or None,
            "unexplained": self.review,
        }
