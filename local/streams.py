"""DynamoDB stream event source mappings, run as Lambda runs them.

moto's own stream trigger invokes the function inside the write, and then empties the shard. It is switched off
(`disable_moto_stream_triggers`) and replaced by one poller thread per AWS::Lambda::EventSourceMapping on a
table's stream, behaving like the Lambda service: GetRecords from the mapping's StartingPosition, batches of
BatchSize in shard order, the event as AWS builds it; `batchItemFailures` (ReportBatchItemFailures) retries the
batch from the first failed sequence number; a function error retries the batch, at most MaximumRetryAttempts
times, then the batch's position goes to the on-failure destination (an SQS queue) and the poller moves on.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3

from local.moto_server import ACCOUNT_ID, REGION

log = logging.getLogger("local.streams")

_IDLE_S = 0.2


@dataclass(frozen=True)
class StreamMapping:
    logical_id: str
    stream_arn: str
    function_name: str
    batch_size: int
    starting_position: str
    report_batch_item_failures: bool
    max_retries: int
    on_failure_queue_arn: str | None


def stream_mappings(deployed: Any) -> list[StreamMapping]:
    """The template's mappings whose source is a DynamoDB stream."""
    found = []
    for lid in deployed.template.of_type("AWS::Lambda::EventSourceMapping"):
        props = deployed.template.props(lid)
        source_arn = deployed.resolve(props.get("EventSourceArn"))
        if not isinstance(source_arn, str) or ":dynamodb:" not in source_arn:
            continue
        destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        name = deployed.resolve(props["FunctionName"])
        found.append(StreamMapping(
            logical_id=lid, stream_arn=source_arn,
            function_name=name.split(":")[6] if name.startswith("arn:") else name,
            batch_size=int(props.get("BatchSize", 100)), starting_position=props.get("StartingPosition", "LATEST"),
            report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            max_retries=int(props.get("MaximumRetryAttempts", 3)),
            on_failure_queue_arn=deployed.resolve(destination) if destination else None))
    return found


def disable_moto_stream_triggers() -> None:
    """Stop moto invoking Lambdas inside a table write (and then dropping the shard's records)."""
    from moto.dynamodb.models import dynamodb_backends

    for table in dynamodb_backends[ACCOUNT_ID][REGION].tables.values():
        table.lambda_event_source_mappings.clear()


def stream_event(records: list[dict[str, Any]], stream_arn: str) -> dict[str, Any]:
    """The event Lambda sends for a batch of stream records (GetRecords answer -> Records)."""
    out = []
    for record in records:
        images = dict(record["dynamodb"])
        created = images.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            images["ApproximateCreationDateTime"] = created.timestamp()
        out.append({"eventID": record.get("eventID"), "eventName": record["eventName"],
                    "eventVersion": record.get("eventVersion", "1.1"), "eventSource": "aws:dynamodb",
                    "awsRegion": REGION, "dynamodb": images, "eventSourceARN": stream_arn})
    return {"Records": out}


def poll_stream(aws_url: str, mapping: StreamMapping, stop: threading.Event) -> None:
    from local.event_sources import lambda_client

    session = boto3.session.Session(region_name=REGION)
    streams = session.client("dynamodbstreams", endpoint_url=aws_url)
    lam = lambda_client(aws_url)
    shard = streams.describe_stream(StreamArn=mapping.stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=mapping.stream_arn, ShardId=shard,
                                          ShardIteratorType=mapping.starting_position)["ShardIterator"]
    while not stop.is_set():
        try:
            answer = streams.get_records(ShardIterator=iterator, Limit=mapping.batch_size)
            records = answer.get("Records", [])
            if records:
                _deliver(session, lam, mapping, records, stop)
            iterator = answer["NextShardIterator"]
            if not records:
                stop.wait(_IDLE_S)
        except Exception:  # noqa: BLE001 - a poller must outlive one bad batch
            if not stop.is_set():
                log.exception("stream poller %s failed", mapping.logical_id)
                stop.wait(1)


def _deliver(session: Any, lam: Any, mapping: StreamMapping, records: list[dict[str, Any]],
             stop: threading.Event) -> None:
    retries = 0
    while records and not stop.is_set():
        answer = lam.invoke(FunctionName=mapping.function_name,
                            Payload=json.dumps(stream_event(records, mapping.stream_arn), default=str).encode())
        payload = json.loads(answer["Payload"].read() or b"null")
        failed_at = None
        if "FunctionError" not in answer and mapping.report_batch_item_failures and isinstance(payload, dict):
            failures = payload.get("batchItemFailures") or []
            failed_at = failures[0].get("itemIdentifier") if failures else None
        elif "FunctionError" not in answer:
            return
        if "FunctionError" not in answer and failed_at is None:
            return
        retries += 1
        if retries > mapping.max_retries:
            _give_up(session.client("sqs", endpoint_url=lam.meta.endpoint_url), mapping, records)
            return
        if failed_at is not None:
            records = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) >= int(failed_at)]
        stop.wait(min(2 ** retries * 0.1, 2))


def _give_up(sqs: Any, mapping: StreamMapping, records: list[dict[str, Any]]) -> None:
    """What Lambda sends to the on-failure destination: where the batch was, not the records."""
    log.error("stream mapping %s: batch given up after %d retries", mapping.logical_id, mapping.max_retries)
    if not mapping.on_failure_queue_arn:
        return
    first, last = records[0]["dynamodb"]["SequenceNumber"], records[-1]["dynamodb"]["SequenceNumber"]
    body = {"requestContext": {"condition": "RetryAttemptsExhausted",
                               "approximateInvokeCount": mapping.max_retries + 1},
            "DDBStreamBatchInfo": {"streamArn": mapping.stream_arn, "startSequenceNumber": first,
                                   "endSequenceNumber": last, "batchSize": len(records)}}
    url = sqs.get_queue_url(QueueName=mapping.on_failure_queue_arn.rsplit(":", 1)[1])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
