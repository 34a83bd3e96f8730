"""A shopper action's details (issue 18: 3-D Secure at Adyen): `POST /v1/checkouts/{checkout_id}/payment_details`.

The buyer completed what Adyen's action asked (Drop-in's onAdditionalDetails gave `state.data.details`). The API
records the details on the charge, once (the first are kept: a conditional write, `record_psp_details`), stops
showing the answered action on the orders (a storefront polling them must not run it again), and brings the
charge's sweep forward so that the sweeper's next run starts the attempt whose executor sends them to Adyen's
/payments/details and finalizes from its answer. The API never calls Adyen (it holds no Adyen key): only the
Executor and the Refund worker may.

Details answer one action (next_action.action_id): after them Adyen may ask for a second (a challenge after a
3-D Secure fingerprint), shown on the orders in its place, whose details are recorded the same way.

Answers: 202 recorded (details recorded before, for this action or an earlier one: 202, Idempotent-Replayed, also
once the charge is final); 422 `details_not_for_action` for details without the fields that answer the action
shown (a threeDS2 action's threeDSResult, a redirect's redirectResult: ANSWERS_BY_ACTION_TYPE), nothing
recorded; 404 for a checkout or charge this client does not have; 409 `no_action_pending` when the charge is not
EXECUTING waiting for a shopper action at Adyen (a Stripe charge, a final one, past the action's deadline or
abandoned), 409 `payment_details_conflict` for other details of an action that has some, 409 `action_superseded`
for details naming (`action_id`) an action the charge no longer shows.

When the sweep cannot be brought forward (an attempt may still be running: its due_at is within the executing
deadline), the details wait for the charge's due_at, which is the action's deadline at the latest: the attempt then
finds them and sends them; the deadline never fails a charge whose details are recorded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger

from functions.payment.schemas import PaymentDetailsRequest, PaymentDetailsView
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import DomainError, NotFound, RequestInvalid
from functions.shared.names import charge_key
from functions.shared.routing import ADYEN
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables

logger = Logger(service="payment")

NO_ACTION_PENDING = "no_action_pending"
DETAILS_CONFLICT = "payment_details_conflict"
ACTION_SUPERSEDED = "action_superseded"
# The fields of Adyen's /payments/details `details` (PaymentCompletionDetails, Checkout API v71) that answer each
# action type: the buyer's answer carries one of these sets. Checked before recording, so a storefront posting the
# wrong fields is told now (422) instead of the charge failing when Adyen refuses them; other action types are not
# judged here.
ANSWERS_BY_ACTION_TYPE: dict[str, tuple[frozenset[str], ...]] = {
    "threeDS2": (frozenset({"threeDSResult"}), frozenset({"threeds2.fingerprint"}),
                 frozenset({"threeds2.challengeResult"})),
    "redirect": (frozenset({"redirectResult"}), frozenset({"payload"}), frozenset({"returnUrlQueryString"}),
                 frozenset({"MD", "PaRes"})),
}


class DetailsNotForAction(RequestInvalid):
    """The details carry none of the fields that answer the action shown (ANSWERS_BY_ACTION_TYPE)."""

    code = "details_not_for_action"


def _check_answers(charge: dict[str, Any], details: dict[str, str]) -> None:
    action_type = str(((charge.get("next_action") or {}).get("action") or {}).get("type") or "")
    expected = ANSWERS_BY_ACTION_TYPE.get(action_type)
    if expected and not any(fields <= details.keys() for fields in expected):
        wanted = " or ".join("+".join(sorted(fields)) for fields in expected)
        raise DetailsNotForAction(f"a {action_type} action is answered with {wanted}: "
                                  f"got {', '.join(sorted(details))}")


class PaymentDetailsRefused(DomainError):
    """The charge waits for no shopper action's details, or other details were recorded first."""

    code = NO_ACTION_PENDING
    http_status = 409


def digest_of(details: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(details, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _view(checkout_id: str, charge: dict[str, Any]) -> PaymentDetailsView:
    return PaymentDetailsView(checkout_id=checkout_id, currency=str(charge["currency"]),
                              recorded_at=str(charge["psp_details_at"]))


def _recorded_before(checkout_id: str, charge: dict[str, Any], digest: str) -> PaymentDetailsView | None:
    """The view of a replay (these details were recorded, for this action or an earlier one of the charge), None
    when the current action has none; other details for the current action: 409."""
    if digest in (charge.get("psp_details_seen") or ()):
        return _view(checkout_id, charge)
    if charge.get("psp_details_for") and charge.get("psp_details_for") == _current_action(charge):
        raise PaymentDetailsRefused("other details were recorded for this charge's action first: they decide it",
                                    code=DETAILS_CONFLICT)
    return None


def _current_action(charge: dict[str, Any]) -> str:
    return str((charge.get("next_action") or {}).get("action_id") or "")


def _not_waiting_because(charge: dict[str, Any]) -> str:
    """Why the charge does not wait for a shopper action's details at Adyen now; "" when it does."""
    if charge.get("psp") != ADYEN:
        return f"the charge is at {charge.get('psp')}, whose actions complete without our API"
    if charge.get("charge_status") != OrderStatus.EXECUTING.value:
        return f"the charge is {charge.get('charge_status')}"
    if charge.get("action_abandoned_at") or (charge.get("action_expires_at") and
                                             str(charge["action_expires_at"]) <= clock.iso()):
        return f"the shopper action expired at {charge.get('action_expires_at')}"
    if not _current_action(charge):
        return "the charge waits for no shopper action"
    return ""


def _why_not(charge: dict[str, Any]) -> PaymentDetailsRefused:
    return PaymentDetailsRefused(f"no shopper action is pending: "
                                 f"{_not_waiting_because(charge) or 'the charge waits for no shopper action'}")


def record_details(checkout_id: str, request: PaymentDetailsRequest, tables: PaymentTables | None = None
                   ) -> tuple[PaymentDetailsView, bool]:
    """Record the buyer's details on the checkout's charge in the request's currency and bring its sweep forward;
    returns the view and whether this call was a replay."""
    tables = tables or PaymentTables.from_settings()
    if tables.get_checkout(checkout_id) is None:
        raise NotFound(f"checkout {checkout_id} not found", code="checkout_not_found")
    currency = request.currency.upper()
    key = charge_key(checkout_id, currency)
    charge = tables.get_charge(key)
    if charge is None:
        raise NotFound(f"checkout {checkout_id} has no {currency} charge", code="charge_not_found")
    digest = digest_of(request.details)
    if (replayed := _recorded_before(checkout_id, charge, digest)) is not None:
        _after_recording(tables, charge)  # the first call may have died between its writes
        return replayed, True
    if not _not_waiting_because(charge):  # one not waiting is refused below, with the reason (409), whatever sent
        if request.action_id and request.action_id != _current_action(charge):
            raise PaymentDetailsRefused(f"the details answer action {request.action_id}; the charge now shows "
                                        f"{_current_action(charge)}: read it and answer that one",
                                        code=ACTION_SUPERSEDED)
        _check_answers(charge, request.details)
    recorded = tables.record_psp_details(key, ADYEN, dict(request.details), digest, _current_action(charge),
                                         clock.iso())
    if recorded is None:  # not waiting (say why), or details recorded by a concurrent call
        current = tables.get_charge(key) or charge
        if (replayed := _recorded_before(checkout_id, current, digest)) is not None:
            return replayed, True
        raise _why_not(current)
    brought = _after_recording(tables, recorded)
    logger.info("shopper action details recorded", extra={"charge_key": key, "brought_forward": brought})
    return _view(checkout_id, recorded), False


def _after_recording(tables: PaymentTables, charge: dict[str, Any]) -> bool:
    """The answered action hidden from the orders, then the charge brought forward (whether it was)."""
    if answered := str(charge.get("psp_details_for") or ""):
        tables.hide_answered_action([o["payment_order_id"] for o in charge.get("orders") or ()], answered,
                                    clock.iso())
    return _bring_forward(tables, charge)


def _bring_forward(tables: PaymentTables, charge: dict[str, Any]) -> bool:
    """The charge's sweep due now, unless an attempt may still be running (bring_charge_forward's guard) or it is
    final or held by a human (no due_at): then its due_at, at the latest the action's deadline, comes first."""
    if charge.get("charge_status") != OrderStatus.EXECUTING.value or "due_at" not in charge:
        return False
    now = clock.now()
    no_run_before = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    return tables.bring_charge_forward(str(charge["charge_key"]), str(charge["due_at"]), clock.iso(now),
                                       no_run_before)
