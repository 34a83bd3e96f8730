"""Intake behaviour: duplicates, redeliveries, quarantine, retries after a crash, carried orders."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.recon import handler
from functions.recon.adapters import ReviewQueue
from functions.shared import aws, clock
from tests.recon.conftest import BUCKET, FIXTURES, Account, LambdaContext
from tests.recon.test_formats import plant_stripe

STRIPE = "stripe/balance_change_from_activity.itemized.3.csv"


def at(moment: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_offset", moment - datetime.now(UTC))


@pytest.fixture(autouse=True)
def _now(monkeypatch: pytest.MonkeyPatch) -> None:
    at(datetime(2026, 11, 25, 6, 0, tzinfo=UTC), monkeypatch)


def effects(account: Account) -> tuple[int, int, set[str]]:
    return len(account.executions()), len(account.review_messages()), account.ledger_ids("")


def sqs_event(body: str) -> dict:
    return {"Records": [{"messageId": "m-1", "receiptHandle": "r", "body": body, "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ReconQueue",
                         "awsRegion": "us-east-1"}]}


def test_the_same_content_under_another_name_is_reported_as_a_duplicate(account: Account) -> None:
    plant_stripe(account)
    account.drop("incoming/stripe/first.csv", (FIXTURES / STRIPE).read_bytes())
    account.deliver()
    before = effects(account)
    # the report's three renderings, the HTML page the same renderer as the internal recon's
    assert {"reports/stripe/first.csv.json", "reports/stripe/first.csv.csv", "reports/stripe/first.csv.html"} <= set(
        account.keys("reports/"))

    account.drop("incoming/stripe/again.csv", (FIXTURES / STRIPE).read_bytes())
    result = account.deliver()

    assert result["batchItemFailures"] == []
    duplicate = account.report("reports/stripe/again.csv.duplicate.json")
    assert duplicate["duplicate_of"] == "incoming/stripe/first.csv"
    assert "reports/stripe/again.csv.json" not in account.keys("reports/")
    executions, messages, ledger = effects(account)
    assert (executions, messages, ledger) == (before[0], 0, before[2])


def test_a_redelivered_notification_changes_nothing(account: Account) -> None:
    plant_stripe(account)
    account.drop("incoming/stripe/first.csv", (FIXTURES / STRIPE).read_bytes())
    [message] = account.deliver()["messages"]
    before = effects(account)

    answer = handler.handler(sqs_event(message["Body"]), LambdaContext())

    assert answer["batchItemFailures"] == []
    assert effects(account) == (before[0], 0, before[2])
    assert not any(k.endswith(".duplicate.json") for k in account.keys("reports/"))


@pytest.mark.filterwarnings("ignore:No application metrics")  # the failed attempt publishes none
def test_a_run_that_dies_half_way_is_completed_by_the_retry(account: Account,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    plant_stripe(account)
    account.drop("incoming/stripe/first.csv", (FIXTURES / STRIPE).read_bytes())
    [message] = aws.client("sqs").receive_message(QueueUrl=account.recon_queue_url)["Messages"]
    original_flush = ReviewQueue.flush
    monkeypatch.setattr(ReviewQueue, "flush", lambda self: (_ for _ in ()).throw(RuntimeError("SQS down")))
    with pytest.raises(BatchProcessingError):  # the whole batch failed: SQS will deliver it again
        handler.handler(sqs_event(message["Body"]), LambdaContext())
    assert "reports/stripe/first.csv.json" not in account.keys("reports/")

    monkeypatch.setattr(ReviewQueue, "flush", original_flush)
    answer = handler.handler(sqs_event(message["Body"]), LambdaContext())

    assert answer["batchItemFailures"] == []
    report = account.report("reports/stripe/first.csv.json")
    # The stuck charge the first attempt handed back is found watched by the sweeper, not handed back again
    [stuck] = [o for o in report["discrepancies"] if o["payment_order_id"] == "po_s_stuck"]
    assert "already in the sweeper's hands" in stuck["explanation"]
    assert "sweep_shard" in account.charge("co_s_stuck#USD")
    assert len(account.review_messages()) == report["unexplained"]


def test_an_unparseable_file_is_quarantined_with_an_error_report(account: Account,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name = "STL-20261124.02.009.CSV"
    account.drop(f"incoming/paypal/{name}", (FIXTURES / "paypal" / name).read_bytes())

    result = account.deliver()

    assert result["batchItemFailures"] == []
    assert account.keys("incoming/") == []
    assert set(account.keys("quarantine/")) == {f"quarantine/paypal/{name}", f"quarantine/paypal/{name}.error.json"}
    error = account.report(f"quarantine/paypal/{name}.error.json")
    assert "the report count says '99'" in error["error"]
    assert account.s3.get_object(Bucket=BUCKET, Key=f"quarantine/paypal/{name}")["Body"].read() == \
        (FIXTURES / "paypal" / name).read_bytes()
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("QuarantinedFiles") == [1.0] for m in metrics)
    assert effects(account) == (0, 0, set())


@pytest.mark.parametrize("body", [
    b"balance_transaction_id,currency,gross\ntxn_1,usd,\xc3\x28\n",  # not UTF-8
    b"id,amount\n1,2\n",  # not a Stripe report: required columns missing
    b"",  # empty
])
def test_files_that_cannot_be_read_are_quarantined(account: Account, body: bytes) -> None:
    account.drop("incoming/stripe/bad.csv", body)
    account.deliver()
    assert account.keys("quarantine/stripe/") == ["quarantine/stripe/bad.csv", "quarantine/stripe/bad.csv.error.json"]


def test_a_file_of_an_unknown_psp_is_quarantined(account: Account) -> None:
    account.drop("incoming/klarna/file.csv", b"a,b\n")
    account.deliver()
    assert "no parser for PSP 'klarna'" in account.report("quarantine/klarna/file.csv.error.json")["error"]


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_the_s3_test_event_is_acknowledged(account: Account) -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-25T06:00:00.000Z",
                       "Bucket": BUCKET, "RequestId": "X", "HostId": "Y"})
    assert handler.handler(sqs_event(body), LambdaContext()) == {"batchItemFailures": []}


def stripe_file(*rows: tuple[str, str, str, str, str]) -> bytes:
    """A minimal Stripe report (a subset of columns, in another order): bt, created, gross, pi, checkout id."""
    lines = ["reporting_category,Balance_Transaction_ID , created_utc,gross,currency,payment_intent_id,"
             "payment_metadata[checkout_id]"]
    lines += [f"charge,{bt},{created},{gross},usd,{pi},{checkout}" for bt, created, gross, pi, checkout in rows]
    return ("\n".join(lines) + "\n").encode()


def test_unsettled_orders_are_carried_then_raised_once_then_cleared(account: Account,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    account.put_order("po_1", 1000, psp_reference="pi_1", created_at="2026-11-24T10:00:00.000Z")
    account.put_transaction("payin", "po_1", 1000)
    account.put_order("po_late", 2000, psp_reference="pi_late", created_at="2026-11-24T12:00:00.000Z")
    account.put_transaction("payin", "po_late", 2000)
    account.put_order("po_2", 3000, psp_reference="pi_2", created_at="2026-11-27T10:00:00.000Z")
    account.put_transaction("payin", "po_2", 3000)

    # Day 1: po_late is in the window but not in the file: carried, not raised
    account.drop("incoming/stripe/d1.csv", stripe_file(("t1", "2026-11-24 10:00:01", "10.00", "pi_1", "co_po_1"),
                                                       ("t2", "2026-11-24 23:00:00", "1.00", "pi_x", "")))
    account.deliver()
    [entry] = [e for e in account.report("reports/stripe/d1.csv.json")["discrepancies"]
               if e["category"] == "missing_in_settlement"]
    assert entry["payment_order_id"] == "po_late" and entry["unexplained"] is False
    assert [m["category"] for m in account.review_messages()] == ["missing_in_ledger"]  # only pi_x

    # Day 4: still not settled by a later file: raised, once
    at(datetime(2026, 11, 28, 6, 1, tzinfo=UTC), monkeypatch)
    account.drop("incoming/stripe/d4.csv", stripe_file(("t3", "2026-11-27 10:00:01", "30.00", "pi_2", "co_po_2")))
    account.deliver()
    raised = [m for m in account.review_messages() if m["category"] == "missing_in_settlement"]
    assert [m["payment_order_id"] for m in raised] == ["po_late"]
    account.drop("incoming/stripe/d4b.csv", stripe_file(("t4", "2026-11-27 10:00:02", "30.00", "pi_2b", "")))
    account.deliver()
    assert [m for m in account.review_messages() if m["category"] == "missing_in_settlement"] == []

    # Day 5: a late file settles it: the carry is cleared
    at(datetime(2026, 11, 29, 6, 0, tzinfo=UTC), monkeypatch)
    account.drop("incoming/stripe/d5.csv", stripe_file(("t5", "2026-11-24 12:00:01", "20.00", "pi_late", "co_po_late")))
    account.deliver()
    sha = account.report("reports/stripe/d5.csv.json")["sha256"]
    run = account.db.get_item(TableName="Recon", Key={"pk": {"S": f"FILE#{sha}"}, "sk": {"S": "RUN"}})["Item"]
    assert run["carries_cleared"]["N"] == "1"
    assert account.db.query(TableName="Recon", KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": "CARRY#stripe"}})["Items"] == []


def test_a_missing_setting_fails_loudly(account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.recon.config import MissingSetting
    from functions.recon.service import SettlementObject, reconcile
    from functions.shared.config import reload_settings

    monkeypatch.delenv("REVIEW_QUEUE_URL")
    with pytest.raises(MissingSetting, match="REVIEW_QUEUE_URL"):
        reconcile(SettlementObject(BUCKET, "incoming/stripe/x.csv", "d"), config=reload_settings())
