"""The AWS adapter's reads against moto: projected to what matching reads, and enough for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from functions.ledger import journal
from functions.ledger.journal import Entry, Transaction
from functions.recon import adapters
from functions.recon.adapters import AwsFixes, DynamoLookup
from functions.recon.outcomes import Restart
from functions.recon.ports import (
    CHECKOUT_ATTRIBUTES,
    ORDER_ATTRIBUTES,
    ROW_TRANSACTION_ATTRIBUTES,
    WINDOW_ORDER_ATTRIBUTES,
)
from functions.recon.rules import ledger_amount
from functions.shared import aws, tables
from functions.shared.money import Money
from functions.shared.tables import LedgerTable, PaymentTables
from local.permissions import Call, calls_as_iam
from tests.infra.test_iam import EXPECTED
from tests.recon.conftest import Account


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture
def lookup(account: Account, pool: ThreadPoolExecutor) -> DynamoLookup:
    return DynamoLookup(PaymentTables.from_settings(), LedgerTable.from_settings(), pool)


def test_orders_are_read_with_only_the_matched_attributes(account: Account, lookup: DynamoLookup) -> None:
    for i in range(250):  # three BatchGetItem requests
        account.put_order(f"po_{i}", 1000 + i, psp_reference=f"pi_{i}" if i else None)
    ids = [f"po_{i}" for i in range(250)] + ["po_unknown", "po_7"]  # a repeated key is asked for once
    found = lookup.orders(ids)
    assert set(found) == {f"po_{i}" for i in range(250)}
    assert found["po_7"] == {"payment_order_id": "po_7", "amount_minor": 1007, "currency": "USD",
                             "payment_order_status": "SUCCESS", "psp_reference": "pi_7"}
    assert found["po_0"] == {"payment_order_id": "po_0", "amount_minor": 1000, "currency": "USD",
                             "payment_order_status": "SUCCESS"}  # what the table lacks, the read leaves out
    assert all(set(order) <= set(ORDER_ATTRIBUTES) for order in found.values())


def test_a_pay_in_is_read_for_its_existence_and_a_refund_for_its_amount(account: Account,
                                                                        lookup: DynamoLookup) -> None:
    account.put_transaction("payin", "po_1", 1000)
    account.put_transaction("refund", "re_1", 400, description="partial refund of po_1")
    assert lookup.payins(["po_1", "po_2", "po_1"]) == {"po_1"}
    found = lookup.transactions(["refund#re_1", "refund#re_2", "refund#re_1"])
    assert found == {
        "refund#re_1": {"transaction_id": "refund#re_1", "entries": [  # without its kind, reference, dates
            {"account": "a", "amount_minor": 400, "currency": "USD"},
            {"account": "b", "amount_minor": -400, "currency": "USD"}]},
    }
    assert ledger_amount(found["refund#re_1"]) == Money(400, "USD")
    assert all(set(tx) <= set(ROW_TRANSACTION_ATTRIBUTES) for tx in found.values())


def test_window_orders_are_projected_too(account: Account, lookup: DynamoLookup) -> None:
    account.put_order("po_1", 1000, psp_reference="pi_1", psp="adyen")
    assert lookup.window_orders(["po_1", "po_2"]) == {"po_1": {
        "payment_order_id": "po_1", "amount_minor": 1000, "currency": "USD", "payment_order_status": "SUCCESS",
        "psp_reference": "pi_1", "psp": "adyen", "created_at": "2026-11-24T12:00:00.000Z", "checkout_id": "co_po_1"}}
    assert set(WINDOW_ORDER_ATTRIBUTES) >= set(ORDER_ATTRIBUTES)


def test_a_checkouts_orders_come_from_its_payment_event_by_currency(account: Account,
                                                                     lookup: DynamoLookup) -> None:
    # Given a checkout of two sellers in USD and one in EUR, and one whose order the orders table lacks
    for order_id, amount, currency in (("po_a", 1000, "USD"), ("po_b", 2500, "USD"), ("po_c", 700, "EUR")):
        account.put_order(order_id, amount, currency, checkout_id="co_1")
    account.list_in_checkout("co_2", "po_lost", 500, "USD")
    # Then each checkout's order ids are listed by currency, 100 checkouts a request, unknown ones left out
    ids = ["co_1", "co_2", "co_unknown", *(f"co_x{i}" for i in range(150))]
    assert lookup.checkout_orders(ids) == {"co_1": {"USD": ["po_a", "po_b"], "EUR": ["po_c"]},
                                           "co_2": {"USD": ["po_lost"]}}
    assert CHECKOUT_ATTRIBUTES == ("checkout_id", "payment_orders")


def test_an_orders_refunds_come_from_the_ledgers_order_index(account: Account, lookup: DynamoLookup) -> None:
    entries = (Entry("psp_receivable:stripe", Money(-400, "USD")), Entry("seller_pending:s", Money(400, "USD")))
    journal.record(Transaction("refund", "rf_1", entries, payment_order_id="po_1"))  # as the journal writes it
    account.put_transaction("refund", "rf_2", 100, payment_order_id="po_1")
    account.put_transaction("chargeback", "du_1", 100, payment_order_id="po_3")  # names its order, no refund
    account.put_transaction("refund", "po_2:1", 100, description="refund of po_2")  # names no order: not found
    account.put_transaction("payin", "po_2", 1000)
    found = lookup.refunds_of({"po_1", "po_2", "po_3", "po_4"})
    assert {order_id: sorted(ids) for order_id, ids in found.items()} == {"po_1": ["refund#rf_1", "refund#rf_2"]}


def test_the_window_comes_from_the_created_index_hour_by_hour_and_shard_by_shard(account: Account,
                                                                                 lookup: DynamoLookup) -> None:
    moments = {"po_before": "2026-11-24T09:59:59.999Z", "po_first": "2026-11-24T10:00:00.000Z",
               "po_end": "2026-11-24T15:00:00.000Z", "po_next_day": "2026-11-25T11:00:00.000Z"}
    moments |= {f"po_{i}": f"2026-11-24T{10 + i % 5:02d}:{i % 60:02d}:00.000Z" for i in range(60)}
    for order_id, created_at in moments.items():
        account.put_order(order_id, 1000, created_at=created_at)
    assert len({tables.created_bucket(order_id, moments[order_id]) for order_id in moments}) > 20
    found = list(lookup.created_between("2026-11-24T10:00:00.000Z", "2026-11-24T15:00:00.000Z"))
    assert sorted(found) == sorted(["po_first", *(f"po_{i}" for i in range(60))])  # [start, end)


def test_rows_without_our_id_find_their_order_by_the_reference_index(account: Account,
                                                                      lookup: DynamoLookup) -> None:
    account.put_order("po_1", 1000, psp_reference="pi_1")
    account.put_order("po_2", 1000)  # no reference yet: not in the sparse index
    assert lookup.order_ids_by_reference({"pi_1", "pi_unknown"}) == {"pi_1": "po_1"}


def test_created_buckets_cover_every_hour_of_a_window_in_every_shard() -> None:
    buckets = tables.created_buckets("2026-11-24T22:30:00.000Z", "2026-11-25T01:00:00.000Z")
    assert len(buckets) == 4 * tables.CREATED_SHARDS
    assert buckets[0] == "2026-11-24T22#0" and buckets[-1] == f"2026-11-25T01#{tables.CREATED_SHARDS - 1}"
    assert tables.created_bucket("po_1", "2026-11-24T23:59:59.999Z") in buckets


def _fixes(account: Account, pool: ThreadPoolExecutor) -> AwsFixes:
    return AwsFixes("stripe", pool, LedgerTable.from_settings(), PaymentTables.from_settings())


def _two_orders(account: Account, status: str, attempts: int = 0) -> None:
    account.put_order("po_a", 1000, status=status, checkout_id="co_1", attempts=attempts)
    account.put_order("po_b", 2500, status=status, checkout_id="co_1", attempts=attempts)


def test_a_not_started_charge_is_enqueued_once_for_all_its_orders(account: Account, lookup: DynamoLookup,
                                                                  pool: ThreadPoolExecutor) -> None:
    # Given two NOT_STARTED orders of one charge, read as the matcher reads them (without their charge)
    _two_orders(account, "NOT_STARTED")
    found = lookup.orders(["po_a", "po_b"])
    assert "checkout_id" not in found["po_a"]
    fixes = _fixes(account, pool)
    # When both are handed back
    answers = [fixes.restart_order(found["po_a"]), fixes.restart_order(found["po_b"])]
    # Then the charge's message is sent once, as the API sends it, and nothing else starts
    assert answers == [Restart.STARTED, Restart.STARTED] and fixes.restarted == 1
    assert account.queued_orders() == [{"charge_key": "co_1#USD", "checkout_id": "co_1"}]
    assert account.executions() == []


def test_a_dead_lettered_executing_charge_becomes_due_for_the_sweeper_once(account: Account,
                                                                           lookup: DynamoLookup,
                                                                           pool: ThreadPoolExecutor) -> None:
    _two_orders(account, "EXECUTING", attempts=2)
    found = lookup.orders(["po_a", "po_b"])
    fixes = _fixes(account, pool)
    assert [fixes.restart_order(found[i]) for i in ("po_a", "po_b")] == [Restart.STARTED] * 2
    charge = account.charge("co_1#USD")
    assert "dead_letter_reason" not in charge and charge["attempts"] == 2
    assert list(PaymentTables.from_settings().due_charges(charge["sweep_shard"], "9999")) == ["co_1#USD"]
    assert account.queued_orders() == [] and account.executions() == []
    # A retried run of the file finds it watched and changes nothing
    again = _fixes(account, pool)
    assert again.restart_order(found["po_a"]) is Restart.WATCHED and again.restarted == 0
    assert account.charge("co_1#USD") == charge


def test_a_charge_the_sweeper_watches_is_left_to_its_deadline(account: Account, lookup: DynamoLookup,
                                                              pool: ThreadPoolExecutor) -> None:
    _two_orders(account, "EXECUTING", attempts=1)
    account.put_charge("co_1", "USD", "EXECUTING", attempts=1, due_at="2999-01-01T00:00:00.000Z")
    before = account.charge("co_1#USD")
    fixes = _fixes(account, pool)
    assert fixes.restart_order(lookup.orders(["po_a"])["po_a"]) is Restart.WATCHED
    assert account.charge("co_1#USD") == before and fixes.restarted == 0


def test_past_the_sweepers_attempts_the_next_attempt_is_started_here(account: Account, lookup: DynamoLookup,
                                                                     pool: ThreadPoolExecutor) -> None:
    _two_orders(account, "EXECUTING", attempts=5)  # the sweeper dead-letters at max_attempts (5)
    fixes = _fixes(account, pool)
    assert fixes.restart_order(lookup.orders(["po_b"])["po_b"]) is Restart.STARTED
    [execution] = account.executions()
    work = json.loads(execution["input"])
    assert (work["charge_key"], work["attempt"], len(work["orders"])) == ("co_1#USD", 6, 2)
    charge = account.charge("co_1#USD")
    assert (charge["attempts"], charge["started_attempt"], charge["charge_status"]) == (6, 6, "EXECUTING")
    assert charge["due_at"] > "2026-12" and "dead_letter_reason" not in charge


def test_a_charge_that_moved_on_since_it_was_read_is_not_handed_back(account: Account, lookup: DynamoLookup,
                                                                     pool: ThreadPoolExecutor) -> None:
    account.put_order("po_1", 1000, status="EXECUTING", psp_reference="pi_1")
    read = lookup.orders(["po_1"])["po_1"]
    account.put_charge("co_po_1", "USD", "SUCCESS", attempts=1)  # its workflow finished meanwhile
    assert _fixes(account, pool).restart_order(read) is Restart.FINISHED
    account.put_charge("co_po_1", "USD", "FAILED", attempts=1)
    assert _fixes(account, pool).restart_order(read) is Restart.MOVED_ON
    account.db.delete_item(TableName="Charges", Key=tables.to_item({"charge_key": "co_po_1#USD"}))
    fixes = _fixes(account, pool)
    assert fixes.restart_order(read) is Restart.NO_CHARGE
    assert account.executions() == [] and account.queued_orders() == [] and fixes.restarted == 0


def test_keys_left_unprocessed_are_asked_again_with_the_same_projection(account: Account, lookup: DynamoLookup,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(6):
        account.put_order(f"po_{i}", 100 + i, psp_reference=f"pi_{i}", charge_id=f"ch_{i}")
    real, requests, pauses = aws.client("dynamodb"), [], []

    class Throttled:
        """DynamoDB leaving half of each first request unprocessed, as it does under throttling."""

        def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
            requests.append(RequestItems)
            [(table, asked)] = RequestItems.items()
            if len(requests) > 1:
                return real.batch_get_item(RequestItems=RequestItems)
            kept, left = asked["Keys"][:3], asked["Keys"][3:]
            answer = real.batch_get_item(RequestItems={table: {**asked, "Keys": kept}})
            return {**answer, "UnprocessedKeys": {table: {**asked, "Keys": left}}}

    monkeypatch.setattr(adapters.aws, "client", lambda service: Throttled())
    monkeypatch.setattr(tables.time, "sleep", pauses.append)
    found = lookup.orders([f"po_{i}" for i in range(6)])
    assert sorted(found) == [f"po_{i}" for i in range(6)] and len(requests) == 2
    assert len(pauses) == 1 and 0 <= pauses[0] <= 0.05  # full jitter under the first round's cap
    assert requests[1]["PaymentOrders"]["ProjectionExpression"] == requests[0]["PaymentOrders"]["ProjectionExpression"]
    assert all(set(order) == set(ORDER_ATTRIBUTES) for order in found.values())


def _as_granted(call: Call) -> tuple[str, str]:
    """A call recorded against moto, named as tests/infra/test_iam.py names the template's resources."""
    resource = call.resource
    if ":table/" in resource:
        resource = "table:" + resource.split(":table/", 1)[1]
    elif resource.startswith("arn:aws:sqs:"):
        resource = "queue:" + resource.rsplit(":", 1)[1]
    elif ":stateMachine:" in resource:
        resource = "state-machine"
    return resource, call.action


def test_every_aws_call_of_a_hand_back_is_granted_to_recons_role(account: Account, lookup: DynamoLookup,
                                                                pool: ThreadPoolExecutor) -> None:
    # Given charges in every state a hand-back meets, and each AWS call of the hand-backs recorded as IAM sees it
    account.put_order("po_new", 1000, status="NOT_STARTED", checkout_id="co_new")
    account.put_order("po_dead", 1000, status="EXECUTING", attempts=2, checkout_id="co_dead")
    account.put_order("po_spent", 1000, status="EXECUTING", attempts=5, checkout_id="co_spent")
    account.put_order("po_watched", 1000, status="EXECUTING", attempts=1, checkout_id="co_watched")
    account.put_charge("co_watched", "USD", "EXECUTING", attempts=1, due_at="2999-01-01T00:00:00.000Z")
    found = lookup.orders(["po_new", "po_dead", "po_spent", "po_watched"])
    calls: set[Call] = set()

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model
        calls.update(calls_as_iam(service.signing_name or service.endpoint_prefix, model.name, params))

    fixes = _fixes(account, pool)
    for service in ("dynamodb", "sqs", "stepfunctions"):
        aws.client(service).meta.events.register(f"provide-client-params.{service}", record)
    try:
        # When each is handed back
        answers = {order_id: fixes.restart_order(order) for order_id, order in found.items()}
    finally:
        for service in ("dynamodb", "sqs", "stepfunctions"):
            aws.client(service).meta.events.unregister(f"provide-client-params.{service}", record)

    # Then they took every path, and recon's role (as the template grants it) allows each call
    assert answers == {"po_new": Restart.STARTED, "po_dead": Restart.STARTED, "po_spent": Restart.STARTED,
                       "po_watched": Restart.WATCHED}
    made = {_as_granted(call) for call in calls}
    assert {("table:Charges", "dynamodb:UpdateItem"), ("table:PaymentOrders", "dynamodb:UpdateItem"),
            ("queue:OrdersQueue", "sqs:SendMessage"), ("state-machine", "states:StartExecution")} <= made
    granted = EXPECTED["Recon"]
    assert sorted((resource, action) for resource, action in made if action not in granted.get(resource, ())) == []
