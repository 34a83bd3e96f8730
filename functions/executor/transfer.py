"""SQS consumer (PayoutsQueue): drives one payout per message, `{"payment_order_id": ...}`, as far as it can go.

RELEASED -> the release applied to wallet and ledger once (release_applied) -> TRANSFERRING (begin_transfer, due at
the deadline) -> the Transfer at Stripe (key transfer:<payment_order_id>) -> its id recorded -> wallet and ledger
transfer once -> TRANSFERRED, written last. Every step is idempotent and the payout stays in the sweeper's index
until the last one, so a worker killed between any two lines is resumed by a redelivery or by the sweeper.
Outcomes: the platform's balance short -> postponed (growing backoff), never FAILED, and a message arriving before
that wait ends (a duplicate, a release's, an earlier sweep's) is dropped without an attempt; the account refused
-> FAILED + a dead letter (alarm; `ops payouts retry` after the seller fixes it); unclear -> the message fails and
SQS delivers it again; past max attempts, a Transfer found for another amount, or a refusal of what we send -> a
dead letter, the payout out of the sweeper's index (status kept: the money stays `available`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.executor import netting, payout_letters
from functions.ledger import journal
from functions.shared import clock, psp, queues
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError
from functions.shared.money import Money
from functions.shared.observability import CORRELATION_FIELD, service_metrics
from functions.shared.status import PayoutStatus
from functions.shared.tables import PayoutsTable, SellersTable
from functions.wallet import movements

logger = Logger(service="executor")
metrics = service_metrics()
processor = BatchProcessor(event_type=EventType.SQS)

BALANCE_SHORT_STEP = timedelta(minutes=15)  # × attempts, up to BALANCE_SHORT_MAX
BALANCE_SHORT_MAX = timedelta(hours=6)
DISPUTE_HOLD_RECHECK = timedelta(days=1)  # a safety net: a won dispute makes the pay-out due at once
_IDLE = (PayoutStatus.HELD, PayoutStatus.TRANSFERRED, PayoutStatus.FAILED)


def drive(payment_order_id: str, payouts: PayoutsTable | None = None, sellers: SellersTable | None = None) -> str:
    """One payout as far as it can go now; returns what happened (logged, and read by tests)."""
    payouts = payouts or PayoutsTable.from_settings()
    payout = payouts.get(payment_order_id)
    if payout is None:
        raise LookupError(f"no payout {payment_order_id}: the message stays for a human (PayoutsDlq)")
    logger.set_correlation_id(payout.get(CORRELATION_FIELD) or None)
    if PayoutStatus(payout["payout_status"]) in _IDLE:
        return "nothing"
    if payout.get("dead_letter_reason"):  # a stale message: a human holds it until `ops payouts retry`
        return "left_for_operator"
    now = clock.now()
    if backing_off(payout, clock.iso(now)):  # the sweeper sends it again when due
        return "not_due"
    if not payout.get("release_applied"):
        apply_release(payout, clock.iso(now))
        payouts.mark_release_applied(payment_order_id, clock.iso(now))
    # The destination is frozen per key generation (begin_transfer): read the seller only before that.
    sellers = sellers or SellersTable.from_settings()
    destination = payout.get("destination") or _account(sellers, payout["seller_account"])
    if not destination and not payout.get("transfer_id"):
        due_at = clock.iso(now + payout_letters.AWAIT_SELLER)
        payouts.await_seller(payment_order_id, payout["seller_account"], due_at, clock.iso(now))
        # A registration between the read above and await_seller found nothing to wake: read once more, so
        # only the awaiting index's lag is left to the safety net's hour.
        destination = _account(sellers, payout["seller_account"])
        if not destination:
            return "awaiting_seller"
    if int(payout.get("transfer_attempts", 0)) >= settings().max_transfer_attempts:
        return payout_letters.out_of_attempts(payouts, payout, now)
    if payout.get("dispute_holds") and not payout.get("first_transfer_at"):  # docs/decisions.md "Disputes"
        payouts.postpone(payment_order_id, clock.iso(now + DISPUTE_HOLD_RECHECK), clock.iso(now),
                         f"held by dispute {', '.join(sorted(payout['dispute_holds']))}", backoff=True)
        return "dispute_hold"
    begun = payouts.begin_transfer(payment_order_id, clock.iso(now), _deadline(now), str(destination or ""))
    if begun is None:  # it moved on meanwhile (another delivery finished or failed it)
        return "nothing"
    begun["netted_minor"] = netting.net_owed(begun, clock.iso(now))
    if not begun.get("transfer_id"):
        generation = int(begun.get("transfer_key_generation", 0))
        try:
            result = _transfer(netting.to_send(begun), str(begun.get("destination") or destination))
        except PspOutcomeUnknown as error:  # money may have moved as our books do not say: a human looks
            return payout_letters.dead_letter(payouts, begun, f"{type(error).__name__}: {error}", now)
        except PspPermanentError as error:  # Stripe refused what we send: no Transfer under this key
            payouts.retire_transfer_key(payment_order_id, generation, clock.iso(now))
            return payout_letters.dead_letter(payouts, begun, f"{type(error).__name__}: {error}", now)
        if result.outcome in (psp.BALANCE_SHORT, psp.ACCOUNT_REFUSED) and not payouts.retire_transfer_key(
                payment_order_id, generation, clock.iso(now)):
            return "nothing"  # a later attempt already moved past this key: its outcome decides
        if result.outcome == psp.BALANCE_SHORT:
            later = now + min(BALANCE_SHORT_STEP * int(begun["transfer_attempts"]), BALANCE_SHORT_MAX)
            payouts.postpone(payment_order_id, clock.iso(later), clock.iso(now),
                             f"{result.failure_code}: {result.failure_reason}", backoff=True)
            return "balance_short"
        if result.outcome == psp.ACCOUNT_REFUSED:
            return _refused(payouts, begun, result, now)
        if not payouts.record_transfer_id(payment_order_id, result.transfer_id, clock.iso(now)):
            # FAILED meanwhile, or another Transfer recorded: money moved that the payout does not say. Never
            # book it silently; a human reconciles the two.
            current = payouts.get(payment_order_id) or {}
            payout_letters.dead_letter(payouts, begun, f"transfer {result.transfer_id} made while the payout is "
                                       f"{current.get('payout_status')} with transfer {current.get('transfer_id')}",
                                       now)
            return "dead_lettered"
        begun["transfer_id"] = result.transfer_id
    apply_transfer(begun, clock.iso(now))
    payouts.finish_transfer(payment_order_id, begun["transfer_id"], clock.iso(now),
                            at_psp=begun["transfer_id"] != NO_TRANSFER)
    return "transferred"


def backing_off(payout: dict[str, Any], now: str) -> bool:
    """Postponed by this worker (the balance short, a dispute hold) and not due yet. Anything that makes the pay-out
    due earlier (the sweeper's lease, a seller's registration, a won dispute, `ops payouts retry`) sets another
    due_at, which ends the wait."""
    until = payout.get("postponed_until")
    return bool(until) and until == payout.get("due_at") and str(until) > now


def _account(sellers: SellersTable, seller_account: str) -> str | None:
    return (sellers.get(seller_account) or {}).get("psp_account_id")


def _transfer(payout: dict[str, Any], destination: str) -> psp.TransferResult:
    if int(payout["net_minor"]) == 0:  # commission took it all: nothing to send, nothing to book
        return psp.TransferResult(psp.TRANSFERRED, NO_TRANSFER)
    # A key of a later generation is used only after a refusal: look first, in case a late attempt of an
    # earlier key made a Transfer after all.
    look_up_first = psp.transfer_key_aged(payout) or int(payout.get("transfer_key_generation", 0)) > 0
    return psp.client().transfer(payout, destination, look_up_first=look_up_first)


NO_TRANSFER = "none"  # the transfer_id of a payout whose net is zero


def apply_release(payout: dict[str, Any], now: str) -> None:
    """The release in wallet and ledger, each once (the movement's guard, the transaction's id)."""
    seller, order_id = payout["seller_account"], payout["payment_order_id"]
    gross = Money(int(payout["gross_minor"]), payout["currency"])
    commission = Money(int(payout["commission_minor"]), payout["currency"])
    if gross.minor == 0:  # refunded in full while held: nothing left to release
        return
    movements.release(seller, order_id, gross, commission, now)
    journal.record(journal.release(order_id, seller, gross, commission))


def apply_transfer(payout: dict[str, Any], now: str) -> None:
    """What the transfer sent: the net less what it netted of the seller's debt (netting.py)."""
    net = Money(int(payout["net_minor"]) - int(payout.get("netted_minor") or 0), payout["currency"])
    if net.minor == 0:
        return
    seller, order_id, transfer_id = payout["seller_account"], payout["payment_order_id"], payout["transfer_id"]
    movements.transfer_out(seller, order_id, net, transfer_id, now)
    journal.record(journal.transfer(order_id, seller, net, psp.PSP_NAME, transfer_id))


def _refused(payouts: PayoutsTable, payout: dict[str, Any], result: psp.TransferResult, now: datetime) -> str:
    """FAILED with the reason; the dead letter first, so a crash between the two sends it again rather than
    leave a FAILED payout no alarm names. The money stays in `available` (no transfer movement was applied)."""
    order_id = payout["payment_order_id"]
    queues.dead_letter_payout(order_id, "transfer", f"account refused: {result.failure_code}: {result.failure_reason}",
                              int(payout.get("transfer_attempts", 0)), payout_letters.detail(payout))
    payouts.fail_transfer(order_id, result.failure_code, result.failure_reason, clock.iso(now))
    return "failed"


def _deadline(now: datetime) -> str:
    return clock.iso(now + timedelta(seconds=settings().transfer_deadline_s))


def _record(record: SQSRecord) -> None:
    order_id = json.loads(record.body)["payment_order_id"]
    outcome = drive(order_id)
    logger.info("payout", extra={"payment_order_id": order_id, "outcome": outcome})
    metrics.add_metric(name=f"Payouts_{outcome}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
