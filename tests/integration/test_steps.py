"""The workflow's steps, one handler at a time, each run twice to show the second run changes nothing."""

import json

import boto3
import pytest

from functions.executor import starter, sweeper
from functions.ledger import handler as ledger_handler
from functions.ledger import journal
from functions.payment import finalize
from functions.payment.schemas import PaymentRequest
from functions.payment.service import place_checkout
from functions.shared import clock
from functions.shared.errors import LedgerConflict, StatusTransitionRefused
from functions.shared.models import OrderWork
from functions.shared.money import Money
from functions.shared.status import OrderStatus
from functions.shared.tables import LedgerTable, PaymentTables, WalletTable
from functions.wallet import handler as wallet_handler
from tests.support.aws import drain
from tests.support.events import FakeContext, load


@pytest.fixture
def workflow(aws_env):
    """A state machine in moto under the configured ARN (not executed here: starts are only recorded)."""
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    role = "arn:aws:iam::123456789012:role/sfn"
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    arn = sfn.create_state_machine(name="test-PaymentWorkflow", definition=definition,
                                   roleArn=role)["stateMachineArn"]
    assert arn == aws_env["STATE_MACHINE_ARN"]
    return sfn


def executions(sfn, arn):
    return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"])


def place(checkout_id="chk_1", amounts=("12.34", "5.00")):
    request = PaymentRequest.model_validate({
        "buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
        "credit_card_info": {"payment_method": "pm_card_visa"},
        "payment_orders": [{"seller_account": f"seller_{i}", "amount": a, "currency": "USD",
                            "payment_order_id": f"{checkout_id}_{i}"} for i, a in enumerate(amounts)],
    })
    return place_checkout(request)[0]


def work_of(order_id):
    return OrderWork.from_order_item(PaymentTables.from_settings().get_order(order_id), attempt=1)


def test_starter_starts_one_workflow_per_order_even_when_the_message_comes_twice(aws_env, workflow):
    place()
    bodies = drain(aws_env["ORDERS_QUEUE_URL"])
    event = load("sqs_order.json")
    record = event["Records"][0]
    event["Records"] = [dict(record, messageId=f"m{i}", body=body) for i, body in enumerate(bodies + bodies)]
    answer = starter.handler(event, FakeContext())
    assert answer == {"batchItemFailures": []}
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_1_0-1", "chk_1_1-1"]
    order = PaymentTables.from_settings().get_order("chk_1_0")
    assert order["payment_order_status"] == "EXECUTING" and order["attempts"] == 1


def test_starter_reports_a_bad_message_as_a_partial_failure(aws_env, workflow):
    event = load("sqs_order.json")
    event["Records"].append(dict(event["Records"][0], messageId="broken", body="{not json"))
    place("chk_sample")  # the sample's order id does not exist: its status move fails quietly (no order)
    answer = starter.handler(event, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "broken"}]}


def test_wallet_credits_pending_once(aws_env):
    event = load("task_wallet.json")
    wallet_handler.handler(event, FakeContext())
    again = wallet_handler.handler(event, FakeContext())
    assert again == {"credited": True, "applied_now": False}
    assert WalletTable.from_settings().balances("seller_books") == {
        "USD": {"pending_minor": 1234, "available_minor": 0}}


def test_ledger_writes_one_balanced_transaction_once(aws_env):
    event = load("task_ledger.json")
    first = ledger_handler.handler(event, FakeContext())
    second = ledger_handler.handler(event, FakeContext())
    assert first["written_now"] is True and second["written_now"] is False
    rows = list(LedgerTable.from_settings().scan())
    assert len(rows) == 1
    assert sum(e["amount_minor"] for e in rows[0]["entries"]) == 0


def test_ledger_refuses_a_different_transaction_under_an_existing_id(aws_env):
    journal.record(journal.payin("po_1", "s", Money(100, "USD"), "stripe"))
    with pytest.raises(LedgerConflict):
        journal.record(journal.payin("po_1", "s", Money(101, "USD"), "stripe"))


def test_finalize_marks_success_and_the_checkout_done_once_all_orders_are_final(aws_env):
    place("chk_f")
    tables = PaymentTables.from_settings()
    for order_id in ("chk_f_0", "chk_f_1"):
        tables.begin_attempt(order_id, 1, clock.iso(), clock.iso())
    state = {**work_of("chk_f_0").model_dump(), "outcome": "succeeded",
             "charge": {"outcome": "succeeded", "psp_reference": "pi_1", "psp_status": "succeeded"}}
    assert finalize.handler(state, FakeContext())["is_payment_done"] is False
    assert finalize.handler(state, FakeContext())["changed_now"] is False  # twice: nothing changes
    failed = {**work_of("chk_f_1").model_dump(), "outcome": "failed",
              "charge": {"outcome": "failed", "failure_code": "insufficient_funds", "failure_reason": "no money"}}
    assert finalize.handler(failed, FakeContext())["is_payment_done"] is True
    order = tables.get_order("chk_f_0")
    assert order["payment_order_status"] == "SUCCESS" and order["psp_reference"] == "pi_1"
    assert order["wallet_updated"] and order["ledger_updated"] and "due_at" not in order
    assert tables.get_order("chk_f_1")["failure_code"] == "insufficient_funds"
    assert tables.get_checkout("chk_f")["is_payment_done"] is True


def test_a_final_status_never_moves_backwards(aws_env):
    place("chk_b", amounts=("1.00",))
    tables = PaymentTables.from_settings()
    tables.begin_attempt("chk_b_0", 1, clock.iso(), clock.iso())
    finalize.finalize({**work_of("chk_b_0").model_dump(), "outcome": "succeeded", "charge": {}})
    with pytest.raises(StatusTransitionRefused):
        finalize.finalize({**work_of("chk_b_0").model_dump(), "outcome": "failed", "charge": {}})
    assert tables.begin_attempt("chk_b_0", 1, clock.iso(), clock.iso()) is None
    assert tables.get_order("chk_b_0")["payment_order_status"] == "SUCCESS"


def test_finish_refuses_a_status_that_is_not_final(aws_env):
    place("chk_n", amounts=("1.00",))
    tables = PaymentTables.from_settings()
    with pytest.raises(ValueError, match="final status"):
        tables.finish("chk_n_0", OrderStatus.EXECUTING, {}, clock.iso())
    assert tables.get_order("chk_n_0")["payment_order_status"] == "NOT_STARTED"


def test_finalize_takes_the_reason_of_a_caught_permanent_error(aws_env):
    place("chk_e", amounts=("1.00",))
    PaymentTables.from_settings().begin_attempt("chk_e_0", 1, clock.iso(), clock.iso())
    state = {**work_of("chk_e_0").model_dump(),
             "error": {"Error": "PspPermanentError",
                       "Cause": json.dumps({"errorType": "PspPermanentError",
                                            "errorMessage": "No such PaymentMethod"})}}
    finalize.finalize(state)
    order = PaymentTables.from_settings().get_order("chk_e_0")
    assert (order["failure_code"], order["failure_reason"]) == ("PspPermanentError", "No such PaymentMethod")


def test_sweeper_enqueues_orders_whose_message_was_never_sent(aws_env, workflow):
    place("chk_s")
    drain(aws_env["ORDERS_QUEUE_URL"])  # the send "was lost"
    assert sweeper.sweep() == {"enqueued": 0, "redriven": 0, "dead_lettered": 0, "skipped": 0}  # grace not over
    clock.advance(61)
    assert sweeper.sweep()["enqueued"] == 2
    enqueued = sorted(json.loads(b)["payment_order_id"] for b in drain(aws_env["ORDERS_QUEUE_URL"]))
    assert enqueued == ["chk_s_0", "chk_s_1"]
    assert sweeper.sweep()["enqueued"] == 0  # postponed: not sent again before the next grace period


def test_sweeper_redrives_a_stuck_execution_then_dead_letters_it(aws_env, workflow):
    place("chk_r", amounts=("1.00",))
    drain(aws_env["ORDERS_QUEUE_URL"])
    starter.start_first_attempt(work_of("chk_r_0"))
    clock.advance(361)
    assert sweeper.sweep()["redriven"] == 1
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_r_0-1", "chk_r_0-2"]
    for _ in range(3):
        clock.advance(361)
        assert sweeper.sweep()["redriven"] == 1
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 1
    [message] = [json.loads(b) for b in drain(aws_env["WORKFLOW_DLQ_URL"])]
    assert message["payment_order_id"] == "chk_r_0" and message["attempts"] == 5 and message["step"] == "sweeper"
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 0  # out of the index: one message, one alarm


def test_scheduled_event_runs_the_sweep(aws_env):
    assert sweeper.handler(load("scheduled_sweeper.json"), FakeContext()) == {
        "enqueued": 0, "redriven": 0, "dead_lettered": 0, "skipped": 0}
