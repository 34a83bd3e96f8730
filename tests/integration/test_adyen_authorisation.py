"""A charge Adyen answers `Received` is decided by its AUTHORISATION notification (issue 18): the API's handler, the
workflow's steps, the receiver and the processor, on moto and both sandboxes. The first attempt parks the charge
EXECUTING (no dead letter, no second payment); the signed notification is recorded on the charge and brings its
recheck forward; the next attempt answers from it without a call. A notification that contradicts a final charge,
names no charge of ours, or another amount goes to review."""

import json
from datetime import timedelta

import pytest

from functions.executor import handler as executor
from functions.executor import sweeper
from functions.payment import finalize
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import PspOutcomeUnknown
from functions.shared.psp_adyen import AdyenPsp
from functions.shared.tables import PaymentTables, WalletTable
from functions.webhooks import adyen as adyen_events
from functions.webhooks import processor
from functions.webhooks.payments import EventNotYetApplicable
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

    assert next_attempt("chk_rcv")["charge_status"] == "SUCCESS"  # the replay says Received; the record decides
    assert [o["payment_order_status"] for o in orders_of("chk_rcv")] == ["SUCCESS"] * 2
    assert len(adyen_payments(routed, "chk_rcv")) == 1
    assert WalletTable.from_settings().balances("seller_a")["EUR"]["pending_minor"] > 0
    invariants_hold()

    # Adyen resends it: deduplicated; one saying the other outcome of the final charge: a human looks
    assert notify(body_of(resigned(item, reason="again")))["body"] == "[accepted]"
    assert processed() == [processor.DUPLICATE]
    drain(settings().review_queue_url)
    notify(body_of(resigned(item, success="false")))
    assert processed() == ["review"]
    [review] = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert (review["category"], review["charge_key"]) == ("charge_failed_recorded_succeeded", "chk_rcv#EUR")
    assert review["payment_order_ids"] == ["chk_rcv_0", "chk_rcv_1"]


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


def notified_during(server, checkout_id, monkeypatch, **changes):
    """Adyen's AUTHORISATION (changed by `changes`, signed again) processed after Adyen answered the payment and
    before the executor has: the processor's outcomes (a list), and the queued event for its redelivery."""
    real, heard = AdyenPsp.charge, {"outcomes": [], "bodies": []}

    def answered_then_notified(self, work, **kwargs):
        result = real(self, work, **kwargs)
        notify(body_of(*(resigned(i, **changes) for i in authorisations(server, checkout_id))))
        for body in drain(settings().webhook_queue_url):
            heard["bodies"].append(body)
            try:
                heard["outcomes"].append(processor.process(body))
            except EventNotYetApplicable:
                heard["outcomes"].append("comes_back")
        return result

    monkeypatch.setattr(AdyenPsp, "charge", answered_then_notified)
    return heard


def test_a_notification_heard_while_the_call_was_out_decides_the_same_attempt(routed, monkeypatch):  # noqa: F811
    heard = notified_during(routed, "chk_mid", monkeypatch)
    assert post("chk_mid", adyen=adyen_card("RECEIVED"))[0] == 202
    assert run_charge(begin("chk_mid", "EUR"))["charge_status"] == "SUCCESS"
    # an attempt was running: recorded, not brought forward, and the event comes back (SQS redelivers it)
    assert heard["outcomes"] == ["comes_back"]
    assert len(adyen_payments(routed, "chk_mid")) == 1
    assert processor.process(heard["bodies"][0]) == "already_final"  # the redelivery: it agrees


def test_a_notification_that_contradicts_adyens_answer_is_for_a_human(routed, monkeypatch):  # noqa: F811
    # Adyen refuses the payment at once, and its AUTHORISATION (heard while the answer was on its way) says authorised
    heard = notified_during(routed, "chk_contra", monkeypatch, success="true")
    assert post("chk_contra", adyen=adyen_card("DECLINED"))[0] == 202
    assert run_charge(begin("chk_contra", "EUR"))["charge_status"] == "FAILED"  # on Adyen's answer
    assert heard["outcomes"] == ["comes_back"]
    # the redelivery compares it with the outcome the charge ended on: money taken for FAILED orders, for a human
    drain(settings().review_queue_url)
    assert processor.process(heard["bodies"][0]) == "review"
    [review] = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert review["category"] == "charge_succeeded_recorded_failed"


def test_an_attempt_whose_answer_contradicts_a_recorded_notification_is_for_a_human(routed):  # noqa: F811
    # a charge parked on `Received`, a notification recorded, then an answer that says otherwise (a re-drive whose
    # replay Adyen answers Refused): neither word is taken, the workflow's dead letter
    item = received(routed, "chk_both")
    PaymentTables.from_settings().record_psp_notification(
        "chk_both#EUR", adyen_events.authorisation_result(resigned(item, success="false")), clock.iso())
    real = AdyenPsp.charge
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AdyenPsp, "charge", lambda self, work, **kw: executor.psp.ChargeResult(
            "succeeded", real(self, work, **kw).psp_reference, "Authorised"))
        with pytest.raises(PspOutcomeUnknown):
            executor.execute(redriven("chk_both"))
    assert charge("chk_both")["charge_status"] == "EXECUTING"


def test_a_refused_payment_not_ours_is_counted_an_authorised_one_reviewed(routed):  # noqa: F811
    received(routed, "chk_nours")
    [item] = authorisations(routed, "chk_nours")
    drain(settings().review_queue_url)
    refused = resigned(item, merchantReference="pay_by_link_1", pspReference="SBX0000000000555", success="false")
    authorised = resigned(item, merchantReference="pay_by_link_2", pspReference="SBX0000000000556")
    notify(body_of(refused, authorised))
    assert sorted(processed()) == ["not_ours", "review"]  # no money moved for the refused one
    [review] = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert (review["category"], review["psp_reference"]) == ("authorisation_not_ours", "SBX0000000000556")


def test_a_charge_out_of_attempts_with_its_outcome_recorded_gets_one_attempt_more(routed, monkeypatch):  # noqa: F811
    item = received(routed, "chk_last")
    tables = PaymentTables.from_settings()
    started = []
    monkeypatch.setattr(sweeper.queues, "start_workflow", started.append)
    key, max_attempts = "chk_last#EUR", settings().max_attempts
    tables._update_charge_if(key, "SET attempts = :n, due_at = :now", "attribute_exists(charge_key)",
                             {":n": max_attempts, ":now": clock.iso()})
    tables.record_psp_notification(key, adyen_events.authorisation_result(item), clock.iso())
    assert sweeper._drive(tables, key, clock.now()) == "redriven"  # the attempt that decides
    tables._update_charge_if(key, "SET due_at = :now", "attribute_exists(charge_key)", {":now": clock.iso()})
    assert sweeper._drive(tables, key, clock.now()) == "dead_lettered"  # and only one


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
    stranger = resigned(declined, merchantReference="made_in_the_customer_area", pspReference="SBX0000000000777",
                        success="true")
    more = resigned(declined, amount={"currency": "EUR", "value": 99999}, pspReference="SBX0000000000888",
                    success="true")
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
    [body] = drain(settings().webhook_queue_url)
    with pytest.raises(EventNotYetApplicable):  # the attempt is still running: recorded, not brought forward
        processor.process(body)
    finalize.handler(state, FakeContext())  # parks it, and sees the record: due now, not in 15 minutes
    assert charge("chk_late")["due_at"] <= clock.iso()
    assert next_attempt("chk_late")["charge_status"] == "SUCCESS"
    assert processor.process(body) == "already_final"


def test_a_payment_is_captured_at_once_and_a_capture_that_fails_goes_to_a_human(routed):  # noqa: F811
    # Given an Adyen charge booked SUCCESS, its payment asked to be captured at once (not the account's default)
    assert post("chk_cap", adyen=adyen_card())[0] == 202
    assert run_charge(begin("chk_cap", "EUR"))["charge_status"] == "SUCCESS"
    [payment] = adyen_payments(routed, "chk_cap")
    assert payment["captureDelayHours"] == 0
    drain(settings().review_queue_url)
    # When Adyen cannot capture it after all (its signed CAPTURE_FAILED, Adyen's redelivery of it too)
    failed = routed.sandbox.fail_capture(payment["pspReference"])
    notify(body_of(failed))
    assert processed() == ["review"]
    notify(body_of(failed))
    assert processed() == ["duplicate"]
    # Then a human is asked, naming the charge, its orders and the payment; our books are not moved by it
    [review] = [json.loads(b) for b in drain(settings().review_queue_url)]
    assert (review["category"], review["charge_key"], review["psp_reference"]) == (
        "capture_failed", "chk_cap#EUR", payment["pspReference"])
    assert sorted(review["payment_order_ids"]) == sorted(o["payment_order_id"] for o in orders_of("chk_cap"))
    assert {o["payment_order_status"] for o in orders_of("chk_cap")} == {"SUCCESS"}
    # a capture failing for a payment that is not ours moved no money: counted, not reviewed
    notify(body_of(resigned(failed, merchantReference="made_in_the_customer_area", pspReference="SBX0000000000999")))
    assert processed() == ["not_ours"]
    assert drain(settings().review_queue_url) == []
    invariants_hold()
