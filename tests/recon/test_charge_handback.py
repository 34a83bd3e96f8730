"""A settlement file proves the PSP charged a checkout our records hold in progress: recon hands the charge back
once, and the normal path (sweeper, executor against the PSP sandbox, finalize) completes its orders."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from functions.executor import handler as executor
from functions.executor import starter, sweeper
from functions.payment import finalize
from functions.recon.config import reload_recon_settings
from functions.recon.service import RunStatus, SettlementObject, reconcile
from functions.shared import aws, clock, psp
from functions.shared.config import reload_settings, settings
from functions.shared.models import ChargeWork
from functions.shared.tables import PaymentTables
from psp_sandbox.server import SandboxServer, start_sandbox
from psp_sandbox.settlement import build_report
from tests.integration.support import place
from tests.support.aws import create_resources, drain
from tests.support.events import FakeContext

KEY = "chk_r#USD"
ORDERS = (("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"))


@pytest.fixture
def world() -> Iterator[SandboxServer]:
    saved = dict(os.environ)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "MarketPay"})
    server = start_sandbox(port=0)
    try:
        with mock_aws():
            create_resources()
            boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
                name="test-PaymentWorkflow", roleArn="arn:aws:iam::123456789012:role/sfn",
                definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}))
            os.environ.update({"PSP_API_BASE": server.url, "PSP_API_KEY": "sk_test_local"})
            reload_settings()
            reload_recon_settings()
            psp.reset_client()
            yield server
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
        settings.cache_clear()
        reload_recon_settings()
        aws.reset_clients()
        psp.reset_client()
        clock.reset()


def charged_and_stranded(dead_lettered: bool) -> list[str]:
    """A two-seller checkout charged once at the PSP, whose workflow died before finalize: its orders stay
    EXECUTING. Dead-lettered: the sweeper gave up on it (out of its index)."""
    order_ids = place("chk_r", orders=ORDERS)
    drain(settings().orders_queue_url)
    assert starter.start_first_attempt(KEY)
    tables = PaymentTables.from_settings()
    assert executor.execute(ChargeWork.from_charge_item(tables.get_charge(KEY), attempt=1)).outcome == "succeeded"
    if dead_lettered:
        assert tables.mark_charge_dead_lettered(KEY, tables.get_charge(KEY)["due_at"], "gave up", clock.iso())
    assert {o["payment_order_status"] for o in tables.get_orders(order_ids).values()} == {"EXECUTING"}
    return order_ids


def reconcile_the_psps_file(server: SandboxServer, name: str) -> dict:
    bucket = settings().settlement_bucket
    key = f"incoming/stripe/{name}"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=build_report(server.state).to_csv().encode())
    result = reconcile(SettlementObject(bucket, key, f"{key}@1"))
    assert result.status is RunStatus.PROCESSED, result.detail
    return result.summary


def executions() -> list[dict]:
    sfn = aws.client("stepfunctions")
    listed = sfn.list_executions(stateMachineArn=settings().state_machine_arn)["executions"]
    return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]


def test_a_settled_dead_lettered_charge_is_handed_back_once_and_completes_its_orders(world: SandboxServer):
    # Given a checkout charged at the PSP whose two orders stay EXECUTING, and the sweeper has given up on it
    order_ids = charged_and_stranded(dead_lettered=True)
    tables = PaymentTables.from_settings()
    assert list(tables.due_charges(tables.get_charge(KEY).get("sweep_shard", "-"), "9999")) == []

    # When the PSP's settlement file, one row for the charge of both orders, is reconciled
    summary = reconcile_the_psps_file(world, "day1.csv")

    # Then the charge is handed back once: due now for the sweeper, no message, no workflow started by recon
    assert summary["workflows_restarted"] == 1
    charge = tables.get_charge(KEY)
    assert "dead_letter_reason" not in charge and charge["due_at"] <= clock.iso()
    assert list(tables.due_charges(charge["sweep_shard"], clock.iso())) == [KEY]
    assert drain(settings().orders_queue_url) == [] and len(executions()) == 1  # the starter's own

    # When the sweeper drives it: the next attempt's executor looks the PaymentIntent up, finalize completes it
    assert sweeper.sweep()["redriven"] == 1
    [work] = [json.loads(e["input"]) for e in executions() if json.loads(e["input"])["attempt"] == 2]
    result = executor.handler(work, FakeContext())
    assert result["outcome"] == "succeeded"
    finalize.finalize({**work, "charge": result})

    # Then both orders are SUCCESS with the one PaymentIntent: the buyer was charged once
    [charged] = [c for c in world.charges() if c["metadata"].get("checkout_id") == "chk_r"]
    assert (charged["amount"], charged["status"]) == (1734, "succeeded")
    orders = tables.get_orders(order_ids).values()
    assert {(o["payment_order_status"], o["psp_reference"], o["charge_id"]) for o in orders} == {
        ("SUCCESS", charged["payment_intent"], charged["charge_id"])}
    assert tables.get_charge(KEY)["charge_status"] == "SUCCESS"
    assert tables.get_checkout("chk_r")["is_payment_done"] is True


def test_a_settled_charge_the_sweeper_still_watches_is_left_to_it(world: SandboxServer):
    # Given the same stranded checkout, still in the sweeper's index with its deadline
    charged_and_stranded(dead_lettered=False)
    before = PaymentTables.from_settings().get_charge(KEY)

    # When its settlement file is reconciled
    summary = reconcile_the_psps_file(world, "day1.csv")

    # Then recon changes nothing: the deadline brings the sweeper (pulling it forward could overlap a live run)
    assert summary["workflows_restarted"] == 0
    assert PaymentTables.from_settings().get_charge(KEY) == before
    assert drain(settings().orders_queue_url) == [] and len(executions()) == 1
