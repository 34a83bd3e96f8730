"""WorkflowDlq: a redrive puts the charge back to work through the idempotent path; final charges are only
acknowledged. Messages come from the real sweeper, or in the state machine's ToDeadLetter shape."""

import json
import os
from pathlib import Path

import pytest

from functions.executor import sweeper
from functions.shared import clock
from functions.shared.config import reload_settings, settings
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables, sweep_shard
from ops.orders import redrive_order
from ops.redrive import redrive_queue
from ops.resources import Resources, find_dlq
from tests.ops.support import charge_of, depth, executions, place, send, start, workflow_dead_letter
from tests.support.aws import drain

WORKFLOW = find_dlq("workflow")


def actions(results):
    return [r.outcome.action.value for r in results]


def in_sweep_index(order_id):
    """The order's charge is due now in the sweeper's index."""
    key = charge_of(order_id)
    tables = PaymentTables.from_settings()
    return key in tables.due_charges(sweep_shard(key, settings().sweep_shards), clock.iso(clock.now()))


def execution(order_id, attempt):
    return f"{charge_of(order_id).replace('#', '-')}-{attempt}"


def dead_lettered_by_the_sweeper(order_id):
    """Start the order, then let its executions "die" until the sweeper gives up on it."""
    start(order_id)
    while True:
        clock.advance(361)
        if sweeper.sweep()["dead_lettered"]:
            return


def test_order_dead_lettered_by_the_workflow_is_requeued_and_the_next_sweep_starts_it(system):
    # Given attempt 1 failed in a step and the state machine dead-lettered it (the order stays EXECUTING)
    [order_id] = place("chk_wf", orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_id)
    send(system["WORKFLOW_DLQ_URL"], workflow_dead_letter(order_id, attempt=1))
    assert not in_sweep_index(order_id)  # its deadline is minutes away

    # When WorkflowDlq is redriven
    results = redrive_queue(WORKFLOW, Resources())

    # Then the order is due now in the sweeper's index, the message is gone, and a sweep starts attempt 2
    assert actions(results) == ["requeued"] and results[0].payment_order_id == charge_of(order_id)
    assert in_sweep_index(order_id)
    assert depth(system["WORKFLOW_DLQ_URL"]) == 0
    assert sweeper.sweep()["redriven"] == 1
    assert executions() == [execution(order_id, 1), execution(order_id, 2)]


def test_order_the_sweeper_gave_up_on_after_a_raised_budget_is_requeued_for_the_sweeper(system):
    # Given the sweeper gave up at 2 attempts, and on-call then raised the budget (the fix)
    os.environ["MAX_ATTEMPTS"] = "2"
    reload_settings()
    [order_id] = place("chk_sw", orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(order_id)
    charge = PaymentTables.from_settings().get_charge(charge_of(order_id))
    assert charge["attempts"] == 2 and "dead_letter_reason" in charge and "due_at" not in charge
    assert "dead_letter_reason" in PaymentTables.from_settings().get_order(order_id)
    os.environ["MAX_ATTEMPTS"] = "5"
    reload_settings()

    # When redriven
    assert actions(redrive_queue(WORKFLOW, Resources())) == ["requeued"]

    # Then it is back under the sweeper's watch, and the next sweep starts attempt 3
    charge = PaymentTables.from_settings().get_charge(charge_of(order_id))
    assert "dead_letter_reason" not in charge and in_sweep_index(order_id)
    order = PaymentTables.from_settings().get_order(order_id)
    assert "dead_letter_reason" not in order and order["sweep_shard"]  # open again
    assert sweeper.sweep()["redriven"] == 1
    assert executions()[-1] == execution(order_id, 3)
    assert depth(system["WORKFLOW_DLQ_URL"]) == 0


def test_order_past_the_sweepers_budget_gets_one_more_attempt_and_comes_back_if_it_fails(system):
    # Given the sweeper gave up after 5 attempts (requeued only, it would dead-letter it again at once)
    [order_id] = place("chk_max", orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(order_id)
    [body] = drain(system["WORKFLOW_DLQ_URL"])
    assert json.loads(body)["attempts"] == 5 and json.loads(body)["step"] == "sweeper"

    # When redriven, with the same message delivered twice
    send(system["WORKFLOW_DLQ_URL"], body)
    send(system["WORKFLOW_DLQ_URL"], body)
    results = redrive_queue(WORKFLOW, Resources())

    # Then attempt 6 starts once (same charge: the same PSP idempotency key), the duplicate is acknowledged
    assert sorted(actions(results)) == ["attempt started", "superseded"]
    assert executions()[-1] == execution(order_id, 6) and len(executions()) == 6
    charge = PaymentTables.from_settings().get_charge(charge_of(order_id))
    assert charge["charge_status"] == "EXECUTING" and charge["attempts"] == 6
    assert "dead_letter_reason" not in charge
    assert depth(system["WORKFLOW_DLQ_URL"]) == 0
    assert sweeper.sweep()["redriven"] == 0  # its deadline is ahead

    # And if attempt 6 dies too, the sweeper dead-letters it again: back in front of a human, never lost
    clock.advance(361)
    assert sweeper.sweep()["dead_lettered"] == 1
    assert [json.loads(body)["attempts"] for body in drain(system["WORKFLOW_DLQ_URL"])] == [6]


def finish_as_finalize_does(order_id, status):
    tables = PaymentTables.from_settings()
    tables.finish(order_id, status, {}, clock.iso())
    tables.settle_checkout_orders(tables.get_order(order_id)["checkout_id"], [order_id])
    tables.finish_charge(charge_of(order_id), status, {}, clock.iso())


@pytest.mark.parametrize("status", [OrderStatus.SUCCESS, OrderStatus.FAILED])
def test_message_of_a_charge_already_final_is_only_acknowledged(system, status):
    [order_id] = place("chk_fin", orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_id)
    send(system["WORKFLOW_DLQ_URL"], workflow_dead_letter(order_id, attempt=1))
    finish_as_finalize_does(order_id, status)
    tables = PaymentTables.from_settings()
    before = tables.get_order(order_id), tables.get_charge(charge_of(order_id))

    results = redrive_queue(WORKFLOW, Resources())

    assert actions(results) == ["already final"] and results[0].deleted
    assert (tables.get_order(order_id), tables.get_charge(charge_of(order_id))) == before
    assert depth(system["WORKFLOW_DLQ_URL"]) == 0
    assert executions() == [execution(order_id, 1)]


def test_redrive_by_order_or_by_charge_completes_a_checkout_left_not_done(system):
    # Given a charge final while its checkout still lists its orders as pending (finalize of an older release
    # died between its writes)
    order_ids = place("chk_half", amounts=("1.00", "2.00"), orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_ids[0])
    tables = PaymentTables.from_settings()
    for order_id in order_ids:
        tables.finish(order_id, OrderStatus.SUCCESS, {}, clock.iso())
    tables.finish_charge("chk_half#USD", OrderStatus.SUCCESS, {}, clock.iso())
    assert tables.get_checkout("chk_half")["is_payment_done"] is False

    # When on-call redrives one of its orders
    outcome = redrive_order(tables, order_ids[1])

    # Then the checkout is done, nothing else moved, and a second redrive (by charge) changes nothing
    assert outcome.action.value == "already final" and "is_payment_done=True" in outcome.detail
    assert tables.get_checkout("chk_half")["is_payment_done"] is True
    assert redrive_order(tables, "chk_half#USD").detail.endswith("nothing to redrive")
    assert executions() == [execution(order_ids[0], 1)]


def test_an_order_redrive_redrives_its_whole_charge(system):
    order_ids = place("chk_whole", amounts=("1.00", "2.00"), orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(order_ids[0])
    tables = PaymentTables.from_settings()
    assert all("dead_letter_reason" in tables.get_order(i) for i in order_ids)

    outcome = redrive_order(tables, order_ids[1])

    assert outcome.action.value == "attempt started" and "chk_whole#USD" in outcome.detail
    assert executions()[-1] == execution(order_ids[0], 6)
    assert all("dead_letter_reason" not in tables.get_order(i) for i in order_ids)


def test_message_of_an_attempt_the_sweeper_already_retried_is_acknowledged_without_touching_the_order(system):
    # Attempt 1 was dead-lettered by the state machine; the sweeper has since started attempt 2 (maybe running)
    [order_id] = place("chk_sup", orders_queue_url=system["ORDERS_QUEUE_URL"])
    start(order_id)
    send(system["WORKFLOW_DLQ_URL"], workflow_dead_letter(order_id, attempt=1))
    clock.advance(361)
    assert sweeper.sweep()["redriven"] == 1
    before = PaymentTables.from_settings().get_order(order_id)

    assert actions(redrive_queue(WORKFLOW, Resources())) == ["superseded"]

    assert PaymentTables.from_settings().get_order(order_id) == before  # deadline not pulled forward
    assert depth(system["WORKFLOW_DLQ_URL"]) == 0


def test_dry_run_changes_neither_the_order_nor_the_queue(system):
    [order_id] = place("chk_dry", orders_queue_url=system["ORDERS_QUEUE_URL"])
    dead_lettered_by_the_sweeper(order_id)
    before = PaymentTables.from_settings().get_order(order_id)

    results = redrive_queue(WORKFLOW, Resources(), dry_run=True)

    assert actions(results) == ["attempt started"] and results[0].outcome.detail.startswith("would start attempt 6")
    assert PaymentTables.from_settings().get_order(order_id) == before
    assert depth(system["WORKFLOW_DLQ_URL"]) == 1
    assert len(executions()) == 5


def test_messages_the_tool_cannot_act_on_stay_in_the_queue_visible(system):
    send(system["WORKFLOW_DLQ_URL"], "not json at all")
    send(system["WORKFLOW_DLQ_URL"], {"charge_key": "chk_nowhere#USD", "step": "workflow", "attempts": 1})

    results = redrive_queue(WORKFLOW, Resources())

    assert actions(results) == ["left in queue"] * 2 and not any(r.deleted for r in results)
    assert depth(system["WORKFLOW_DLQ_URL"]) == 2  # visible again for the next look


def test_the_to_dead_letter_shape_used_here_is_the_one_the_stack_synthesizes(system):
    """Guards the hand-built ToDeadLetter body above against drift from infra/constructs/workflow.py."""
    template_path = Path(__file__).resolve().parents[2] / "cdk.out" / "MarketPay.template.json"
    if not template_path.exists():
        pytest.skip("cdk.out not synthesized (make synth)")
    resources = json.loads(template_path.read_text())["Resources"]
    [machine] = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(part if isinstance(part, str) else "X" for part in parts))
    synthesized = {key.removesuffix(".$")
                   for key in definition["States"]["ToDeadLetter"]["Parameters"]["MessageBody"]}

    [order_id] = place("chk_shape", orders_queue_url=system["ORDERS_QUEUE_URL"])
    assert set(workflow_dead_letter(order_id, attempt=1)) == synthesized


def test_a_kept_message_that_comes_back_during_the_run_is_not_handled_twice(system, monkeypatch):
    # A run longer than the work timeout: kept messages become visible again while it goes on (here at once)
    monkeypatch.setattr("ops.redrive.WORK_VISIBILITY_S", 0)
    send(system["WORKFLOW_DLQ_URL"], "not json")
    send(system["WORKFLOW_DLQ_URL"], {"payment_order_id": "po_nowhere", "attempts": 1})

    results = redrive_queue(WORKFLOW, Resources(), limit=50)

    assert actions(results) == ["left in queue"] * 2
    assert depth(system["WORKFLOW_DLQ_URL"]) == 2
