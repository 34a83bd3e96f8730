"""A charge Adyen answers `Received` is decided by its AUTHORISATION notification (issue 18): the API's handler, the
workflow's steps, the receiver and the processor, on moto and both sandboxes. The first attempt parks the charge
EXECUTING (no dead letter, no second payment); the signed notification is recorded on the charge and brings its
recheck forward; the next attempt answers from it without a call. A notification that contradicts a final charge,
names no charge of ours, or another amount goes to review."""

import json
from datetime import timedelta

import pytest

from functions.executor import handler as executor
from functions.payment import finalize
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown
from functions.shared.psp_adyen import AdyenPsp
from functions.shared.tables import PaymentTables, WalletTable
from functions.webhooks import adyen as adyen_events
from functions.webhooks import processor
from tests.integration.support import work_of
from tests.integration.test_adyen_checkout import adyen_card, adyen_payments, orders_of, post, routed  # noqa: F401
from tests.integration.test_adyen_notifications import body_of, processed, resigned
from tests.integration.test_adyen_notifications import post as notify
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_refunds import invariants_hold
from tests.support.aws import drain
from tests.support.events import FakeContext


def authorisations(server, checkout_id):
    return [i for i in server.sandbox.notifier.emitted
            if i["eventCode"] == "AUTHORISATION" and i["merchantReference"] == f"{checkout_id}#EUR"]


def charge(checkout_id):
    return PaymentTables.from_settings().get_charge(f"{checkout_id}#EUR")


def received(server, checkout_id, holder="RECEIVED"):
    """A checkout whose payment Adyen answers `Received`, run once: parked EXECUTING, its notification signed."""
    assert post(checkout_id, adyen=adyen_card(holder))[0] == 202
    assert run_charge(begin(checkout_id, "EUR"))["charge_status"] == "EXECUTING"
    [item] = authorisations(server, checkout_id)
    return item


def next_attempt(checkout_id):
    """The sweeper's re-drive, then the workflow."""
    return run_charge(redriven(checkout_id))


def redriven(checkout_id):
    """The sweeper's re-drive (its begin_charge_attempt: due_at as read, the executing deadline): the work."""
    tables = PaymentTables.from_settings()
    key = f"{checkout_id}#EUR"
    stored = tables.get_charge(key)
    attempt = int(stored["attempts"]) + 1
    deadline = clock.iso(clock.now() + timedelta(seconds=settings().executing_deadline_s))
    assert tables.begin_charge_attempt(key, attempt, clock.iso(), deadline, expected_due_at=stored["due_at"])
    return work_of(checkout_id, "EUR").model_copy(update={"attempt": attempt})


def test_a_received_payment_waits_then_its_authorisation_decides_it_once(routed):  # noqa: F811 - the fixture imported above
    item = received(routed, "chk_rcv")
    parked = charge("chk_rcv")
    assert (parked["charge_status"], parked["psp_status"]) == ("EXECUTING", "Received")
    assert "dead_letter_reason" not in parked and parked["due_at"] > clock.iso()  # a recheck, not a failure
    assert [o["payment_order_status"] for o in orders_of("chk_rcv")] == ["EXECUTING"] * 2
    # a recheck before the notification: the replay says Received again, nothing new is made
    assert next_attempt("chk_rcv")["charge_status"] == "EXECUTING"
    assert len(adyen_payments(routed, "chk_rcv")) == 1

    # Adyen's signed AUTHORISATION (success true) arrives: recorded on the charge, its recheck made due now
    assert notify(body_of(item))["body"] == "[accepted]"
    assert processed() == ["redrive_due"]
    stored = charge("chk_rcv")
    assert stored["psp_notified"]["outcome"] == "succeeded" and stored["due_at"] <= clock.iso()

    calls = int(stored["psp_calls"])
    assert next_attempt("chk_rcv")["charge_status"] == "SUCCESS"
    assert [o["payment_order_status"] for o in orders_of("chk_rcv")] == ["SUCCESS"] * 2
    assert len(adyen_payments(routed, "chk_rcv")) == 1  # one payment, and no call to decide it
    assert int(charge("chk_rcv")["psp_calls"]) == calls + 1  # counted by note_psp_call, but no request went out
    assert WalletTable.from_settings().balances("seller_a")["EUR"]["pending_minor"] > 0
    invariants_hold()

    # Adyen resends it, or a second one agrees: the final charge is left as it is
    assert notify(body_of(resigned(item, reason="again")))["body"] == "[accepted]"
    assert processed() == [processor.DUPLICATE]


def test_a_received_payment_refused_in_its_authorisation_ends_failed_with_the_reason(routed):  # noqa: F811 - the fixture imported above
    item = received(routed, "chk_rcvd", holder="RECEIVED_DECLINED")
    assert item["success"] == "false"
    notify(body_of(item))
    assert processed() == ["redrive_due"]
    assert next_attempt("chk_rcvd")["charge_status"] == "FAILED"
    orders = orders_of("chk_rcvd")
    assert [(o["payment_order_status"], o["failure_code"]) for o in orders] == [("FAILED", "refused")] * 2
    assert "EUR" not in WalletTable.from_settings().balances("seller_a")
    invariants_hold()


def test_a_notification_heard_while_the_call_was_out_decides_the_same_attempt(routed, monkeypatch):  # noqa: F811 - the fixture imported above
    real, heard = AdyenPsp.charge, []

    def answered_then_notified(self, work, **kwargs):  # the notification overtakes Adyen's answer
        result = real(self, work, **kwargs)
        notify(body_of(*authorisations(routed, "chk_mid")))
        heard.extend(processed())
        return result

    monkeypatch.setattr(AdyenPsp, "charge", answered_then_notified)
    assert post("chk_mid", adyen=adyen_card("RECEIVED"))[0] == 202
    assert run_charge(begin("chk_mid", "EUR"))["charge_status"] == "SUCCESS"
    assert heard == ["recorded"]  # in flight: not brought forward; the attempt itself answered from the record
    assert len(adyen_payments(routed, "chk_mid")) == 1


def test_a_notification_another_payment_recorded_is_unknown_not_decided(routed):  # noqa: F811 - the fixture imported above
    item = received(routed, "chk_other")
    tables = PaymentTables.from_settings()
    tables.record_psp_notification("chk_other#EUR", {**adyen_events.authorisation_result(item),
                                                     "psp_reference": "SBX0000000000999"}, clock.iso())
    with pytest.raises(PspOutcomeUnknown):
        executor.execute(redriven("chk_other"))


def test_authorisations_that_contradict_our_books_go_to_review(routed):  # noqa: F811 - the fixture imported above
    # a payment declined at once (FAILED in our books) that Adyen then says it authorised
    assert post("chk_dec", adyen=adyen_card("DECLINED"))[0] == 202
    assert run_charge(begin("chk_dec", "EUR"))["charge_status"] == "FAILED"
    [declined] = authorisations(routed, "chk_dec")
    [reference] = [p["pspReference"] for p in adyen_payments(routed, "chk_dec")]
    assert declined["pspReference"] == reference
    lying = resigned(declined, success="true")
    stranger = resigned(declined, merchantReference="made_in_the_customer_area", pspReference="SBX0000000000777")
    more = resigned(declined, amount={"currency": "EUR", "value": 99999}, pspReference="SBX0000000000888")
    drain(settings().review_queue_url)
    notify(body_of(lying, stranger, more))
    assert sorted(processed()) == ["review"] * 3
    reviews = sorted(json.loads(b)["category"] for b in drain(settings().review_queue_url))
    assert reviews == ["authorisation_mismatch", "authorisation_not_ours", "charge_succeeded_recorded_failed"]
    assert charge("chk_dec")["charge_status"] == "FAILED"  # our books move only by our own steps


def test_a_notification_heard_after_the_answer_but_before_finalize_makes_the_recheck_due_now(routed):  # noqa: F811 - the fixture imported above
    assert post("chk_late", adyen=adyen_card("RECEIVED"))[0] == 202
    work = begin("chk_late", "EUR")
    state = {**work.model_dump(), "charge": executor.execute(work).as_dict()}
    assert state["charge"]["psp_status"] == "Received"
    notify(body_of(*authorisations(routed, "chk_late")))
    assert processed() == ["recorded"]  # the attempt is still running: not brought forward
    finalize.handler(state, FakeContext())  # parks it, and sees the record: due now, not in 15 minutes
    assert charge("chk_late")["due_at"] <= clock.iso()
    assert next_attempt("chk_late")["charge_status"] == "SUCCESS"
