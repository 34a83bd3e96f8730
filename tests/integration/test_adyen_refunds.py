"""Refunds of Adyen-charged orders (issue 18): the API accepts them, the Refund worker refunds at Adyen through the
port (/payments/{pspReference}/refunds, Idempotency-Key from our refund_id), Adyen answers `received` and the refund
stays PENDING until its REFUND notification; the notification's word goes through the refund path's one entry
(apply_psp_refund) with the same status machine and books as Stripe's refunds. On moto, the Adyen sandbox and the
Stripe one (which must see nothing)."""

from datetime import timedelta

import pytest

from functions.executor import refund as worker
from functions.executor import transfer
from functions.payment import refunds as refunds_api
from functions.payment.schemas import RefundRequest
from functions.shared import clock, psp, queues
from functions.shared.config import reload_settings, settings
from functions.shared.errors import PspOutcomeUnknown, PspTransientError
from functions.shared.psp_adyen import wire_key
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, RefundsTable, WalletTable
from tests.integration.test_adyen_checkout import adyen_payments, post, routed  # noqa: F401 - the fixture
from tests.integration.test_executor_adyen import adyen  # noqa: F401 - the fixture
from tests.integration.test_executor_checkout import begin, run_charge
from tests.integration.test_refunds import invariants_hold
from tests.integration.test_transfer import released
from tests.support.aws import drain

ORDER = "chk_ar_0"  # seller_a, 12.34 EUR (the first order of test_adyen_checkout's TWO_SELLERS_EUR)


@pytest.fixture
def charged(routed):  # noqa: F811 - the fixture imported above
    """An EUR checkout charged at Adyen: its two orders SUCCESS, their pay-outs HELD."""
    assert post("chk_ar")[0] == 202
    assert run_charge(begin("chk_ar", "EUR"))["charge_status"] == "SUCCESS"
    return routed


def refund(refund_id="rf_a1", amount=None, order_id=ORDER):
    body = {"refund_id": refund_id, "reason": "damaged", **({"amount": amount} if amount else {})}
    return refunds_api.create_refund(order_id, RefundRequest.model_validate(body))


def run(refund_id="rf_a1"):
    """The worker on the API's message (emptied from the queue); returns its outcome and the messages it sent
    to itself ((refund_id, delay_s): a delayed message is not visible at once)."""
    drain(settings().refunds_queue_url)
    sent = []
    with pytest.MonkeyPatch.context() as patch:
        real = queues.enqueue_refund
        patch.setattr(queues, "enqueue_refund",
                      lambda rid, delay_s=0: (sent.append((rid, delay_s)), real(rid, delay_s))[1])
        outcome = worker.drive(refund_id)
    return outcome, sent


def refunds_path(server):
    [payment] = adyen_payments(server, "chk_ar")
    return f"/v71/payments/{payment['pspReference']}/refunds"


def refunds_at_adyen(server):
    return [m for m in server.sandbox.books.modifications if m["type"] == "refund"]


def notified(server, refund_id):
    """The REFUND notification the sandbox sent for our refund (its items, signed)."""
    return [i for i in server.sandbox.notifier.emitted if i["eventCode"] == "REFUND"
            and i["merchantReference"] == refund_id]


def eur(seller="seller_a"):
    return WalletTable.from_settings().balances(seller)["EUR"]


def adyen_says(item, status=None):
    """What the receiver and processor make of a REFUND notification item: its word as a RefundResult."""
    return psp.RefundResult(status or ("succeeded" if item["success"] == "true" else "failed"),
                            item["pspReference"], item["merchantReference"],
                            failure_code="" if item["success"] == "true" else "refused",
                            failure_reason=item.get("reason", ""))


def test_a_partial_refund_is_made_at_adyen_once_and_stays_pending_until_its_notification(charged, sandbox):
    view, replayed = refund(amount="5.00")
    assert (view.status, view.amount, view.currency, replayed) == ("PENDING", "5.00", "EUR", False)
    outcome, messages = run()
    assert outcome == worker.AWAITING_NOTIFICATION
    assert messages == [("rf_a1", worker.STUCK_WAIT_S)]  # looked at again later, only for an overdue notification
    [made] = refunds_at_adyen(charged)
    [payment] = adyen_payments(charged, "chk_ar")
    assert (made["paymentPspReference"], made["reference"], made["amount"], made["status"]) == (
        payment["pspReference"], "rf_a1", {"currency": "EUR", "value": 500}, "received")
    assert not sandbox.state.refunds  # nothing at Stripe
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["psp"], stored["psp_refund_id"], stored["psp_status"]) == (
        "PENDING", "adyen", made["pspReference"], "received")
    assert eur()["pending_minor"] == 1234  # nothing moves before Adyen's word

    # the poll asks Adyen nothing (it cannot look a refund up) and keeps waiting
    assert run()[0] == worker.AWAITING_NOTIFICATION and len(refunds_at_adyen(charged)) == 1

    # Adyen's REFUND notification, success=true: SUCCEEDED, the held pay-out shrinks, books once
    [item] = notified(charged, "rf_a1")
    assert item["success"] == "true" and item["originalReference"] == payment["pspReference"]
    assert worker.apply_psp_refund(adyen_says(item)) == "succeeded"
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["timing"]) == ("SUCCEEDED", "held")
    assert eur()["pending_minor"] == 734
    assert PayoutsTable.from_settings().get(ORDER)["gross_minor"] == 734
    ledger = LedgerTable.from_settings().get("refund#rf_a1")
    assert {e["account"]: e["amount_minor"] for e in ledger["entries"]}.get("psp_receivable:adyen") == -500
    # twice, and a message left over: nothing more
    assert worker.apply_psp_refund(adyen_says(item)) == "succeeded"
    assert run()[0] == "succeeded" and len(refunds_at_adyen(charged)) == 1
    assert eur()["pending_minor"] == 734
    invariants_hold()


def test_a_full_refund_after_the_release_takes_the_sellers_share_and_commission(charged):
    item = released(ORDER)  # gross 1234, commission 123, net 1111
    transfer.apply_release(item, clock.iso())
    PayoutsTable.from_settings().mark_release_applied(ORDER, clock.iso())
    view, _ = refund()  # all of it
    assert view.amount == "12.34"
    assert run()[0] == worker.AWAITING_NOTIFICATION
    [made] = refunds_at_adyen(charged)
    assert made["amount"] == {"currency": "EUR", "value": 1234}
    assert worker.apply_psp_refund(adyen_says(notified(charged, "rf_a1")[0])) == "succeeded"
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["timing"], stored["seller_share_minor"], stored["commission_share_minor"]) == ("released", 1111,
                                                                                                   123)
    payout = PayoutsTable.from_settings().get(ORDER)
    assert (payout["net_minor"], payout["commission_minor"]) == (0, 0)
    assert eur()["available_minor"] == 0
    assert PaymentTables.from_settings().get_order(ORDER)["refunded_minor"] == 1234
    invariants_hold()


def test_adyens_refusal_in_the_notification_fails_the_refund_and_gives_the_reservation_back(charged):
    refund(amount="5.00")
    assert run()[0] == worker.AWAITING_NOTIFICATION
    psp_ref = RefundsTable.from_settings().get("rf_a1")["psp_refund_id"]
    failed = psp.RefundResult("failed", psp_ref, "rf_a1", failure_code="refused", failure_reason="Insufficient balance")
    assert worker.apply_psp_refund(failed) == "failed"
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["failure_code"]) == ("FAILED", "refused")
    assert PaymentTables.from_settings().get_order(ORDER)["refunded_minor"] == 0
    assert eur()["pending_minor"] == 1234 and LedgerTable.from_settings().get("refund#rf_a1") is None
    # a late success (reordered) changes nothing: the status machine decides
    assert worker.apply_psp_refund(psp.RefundResult("succeeded", psp_ref, "rf_a1")) == "failed"
    assert run()[0] == "failed"
    # the order can be refunded again in full
    refund("rf_a2")
    assert PaymentTables.from_settings().get_order(ORDER)["refunded_minor"] == 1234


def test_a_refund_over_the_remainder_is_refused_at_the_api_and_adyen_refuses_what_slips_past(charged):
    refund(amount="10.00")
    with pytest.raises(refunds_api.RefundExceedsRemaining):
        refund("rf_a2", amount="3.00")
    # an order's reservation that does not match Adyen's remainder (a refund made in Adyen's Customer Area):
    # Adyen refuses it on the first attempt, certain: FAILED, its amount given back
    assert run()[0] == worker.AWAITING_NOTIFICATION
    [payment] = adyen_payments(charged, "chk_ar")
    at_adyen = charged.sandbox.books.payments[payment["pspReference"]]
    at_adyen.refunded = at_adyen.value  # the rest refunded in Adyen's Customer Area
    refund("rf_a3", amount="1.00", order_id="chk_ar_1")  # the other order of the same payment
    outcome, _ = run("rf_a3")
    assert outcome == "failed"
    stored = RefundsTable.from_settings().get("rf_a3")
    assert (stored["refund_status"], stored["failure_code"]) == ("FAILED", "adyen_sbx_refund_exceeds_remainder")
    assert PaymentTables.from_settings().get_order("chk_ar_1")["refunded_minor"] == 0


@pytest.mark.parametrize("kind", ["lost_response", "http_503"])
def test_an_unclear_answer_is_replayed_under_the_same_key_and_refunds_once(charged, kind):
    refund(amount="5.00")
    charged.sandbox.faults.push(kind, match={"path": refunds_path(charged)})
    with pytest.raises(PspTransientError):  # SQS redelivers the message
        run()
    outcome, _ = run()
    assert outcome == worker.AWAITING_NOTIFICATION
    assert len(refunds_at_adyen(charged)) == 1
    [payment] = charged.sandbox.payments()
    assert payment["refunded"] == 500
    stored = RefundsTable.from_settings().get("rf_a1")
    assert stored["psp_refund_id"] == refunds_at_adyen(charged)[0]["pspReference"]


def test_a_retry_past_adyens_key_age_sends_nothing_and_leaves_the_refund_to_a_human(charged, monkeypatch):
    refund(amount="5.00")
    charged.sandbox.faults.push("http_503", match={"path": refunds_path(charged)})
    with pytest.raises(PspTransientError):
        run()
    later = clock.now() + timedelta(days=7)
    monkeypatch.setattr(clock, "now", lambda: later)
    with pytest.raises(PspOutcomeUnknown):
        run()
    assert refunds_at_adyen(charged) == []
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"  # the amount stays reserved


def test_a_refunds_key_at_adyen_is_the_wire_key_of_our_refund_key(charged):
    """Adyen's Idempotency-Key is wire_key(environment, merchant account, refund:<refund_id>): a replay of the
    worker's request is Adyen's look-up, never a second refund."""
    refund(amount="5.00")
    run()
    keys = {key for _scope, key in charged.sandbox.books._keys}
    assert wire_key("test", "MarketPayECOM", "refund:rf_a1") in keys


def test_a_notification_that_never_comes_is_alarmed_after_a_day(charged, monkeypatch):
    refund(amount="5.00")
    assert run()[0] == worker.AWAITING_NOTIFICATION
    counted = []
    monkeypatch.setattr(worker.metrics, "add_metric", lambda **kw: counted.append(kw["name"]))
    assert run()[0] == worker.AWAITING_NOTIFICATION and worker.OVERDUE_METRIC not in counted
    later = clock.now() + timedelta(hours=25)
    monkeypatch.setattr(clock, "now", lambda: later)
    outcome, messages = run()
    assert outcome == worker.AWAITING_NOTIFICATION and messages == [("rf_a1", worker.STUCK_WAIT_S)]
    assert worker.OVERDUE_METRIC in counted


def test_a_success_heard_while_the_payout_is_between_steps_is_finished_by_the_workers_next_look(charged):
    """Adyen's success arrives while the pay-out is released but its release not applied: the refund path waits
    (its message comes back); that next look finds Adyen's recorded word and finishes, without a notification."""
    refund(amount="5.00")
    assert run()[0] == worker.AWAITING_NOTIFICATION
    item = released(ORDER)  # RELEASED, the release not applied yet
    assert worker.apply_psp_refund(adyen_says(notified(charged, "rf_a1")[0])) == "waiting"
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"
    transfer.apply_release(item, clock.iso())
    PayoutsTable.from_settings().mark_release_applied(ORDER, clock.iso())
    assert run()[0] == "succeeded"
    stored = RefundsTable.from_settings().get("rf_a1")
    assert (stored["refund_status"], stored["timing"], stored["seller_share_minor"]) == ("SUCCEEDED", "released", 450)
    invariants_hold()


def test_the_answer_received_never_overwrites_the_notifications_word(charged, monkeypatch):
    """The REFUND notification can be recorded before the worker records Adyen's answer (`received`): the worker's
    record keeps the notification's word, so the refund is not left waiting for a notification already heard."""
    refund(amount="5.00")
    table = RefundsTable.from_settings()
    real = RefundsTable.record_psp_refund

    def overtaken(self, refund_id, psp_refund_id, status, now, **kw):
        real(self, refund_id, psp_refund_id, "succeeded", now)  # the notification's word, recorded first
        return real(self, refund_id, psp_refund_id, status, now, **kw)

    monkeypatch.setattr(RefundsTable, "record_psp_refund", overtaken)
    assert run()[0] == "succeeded"
    assert table.get("rf_a1")["refund_status"] == "SUCCEEDED" and table.get("rf_a1")["psp_status"] == "succeeded"


def test_a_refund_first_sent_under_one_adyen_account_is_never_sent_under_another(charged, monkeypatch):
    refund(amount="5.00")
    charged.sandbox.faults.push("lost_response", match={"path": refunds_path(charged)})
    with pytest.raises(PspTransientError):
        run()
    assert RefundsTable.from_settings().get("rf_a1")["psp_account"] == "test||MarketPayECOM"
    monkeypatch.setenv("ADYEN_MERCHANT_ACCOUNT", "OtherECOM")
    reload_settings()
    psp.reset_client()
    with pytest.raises(PspOutcomeUnknown, match="another adyen account"):
        run()
    assert len(refunds_at_adyen(charged)) == 1
    assert RefundsTable.from_settings().get("rf_a1")["refund_status"] == "PENDING"  # its amount stays reserved
