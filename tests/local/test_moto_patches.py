"""moto's DynamoDB transactions, as patched by local/moto_patches.py: all or nothing, and no lost writes."""

import threading

import boto3
import pytest
from moto import mock_aws

from local import moto_patches


@pytest.fixture
def table():
    moto_patches.install()
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
        yield db


def put_once(key):
    return {"Put": {"TableName": "t", "Item": {"k": {"S": key}}, "ConditionExpression": "attribute_not_exists(k)"}}


def test_a_failing_transaction_applies_nothing_and_returns_the_old_item(table):
    table.put_item(TableName="t", Item={"k": {"S": "taken"}, "v": {"N": "1"}})
    failing = put_once("taken")
    failing["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    with pytest.raises(table.exceptions.TransactionCanceledException) as caught:
        table.transact_write_items(TransactItems=[put_once("new"), failing])
    reasons = caught.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"]["v"] == {"N": "1"}
    assert "Item" not in table.get_item(TableName="t", Key={"k": {"S": "new"}})


def test_failing_transactions_never_erase_concurrent_writes(table):
    # moto's own implementation restores whole-table copies on failure, erasing what others wrote meanwhile
    table.put_item(TableName="t", Item={"k": {"S": "taken"}})
    errors = []

    def writer(n):
        for i in range(40):
            table.transact_write_items(TransactItems=[put_once(f"w{n}-{i}")])

    def loser():
        for _ in range(80):
            try:
                table.transact_write_items(TransactItems=[put_once("taken")])
            except table.exceptions.TransactionCanceledException:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [
        threading.Thread(target=loser) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert table.scan(TableName="t")["Count"] == 1 + 3 * 40
