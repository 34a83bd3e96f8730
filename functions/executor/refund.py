"""SQS consumer (RefundsQueue): drives one refund per message, `{"refund_id": ...}`, as far as it can go.

PENDING -> the refund at the PSP that charged the order (Stripe: a Refund under key refund:<refund_id>, looked up
first once the key may have aged; Adyen: /payments/{pspReference}/refunds under the same key, `received`, its
outcome in a REFUND notification, functions/webhooks/adyen.py) -> its id
recorded -> the PSP's status decides (apply_psp_refund): still pending -> the same message again after
refund_poll_delay_s (SQS DelaySeconds: the poll); refused, failed or canceled -> FAILED with the order's
reservation given back (one transaction); succeeded -> SUCCEEDED with the timing frozen against the pay-out (one
transaction) -> the books once -> after a transfer, the reversal of the seller's share (key reversal:<refund_id>)
or, refused, the share left `owed` -> finished. Every step is idempotent (conditional writes, once-only movements
and ledger ids, the PSP keys); the message is deleted only when the step it reached is written, so a worker
killed between any two lines is resumed by SQS's redelivery and changes nothing twice.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.ledger import journal
from functions.shared import clock, psp, psp_units, queues
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown
from functions.shared.money import Money
from functions.shared.names import OFFLINE_PSP
from functions.shared.observability import CORRELATION_FIELD, service_metrics
from functions.shared.status import PayoutStatus
from functions.shared.tables import (
    REFUND_FAILED,
    REFUND_PENDING,
    REFUND_SUCCEEDED,
    PaymentTables,
    PayoutMoved,
    PayoutsTable,
    RefundsTable,
)
from functions.wallet import refunds as wallet_refunds

logger = Logger(service="refunds")
metrics = service_metrics()
processor = BatchProcessor(event_type=EventType.SQS)

HELD, RELEASED, TRANSFERRED = "held", "released", "transferred"  # a refund's timing against its pay-out
WAIT_FOR_PAYOUT_S = 60  # the pay-out is between two steps (release not applied, transfer in flight): look again
# A pay-out that stays FAILED (until `ops payouts retry`) or a transfer stuck in flight keeps its refunds waiting:
# past this age the refund is alarmed (RefundWaitingOnPayout) and looked at only every 15 min (SQS's longest
# delay), and it still moves on by itself once the pay-out does.
WAIT_ALARM_AFTER = timedelta(hours=24)
STUCK_WAIT_S = 900
_SUCCEED_TRIES = 5
_PSP_DONE_FAILED = ("failed", "canceled")
NO_TRANSFER = "none"  # functions/executor/transfer.py: the transfer_id of a pay-out whose net was zero
REVERSAL_SUCCEEDED, REVERSAL_REFUSED = "SUCCEEDED", "REFUSED"
WAITING_METRIC = "RefundWaitingOnPayout"
# Adyen's refunds (issue 18): `received`, then a REFUND notification. Adyen retries an unaccepted notification for
# days, so one a day late is lost or refused here: a human looks (the alarm RefundNotificationOverdue).
AWAITING_NOTIFICATION = "awaiting_notification"
NOTIFICATION_OVERDUE_AFTER = timedelta(hours=24)
OVERDUE_METRIC = "RefundNotificationOverdue"


def drive(refund_id: str, refunds: RefundsTable | None = None) -> str:
    """One refund as far as it can go now; returns what happened (logged, and read by tests)."""
    refunds = refunds or RefundsTable.from_settings()
    refund = refunds.get(refund_id)
    if refund is None:
        raise LookupError(f"no refund {refund_id}: the message stays for a human (RefundsDlq)")
    logger.set_correlation_id(refund.get(CORRELATION_FIELD) or None)
    if refund["refund_status"] == REFUND_FAILED:
        return "failed"
    if refund["refund_status"] == REFUND_SUCCEEDED:
        return complete(refund, refunds)
    now = clock.iso()
    if refund.get("taken_back_by_psp") or refund.get("psp") == OFFLINE_PSP:
        # A bank debit returned, or a bounced check or money order (issue 17): the money was taken back already;
        # there is no PSP Refund to make, only the books to move.
        prefix = "bank" if refund.get("psp") == OFFLINE_PSP else "returned"
        result = psp.RefundResult("succeeded", psp_refund_id=f"{prefix}:{refund_id}", refund_id=refund_id)
        refunds.record_psp_refund(refund_id, result.psp_refund_id, result.status, now)
    elif refund.get("psp_refund_id") and _psp_name(refund) == psp.ADYEN:
        return _adyens_word(refund, refunds)  # nothing to ask Adyen: its REFUND notification decides
    elif refund.get("psp_refund_id"):
        result = psp.refund_result(_psp_of(refund).retrieve_refund(refund["psp_refund_id"]))
    else:
        order = PaymentTables.from_settings().get_order(refund["payment_order_id"])
        assert order is not None, refund["payment_order_id"]
        adapter = _psp_of(refund)
        if not refunds.note_psp_attempt(refund_id, now, str(getattr(adapter, "account_id", ""))):
            raise PspOutcomeUnknown(f"refund {refund_id}: first sent under another {_psp_name(refund)} account than "
                                    "the one configured now: nothing is sent; a human decides")
        aged = bool(refund.get("psp_attempted_at")) and (
            clock.now() - clock.parse_iso(str(refund["psp_attempted_at"])) > psp.IDEMPOTENCY_KEY_SAFE_AGE)
        result = adapter.refund(refund, order, look_up_first=aged)
        if result.status == psp.REFUND_REFUSED and _debit_returned(order):
            # The bank returned the debit after this refund was accepted: Stripe took back all it had not refunded,
            # this refund's amount included. It is done, by the return (never FAILED: that would free its amount).
            result = psp.RefundResult("succeeded", psp_refund_id=f"returned:{refund_id}", refund_id=refund_id)
        elif result.status == psp.REFUND_REFUSED:
            refunds.fail(refund, result.failure_code, result.failure_reason, now)
            return "failed"
        adyen = _psp_name(refund) == psp.ADYEN
        refunds.record_psp_refund(refund_id, result.psp_refund_id, result.status, now, unless_known=adyen)
        if adyen:
            return _adyens_word(refunds.get(refund_id) or refund, refunds)
    return _apply(refunds.get(refund_id) or refund, result, refunds)


def _psp_name(refund: dict[str, Any]) -> str:
    return str(refund.get("psp") or psp.PSP_NAME)


def _psp_of(refund: dict[str, Any]) -> Any:
    """The adapter of the PSP that charged the refund's order (recorded on the refund): Stripe's or Adyen's
    (`psp.client_for`, a name no configuration made is PspNotRoutable, dead-lettered, sent nowhere). Reversals are
    not its: pay-outs and their reversals stay on Stripe Connect whoever charged."""
    return psp.client_for(_psp_name(refund))


def _adyens_word(refund: dict[str, Any], refunds: RefundsTable) -> str:
    """An Adyen refund as far as Adyen's recorded word takes it: a REFUND notification's success recorded by the
    webhook path (`psp_status` succeeded) whose steps did not all run (the pay-out was between two steps: the
    message came back) goes on from there; `received` waits for the notification."""
    if refund["refund_status"] == REFUND_PENDING and refund.get("psp_status") != "succeeded":
        return _await_notification(refund)
    result = psp.RefundResult(str(refund.get("psp_status") or "received"), str(refund["psp_refund_id"]),
                              refund["refund_id"])
    return _apply(refund, result, refunds)


def _await_notification(refund: dict[str, Any]) -> str:
    """An Adyen refund Adyen has `received`: its outcome comes in a REFUND notification (functions/webhooks/adyen.py
    hands it to apply_psp_refund), and Checkout cannot look a refund up (a replay of the request only says
    `received` again). So nothing is asked: the message comes back every STUCK_WAIT_S only so that a notification
    that never comes is seen, logged and counted (RefundNotificationOverdue, alarmed) past NOTIFICATION_OVERDUE_AFTER
    since Adyen received the refund. It ends when the refund is final (drive returns before this)."""
    since = str(refund.get("psp_created_at") or refund["created_at"])
    if clock.now() - clock.parse_iso(since) > NOTIFICATION_OVERDUE_AFTER:
        logger.error("an Adyen refund's REFUND notification is overdue: look the refund up in Adyen's Customer Area",
                     extra={"refund_id": refund["refund_id"], "psp_refund_id": refund.get("psp_refund_id"),
                            "received_at": since})
        metrics.add_metric(name=OVERDUE_METRIC, unit=MetricUnit.Count, value=1)
    queues.enqueue_refund(refund["refund_id"], STUCK_WAIT_S)
    return AWAITING_NOTIFICATION


def _debit_returned(order: dict[str, Any]) -> bool:
    charge = PaymentTables.from_settings().get_charge(order.get("charge_key") or "")
    return bool(charge and charge.get("debit_returned"))


def apply_psp_refund(refund_object_or_fields: Any, refunds: RefundsTable | None = None) -> str:
    """THE one way a refund moves by the PSP's word: the poll above and the webhook path (Stripe's
    `charge.refund.updated`, `refund.updated`, `refund.failed`: pass the event's Refund object, a dict or an SDK
    object with id, status, metadata.refund_id, failure_reason; Adyen's REFUND notifications: a RefundResult) call
    it. The status machine decides, never arrival order: PENDING ->
    SUCCEEDED | FAILED by conditional writes; a late or repeated event changes nothing. Returns what happened."""
    refunds = refunds or RefundsTable.from_settings()
    result = refund_object_or_fields if isinstance(refund_object_or_fields, psp.RefundResult) \
        else psp.refund_result(refund_object_or_fields)
    refund = refunds.get(result.refund_id) if result.refund_id else None
    if refund is None:
        logger.warning("a PSP refund that names no refund of ours", extra={"psp_refund_id": result.psp_refund_id})
        return "unknown_refund"
    if refund.get("psp_refund_id") not in (None, result.psp_refund_id):
        logger.error("a second PSP refund for one refund", extra={"refund_id": refund["refund_id"],
                                                                  "psp_refund_id": result.psp_refund_id})
        metrics.add_metric(name="RefundMismatch", unit=MetricUnit.Count, value=1)
        return "mismatch"
    refunds.record_psp_refund(refund["refund_id"], result.psp_refund_id, result.status, clock.iso())
    return _apply(refund, result, refunds)


def _apply(refund: dict[str, Any], result: psp.RefundResult, refunds: RefundsTable) -> str:
    status = refund["refund_status"]
    if status == REFUND_FAILED:  # final: a late or out-of-order word of the PSP changes nothing
        if result.status == "succeeded":
            logger.error("the PSP calls a FAILED refund succeeded", extra={"refund_id": refund["refund_id"]})
            metrics.add_metric(name="RefundMismatch", unit=MetricUnit.Count, value=1)
        return "failed"
    if result.status == "succeeded":
        if status == REFUND_PENDING:
            moved = succeed(refund, refunds)
            if moved != "succeeded":
                return moved
        return complete(refunds.get(refund["refund_id"]) or refund, refunds)
    if result.status in _PSP_DONE_FAILED:
        if status == REFUND_SUCCEEDED:  # Stripe can fail a refund it called succeeded: money, a human decides
            logger.error("a SUCCEEDED refund failed at the PSP", extra={"refund_id": refund["refund_id"]})
            metrics.add_metric(name="RefundFailedAfterSuccess", unit=MetricUnit.Count, value=1)
            return "failed_after_success"
        refunds.fail(refund, result.failure_code or result.status, result.failure_reason, clock.iso())
        return "failed"
    if status == REFUND_PENDING and _psp_name(refund) == psp.ADYEN:  # received: the notification decides
        return _await_notification(refund)
    if status == REFUND_PENDING:  # pending, requires_action: the poll looks again later
        queues.enqueue_refund(refund["refund_id"], settings().refund_poll_delay_s)
        return "pending"
    return status.lower()


def succeed(refund: dict[str, Any], refunds: RefundsTable) -> str:
    """PENDING -> SUCCEEDED, its timing decided by the pay-out as it is at that moment, in one transaction with
    the pay-out's change: held (gross shrinks), released (net and commission shrink by their shares), after the
    transfer (the share to take back counted). A pay-out between two steps: "waiting" (the message again)."""
    payouts = PayoutsTable.from_settings()
    amount = int(refund["amount_minor"])
    for _ in range(_SUCCEED_TRIES):
        payout = payouts.get(refund["payment_order_id"])
        if payout is None:  # finalize has not written the pay-out yet
            return _wait(refund)
        state = PayoutStatus(payout["payout_status"])
        try:
            if state is PayoutStatus.HELD:
                moved = refunds.succeed_held(refund, _fields(HELD, amount, 0, payout), payout)
            elif state is PayoutStatus.RELEASED and payout.get("release_applied") \
                    and not payout.get("first_transfer_at"):
                seller, commission = wallet_refunds.split_refund(
                    amount, int(payout["net_minor"]), int(payout["gross_minor"]) - int(payout.get("refunded_minor", 0)),
                    psp_units.minor_step(refund["currency"]))
                moved = refunds.succeed_released(refund, _fields(RELEASED, seller, commission, payout), payout,
                                                 seller, commission)
            elif payout.get("transfer_id"):
                remaining_seller = int(payout["net_minor"]) - int(payout.get("refund_share_minor", 0))
                remaining_gross = int(payout["gross_minor"]) - int(payout.get("refunded_minor", 0))
                seller, commission = wallet_refunds.split_refund(amount, remaining_seller, remaining_gross,
                                                                 psp_units.minor_step(refund["currency"]))
                moved = refunds.succeed_after_transfer(refund, _fields(TRANSFERRED, seller, commission, payout),
                                                       payout, seller)
            else:  # the release not applied yet, a transfer in flight or FAILED (waits for `ops payouts retry`)
                return _wait(refund)
        except PayoutMoved:
            continue
        return "succeeded" if moved else "succeeded_before"
    return _wait(refund)


def _fields(timing: str, seller_share: int, commission_share: int, payout: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"timing": timing, "seller_share_minor": seller_share,
                              "commission_share_minor": commission_share, "updated_at": clock.iso(),
                              "succeeded_at": clock.iso()}
    if timing == TRANSFERRED:
        fields["transfer_id"] = payout["transfer_id"]
    return fields


def _wait(refund: dict[str, Any]) -> str:
    delay = WAIT_FOR_PAYOUT_S
    if clock.now() - clock.parse_iso(str(refund["created_at"])) > WAIT_ALARM_AFTER:
        logger.error("a refund has waited on its pay-out too long: look at the pay-out (ops payouts)",
                     extra={"refund_id": refund["refund_id"], "payment_order_id": refund["payment_order_id"],
                            "created_at": refund["created_at"]})
        metrics.add_metric(name=WAITING_METRIC, unit=MetricUnit.Count, value=1)
        delay = STUCK_WAIT_S
    queues.enqueue_refund(refund["refund_id"], delay)
    return "waiting"


def complete(refund: dict[str, Any], refunds: RefundsTable) -> str:
    """A SUCCEEDED refund's remaining steps, each once: after a transfer the reversal at the PSP FIRST, then the
    books of its timing. The seller's share shows in `owed` only once the reversal is refused: a share owed while
    its reversal is still to come could be netted from another transfer and then reversed too (taken twice).
    Killed after the reversal and before its record: the redelivery finds it by its key (look-up first). Safe to
    run any number of times."""
    if refund.get("finished_at"):
        return "succeeded"
    now = clock.iso()
    share = Money(int(refund["seller_share_minor"]), refund["currency"])
    if refund["timing"] == TRANSFERRED and share.minor and not refund.get("reversal_status"):
        refund = {**refund, **_reverse(refund, share, refunds, now)}
    if not refund.get("books_applied"):
        apply_books(refund, now)
        refunds.mark_books_applied(refund["refund_id"], now)
    if refund.get("reversal_status") == REVERSAL_SUCCEEDED:  # once, under the refund's id
        journal.record(journal.reversal(refund["refund_id"], refund["payment_order_id"], refund["seller_account"],
                                        share, refund.get("psp") or psp.PSP_NAME, refund["reversal_id"]))
    elif refund.get("reversal_status") == REVERSAL_REFUSED:
        owed = wallet_refunds.owed(refund["seller_account"], share.currency)
        logger.warning("reversal refused: the seller owes the share",
                       extra={"refund_id": refund["refund_id"], "seller_account": refund["seller_account"],
                              "code": refund.get("reversal_code"), "owed_minor": owed})
        metrics.add_metric(name="SellerOwedMinor", unit=MetricUnit.Count, value=owed)
    refunds.finish(refund["refund_id"], now)
    return "succeeded"


def apply_books(refund: dict[str, Any], now: str) -> None:
    """The refund's wallet movement and ledger transaction of its timing, each once under the refund's id. After
    a transfer the ledger has the seller's receivable (paid by the reversal's transaction when it succeeded); the
    wallet's `owed` grows only by what the seller still owes (nothing when the reversal took the share back)."""
    seller, order_id, refund_id = refund["seller_account"], refund["payment_order_id"], refund["refund_id"]
    currency = refund["currency"]
    amount = Money(int(refund["amount_minor"]), currency)
    share = Money(int(refund["seller_share_minor"]), currency)
    commission = Money(int(refund["commission_share_minor"]), currency)
    psp_name = refund.get("psp") or psp.PSP_NAME
    if refund["timing"] == HELD:
        wallet_refunds.refund_held(seller, order_id, refund_id, amount, now)
        journal.record(journal.refund_held(refund_id, order_id, seller, amount, psp_name))
    elif refund["timing"] == RELEASED:
        wallet_refunds.refund_released(seller, order_id, refund_id, amount, share, now)
        journal.record(journal.refund_released(refund_id, order_id, seller, share, commission, psp_name))
    else:
        still_owed = Money.zero(currency) if refund.get("reversal_status") == REVERSAL_SUCCEEDED else share
        wallet_refunds.refund_after_transfer(seller, order_id, refund_id, amount, still_owed, now)
        journal.record(journal.refund_after_transfer(refund_id, order_id, seller, share, commission, psp_name))


def _reverse(refund: dict[str, Any], share: Money, refunds: RefundsTable, now: str) -> dict[str, Any]:
    """Take the seller's share back from the transfer (key reversal:<refund_id>) and record the outcome: the
    fields recorded. Refused (the account's balance), the share is owed and netted from the seller's next
    transfers (functions/executor/netting.py)."""
    refund_id = refund["refund_id"]
    if refund["transfer_id"] == NO_TRANSFER:
        result = psp.ReversalResult(psp.REVERSAL_REFUSED, failure_code="no_transfer")
    else:
        result = psp.client().reverse_transfer(refund["transfer_id"], share, refund_id, look_up_first=True)
    if result.outcome == psp.REVERSED:
        refunds.record_reversal(refund_id, REVERSAL_SUCCEEDED, now, result.reversal_id)
        metrics.add_metric(name="RefundReversals", unit=MetricUnit.Count, value=1)
        return {"reversal_status": REVERSAL_SUCCEEDED, "reversal_id": result.reversal_id}
    refunds.record_reversal(refund_id, REVERSAL_REFUSED, now, code=result.failure_code)
    return {"reversal_status": REVERSAL_REFUSED, "reversal_code": result.failure_code}


def _record(record: SQSRecord) -> None:
    refund_id = json.loads(record.body)["refund_id"]
    outcome = drive(refund_id)
    logger.info("refund", extra={"refund_id": refund_id, "outcome": outcome})
    metrics.add_metric(name=f"Refunds_{outcome}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
