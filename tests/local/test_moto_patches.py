"""moto as patched by local/moto_patches.py: DynamoDB transactions all or nothing with no lost writes; state
machine parses kept; SQS attributes computed when read; SQS delays counted on the system's clock."""

import sys
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


def test_scans_of_an_index_never_fail_while_writes_add_and_remove_its_attributes():
    # moto walks every item's attributes to find an index's items; unpatched, a write that adds or removes
    # attributes meanwhile fails the read ("dictionary changed size during iteration"), as a chaos run met
    moto_patches.install()
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(TableName="o", BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("k", "s", "d")],
                        GlobalSecondaryIndexes=[{"IndexName": "sweep", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                                 "KeySchema": [{"AttributeName": "s", "KeyType": "HASH"},
                                                               {"AttributeName": "d", "KeyType": "RANGE"}]}])
        for i in range(300):
            db.put_item(TableName="o", Item={"k": {"S": f"o{i}"}, "s": {"S": "0"}, "d": {"S": "x"}})
        errors, stop = [], threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                key = {"k": {"S": f"o{i % 300}"}}
                if (i // 300) % 2:
                    db.update_item(TableName="o", Key=key, UpdateExpression="SET s = :s, d = :d, v = :s",
                                   ExpressionAttributeValues={":s": {"S": "0"}, ":d": {"S": "x"}})
                else:
                    db.update_item(TableName="o", Key=key, UpdateExpression="REMOVE s, d, v")
                i += 1

        def reader():
            for _ in range(40):
                try:
                    db.scan(TableName="o", IndexName="sweep", ProjectionExpression="k")
                    db.query(TableName="o", IndexName="sweep", KeyConditionExpression="s = :s",
                             ExpressionAttributeValues={":s": {"S": "0"}})
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
            stop.set()

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often, as a loaded machine does
        try:
            threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        assert errors == []


def test_moto_builds_each_answer_under_the_lock_that_serializes_writes(table, monkeypatch):
    # moto turns the live item into its answer after the backend call returns; outside the lock a concurrent
    # write adding attributes failed it ("dictionary changed size during iteration", met once in CI)
    from moto.dynamodb.models.dynamo_type import Item

    held = []
    to_json = Item.to_json

    def spying(self, *args, **kwargs):
        held.append(moto_patches._TABLES_LOCK._is_owned())
        return to_json(self, *args, **kwargs)

    monkeypatch.setattr(Item, "to_json", spying)
    table.put_item(TableName="t", Item={"k": {"S": "one"}})
    table.update_item(TableName="t", Key={"k": {"S": "one"}}, UpdateExpression="SET v = :v",
                      ExpressionAttributeValues={":v": {"S": "x"}}, ReturnValues="ALL_NEW")
    table.get_item(TableName="t", Key={"k": {"S": "one"}})
    table.query(TableName="t", KeyConditionExpression="k = :k", ExpressionAttributeValues={":k": {"S": "one"}})
    assert held and all(held)


def test_a_definition_is_parsed_once_and_each_execution_gets_its_own_components():
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

    moto_patches.install()
    definition = '{"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": true}}}'
    first_program, first_tree = AmazonStateLanguageParser.parse(definition)
    second_program, second_tree = AmazonStateLanguageParser.parse(definition)
    assert first_tree is second_tree
    assert first_program is not second_program
    with pytest.raises(ASLParserException):
        AmazonStateLanguageParser.parse('{"StartAt": "A", "States": {"A": {"Type": "Nope"}}')


def test_queue_attributes_are_computed_only_when_read():
    from moto.sqs.models import Message

    moto_patches.install()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "7"})["QueueUrl"]
        for n in range(30):
            sqs.send_message(QueueUrl=url, MessageBody=str(n))
        counted = []
        original = Message.visible
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Message, "visible", property(lambda m: counted.append(1) or original.fget(m)))
            sqs.send_message(QueueUrl=url, MessageBody="one more")
            assert counted == []  # moto's own attributes count every message on each send
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert len(got) == 10
        everything = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert everything["ApproximateNumberOfMessages"] == "21"
        assert everything["ApproximateNumberOfMessagesNotVisible"] == "10"
        assert everything["VisibilityTimeout"] == "7"
        one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        assert one == {"VisibilityTimeout": "7"}


def test_a_delayed_message_is_due_once_the_system_clock_has_passed_its_delay():
    from functions.shared import clock

    moto_patches.install()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        try:
            sqs.send_message(QueueUrl=url, MessageBody="look again", DelaySeconds=900)
            clock.advance(899)
            assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
            clock.advance(2)
            assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["look again"]
        finally:
            clock.reset()
