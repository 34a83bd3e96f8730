"""The verification watcher (verification/driver.py): reads only open orders, and never waits for one that was
accepted but stored nowhere (the checker names it instead)."""

import boto3

from functions.shared import clock
from functions.shared.models import OrderStatus
from functions.shared.tables import PaymentTables
from tests.integration.test_steps import place
from verification.driver import RunRecord, watch_until_settled
from verification.invariants import Snapshot, check


class Session:
    def client(self, name):
        return boto3.client(name, region_name="us-east-1")


def test_the_watcher_returns_final_orders_and_stops_waiting_for_one_stored_nowhere(aws_env):
    place("chk_w", amounts=("1.00", "2.00"))
    tables = PaymentTables.from_settings()
    tables.finish("chk_w_0", OrderStatus.FAILED, {}, clock.iso())
    idle_calls = []

    def finish_the_other():  # the system moves on while the watcher waits
        idle_calls.append(1)
        tables.finish("chk_w_1", OrderStatus.FAILED, {}, clock.iso())

    record = RunRecord(accepted_order_ids=["chk_w_0", "chk_w_1", "chk_lost_0"])
    outputs = {"PaymentOrdersTableName": aws_env["PAYMENT_ORDERS_TABLE"]}
    orders = watch_until_settled(Session(), outputs, record.accepted_order_ids, record, timeout_s=30,
                                 interval_s=0.01, on_idle=finish_the_other)
    assert idle_calls and set(orders) == {"chk_w_0", "chk_w_1"}
    assert record.observed_statuses["chk_w_1"][-1] == "FAILED"
    snapshot = Snapshot(orders=list(orders.values()), ledger=[], wallet=[], psp_charges=[],
                        accepted_order_ids=record.accepted_order_ids)
    unsettled = next(r for r in check(snapshot) if r.number == 2)
    assert unsettled.violations == ["chk_lost_0: accepted but not stored"]
