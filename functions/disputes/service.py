"""Disputes (chargebacks): the one way a PSP Dispute moves our books, `apply_psp_dispute` (docs/decisions.md
"Disputes"). The webhook processor calls it for `charge.dispute.created`, `.funds_withdrawn`, `.funds_reinstated`,
`.closed` and `.updated` with the event's Dispute object.

The Dispute object's status says where the dispute is; the status machine (OPEN -> WON | LOST, conditional, never
backwards) and once-only steps decide what is done, never the order of arrival: every event runs the open steps
(each once), and an event whose object is won or lost then moves the status and runs that outcome's steps (each
once). A `created` arriving after `closed` finds every step done and changes nothing.

Steps, each idempotent, each recorded on the dispute item after it is written, so a worker killed between any two
lines is resumed by the event's redelivery (the processor's claim/complete) and changes nothing twice:
1. the dispute item (OPEN, its attribution to orders frozen) and `dispute_ids` on those orders, one transaction;
2. the fee: ledger `dispute_fee#<dp>` (an expense; the PSP keeps it whatever the outcome);
3. per order part, the timing decided once against the pay-out in one transaction with it: `held` (no transfer
   begun: the pay-out is blocked from transfer, `dispute_holds`) or `transferred` (its transfer recorded: the
   seller owes its share, `owed`, netted from its next transfers as a refund's share is); a transfer in flight
   (begun, no id yet) waits: the event fails and comes back;
4. per part, the open books: ledger `dispute#<dp>:<order>` (+ wallet owed when transferred);
5. won: status WON, then per part the books `dispute_won#...` (the amount back to our PSP balance; the owed given
   back as far as still owed, the rest, netted meanwhile, credited to the seller's available) and the hold lifted;
6. lost: status LOST, then per part: held -> the part leaves the pay-out as a refund would (HELD: gross shrinks;
   RELEASED: net and commission by their shares), hold removed, in one transaction; books `dispute_lost#...`;
   transferred -> the commission's share leaves our revenue (the seller's share stays owed).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from functions.disputes.attribution import attribute
from functions.ledger import disputes as ledger_disputes
from functions.ledger import journal
from functions.shared import clock, names, psp_units
from functions.shared.money import Money
from functions.shared.names import dispute_part_reference
from functions.shared.observability import CORRELATION_FIELD, correlated
from functions.shared.status import OrderStatus, PayoutStatus
from functions.shared.tables import (
    DISPUTE_LOST,
    DISPUTE_OPEN,
    DISPUTE_WON,
    DisputesTable,
    PaymentTables,
    PayoutsTable,
    WalletTable,
)
from functions.wallet import disputes as wallet_disputes
from functions.wallet import refunds as wallet_refunds

logger = Logger(service="disputes")

PSP_OPEN = frozenset({"warning_needs_response", "needs_response", "under_review", "warning_under_review"})
# warning_closed: an inquiry closed without a chargeback
PSP_OUTCOME = {"won": DISPUTE_WON, "lost": DISPUTE_LOST, "warning_closed": DISPUTE_WON}
HELD, TRANSFERRED = "held", "transferred"
# functions/shared/psp.py PSP_NAME, not imported: that module needs the stripe layer, which the processor lacks
PSP_NAME = "stripe"


class PayoutBetweenSteps(Exception):
    """A pay-out of the dispute is between two steps (a transfer in flight, a release not applied): the event
    fails and is delivered again later (the processor's retry), when the pay-out has moved on."""


def apply_psp_dispute(obj: dict[str, Any], disputes: DisputesTable | None = None) -> str:
    """Bring our books to where the PSP's Dispute object says the dispute is; returns what happened."""
    disputes = disputes or DisputesTable.from_settings()
    status = str(obj.get("status") or "")
    if status not in PSP_OPEN and status not in PSP_OUTCOME:
        raise ValueError(f"dispute {obj.get('id')}: unknown status {status!r}")
    dispute = disputes.get(str(obj["id"])) or _create(obj, disputes)
    _open_steps(dispute, disputes)
    if status not in PSP_OUTCOME:
        return "open"
    target = PSP_OUTCOME[status]
    if dispute["dispute_status"] == DISPUTE_OPEN:
        disputes.move(dispute["dispute_id"], target, status, clock.iso())
    dispute = disputes.get(dispute["dispute_id"]) or dispute
    if dispute["dispute_status"] != target:  # the PSP changed its word after closing: a human looks
        logger.error("a closed dispute reported with another outcome", extra={
            "dispute_id": dispute["dispute_id"], "ours": dispute["dispute_status"], "psp_status": status})
        return "outcome_mismatch"
    for order_id in sorted(dispute["parts"]):
        if target == DISPUTE_WON:
            _won_part(dispute, order_id, disputes)
        else:
            _lost_part(dispute, order_id, disputes)
    return target.lower()


def _create(obj: dict[str, Any], disputes: DisputesTable) -> dict[str, Any]:
    currency = str(obj["currency"]).upper()
    amount = psp_units.from_stripe_amount(currency, int(obj["amount"]))
    fee = sum(int(t.get("fee") or 0) for t in obj.get("balance_transactions") or [] if int(t.get("amount", 0)) < 0)
    tables = PaymentTables.from_settings()
    payment_intent = str(obj.get("payment_intent") or "")
    order_ids = tables.order_ids_with_reference(payment_intent) if payment_intent else []
    orders = [o for o in tables.get_orders(order_ids).values()
              if o.get("payment_order_status") == OrderStatus.SUCCESS.value and o["currency"] == currency]
    if not orders:  # the index may lag a moment: the event comes back (and after 5 tries, WebhookDlq)
        raise LookupError(f"dispute {obj['id']}: no SUCCESS order of {payment_intent} in {currency}")
    named = (obj.get("metadata") or {}).get("payment_order_id")
    parts = attribute(amount.minor, {o["payment_order_id"]: int(o["amount_minor"]) - int(o.get("refunded_minor") or 0)
                                     for o in orders}, named)
    sellers = {o["payment_order_id"]: o["seller_account"] for o in orders}
    now = clock.iso()
    # the checkout's correlation id (one per checkout, on each of its orders): the dispute's notifications carry it
    item = correlated({
            "dispute_id": str(obj["id"]), "dispute_status": DISPUTE_OPEN, "psp_status": str(obj.get("status")),
            "charge_id": str(obj.get("charge") or ""), "payment_intent": payment_intent, "currency": currency,
            "amount_minor": amount.minor, "fee_minor": psp_units.from_stripe_amount(currency, fee).minor,
            "reason": str(obj.get("reason") or ""), "psp": PSP_NAME,
            "parts": {order_id: {"seller_account": sellers[order_id], "amount_minor": part}
                      for order_id, part in parts.items() if part > 0},
            "created_at": now, "updated_at": now}, orders[0].get(CORRELATION_FIELD))
    disputes.create(item)
    return disputes.get(item["dispute_id"]) or item


def _open_steps(dispute: dict[str, Any], disputes: DisputesTable) -> None:
    dispute_id, currency, psp_name = dispute["dispute_id"], dispute["currency"], dispute.get("psp") or PSP_NAME
    if not dispute.get("fee_booked"):
        if int(dispute.get("fee_minor") or 0):
            journal.record(ledger_disputes.fee(dispute_id, Money(int(dispute["fee_minor"]), currency), psp_name))
        disputes.mark(dispute_id, "fee_booked", clock.iso())
    for order_id in sorted(dispute["parts"]):
        part = dispute["parts"][order_id]
        if not part.get("timing"):
            _decide_timing(dispute, order_id, disputes)
            part = (disputes.get(dispute_id) or dispute)["parts"][order_id]
        if part.get("opened"):
            continue
        seller, amount = part["seller_account"], Money(int(part["amount_minor"]), currency)
        share = Money(int(part.get("seller_share_minor") or 0), currency)
        now = clock.iso()
        if part["timing"] == TRANSFERRED and share.minor:
            wallet_disputes.opened_transferred(seller, dispute_id, order_id, share, now)
        journal.record(ledger_disputes.opened(dispute_id, order_id, seller, amount, share, psp_name, part["timing"]))
        disputes.mark_part(dispute_id, order_id, "opened", now)
    dispute.update(disputes.get(dispute_id) or {})


def _decide_timing(dispute: dict[str, Any], order_id: str, disputes: DisputesTable) -> None:
    """Held or transferred, once, against the pay-out as it is (one transaction with it)."""
    dispute_id, amount = dispute["dispute_id"], int(dispute["parts"][order_id]["amount_minor"])
    payout = PayoutsTable.from_settings().get(order_id)
    if payout is None:
        raise PayoutBetweenSteps(f"{order_id}: no pay-out yet")
    if payout.get("transfer_id"):
        seller_remaining = int(payout["net_minor"]) - int(payout.get("refund_share_minor", 0))
        gross_remaining = int(payout["gross_minor"]) - int(payout.get("refunded_minor", 0))
        splittable = min(amount, gross_remaining)  # more than remains (refunds since): the rest is commission's
        seller, commission = wallet_refunds.split_refund(splittable, max(seller_remaining, 0), gross_remaining) \
            if splittable > 0 else (0, 0)
        commission += amount - splittable
        decided = disputes.owe_transferred(dispute_id, order_id, payout["transfer_id"], seller, commission,
                                           clock.iso())
    elif not payout.get("first_transfer_at") and payout["payout_status"] in (PayoutStatus.HELD.value,
                                                                             PayoutStatus.RELEASED.value):
        decided = disputes.hold_payout(dispute_id, order_id, clock.iso())
    else:
        decided = None
    if decided is None:
        raise PayoutBetweenSteps(f"{order_id}: pay-out {payout['payout_status']} between steps (transfer in flight)")


def _won_part(dispute: dict[str, Any], order_id: str, disputes: DisputesTable) -> None:
    part = dispute["parts"][order_id]
    if part.get("resolved"):
        return
    dispute_id, currency = dispute["dispute_id"], dispute["currency"]
    seller, amount = part["seller_account"], Money(int(part["amount_minor"]), currency)
    share = int(part.get("seller_share_minor") or 0)
    owed_back, credited = 0, 0
    now = clock.iso()
    if part["timing"] == TRANSFERRED and share:
        wallet = WalletTable.from_settings()
        applied = wallet.get_movement(names.DISPUTE_WON, dispute_part_reference(dispute_id, order_id))
        if applied is None:  # decided once: what is still owed is given back, the rest (netted) credited
            owed_back = min(share, wallet_refunds.owed(seller, currency, wallet))
            credited = share - owed_back
            wallet_disputes.won_transferred(seller, dispute_id, order_id, Money(owed_back, currency),
                                            Money(credited, currency), now, wallet)
        else:
            owed_back, credited = -int(applied["owed_delta"]), int(applied["available_delta"])
        if credited:
            logger.warning("dispute won after its share was netted: credited to the seller's available",
                           extra={"dispute_id": dispute_id, "seller_account": seller, "credited_minor": credited})
    journal.record(ledger_disputes.won(dispute_id, order_id, seller, amount, Money(owed_back, currency),
                                       Money(credited, currency), dispute.get("psp") or PSP_NAME))
    if part["timing"] == HELD:
        disputes.lift_hold(dispute_id, order_id, now)
        payout = PayoutsTable.from_settings().get(order_id) or {}
        if payout.get("payout_status") == PayoutStatus.RELEASED.value:  # its transfer was postponed: due now
            PayoutsTable.from_settings().postpone(order_id, now, now, f"dispute {dispute_id} won")
    disputes.mark_part(dispute_id, order_id, "resolved", now)


def _lost_part(dispute: dict[str, Any], order_id: str, disputes: DisputesTable) -> None:
    part = dispute["parts"][order_id]
    if part.get("resolved"):
        return
    dispute_id, currency, psp_name = dispute["dispute_id"], dispute["currency"], dispute.get("psp") or PSP_NAME
    seller, amount = part["seller_account"], Money(int(part["amount_minor"]), currency)
    if part["timing"] == TRANSFERRED:
        commission = Money(int(part.get("commission_share_minor") or 0), currency)
        if commission.minor:
            journal.record(ledger_disputes.lost_transferred(dispute_id, order_id, commission, psp_name))
        disputes.mark_part(dispute_id, order_id, "resolved", clock.iso())
        return
    if not part.get("lost_timing"):
        _take_from_payout(dispute, order_id, disputes)
        part = (disputes.get(dispute_id) or dispute)["parts"][order_id]
    now = clock.iso()
    if part["lost_timing"] == HELD:
        wallet_disputes.lost_held(seller, dispute_id, order_id, amount, now)
        journal.record(ledger_disputes.lost_held(dispute_id, order_id, seller, amount, psp_name))
    else:
        share = Money(int(part["lost_seller_share_minor"]), currency)
        commission = Money(int(part["lost_commission_share_minor"]), currency)
        if share.minor:
            wallet_disputes.lost_released(seller, dispute_id, order_id, share, now)
        journal.record(ledger_disputes.lost_released(dispute_id, order_id, seller, share, commission, psp_name))
    disputes.mark_part(dispute_id, order_id, "resolved", now)


def _take_from_payout(dispute: dict[str, Any], order_id: str, disputes: DisputesTable) -> None:
    """Lost while held: the part leaves the pay-out as it is now (one transaction with the part's lost timing)."""
    amount = int(dispute["parts"][order_id]["amount_minor"])
    for _ in range(5):
        payout = PayoutsTable.from_settings().get(order_id)
        assert payout is not None, order_id
        state = PayoutStatus(payout["payout_status"])
        if state is PayoutStatus.HELD:
            fields: dict[str, Any] = {"lost_timing": HELD}
            seller, commission = 0, 0
        elif state is PayoutStatus.RELEASED and payout.get("release_applied") and not payout.get("first_transfer_at"):
            gross_remaining = int(payout["gross_minor"]) - int(payout.get("refunded_minor", 0))
            seller, commission = wallet_refunds.split_refund(amount, int(payout["net_minor"]), gross_remaining)
            fields = {"lost_timing": "released", "lost_seller_share_minor": seller,
                      "lost_commission_share_minor": commission}
        else:
            raise PayoutBetweenSteps(f"{order_id}: pay-out {state} with its release not applied yet")
        if disputes.lose_held(dispute["dispute_id"], order_id, payout, fields, seller, commission, amount,
                              clock.iso()) is not None:
            return
    raise PayoutBetweenSteps(f"{order_id}: the pay-out kept moving")
