"""The webhook processor on moto: deduplicated by event id (claim/complete), safe in any order, unknown types
counted, a failing handler retried and never marked processed; each handler re-drives an existing path."""

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from functions.shared import clock
from functions.shared.config import settings
from functions.shared.names import charge_key
from functions.shared.status import OrderStatus, PayoutStatus
from functions.shared.tables import ClaimRefused, PaymentTables, PayoutsTable, SellersTable, WebhookEventsTable
from functions.webhooks import processor
from tests.integration.support import AwsFault, place
from tests.support.aws import drain
from tests.support.events import FakeContext

ACCOUNT = "acct_1Seller"


def event(event_id: str, event_type: str, obj: dict, created: int = 1_800_000_000, account: str | None = None) -> str:
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created": created,
                       "account": account, "data": {"object": obj}})


def intent(key: str, status: str = "succeeded", pi: str = "pi_1") -> dict:
    return {"id": pi, "object": "payment_intent", "status": status, "metadata": {"charge_key": key}}


def parked_charge(checkout_id: str = "chk_w1") -> str:
    """A charge whose attempt ended on a pending PSP answer (finalize's MarkPending): EXECUTING, due in 15 min."""
    place(checkout_id)
    key = charge_key(checkout_id, "USD")
    tables = PaymentTables.from_settings()
    now = clock.now()
    tables.begin_charge_attempt(key, 1, clock.iso(now), clock.iso(now + timedelta(seconds=360)))
    tables.record_charge_pending(key, "pi_1", "processing", clock.iso(now + timedelta(minutes=15)), clock.iso(now))
    return key


def sqs_event(*bodies: str) -> dict:
    return {"Records": [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": body, "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:WebhookQueue",
                         "awsRegion": "us-east-1"} for i, body in enumerate(bodies)]}


def test_the_same_event_twice_is_processed_once(aws_env):
    key = parked_charge()
    body = event("evt_dup", "payment_intent.succeeded", intent(key))

    assert processor.process(body) == "redrive_due"
    charge = PaymentTables.from_settings().get_charge(key)
    assert charge["due_at"] <= clock.iso()  # the sweeper's next run re-drives it: a PSP look-up decides

    assert processor.process(body) == "duplicate"
    item = WebhookEventsTable.from_settings().get("evt_dup")
    assert (item["event_status"], item["outcome"], item["attempts"]) == ("DONE", "redrive_due", 1)
    assert item["expires_at"] > (clock.now() + timedelta(days=29)).timestamp()


def test_a_decision_event_never_brings_forward_a_charge_whose_attempt_may_be_running(aws_env):
    place("chk_w2")
    key = charge_key("chk_w2", "USD")
    now = clock.now()
    running_due = clock.iso(now + timedelta(seconds=settings().executing_deadline_s))
    PaymentTables.from_settings().begin_charge_attempt(key, 1, clock.iso(now), running_due)

    assert processor.process(event("evt_run", "payment_intent.succeeded", intent(key))) == "in_flight"
    assert PaymentTables.from_settings().get_charge(key)["due_at"] == running_due


def test_events_out_of_order_end_in_the_state_of_the_newest(aws_env):
    sellers = SellersTable.from_settings()
    sellers.put("seller_a", commission_bps=0, now=clock.iso(), psp_account_id=ACCOUNT)
    account = {"id": ACCOUNT, "object": "account", "payouts_enabled": True, "requirements": {"disabled_reason": None}}
    newer = event("evt_acc2", "account.updated", {**account, "capabilities": {"transfers": "active"}}, created=200)
    older = event("evt_acc1", "account.updated", {**account, "capabilities": {"transfers": "inactive"}}, created=100)
    paid = event("evt_po2", "payout.paid", {"id": "po_1", "status": "paid", "amount": 1234, "currency": "usd"},
                 created=300, account=ACCOUNT)
    failed = event("evt_po1", "payout.failed", {"id": "po_0", "status": "failed", "amount": 500, "currency": "usd",
                                                "failure_code": "account_closed",
                                                "failure_message": "The bank account has been closed"},
                   created=250, account=ACCOUNT)

    for body in (newer, older, paid, failed):  # newest first
        processor.process(body)

    seller = sellers.get("seller_a")
    assert seller["psp_account_state"]["transfers"] == "active"
    assert seller["last_bank_payout"] == {"payout_id": "po_1", "status": "paid", "amount_minor": 1234,
                                          "currency": "USD", "arrival_date": None, "failure_code": None,
                                          "failure_message": None}


def test_a_late_processing_event_after_the_decision_changes_nothing(aws_env):
    key = parked_charge("chk_w3")
    PaymentTables.from_settings().finish_charge(key, OrderStatus.SUCCESS, {}, clock.iso())
    assert processor.process(event("evt_late", "payment_intent.processing", intent(key, "processing"))) \
        == "already_final"
    assert PaymentTables.from_settings().get_charge(key)["charge_status"] == "SUCCESS"


def test_an_unknown_type_is_acknowledged_and_counted(aws_env, capfd):
    from functions.webhooks.metrics import metrics

    metrics.clear_metrics()  # what other tests' direct `process` calls added and no handler flushed
    answer = processor.handler(sqs_event(event("evt_new", "issuing_card.created", {"id": "ic_1"})), FakeContext())
    assert answer == {"batchItemFailures": []}
    assert WebhookEventsTable.from_settings().get("evt_new")["outcome"] == "unknown_type"
    metrics = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("WebhooksUnknownType") == [1.0] for m in metrics), metrics


def test_refund_and_dispute_events_go_to_their_paths(aws_env):
    assert processor.process(event("evt_r", "charge.refund.updated", {"id": "re_1", "status": "pending"})) \
        == "not_final"  # refund events go to the refund path (tests/integration/test_refund_webhooks.py)
    # disputes are wired (tests/integration/test_disputes.py): a Dispute without a status is refused, retried
    with pytest.raises(ValueError):
        processor.process(event("evt_d", "charge.dispute.created", {"id": "dp_1"}))


def test_a_failing_handler_leaves_the_event_to_be_retried_and_not_processed(aws_env):
    key = parked_charge("chk_w4")
    body = event("evt_fail", "payment_intent.payment_failed", intent(key, "requires_payment_method"))
    charges = settings().charges_table
    fault = AwsFault("dynamodb", "UpdateItem", code="InternalServerError", times=10,
                     when=lambda params: params.get("TableName") == charges)

    answer = processor.handler(sqs_event(event("evt_ok", "issuing_card.created", {}), body), FakeContext())

    fault.remove()
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}]}  # the other record is done
    item = WebhookEventsTable.from_settings().get("evt_fail")
    assert item["event_status"] == "PROCESSING" and "outcome" not in item
    assert item["lease_until"] <= clock.iso()  # released: the retry takes it at once
    # SQS delivers it again: now it is handled and marked processed.
    assert processor.process(body) == "redrive_due"
    assert WebhookEventsTable.from_settings().get("evt_fail")["event_status"] == "DONE"


def test_a_worker_killed_before_complete_is_taken_over_after_its_lease(aws_env):
    events = WebhookEventsTable.from_settings()
    key = parked_charge("chk_w5")
    body = event("evt_killed", "payment_intent.canceled", intent(key, "canceled"))
    assert events.claim("evt_killed", "payment_intent.canceled", "dead-worker", clock.now(), processor.LEASE_S)

    with pytest.raises(ClaimRefused):  # a redelivery while the lease is live waits
        processor.process(body)
    clock.advance(processor.LEASE_S + 1)
    assert processor.process(body) == "redrive_due"
    assert events.get("evt_killed")["attempts"] == 2


def test_account_able_to_receive_transfers_wakes_the_sellers_waiting_payouts(aws_env):
    payouts, sellers = PayoutsTable.from_settings(), SellersTable.from_settings()
    payouts.create_held([{"payment_order_id": "po_w", "seller_account": "seller_a", "checkout_id": "chk_x",
                          "currency": "USD", "gross_minor": 1000, "psp": "stripe", "charge_id": "ch_1"}])
    payouts.release("po_w", 0, 0, 1000, clock.iso(), clock.iso())
    payouts.await_seller("po_w", "seller_a", clock.iso(clock.now() + timedelta(hours=1)), clock.iso())
    sellers.put("seller_a", commission_bps=0, now=clock.iso(), psp_account_id=ACCOUNT)
    drain(aws_env["PAYOUTS_QUEUE_URL"])

    body = event("evt_wake", "account.updated", {"id": ACCOUNT, "capabilities": {"transfers": "active"}})
    assert processor.process(body) == "woken"

    payout = payouts.get("po_w")
    assert "awaiting_seller" not in payout and payout["payout_status"] == PayoutStatus.RELEASED.value
    assert [json.loads(m) for m in drain(aws_env["PAYOUTS_QUEUE_URL"])] == [{"payment_order_id": "po_w"}]


def test_an_account_we_do_not_know_is_not_ours(aws_env):
    body = event("evt_other", "account.updated", {"id": "acct_other", "capabilities": {"transfers": "active"}})
    assert processor.process(body) == "not_ours"


def test_a_reversal_we_did_not_ask_for_goes_to_review_and_ours_is_left_to_the_refund_path(aws_env):
    payouts = PayoutsTable.from_settings()
    payouts.create_held([{"payment_order_id": "po_r", "seller_account": "seller_a", "checkout_id": "chk_r",
                          "currency": "USD", "gross_minor": 1000, "psp": "stripe", "charge_id": "ch_1"}])
    payouts.release("po_r", 0, 0, 1000, clock.iso(), clock.iso())
    payouts.begin_transfer("po_r", clock.iso(), clock.iso())
    payouts.record_transfer_id("po_r", "tr_1", clock.iso())
    transfer = {"id": "tr_1", "object": "transfer", "amount": 1000, "currency": "usd", "amount_reversed": 400,
                "metadata": {"payment_order_id": "po_r"},
                "reversals": {"data": [{"id": "trr_ours", "amount": 100, "metadata": {"refund_id": "rf_1"}},
                                       {"id": "trr_theirs", "amount": 300, "metadata": {}}]}}

    assert processor.process(event("evt_rev1", "transfer.reversed", transfer)) == "review"
    [review] = [json.loads(m) for m in drain(aws_env["REVIEW_QUEUE_URL"])]
    assert (review["category"], review["reversal"], review["payment_order_id"]) == (
        "transfer_reversal_not_requested", "trr_theirs", "po_r")
    assert review["amount_reversed_minor"] == 400 and review["currency"] == "USD"

    transfer["reversals"]["data"] = transfer["reversals"]["data"][:1]
    assert processor.process(event("evt_rev2", "transfer.reversed", transfer)) == "booked_by_refund_path"
    assert drain(aws_env["REVIEW_QUEUE_URL"]) == []


def test_a_success_for_a_charge_recorded_failed_goes_to_review(aws_env):
    key = parked_charge("chk_w6")
    PaymentTables.from_settings().finish_charge(key, OrderStatus.FAILED, {}, clock.iso())
    assert processor.process(event("evt_s", "payment_intent.succeeded", intent(key))) == "review"
    [review] = [json.loads(m) for m in drain(aws_env["REVIEW_QUEUE_URL"])]
    assert review["category"] == "charge_succeeded_recorded_failed" and review["charge_key"] == key


def test_a_payment_intent_without_our_metadata_is_not_ours(aws_env):
    body = event("evt_x", "payment_intent.succeeded", {"id": "pi_9", "object": "payment_intent", "metadata": {}})
    assert processor.process(body) == "not_ours"


def test_what_the_refund_path_counts_in_the_processor_is_published_by_the_processor(aws_env, capfd):
    # The refund path keeps its own metrics object; run from a webhook, its counts are the processor's to flush
    from aws_lambda_powertools.metrics import MetricUnit

    from functions.executor import refund as refund_path

    refund_path.metrics.clear_metrics()
    refund_path.metrics.add_metric(name="RefundMismatch", unit=MetricUnit.Count, value=1)
    processor.handler(sqs_event(event("evt_flush", "issuing_card.created", {"id": "ic_2"})), FakeContext())
    metrics = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("RefundMismatch") == [1.0] for m in metrics), metrics
    assert not refund_path.metrics.provider.metric_set


@pytest.mark.parametrize("broken", ["id", "created"])
def test_a_malformed_event_fails_without_quoting_the_buyers_billing_details(broken: str) -> None:
    charge = {"id": "ch_1", "object": "charge", "billing_details": {"name": "Ada Lovelace",
                                                                    "email": "ada@example.com"}}
    body = json.loads(event("evt_bad", "charge.succeeded", charge))
    del body[broken]

    with pytest.raises(ValidationError) as failed:
        processor.process(json.dumps(body))

    assert broken in str(failed.value)  # what is wrong is still said
    assert "Ada" not in str(failed.value) and "example.com" not in str(failed.value)
