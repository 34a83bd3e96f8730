"""The workflow's steps, one handler at a time, each run twice to show the second run changes nothing."""

import json

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ReadTimeoutError

from functions.executor import starter, sweeper
from functions.ledger import handler as ledger_handler
from functions.ledger import journal
from functions.payment import finalize
from functions.shared import clock, queues
from functions.shared.errors import AwsTransientError, LedgerConflict, StatusTransitionRefused
from functions.shared.models import OrderWork
from functions.shared.money import Money
from functions.shared.tables import LedgerTable, PaymentTables, WalletTable
from functions.wallet import handler as wallet_handler
from tests.integration.support import AwsFault, place, work_of
from tests.support.aws import drain
from tests.support.events import FakeContext, load

MACHINE = "test-PaymentWorkflow"


@pytest.fixture
def workflow(aws_env):
    """A state machine in moto under the configured ARN (not executed here: starts are only recorded)."""
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = create_machine(sfn)
    assert arn == aws_env["STATE_MACHINE_ARN"]
    return sfn


def create_machine(sfn):
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    return sfn.create_state_machine(name=MACHINE, definition=definition,
                                    roleArn="arn:aws:iam::123456789012:role/sfn")["stateMachineArn"]


def executions(sfn, arn):
    return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"])


def sqs_event(bodies):
    event = load("sqs_order.json")
    record = event["Records"][0]
    event["Records"] = [dict(record, messageId=f"m{i}", body=body) for i, body in enumerate(bodies)]
    return event


def succeeded(work, reference="pi_1"):
    return {**work.model_dump(), "charge": {"outcome": "succeeded", "psp_reference": reference,
                                            "psp_status": "succeeded", "charge_id": "ch_1"}}


# --- the starter ------------------------------------------------------------------------------------------


def test_the_api_stores_one_charge_per_currency_and_enqueues_each_once(aws_env):
    place("chk_m", orders=(("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"), ("seller_c", "7.00", "EUR")))
    bodies = sorted(json.loads(b)["charge_key"] for b in drain(aws_env["ORDERS_QUEUE_URL"]))
    assert bodies == ["chk_m#EUR", "chk_m#USD"]
    tables = PaymentTables.from_settings()
    usd, eur = tables.get_charge("chk_m#USD"), tables.get_charge("chk_m#EUR")
    assert (usd["amount_minor"], usd["charge_status"], [o["payment_order_id"] for o in usd["orders"]]) == (
        1734, "NOT_STARTED", ["chk_m_0", "chk_m_1"])
    assert (eur["amount_minor"], [o["amount_minor"] for o in eur["orders"]]) == (700, [700])
    assert tables.get_order("chk_m_2")["charge_key"] == "chk_m#EUR"
    assert usd["due_at"] and usd["sweep_shard"]  # the charge is what the sweeper reads


def test_starter_starts_one_workflow_per_charge_even_when_the_message_comes_twice(aws_env, workflow):
    place(orders=(("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"), ("seller_c", "7.00", "EUR")))
    bodies = drain(aws_env["ORDERS_QUEUE_URL"])
    answer = starter.handler(sqs_event(bodies + bodies), FakeContext())
    assert answer == {"batchItemFailures": []}
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_1-EUR-1", "chk_1-USD-1"]
    tables = PaymentTables.from_settings()
    assert {tables.get_order(f"chk_1_{n}")["payment_order_status"] for n in range(3)} == {"EXECUTING"}
    charge = tables.get_charge("chk_1#USD")
    assert (charge["charge_status"], charge["attempts"], charge["started_attempt"]) == ("EXECUTING", 1, 1)


def test_a_failed_start_is_retried_by_the_redelivery_under_the_same_name(aws_env, workflow):
    # Given StartExecution fails (here: the machine is missing for a moment) after the charge moved on
    place()
    bodies = drain(aws_env["ORDERS_QUEUE_URL"])
    workflow.delete_state_machine(stateMachineArn=aws_env["STATE_MACHINE_ARN"])
    with pytest.raises(BatchProcessingError):  # the whole batch failed: SQS delivers it again
        starter.handler(sqs_event(bodies), FakeContext())
    # Then the charge is EXECUTING with a sweep due
    charge = PaymentTables.from_settings().get_charge("chk_1#USD")
    assert charge["charge_status"] == "EXECUTING" and charge["due_at"] and "started_attempt" not in charge
    # When it comes again, the same-named execution starts
    create_machine(workflow)
    assert starter.handler(sqs_event(bodies), FakeContext()) == {"batchItemFailures": []}
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_1-USD-1"]


def test_an_execution_that_already_exists_counts_as_started(aws_env, workflow):
    place()
    work = work_of("chk_1")
    first = queues.start_workflow(work)
    again = queues.start_workflow(work)  # moto refuses the same name: ExecutionAlreadyExists
    assert first.endswith("chk_1-USD-1") and again.endswith("chk_1-USD-1")
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_1-USD-1"]


def test_orders_handed_back_by_reconciliation_enqueue_their_charge_once(aws_env, workflow):
    place("chk_back", orders=(("s1", "1.00", "USD"), ("s2", "2.00", "USD")))
    drain(aws_env["ORDERS_QUEUE_URL"])
    tables = PaymentTables.from_settings()
    orders = [OrderWork.from_order_item(tables.get_order(f"chk_back_{n}"), attempt=1) for n in range(2)]
    assert queues.enqueue_orders(orders) == []
    assert [json.loads(b) for b in drain(aws_env["ORDERS_QUEUE_URL"])] == [
        {"charge_key": "chk_back#USD", "checkout_id": "chk_back"}]


def test_starter_reports_a_bad_message_as_a_partial_failure(aws_env, workflow):
    place("chk_sample_1")
    event = load("sqs_order.json")
    event["Records"].append(dict(event["Records"][0], messageId="broken", body="{not json"))
    event["Records"].append(dict(event["Records"][0], messageId="unknown", body='{"charge_key": "nope#USD"}'))
    answer = starter.handler(event, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "broken"}, {"itemIdentifier": "unknown"}]}


# --- wallet and ledger: per order, once --------------------------------------------------------------------


def test_wallet_credits_each_order_of_the_charge_once(aws_env):
    event = load("task_wallet.json")
    first = wallet_handler.handler(event, FakeContext())
    again = wallet_handler.handler(event, FakeContext())
    assert first["applied_now"] == ["po_sample_1", "po_sample_2"] and again["applied_now"] == []
    wallet = WalletTable.from_settings()
    empty = {"available_minor": 0, "transferred_minor": 0, "owed_minor": 0}
    assert wallet.balances("seller_books") == {"USD": {"pending_minor": 1234, **empty}}
    assert wallet.balances("seller_tea") == {"USD": {"pending_minor": 500, **empty}}


def test_ledger_writes_one_balanced_transaction_per_order_once(aws_env):
    event = load("task_ledger.json")
    first = ledger_handler.handler(event, FakeContext())
    second = ledger_handler.handler(event, FakeContext())
    assert first["written_now"] == ["payin#po_sample_1", "payin#po_sample_2"] and second["written_now"] == []
    rows = {row["transaction_id"]: row for row in LedgerTable.from_settings().scan()}
    assert set(rows) == {"payin#po_sample_1", "payin#po_sample_2"}
    for row in rows.values():
        assert sum(e["amount_minor"] for e in row["entries"]) == 0


def test_the_ledger_takes_the_psp_from_the_order_not_from_its_setting(aws_env):
    event = load("task_ledger.json")
    event["orders"][1]["psp"] = "adyen"  # settings().psp_name is "stripe"
    ledger_handler.handler(event, FakeContext())
    accounts = {row["transaction_id"]: {e["account"] for e in row["entries"]}
                for row in LedgerTable.from_settings().scan()}
    assert accounts["payin#po_sample_1"] == {"psp_receivable:stripe", "seller_pending:seller_books"}
    assert accounts["payin#po_sample_2"] == {"psp_receivable:adyen", "seller_pending:seller_tea"}


def test_ledger_refuses_a_different_transaction_under_an_existing_id(aws_env):
    journal.record(journal.payin("po_1", "s", Money(100, "USD"), "stripe"))
    with pytest.raises(LedgerConflict):
        journal.record(journal.payin("po_1", "s", Money(101, "USD"), "stripe"))


# --- transient AWS errors: one named error the workflow retries ---------------------------------------------


TRANSIENT = [
    ("TransactWriteItems", {"code": "TransactionCanceledException", "reasons": ["None", "TransactionConflict"]}),
    ("TransactWriteItems", {"code": "ProvisionedThroughputExceededException"}),
    ("TransactWriteItems", {"code": "ThrottlingException"}),
    ("TransactWriteItems", {"code": "RequestLimitExceeded"}),
    ("TransactWriteItems", {"code": "InternalServerError"}),
    ("TransactWriteItems", {"exception": ReadTimeoutError(endpoint_url="https://dynamodb")}),
]


@pytest.mark.parametrize(("operation", "fault"), TRANSIENT)
def test_a_transient_error_in_the_wallet_is_the_retryable_error_and_the_retry_credits_once(aws_env, operation,
                                                                                         fault):
    event = load("task_wallet.json")
    injected = AwsFault("dynamodb", operation, **fault)
    with pytest.raises(AwsTransientError):
        wallet_handler.handler(event, FakeContext())
    injected.remove()
    wallet_handler.handler(event, FakeContext())  # the workflow's retry
    assert WalletTable.from_settings().balances("seller_books")["USD"]["pending_minor"] == 1234


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException",
                                  "InternalServerError"])
def test_a_transient_error_in_the_ledger_or_finalize_is_the_retryable_error(aws_env, code):
    AwsFault("dynamodb", "PutItem", code=code)
    with pytest.raises(AwsTransientError):
        ledger_handler.handler(load("task_ledger.json"), FakeContext())
    place("chk_t")
    PaymentTables.from_settings().begin_charge_attempt("chk_t#USD", 1, clock.iso(), clock.iso())
    AwsFault("dynamodb", "UpdateItem", code=code)
    with pytest.raises(AwsTransientError):
        finalize.handler(succeeded(work_of("chk_t")), FakeContext())


def test_a_condition_that_fails_is_not_transient(aws_env):
    AwsFault("dynamodb", "TransactWriteItems", code="TransactionCanceledException",
             reasons=["ValidationError", "None"])
    with pytest.raises(Exception) as raised:
        wallet_handler.handler(load("task_wallet.json"), FakeContext())
    assert not isinstance(raised.value, AwsTransientError)


# --- finalize ---------------------------------------------------------------------------------------------


def begun(checkout_id, currency="USD", **options):
    place(checkout_id, **options)
    tables = PaymentTables.from_settings()
    charge = tables.begin_charge_attempt(f"{checkout_id}#{currency}", 1, clock.iso(), clock.iso())
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    return work_of(checkout_id, currency)


def test_finalize_marks_every_order_then_the_checkout_then_the_charge(aws_env):
    work = begun("chk_f")
    result = finalize.handler(succeeded(work), FakeContext())
    assert result == {"charge_status": "SUCCESS", "changed_now": ["chk_f_0", "chk_f_1"], "is_payment_done": True}
    assert finalize.handler(succeeded(work), FakeContext())["changed_now"] == []  # twice: nothing changes
    tables = PaymentTables.from_settings()
    for order_id in ("chk_f_0", "chk_f_1"):
        order = tables.get_order(order_id)
        assert order["payment_order_status"] == "SUCCESS"
        assert (order["psp_reference"], order["charge_id"], order["charge_key"]) == ("pi_1", "ch_1", "chk_f#USD")
        assert order["wallet_updated"] and order["ledger_updated"]
    charge = tables.get_charge("chk_f#USD")
    assert charge["charge_status"] == "SUCCESS" and "due_at" not in charge and "sweep_shard" not in charge
    assert tables.get_checkout("chk_f")["is_payment_done"] is True


def test_a_declined_charge_fails_every_order_of_it_and_the_checkout_waits_for_its_other_charge(aws_env):
    work = begun("chk_d", orders=(("s1", "1.00", "USD"), ("s2", "2.00", "USD"), ("s3", "3.00", "EUR")))
    declined = {**work.model_dump(), "charge": {"outcome": "failed", "failure_code": "insufficient_funds",
                                                "failure_reason": "no money", "psp_reference": "pi_d"}}
    assert finalize.handler(declined, FakeContext())["is_payment_done"] is False
    tables = PaymentTables.from_settings()
    for order_id in ("chk_d_0", "chk_d_1"):
        order = tables.get_order(order_id)
        assert (order["payment_order_status"], order["failure_code"]) == ("FAILED", "insufficient_funds")
    assert tables.get_order("chk_d_2")["payment_order_status"] == "NOT_STARTED"
    eur = tables.begin_charge_attempt("chk_d#EUR", 1, clock.iso(), clock.iso())
    assert eur is not None
    assert finalize.handler(succeeded(work_of("chk_d", "EUR")), FakeContext())["is_payment_done"] is True


def test_finalize_that_died_before_the_checkout_is_resumed_by_the_sweeper(aws_env, workflow):
    # Given finalize died after marking the orders, before the checkout was marked done
    work = begun("chk_r")
    AwsFault("dynamodb", "UpdateItem", exception=ReadTimeoutError(endpoint_url="https://dynamodb"),
             when=lambda body: "is_payment_done" in body.get("UpdateExpression", ""))
    with pytest.raises(AwsTransientError):
        finalize.handler(succeeded(work), FakeContext())
    tables = PaymentTables.from_settings()
    assert tables.get_order("chk_r_0")["payment_order_status"] == "SUCCESS"
    assert tables.get_checkout("chk_r")["is_payment_done"] is False
    # Then the charge is still EXECUTING in the sweeper's index: past its deadline, the next attempt starts
    clock.advance(361)
    assert sweeper.sweep()["redriven"] == 1
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_r-USD-2"]
    # And that attempt's finalize completes the checkout
    finalize.handler(succeeded(work_of("chk_r", attempt=2)), FakeContext())
    assert tables.get_checkout("chk_r")["is_payment_done"] is True
    assert tables.get_charge("chk_r#USD")["charge_status"] == "SUCCESS"


def test_finalize_moves_orders_a_dead_starter_left_behind(aws_env):
    place("chk_n")
    PaymentTables.from_settings().begin_charge_attempt("chk_n#USD", 1, clock.iso(), clock.iso())
    finalize.handler(succeeded(work_of("chk_n")), FakeContext())  # orders still NOT_STARTED before this
    assert PaymentTables.from_settings().get_order("chk_n_0")["payment_order_status"] == "SUCCESS"


def test_a_final_status_never_moves_backwards(aws_env):
    work = begun("chk_b")
    finalize.finalize(succeeded(work))
    failed = {**work.model_dump(), "charge": {"outcome": "failed", "failure_code": "x"}}
    with pytest.raises(StatusTransitionRefused):
        finalize.finalize(failed)
    tables = PaymentTables.from_settings()
    assert tables.begin_charge_attempt("chk_b#USD", 1, clock.iso(), clock.iso()) is None
    assert tables.get_order("chk_b_0")["payment_order_status"] == "SUCCESS"


def test_finish_refuses_a_status_that_is_not_final(aws_env):
    from functions.shared.status import OrderStatus

    place("chk_x")
    with pytest.raises(ValueError, match="final status"):
        PaymentTables.from_settings().finish("chk_x_0", OrderStatus.EXECUTING, {}, clock.iso())


def test_finalize_takes_the_reason_of_a_caught_permanent_error(aws_env):
    work = begun("chk_e")
    state = {**work.model_dump(),
             "error": {"Error": "PspPermanentError",
                       "Cause": json.dumps({"errorType": "PspPermanentError",
                                            "errorMessage": "No such PaymentMethod"})}}
    finalize.finalize(state)
    for order_id in ("chk_e_0", "chk_e_1"):
        order = PaymentTables.from_settings().get_order(order_id)
        assert (order["failure_code"], order["failure_reason"]) == ("PspPermanentError", "No such PaymentMethod")


# --- the sweeper ------------------------------------------------------------------------------------------


ZERO = {"enqueued": 0, "redriven": 0, "dead_lettered": 0, "skipped": 0, "errors": 0, "deferred": 0,
        "payouts_released": 0, "payouts_enqueued": 0, "payouts_awaiting": 0, "payouts_dead_lettered": 0}


def test_sweeper_enqueues_charges_whose_message_was_never_sent(aws_env, workflow):
    place("chk_s", orders=(("s1", "1.00", "USD"), ("s2", "2.00", "EUR")))
    drain(aws_env["ORDERS_QUEUE_URL"])  # the send "was lost"
    assert sweeper.sweep() == ZERO  # grace not over
    clock.advance(61)
    assert sweeper.sweep()["enqueued"] == 2
    enqueued = sorted(json.loads(b)["charge_key"] for b in drain(aws_env["ORDERS_QUEUE_URL"]))
    assert enqueued == ["chk_s#EUR", "chk_s#USD"]
    assert sweeper.sweep()["enqueued"] == 0  # postponed: not sent again before the next grace period


def test_sweeper_redrives_a_stuck_execution_then_dead_letters_it(aws_env, workflow):
    place("chk_r")
    drain(aws_env["ORDERS_QUEUE_URL"])
    starter.start_first_attempt("chk_r#USD")
    clock.advance(361)
    assert sweeper.sweep()["redriven"] == 1
    assert executions(workflow, aws_env["STATE_MACHINE_ARN"]) == ["chk_r-USD-1", "chk_r-USD-2"]
    for _ in range(3):
        clock.advance(361)
        assert sweeper.sweep()["redriven"] == 1
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 1
    [message] = [json.loads(b) for b in drain(aws_env["WORKFLOW_DLQ_URL"])]
    assert message["charge_key"] == "chk_r#USD" and message["attempts"] == 5 and message["step"] == "sweeper"
    assert message["payment_order_ids"] == ["chk_r_0", "chk_r_1"]
    order = PaymentTables.from_settings().get_order("chk_r_0")
    assert order["dead_letter_reason"] and "sweep_shard" not in order  # out of the open orders too
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 0  # out of the index: one message, one alarm


def test_a_sweeper_killed_after_the_dead_letter_sends_it_again_and_never_strands_the_charge(aws_env, workflow,
                                                                                            monkeypatch):
    # Given a charge past its attempts, and a sweeper that dies right after sending its dead letter
    place("chk_k")
    drain(aws_env["ORDERS_QUEUE_URL"])
    starter.start_first_attempt("chk_k#USD")
    for _ in range(4):
        clock.advance(361)
        assert sweeper.sweep()["redriven"] == 1
    clock.advance(361)

    def killed(*_args, **_kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(PaymentTables, "mark_charge_dead_lettered", killed)
        assert sweeper.sweep()["errors"] == 1
    # Then the dead letter is already in the queue (an alarm fires), and the charge is still due
    assert [json.loads(b)["charge_key"] for b in drain(aws_env["WORKFLOW_DLQ_URL"])] == ["chk_k#USD"]
    assert "due_at" in PaymentTables.from_settings().get_charge("chk_k#USD")
    # And the next run sends it again and takes the charge out of the index, once
    assert sweeper.sweep()["dead_lettered"] == 1
    assert [json.loads(b)["charge_key"] for b in drain(aws_env["WORKFLOW_DLQ_URL"])] == ["chk_k#USD"]
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 0


def test_one_failing_shard_does_not_stop_the_others(aws_env, workflow):
    keys = []
    for n in range(12):
        place(f"chk_sh{n}")
        keys.append(f"chk_sh{n}#USD")
    drain(aws_env["ORDERS_QUEUE_URL"])
    tables = PaymentTables.from_settings()
    shards = {tables.get_charge(k)["sweep_shard"] for k in keys}
    broken = sorted(shards)[0]
    AwsFault("dynamodb", "Query", code="InternalServerError", times=100,
             when=lambda body: body.get("ExpressionAttributeValues", {}).get(":shard", {}).get("S") == broken)
    clock.advance(61)
    counts = sweeper.sweep()
    in_broken = sum(1 for k in keys if tables.get_charge(k)["sweep_shard"] == broken)
    # 2: the shard's charge pass and its payout pass (the fault names the shard, not the table)
    assert counts["errors"] == 2 and counts["enqueued"] == len(keys) - in_broken


def test_a_run_past_its_time_budget_leaves_the_rest_to_the_next_run(aws_env, workflow):
    for n in range(3):
        place(f"chk_late{n}")
    drain(aws_env["ORDERS_QUEUE_URL"])
    clock.advance(61)
    counts = sweeper.sweep(budget_s=-1)  # already past it
    assert counts["enqueued"] == 0 and counts["deferred"] >= 1
    assert sweeper.sweep()["enqueued"] == 3


def test_the_due_index_is_read_page_after_page(aws_env):
    tables = PaymentTables.from_settings()
    for n in range(7):
        place(f"chk_p{n}")
        tables.requeue_charge(f"chk_p{n}#USD", 1, clock.iso(), clock.iso())  # one shard for all
    due = list(tables.due_charges("0", clock.iso(clock.now()), page_size=2))
    assert sorted(due) == sorted(f"chk_p{n}#USD" for n in range(7))
    assert len(list(tables.due_charges("0", clock.iso(clock.now()), page_size=2, max_items=3))) == 3


def test_scheduled_event_runs_the_sweep(aws_env):
    assert sweeper.handler(load("scheduled_sweeper.json"), FakeContext()) == ZERO
