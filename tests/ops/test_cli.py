"""The commands as on-call types them (typer's CliRunner, in-process, against moto)."""

import re

import boto3

from functions.ledger import handler as ledger_handler
from functions.shared import clock
from functions.shared.models import ChargeWork
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables
from functions.wallet import handler as wallet_handler
from tests.ops.support import (
    TOKEN,
    cli,
    dead_letter_through_redrive_policy,
    depth,
    place,
    send,
    sqs,
    start,
    workflow_dead_letter,
)
from tests.ops.test_workflow_redrive import dead_lettered_by_the_sweeper


def row(output, key, value):
    """A `key   value` line of a panel, whatever the padding."""
    return re.search(rf"│ {re.escape(key)}\s+{re.escape(value)}", output) is not None


def test_dlq_list_shows_every_queue_its_depth_and_its_alarm(system):
    sqs().send_message(QueueUrl=system["ORDERS_QUEUE_URL"], MessageBody="{}")
    sqs().send_message(QueueUrl=system["ORDERS_QUEUE_URL"], MessageBody="{}")
    dead_letter_through_redrive_policy(system["ORDERS_QUEUE_URL"])
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    cloudwatch.put_metric_alarm(
        AlarmName="OrdersDlqNotEmpty", Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
        Dimensions=[{"Name": "QueueName", "Value": "ops-OrdersDlq"}], Statistic="Maximum", Period=60,
        EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName="OrdersDlqNotEmpty", StateValue="ALARM", StateReason="test")

    result = cli("dlq", "list")

    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line.split() for line in result.output.splitlines() if "Dlq" in line and "│" in line}
    assert rows["OrdersDlq"][3:7] == ["orders", "│", "2", "│"] and "ALARM" in rows["OrdersDlq"]
    assert rows["WorkflowDlq"][5] == "0" and "—" in rows["WorkflowDlq"]  # no alarm defined in this test
    assert set(rows) == {"OrdersDlq", "WorkflowDlq", "ReconDlq", "ReviewDlq", "PayoutsDlq", "NotificationsDlq"}


def test_dlq_show_reads_without_consuming_and_masks_the_payment_method(system):
    [order_id] = place("chk_show", orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_id)
    send(system["WORKFLOW_DLQ_URL"], workflow_dead_letter(order_id, attempt=1))

    first = cli("dlq", "show", "workflow")
    second = cli("dlq", "show", "WorkflowDlq", "--limit", "5")

    assert first.exit_code == 0 and second.exit_code == 0, first.output
    output = first.output
    assert row(output, "charge", "chk_show#USD") and row(output, "order", order_id)
    assert row(output, "step", "workflow")
    assert row(output, "error", "KeyError: 'psp_reference'") and row(output, "attempts", "1")
    assert row(output, "received", "1 time") and row(second.output, "received", "2 times")
    assert row(output, "age", "0s ago") and row(output, "execution", "chk_show-USD-1")
    assert '"seller_account": "acct_seller0"' in output  # the body, pretty-printed
    assert TOKEN not in output and "pm_…9876" in output
    assert depth(system["WORKFLOW_DLQ_URL"]) == 1


def test_dlq_redrive_asks_first_and_does_nothing_on_no(system):
    sqs().send_message(QueueUrl=system["RECON_QUEUE_URL"], MessageBody='{"Records": []}')
    dead_letter_through_redrive_policy(system["RECON_QUEUE_URL"])

    refused = cli("dlq", "redrive", "recon", input="n\n")
    assert refused.exit_code == 0 and "nothing done" in refused.output
    assert depth(system["RECON_DLQ_URL"]) == 1 and depth(system["RECON_QUEUE_URL"]) == 0

    dry = cli("dlq", "redrive", "recon", "--dry-run")  # no question: nothing would change
    assert dry.exit_code == 0 and "would move to ReconQueue" in dry.output and "?" not in dry.output
    assert depth(system["RECON_DLQ_URL"]) == 1

    accepted = cli("dlq", "redrive", "recon", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "moved to ReconQueue" in accepted.output and "ReconDlq now holds about 0" in accepted.output
    assert depth(system["RECON_DLQ_URL"]) == 0 and depth(system["RECON_QUEUE_URL"]) == 1


def test_dlq_redrive_workflow_reports_each_message_and_fails_when_some_are_left(system):
    [done] = place("chk_done", orders_queue_url=system["ORDERS_QUEUE_URL"])
    [stuck] = place("chk_stuck", orders_queue_url=system["ORDERS_QUEUE_URL"])
    for order_id in (done, stuck):
        start(order_id)
        send(system["WORKFLOW_DLQ_URL"], workflow_dead_letter(order_id, attempt=1))
    tables = PaymentTables.from_settings()
    tables.finish(done, OrderStatus.SUCCESS, {}, clock.iso())
    tables.finish_charge("chk_done#USD", OrderStatus.SUCCESS, {}, clock.iso())
    send(system["WORKFLOW_DLQ_URL"], "garbage")

    result = cli("dlq", "redrive", "workflow", "--yes")

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("already final") and "chk_done#USD" in line and "deleted" in line for line in lines)
    assert any(line.startswith("requeued") and "chk_stuck#USD" in line and "attempt 2" in line for line in lines)
    assert any(line.startswith("left in queue") and "no charge_key" in line and "kept" in line
               for line in lines)
    assert "1 message(s) left in WorkflowDlq" in result.output
    assert depth(system["WORKFLOW_DLQ_URL"]) == 1


def test_dlq_redrive_of_an_empty_queue_says_so(system):
    result = cli("dlq", "redrive", "review", "--yes")
    assert result.exit_code == 0 and "ReviewDlq has no visible messages" in result.output


def test_unknown_queue_is_one_clear_line(system):
    result = cli("dlq", "show", "payments")
    assert result.exit_code == 1
    assert "error: unknown dead-letter queue 'payments': use one of orders, workflow, recon, review" in result.output


def test_order_show_prints_order_ledger_and_wallet_without_the_token(system):
    [order_id] = place("chk_os", orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_id)
    work = ChargeWork.from_charge_item(PaymentTables.from_settings().get_charge("chk_os#USD"), attempt=1)
    wallet_handler.credit_pending(work, work.orders[0])
    ledger_handler.record_payin(work, work.orders[0])

    result = cli("order", "show", order_id)

    assert result.exit_code == 0, result.output
    output = result.output
    assert row(output, "status", "EXECUTING") and row(output, "amount", "12.34 USD")
    assert row(output, "payment_method", "pm_…9876") and TOKEN not in output
    assert "psp_receivable:stripe" in output and "seller_pending:acct_seller0" in output
    assert "-12.34 USD" in output and "balanced" in output
    assert f"MOVE#payin#{order_id}" in output and "pending 12.34 USD, available 0.00 USD" in output
    assert "watching: next look at" in output
    assert "in progress" in output


def test_order_show_of_a_dead_lettered_order_says_what_to_do(system):
    [order_id] = place("chk_dl", orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(order_id)

    output = cli("order", "show", order_id).output

    assert row(output, "dead-lettered", "EXECUTING after 5 attempts")
    assert "ledger transaction payin#" in output and "none written" in output
    assert f"python -m ops order redrive {order_id}" in output


def test_order_show_of_an_unknown_order_fails_clearly(system):
    result = cli("order", "show", "po_missing")
    assert result.exit_code == 1 and "error: no order po_missing in table ops-PaymentOrders" in result.output


def test_order_redrive_requeues_only_what_is_dead_lettered(system):
    [dead] = place("chk_dead", orders_queue_url=system["ORDERS_QUEUE_URL"])
    [running] = place("chk_running", orders_queue_url=system["ORDERS_QUEUE_URL"])
    [final] = place("chk_final", orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(dead)
    start(running)
    start(final)
    tables = PaymentTables.from_settings()
    tables.finish(final, OrderStatus.FAILED, {}, clock.iso())
    tables.finish_charge("chk_final#USD", OrderStatus.FAILED, {}, clock.iso())
    running_before = tables.get_charge("chk_running#USD")

    redriven = cli("order", "redrive", dead)
    watched = cli("order", "redrive", "chk_running#USD")  # by charge
    finished = cli("order", "redrive", final)

    assert redriven.exit_code == 0 and "attempt started: attempt 6 of chk_dead#USD started" in redriven.output
    assert tables.get_charge("chk_dead#USD")["attempts"] == 6
    assert watched.exit_code == 0
    assert "not dead-lettered" in watched.output and "sweeper already watches" in watched.output
    assert tables.get_charge("chk_running#USD") == running_before  # its deadline was not pulled forward
    assert finished.exit_code == 0 and "already final: charge is FAILED" in finished.output
    assert tables.get_checkout("chk_final")["is_payment_done"] is True  # the checkout it had left open


def test_order_show_by_charge_lists_its_orders(system):
    place("chk_two", amounts=("1.00", "2.50"), orders_queue_url=system["ORDERS_QUEUE_URL"])
    start("chk_two_0")

    output = cli("order", "show", "chk_two#USD").output

    assert row(output, "status", "EXECUTING") and row(output, "amount", "3.50 USD")
    assert row(output, "orders", "chk_two_0, chk_two_1") and row(output, "attempts", "1")
    assert "chk_two_1" in output and "2.50 USD" in output and TOKEN not in output
    assert "watching: next look at" in output
