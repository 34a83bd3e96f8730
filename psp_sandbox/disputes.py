"""Disputes (chargebacks), Stripe-shaped: `dp_...` objects, their balance transactions and webhook events.

A cardholder's bank disputes a succeeded charge (the sandbox's admin call stands in for it):
- open: status `needs_response` (`warning_needs_response` for an inquiry); the disputed amount and the dispute fee
  leave the platform's balance at once (one balance transaction, type `adjustment`, reporting category `dispute`,
  amount -amount, fee = the dispute fee); events `charge.dispute.created` then `charge.dispute.funds_withdrawn`.
- won: status `won`; the amount comes back (type `adjustment`, reporting category `dispute_reversal`, +amount,
  fee 0: Stripe keeps the dispute fee); events `charge.dispute.funds_reinstated` then `charge.dispute.closed`.
- lost: status `lost`; nothing comes back; event `charge.dispute.closed`.
Refused as Stripe refuses: a dispute of a charge that did not succeed or is disputed already, an amount above what
the charge has not refunded, a win or loss of a dispute already closed. A refund of a charge with a dispute that
is not won is refused with `charge_disputed` (SandboxState._refundable_charge).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import errors
from .models import currency_exponent

# The functions take the SandboxState (typed Any: state.py imports this module, and the sandbox has no cycles).
SandboxState = Any

OPEN_STATUSES = frozenset({"warning_needs_response", "needs_response", "under_review"})
REASONS = frozenset({"bank_cannot_process", "check_returned", "credit_not_processed", "customer_initiated",
                     "debit_not_authorized", "duplicate", "fraudulent", "general", "incorrect_account_details",
                     "insufficient_funds", "product_not_received", "product_unacceptable",
                     "subscription_canceled", "unrecognized"})
DISPUTE_FEE_MAJOR = 15  # Stripe US: 15.00 USD per dispute, in the charge's currency here (a sandbox simplification)


def dispute_fee(currency: str) -> int:
    return DISPUTE_FEE_MAJOR * 10 ** currency_exponent(currency)


@dataclass(slots=True)
class Dispute:
    id: str
    charge: str
    payment_intent: str
    amount: int
    currency: str
    reason: str
    status: str
    created: int
    metadata: dict[str, str] = field(default_factory=dict)
    balance_transactions: list[str] = field(default_factory=list)
    is_charge_refundable: bool = False

    def to_stripe(self, state: Any = None) -> dict[str, Any]:
        txns = [state.to_json(state.balance_transactions[t]) for t in self.balance_transactions] if state else []
        return {
            "id": self.id, "object": "dispute", "amount": self.amount, "balance_transactions": txns,
            "charge": self.charge, "created": self.created, "currency": self.currency,
            "is_charge_refundable": self.is_charge_refundable, "livemode": False, "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent, "reason": self.reason, "status": self.status,
        }


def open_dispute(state: SandboxState, charge_id: str, amount: int | None, reason: str | None,
                 inquiry: bool = False) -> Dispute:
    """Sandbox extension (POST /_sandbox/charges/{charge}/dispute): the cardholder's bank disputes the charge."""
    reason = reason or "general"
    if reason not in REASONS:
        raise errors.invalid_request(f"reason must be one of {', '.join(sorted(REASONS))}", param="reason")
    with state.lock:
        charge = state.charge(charge_id)
        if charge.status != "succeeded":
            raise errors.invalid_request(f"Charge {charge_id} has status {charge.status} and cannot be disputed.")
        if any(d.charge == charge_id for d in state.disputes.values()):
            raise errors.invalid_request(f"Charge {charge_id} has already been disputed.", code="charge_disputed")
        disputable = charge.amount - charge.amount_refunded
        amount = disputable if amount is None else amount
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= disputable:
            raise errors.invalid_request(f"amount must be an integer in 1..{disputable}", param="amount")
        dispute = Dispute(id=state.new_id("dp"), charge=charge.id, payment_intent=charge.payment_intent,
                          amount=amount, currency=charge.currency, reason=reason,
                          status="warning_needs_response" if inquiry else "needs_response",
                          created=state.clock.timestamp())
        fee = dispute_fee(charge.currency)
        txn = state._new_balance_transaction(amount=-amount, fee=fee, currency=charge.currency, kind="adjustment",
                                             source=dispute.id, description=f"Chargeback withdrawal for {charge.id}",
                                             reporting_category="dispute")
        txn.fee_details = [{"amount": fee, "currency": charge.currency, "description": "Dispute fee",
                            "type": "stripe_fee"}]
        dispute.balance_transactions.append(txn.id)
        state.disputes[dispute.id] = dispute
        state.emit("charge.dispute.created", dispute.to_stripe(state))
        state.emit("charge.dispute.funds_withdrawn", dispute.to_stripe(state))
        return dispute


def close_dispute(state: SandboxState, dispute_id: str, outcome: str) -> Dispute:
    """Sandbox extension (POST /_sandbox/disputes/{id}/win | /lose): the bank decides."""
    with state.lock:
        dispute = state.dispute(dispute_id)
        if dispute.status not in OPEN_STATUSES:
            raise errors.invalid_request(f"Dispute {dispute_id} is {dispute.status} and can no longer change.",
                                         code="dispute_already_closed")
        if outcome == "won":
            txn = state._new_balance_transaction(
                amount=dispute.amount, fee=0, currency=dispute.currency, kind="adjustment", source=dispute.id,
                description=f"Chargeback reversal for {dispute.charge}", reporting_category="dispute_reversal")
            dispute.balance_transactions.append(txn.id)
            dispute.status = "won"
            state.emit("charge.dispute.funds_reinstated", dispute.to_stripe(state))
        else:
            dispute.status = "lost"
        state.emit("charge.dispute.closed", dispute.to_stripe(state))
        return dispute


def refund_refused_by_dispute(state: SandboxState, charge_id: str) -> None:
    """Stripe refuses to refund a disputed charge (its money is with the dispute) unless the dispute was won."""
    for dispute in state.disputes.values():
        if dispute.charge == charge_id and dispute.status != "won":
            raise errors.invalid_request(f"Charge {charge_id} has been charged back; cannot issue a refund.",
                                         code="charge_disputed")
