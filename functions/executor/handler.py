"""Workflow task: the charge's one PaymentIntent (idempotency key charge:<checkout_id>:<CURRENCY>).

Transient PSP errors raise PspTransientError, which the workflow retries with backoff: the same key, and from
the second call of a charge on a look-up first, so a charge whose answer was lost is found or replayed, never
repeated. Declines come back as a `failed` outcome. A PaymentIntent still in requires_action (3-D Secure) past the
challenge's deadline is cancelled here (issue 17). Stripe replaying a stored 500 for the key is handled in
`_create` (docs/decisions.md 2026-12-04). A checkout of several currencies paid with a single-use PaymentMethod
first attaches it to the checkout's Customer (`_checkout_customer`), and every PaymentIntent names that Customer.

A charge whose PSP is down (its circuit breaker open) sends nothing: it is parked, EXECUTING and due when the
breaker's wait ends or PARK_MAX_S from now if sooner, jittered (`_park_if_psp_down`, outcome `parked`), and the
sweeper drives it again then; one never sent
ends FAILED `psp_unavailable` after psp_unavailable_fail_after_s. It never moves to another PSP: failover only
ever places new charges (functions/shared/routing.py).

A charge routed to another PSP (Adyen) goes through the port only (`_execute_through_port`): none of Stripe's
steps above run for it (docs/decisions.md 2026-12-07).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared import breaker, clock, psp, psp_port
from functions.shared.config import settings
from functions.shared.errors import (
    ChargeFailedUnsent,
    PspKeyPoisoned,
    PspOutcomeUnknown,
    PspPermanentError,
    PspTransientError,
)
from functions.shared.models import ChargeWork
from functions.shared.names import AWAITING_FUNDS, FUNDS_NOT_RECEIVED, FUNDS_RECEIVED, OFFLINE_PSP
from functions.shared.observability import service_metrics
from functions.shared.tables import PaymentTables, transient_errors_retryable

logger = Logger(service="executor")
metrics = service_metrics()


def execute(work: ChargeWork, tables: PaymentTables | None = None) -> psp.ChargeResult:
    tables = tables or PaymentTables.from_settings()
    if work.psp == OFFLINE_PSP:  # a check or money order: no PSP; the charge's receipt and deadline decide
        return offline_outcome(tables.get_charge(work.charge_key) or {})
    if (parked := _park_if_psp_down(work, tables)) is not None:
        return parked
    try:
        return _execute(work, tables)
    except ChargeFailedUnsent:  # decided FAILED unsent by an earlier run (its finalize died or is late): again
        return _failed_unsent(work)
    except PspTransientError:
        # This call may have been what opened the breaker: if it is open now, the charge waits for the PSP (its next
        # attempt looks up first, as after any unclear answer) instead of spending its retries on an outage.
        breaker.release_unused_probe(work.psp)
        if (parked := _park_if_psp_down(work, tables)) is not None:
            return parked
        raise
    finally:  # a probe lease taken above and used by no call (refused before it) is given back at once
        breaker.release_unused_probe(work.psp)


def _execute(work: ChargeWork, tables: PaymentTables) -> psp.ChargeResult:
    if work.psp != psp.PSP_NAME:
        return _execute_through_port(work, tables)
    before = tables.note_psp_call(work.charge_key, work.attempt)
    reference = before.get("psp_reference") or work.psp_reference
    # The PSP knows the charge: its current state, not the replay of a first answer.
    result = psp.client_for(work.psp).retrieve(reference, work) if reference else _create(work, tables, before)
    if result.psp_reference and result.psp_reference != reference:
        tables.record_psp_reference(work.charge_key, result.psp_reference, clock.iso())
    if result.psp_status == psp.REQUIRES_ACTION and _challenge_expired(before):
        # The buyer had threeds_timeout_s to complete the 3-D Secure challenge: cancel (or find it succeeded).
        logger.info("3-D Secure challenge abandoned: cancelling the PaymentIntent")
        result = psp.client_for(work.psp).cancel_abandoned(result.psp_reference, work)
    elif reference and result.outcome == psp.FAILED and result.psp_status == psp.REQUIRES_PAYMENT_METHOD:
        # Failed after an earlier answer: the only way its client secret can have reached the buyer (a 3-D
        # Secure challenge). Closed before the orders end FAILED, so that it cannot be confirmed again.
        logger.info("payment failed: cancelling the open PaymentIntent")
        result = psp.client_for(work.psp).close_failed(result, work)
    return result


PARK_JITTER_S = 10  # parked charges come due spread over this, not all at the breaker's reopening instant
# ... and at most this far ahead: a breaker closed before its time (an operator's close after an announced
# maintenance ended early, another charge's probe) releases them within PARK_MAX_S or so. While it stays open, each
# parked charge costs one execution per PARK_MAX_S (it parks again, sending nothing).
PARK_MAX_S = 30


def _park_if_psp_down(work: ChargeWork, tables: PaymentTables) -> psp.ChargeResult | None:
    """Nothing goes to a PSP whose breaker refuses the call (`breaker.allows_call`; it says yes whenever it cannot
    tell): None then. Otherwise the charge is parked, EXECUTING and due when the breaker may let a call through,
    and the outcome `parked` ends this execution (the workflow's ChargeParked: no retry, no dead letter, no error).
    Killed between the park and the return: the execution is retried and parks again (the same attempt counts
    once). A charge never sent, parked for psp_unavailable_fail_after_s, ends FAILED `psp_unavailable` instead:
    nothing is unknown at the PSP, so no money can have moved."""
    if breaker.allows_call(work.psp, time_left_s=psp.time_left_s()):
        return None  # (a probe lease taken here is given back by the call's answer: psp.py and psp_adyen.py record it)
    now = clock.now()
    latest = now + timedelta(seconds=PARK_MAX_S)
    try:
        due = min(clock.parse_iso(breaker.breaker().reopens_at(work.psp)), latest)
    except Exception:  # noqa: BLE001 - its table answered a moment ago; if not now, look again soon
        due = latest
    due += timedelta(seconds=random.uniform(0, PARK_JITTER_S))  # noqa: S311 - spreading load, not a secret
    parked = tables.park_for_psp(work.charge_key, work.attempt, clock.iso(due), clock.iso(now))
    if parked is None:  # no longer this attempt's (a later one runs, or the charge ended): nothing more to do
        return psp.ChargeResult(psp.PARKED)
    if parked.get("unsent_failed_at"):  # decided already (this run's retry, or finalize died after the decision)
        return _failed_unsent(work)
    never_sent = not int(parked.get("psp_calls", 0)) and not parked.get("psp_reference")
    waited_s = (now - clock.parse_iso(str(parked["psp_down_since"]))).total_seconds()
    config = settings()
    # Decided in the charge before it is answered: no later attempt or stale run can send a call for it any more
    # (note_psp_call refuses), so the orders finalize marks FAILED are never charged after.
    if never_sent and waited_s >= config.psp_unavailable_fail_after_s and tables.fail_unsent(
            work.charge_key, work.attempt, clock.iso(now + timedelta(seconds=config.executing_deadline_s)),
            clock.iso(now)):
        logger.info("PSP down: never sent, failed", extra={"psp": work.psp, "waited_s": int(waited_s)})
        return _failed_unsent(work)
    logger.info("PSP down: charge parked", extra={"psp": work.psp, "due_at": clock.iso(due)})
    return psp.ChargeResult(psp.PARKED)


PSP_UNAVAILABLE = "psp_unavailable"


def _failed_unsent(work: ChargeWork) -> psp.ChargeResult:
    return psp.ChargeResult(psp.FAILED, failure_code=PSP_UNAVAILABLE,
                            failure_reason=f"{work.psp} was unavailable; nothing was sent, nothing was charged")


# Adyen's resultCodes that wait for the buyer. A redirect or a 3-D Secure 2 fingerprint or challenge is handed to the
# storefront (Drop-in's createFromAction) and its result comes back through our API as `details`, which the executor
# sends to /payments/details. A voucher (PresentToShopper) is paid later, elsewhere: not built.
SHOPPER_ACTION_CODES = frozenset({"RedirectShopper", "IdentifyShopper", "ChallengeShopper", "PresentToShopper"})
HANDED_OVER_CODES = frozenset({"RedirectShopper", "IdentifyShopper", "ChallengeShopper"})
SHOPPER_ACTION_NOT_SUPPORTED = "shopper_action_not_supported"
ADYEN_ACTION = "adyen_action"  # next_action.type of an Adyen shopper action (finalize, the API's NextAction)
AUTHENTICATION_ABANDONED = "authentication_abandoned"


def _execute_through_port(work: ChargeWork, tables: PaymentTables) -> psp.ChargeResult:
    """A charge at a PSP other than Stripe (Adyen), through the port's charge and look-up only.

    Stripe's steps do not run: no Customer (a card that pays several charges is refused below: Adyen's Drop-in
    card data pays one payment), no PaymentIntent retrieve, 3-D Secure cancel or close (Adyen answers a shopper
    action as a resultCode, and a payment the buyer never authenticates is never authorised), no poisoned key
    (Adyen replays whatever it stored under the key, an `Error` included, which the adapter reads as FAILED).
    The first call charges; every later call of the charge (a retry after an unclear answer, a re-drive, a known
    psp_reference) is the look-up, which at Adyen is the same request replayed under the same key: its first
    answer, or, if the first never arrived, the payment made now. Past KEY_SAFE_AGE the adapter sends nothing and
    raises PspOutcomeUnknown (a replay could charge twice). Never a second payment."""
    client = psp.client_for(work.psp)  # first: a PSP that is not wired is PspNotRoutable (dead-lettered), not FAILED
    if work.shares_payment_method:  # the API refuses it; an item from elsewhere is refused before any call
        raise PspPermanentError(f"{work.psp} charges one currency per card: this checkout has "
                                f"{', '.join(work.checkout_currencies)}", code="payment_method_single_currency")
    if work.payment_method_type != "card":
        raise PspPermanentError(f"{work.psp} charges cards only here, not {work.payment_method_type}",
                                code="payment_method_not_supported_by_psp")
    left = psp.time_left_s()
    if left is not None and left < psp.MIN_CALL_S:  # not sent: the workflow's next try has a whole invocation
        raise PspTransientError(f"{left:.1f} s left in this invocation: the PSP call is not sent")
    account = str(getattr(client, "account_id", ""))
    before = tables.note_psp_call(work.charge_key, work.attempt, account)
    if before.get("psp_account", account) != account:  # its keys are another account's: a call here could charge again
        raise PspOutcomeUnknown(f"{work.charge_key}: first sent under {work.psp} account {before['psp_account']}, "
                                f"configured now {account}: nothing is sent; a human decides")
    reference = str(before.get("psp_reference") or work.psp_reference)
    if _awaits_shopper_action(before):  # shown to the buyer (finalize recorded it): their details, or the deadline
        return _after_shopper_action(client, work, tables, before, reference)
    retry = int(before.get("psp_calls", 0)) > 0 or bool(reference)
    work = _as_sent(work, before, retry)
    try:
        result = client.look_up(work) if retry else None
        if result is None:
            result = client.charge(work, look_up_first=retry)
    except PspPermanentError as refused:
        if retry:  # as for Stripe: a refusal of a later call is no proof that an earlier one made nothing
            raise PspOutcomeUnknown(f"{work.charge_key}: a retried charge was refused: {refused}") from refused
        raise
    if reference and result.psp_reference and result.psp_reference != reference:
        raise PspOutcomeUnknown(f"{work.charge_key}: {work.psp} answers {result.psp_reference}, the charge "
                                f"recorded {reference}")
    if result.psp_reference and result.psp_reference != reference:
        tables.record_psp_reference(work.charge_key, result.psp_reference, clock.iso())
    if result.outcome == psp.PENDING and result.psp_status in SHOPPER_ACTION_CODES:
        return _shopper_action(work, result)
    if result.outcome == psp.PENDING:
        # Received / Pending: the outcome comes in Adyen's AUTHORISATION notification (the replay only repeats this
        # answer), recorded on the charge by the webhook path, maybe while this call was out: read again. Without
        # one, finalize parks the charge for a recheck, which the notification brings forward; none within the
        # sweeper's attempts: a dead letter, for a human.
        return _notified_outcome(work, tables.get_charge(work.charge_key) or {}, result) or result
    if (notified := _notified_outcome(work, before, result)) is not None and notified.outcome != result.outcome:
        raise PspOutcomeUnknown(f"{work.charge_key}: {work.psp} answered {result.psp_status}, its notification said "
                                f"{notified.psp_status}: a human decides which holds")
    return result


def _shopper_action(work: ChargeWork, result: psp.ChargeResult) -> psp.ChargeResult:
    """A first answer asking the buyer to act: pending `requires_action` with Adyen's action object, which finalize
    shows on the orders (next_action `adyen_action`) until threeds_timeout_s, as Stripe's challenges. An action that
    cannot be handed over (a voucher, or none given) ends FAILED: it never reaches the buyer, so nothing is ever
    authorised."""
    if result.psp_status in HANDED_OVER_CODES and result.adyen_action:
        logger.info("the PSP asks for a shopper action: handed to the storefront",
                    extra={"psp_status": result.psp_status})
        return psp.ChargeResult(psp.PENDING, result.psp_reference, psp.REQUIRES_ACTION, action=ADYEN_ACTION,
                                adyen_action=result.adyen_action)
    logger.warning("the PSP asks for a shopper action this integration cannot hand over",
                   extra={"psp_status": result.psp_status})
    return psp.ChargeResult(psp.FAILED, result.psp_reference, result.psp_status, SHOPPER_ACTION_NOT_SUPPORTED,
                            f"{work.psp} asked for {result.psp_status}: not supported for this PSP")


def _awaits_shopper_action(charge: dict[str, Any]) -> bool:
    return (charge.get("next_action") or {}).get("type") == ADYEN_ACTION


MAX_ACTION_ROUNDS = 3  # actions answered per charge (a fingerprint, then a challenge, is 2): past it, FAILED


def _after_shopper_action(client: Any, work: ChargeWork, tables: PaymentTables, charge: dict[str, Any],
                          reference: str) -> psp.ChargeResult:
    """A charge whose shopper action the buyer was shown (next_action, its `action_id`). Decided from the charge, in
    this order:
    - abandoned (`action_abandoned_at`, written by an earlier run): FAILED authentication_abandoned again; details
      Adyen refused at their first sending (`details_refused`, written before answering): FAILED again.
    - details recorded for this action (the API's `payment_details`): sent to Adyen (`submit_details`, key
      `details:<charge_key>:<action_id>`), whose answer decides: an outcome, or a next action (a challenge after a
      fingerprint), handed to the storefront in its place like the first. A retry, or a re-run after a crash
      anywhere after the call (its answer lost, finalize not run or died half-way, the next action not recorded
      yet), sends the same details under the same key: Adyen replays its first answer, so the run ends the same and
      nothing is authorised twice.
    - the deadline passed: the abandonment is written first (only while no details for this action are recorded,
      and the API records none after it), then answered FAILED authentication_abandoned. No cancel is sent: Adyen
      authorises a payment waiting for a shopper action only once /payments/details brings the buyer's result
      (Checkout API v71, /payments/details; docs.adyen.com/online-payments/3d-secure/native-3ds2), and only we hold
      the API key that sends it; the pending payment expires at Adyen. A crash between the write and finalize: the
      re-run finds the abandonment. If the write loses to the API's (details came first), the details decide.
    - otherwise (a re-drive before the deadline, e.g. a finalize that died before pushing the sweep to it): the
      same action, pending again; finalize keeps the deadline it set (if_not_exists)."""
    notified = _notified_outcome(work, charge, psp.ChargeResult(psp.PENDING, reference))
    if charge.get("action_abandoned_at") or charge.get("details_refused"):
        refused = charge.get("details_refused") or {}
        failed = _details_refused(reference, str(refused.get("code", "")), str(refused.get("message", ""))) \
            if refused else _abandoned(work, reference)
        if notified is not None and notified.outcome == psp.SUCCEEDED:  # decided FAILED, and Adyen authorised it
            raise PspOutcomeUnknown(f"{work.charge_key}: {failed.failure_code}, yet {work.psp} notified it "
                                    "authorised: a human decides which holds")
        return failed
    if notified is not None:  # the buyer completed the action at the PSP (its AUTHORISATION): that decides
        return notified
    action = charge["next_action"].get("action") or {}
    action_json = json.dumps(action, sort_keys=True, separators=(",", ":"))
    current = str(charge["next_action"].get("action_id") or psp_port.action_id(action_json))
    details = charge.get("psp_details") if charge.get("psp_details_for") == current else None
    if not details and _challenge_expired(charge):
        if tables.abandon_action(work.charge_key, current, clock.iso()):
            logger.info("shopper action abandoned: failed without a call")
            return _abandoned(work, reference)
        charge = tables.get_charge(work.charge_key) or {}  # details or a notification recorded meanwhile: decide
        if (notified := _notified_outcome(work, charge, psp.ChargeResult(psp.PENDING, reference))) is not None:
            return notified
        details = charge.get("psp_details") if charge.get("psp_details_for") == current else None
    if not details:
        return psp.ChargeResult(psp.PENDING, reference, psp.REQUIRES_ACTION, action=ADYEN_ACTION,
                                adyen_action=action_json)
    first = tables.note_details_sent(work.charge_key, current, clock.iso())
    work = work.model_copy(update={"first_attempt_at": str(charge.get("first_attempt_at") or "")})
    try:
        result = client.submit_details(work, details, current)
    except PspPermanentError as refused:
        if not first:  # an earlier sending may have been processed: its answer, not this refusal, is the truth
            raise PspOutcomeUnknown(f"{work.charge_key}: resent details were refused: {refused}") from refused
        # Adyen refused the buyer's details (malformed, not for this payment): it authorises nothing without them.
        # Recorded before it is answered, so a re-run after a crash answers the same without sending again (a
        # resent refusal would be PspOutcomeUnknown above: a dead letter for a decided charge).
        logger.warning("the PSP refused the shopper action's details", extra={"code": refused.code})
        tables.record_details_refused(work.charge_key, refused.code or DETAILS_REFUSED, refused.message)
        return _details_refused(reference, refused.code, refused.message)
    if reference and result.psp_reference and result.psp_reference != reference:
        raise PspOutcomeUnknown(f"{work.charge_key}: {work.psp} answers {result.psp_reference} to the details, the "
                                f"charge recorded {reference}")
    if result.outcome == psp.PENDING and result.psp_status in SHOPPER_ACTION_CODES:
        rounds = int((tables.get_charge(work.charge_key) or {}).get("details_rounds", 0))
        if rounds >= MAX_ACTION_ROUNDS:  # nothing is authorised without the next details, which are never sent
            logger.warning("too many shopper actions", extra={"psp_status": result.psp_status, "rounds": rounds})
            return psp.ChargeResult(psp.FAILED, result.psp_reference, result.psp_status, SHOPPER_ACTION_NOT_SUPPORTED,
                                    f"{work.psp} asked for a shopper action again after {rounds} answered")
        return _shopper_action(work, result)  # the next action (a challenge after a fingerprint): to the buyer
    if result.outcome == psp.PENDING:  # Received/Pending: its AUTHORISATION decides, as after a first call
        return _notified_outcome(work, tables.get_charge(work.charge_key) or {}, result) or result
    if (notified := _notified_outcome(work, charge, result)) is not None and notified.outcome != result.outcome:
        raise PspOutcomeUnknown(f"{work.charge_key}: {work.psp} answered {result.psp_status} to the details, its "
                                f"notification said {notified.psp_status}: a human decides which holds")
    return result


DETAILS_REFUSED = "details_refused"


def _details_refused(reference: str, code: str, message: str) -> psp.ChargeResult:
    return psp.ChargeResult(psp.FAILED, reference, DETAILS_REFUSED, code or DETAILS_REFUSED,
                            message or "the PSP refused the buyer's details")


def _abandoned(work: ChargeWork, reference: str) -> psp.ChargeResult:
    return psp.ChargeResult(psp.FAILED, reference, "abandoned", AUTHENTICATION_ABANDONED,
                            f"the buyer did not complete {work.psp}'s shopper action in time")


def _notified_outcome(work: ChargeWork, charge: dict[str, Any], answer: psp.ChargeResult
                      ) -> psp.ChargeResult | None:
    """The outcome a PSP's signed notification recorded on the charge (Adyen's AUTHORISATION, written by
    functions/webhooks/adyen.py once its amount was checked against the charge's), or None. It must name the payment
    the PSP's own answer (this attempt's replay) names, else PspOutcomeUnknown."""
    notified = charge.get("psp_notified")
    if not notified:
        return None
    if notified.get("psp_reference") != answer.psp_reference:
        raise PspOutcomeUnknown(f"{work.charge_key}: {work.psp} notified {notified.get('psp_reference')}, its answer "
                                f"names {answer.psp_reference or 'no payment'}")
    result = psp.ChargeResult(**{name: str(notified.get(name) or "") for name in NOTIFIED_FIELDS})
    if result.outcome not in (psp.SUCCEEDED, psp.FAILED):
        raise PspOutcomeUnknown(f"{work.charge_key}: a recorded notification says {result.outcome!r}")
    if answer.outcome == psp.PENDING:
        logger.info("charge decided by the PSP's notification", extra={"outcome": result.outcome})
    return result


NOTIFIED_FIELDS = ("outcome", "psp_reference", "psp_status", "failure_code", "failure_reason")


def _as_sent(work: ChargeWork, charge: dict[str, Any], retry: bool) -> ChargeWork:
    """The work as the adapter sends it, from the charge item, not the workflow's input: the encrypted card (kept on
    the charge only, never in the workflow's input or its dead letters) and the first attempt's time, which decides
    whether the key may still be replayed. A retry that knows no first attempt cannot say: a human decides."""
    first_attempt_at = str(charge.get("first_attempt_at") or "")
    if retry and not first_attempt_at:
        raise PspOutcomeUnknown(f"{work.charge_key}: retried at {work.psp} without a recorded first attempt: whether "
                                "its key may be replayed is not known")
    card = str(charge.get("adyen_payment_method") or "")
    if not card and retry:  # removed when the charge became final: nothing to replay the first request with
        raise PspOutcomeUnknown(f"{work.charge_key}: no payment method left to replay at {work.psp} (the charge is "
                                "final, or was stored without one)")
    if not card:
        raise PspPermanentError(f"{work.charge_key}: no payment method to send to {work.psp}",
                                code="payment_method_missing")
    return work.model_copy(update={"payment_method": card, "first_attempt_at": first_attempt_at,
                                   "adyen_browser": str(charge.get("adyen_browser") or "")})


def offline_outcome(charge: dict[str, Any]) -> psp.ChargeResult:
    """Issue 17: funds recorded -> succeeded; none past the deadline (offline_funds_days) -> failed
    funds_not_received; else still waiting (a re-drive before the deadline: finalize parks it there again)."""
    reference = str(charge.get("offline_reference", ""))
    if charge.get("offline_receipt"):
        return psp.ChargeResult(psp.SUCCEEDED, psp_reference=reference, psp_status=FUNDS_RECEIVED)
    due_by = str(charge.get("funds_due_by", ""))
    if due_by and clock.now() >= clock.parse_iso(due_by):
        return psp.ChargeResult(psp.FAILED, psp_reference=reference, psp_status=FUNDS_NOT_RECEIVED,
                                failure_code=FUNDS_NOT_RECEIVED, failure_reason=f"no funds received by {due_by}")
    return psp.ChargeResult(psp.PENDING, psp_reference=reference, psp_status=AWAITING_FUNDS)


def _challenge_expired(charge: dict[str, Any]) -> bool:
    """The challenge's deadline, set by finalize when the charge first waited for it, has passed."""
    expires = charge.get("action_expires_at")
    return bool(expires) and clock.now() >= clock.parse_iso(str(expires))


def _create(work: ChargeWork, tables: PaymentTables, before: dict[str, Any]) -> psp.ChargeResult:
    generation = int(before.get("key_generation", 0))
    look_up_first = int(before.get("psp_calls", 0)) > 0
    customer = ""
    if psp.needs_customer(work):
        customer, declined = _checkout_customer(work, tables, str(before.get("psp_customer", "")))
        if declined is not None:
            return declined
    mandate = before.get("mandate_data")
    try:
        return psp.client_for(work.psp).charge(work, look_up_first=look_up_first, generation=generation,
                                               customer=customer, mandate_data=mandate)
    except PspKeyPoisoned:
        return _after_poisoned_key(work, tables, generation, customer, mandate)
    except PspPermanentError as refused:
        if look_up_first or generation:
            # A refusal of a later create is no proof: an earlier call may have charged (the single-use token
            # it spent is then what this create is refused for). Only a decline, or a look-up, decides.
            raise PspOutcomeUnknown(f"{work.charge_key}: a retried create was refused: {refused}") from refused
        raise


def _after_poisoned_key(work: ChargeWork, tables: PaymentTables, generation: int, customer: str,
                        mandate: dict[str, Any] | None) -> psp.ChargeResult:
    """Stripe replays the 500 it stored for this key, for 24 h. Only a look-up that can be trusted may prove that
    no PaymentIntent exists; then the next key is used, once. Search settles within minutes of a creation, and a
    PaymentIntent this key made was created before the replay was first seen: so the wait is counted from then,
    not from the charge's first attempt (which may be long before the poisoned create)."""
    poisoned_at = clock.parse_iso(tables.note_key_poisoned(work.charge_key, generation, clock.iso()))
    if clock.now() - poisoned_at < psp.SEARCH_TRUSTED_AFTER:
        raise PspTransientError(f"{work.charge_key}: stored 500 replayed; look again later")
    if psp.client_for(work.psp).find_payment_intent(work.charge_key) is not None:
        return psp.client_for(work.psp).charge(work, look_up_first=True, generation=generation,
                                               customer=customer, mandate_data=mandate)
    generation = tables.retire_key(work.charge_key, generation, clock.iso())
    logger.warning("idempotency key retired after a replayed 500", extra={"generation": generation})
    return psp.client_for(work.psp).charge(work, generation=generation, customer=customer, mandate_data=mandate)


def _checkout_customer(work: ChargeWork, tables: PaymentTables, recorded: str) -> tuple[str, psp.ChargeResult | None]:
    """The Customer of the checkout with its PaymentMethod attached, so each currency's PaymentIntent may use it
    (docs/decisions.md 2026-12-04). The charges of the checkout's currencies run this at once: the keys
    customer:<checkout_id> and attach:<checkout_id> make them converge. Past the keys' lifetime the
    PaymentMethod is looked at first. `recorded`: the Customer an earlier call of this charge attached it to
    (stored only once attached, so a retry makes no PSP call for it). Returns the Customer, and a `failed`
    result if Stripe declined the card while attaching it."""
    if recorded:
        return recorded, None
    client = psp.client_for(work.psp)
    customer = client.attached_customer(work.payment_method) if psp.key_aged(work) else ""
    if not customer:
        customer = client.create_customer(work)
        declined = client.attach(work, customer)
        if declined is not None:
            return customer, declined
    tables.record_psp_customer(work.charge_key, customer, clock.iso())
    return customer, None


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = ChargeWork.model_validate(event)
    logger.set_correlation_id(work.correlation_id or None)
    logger.append_keys(charge_key=work.charge_key, attempt=work.attempt)
    with transient_errors_retryable(), psp.calls_within(context.get_remaining_time_in_millis()):
        result = execute(work)
    logger.info("charge outcome", extra={"outcome": result.outcome, "psp_status": result.psp_status,
                                         "failure_code": result.failure_code})
    metrics.add_metric(name=f"Charges_{result.outcome}", unit=MetricUnit.Count, value=1)
    return result.as_dict()
