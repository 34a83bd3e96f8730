"""The verification watcher (verification/driver.py): reads only open orders, and never waits for one that was
accepted but stored nowhere (the checker names it instead)."""

import boto3
import pytest
from botocore.exceptions import ClientError

from functions.shared import clock
from functions.shared.status import OrderStatus
from functions.shared.tables import PaymentTables
from tests.integration.support import place
from verification import driver
from verification.driver import RunRecord, watch_until_settled
from verification.invariants import Snapshot, check


class Session:
    def client(self, name):
        return boto3.client(name, region_name="us-east-1")


def test_the_watcher_returns_final_orders_and_stops_waiting_for_one_stored_nowhere(aws_env):
    place("chk_w", orders=(("s0", "1.00", "USD"), ("s1", "2.00", "USD")))
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


class FlakySession(Session):
    """The local stack's DynamoDB answering 500 to the first `failures` scans (as moto did under load)."""

    def __init__(self, failures):
        self.failures = failures

    def client(self, name):
        real = super().client(name)
        session = self

        class Flaky:
            def __getattr__(self, attribute):
                return getattr(real, attribute)

            def scan(self, **request):
                if session.failures:
                    session.failures -= 1
                    raise ClientError({"Error": {"Code": "500", "Message": "Internal Server Error"}}, "Scan")
                return real.scan(**request)

        return Flaky()


def test_a_read_the_local_stack_fails_is_read_again_next_tick(aws_env, monkeypatch):
    place("chk_f", orders=(("s0", "1.00", "USD"),))
    PaymentTables.from_settings().finish("chk_f_0", OrderStatus.FAILED, {}, clock.iso())
    outputs = {"PaymentOrdersTableName": aws_env["PAYMENT_ORDERS_TABLE"]}
    record = RunRecord(accepted_order_ids=["chk_f_0"])
    orders = watch_until_settled(FlakySession(failures=3), outputs, record.accepted_order_ids, record,
                                 timeout_s=30, interval_s=0.01)
    assert set(orders) == {"chk_f_0"}

    monkeypatch.setattr(driver, "MAX_FAILED_TICKS", 2)  # a stack that keeps failing still ends the run
    with pytest.raises(ClientError):
        watch_until_settled(FlakySession(failures=100), outputs, record.accepted_order_ids, RunRecord(),
                            timeout_s=30, interval_s=0.01)
