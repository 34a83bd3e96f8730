"""Event sources: SQS pollers (Lambda event source mappings) and EventBridge schedules, from the template.

moto's own SQS -> Lambda mapping invokes the function inside SendMessage, one message at a time, ignoring the
batch size and partial batch failures. It is switched off (`disable_moto_sqs_triggers`) and replaced by
poller threads per AWS::Lambda::EventSourceMapping that behave like the Lambda service, as many as the mapping's
ScalingConfig MaximumConcurrency but never more than the function's local concurrency (`pollers_per_function`: a
batch held while it waits for an execution environment would run out its visibility, where Lambda only polls for
the concurrency it has). A mapping without one gets one poller: Lambda would start five and scale up, which on a
laptop only adds contention (the OrderStarter's batches just start executions). Each does ReceiveMessage with the
mapping's BatchSize (and MaximumBatchingWindowInSeconds) and the queue's visibility timeout, the SQS event as
AWS builds it, `batchItemFailures` honoured when FunctionResponseTypes has ReportBatchItemFailures, and on a
function error every message left to come back after its visibility timeout. moto applies the queue's
RedrivePolicy on receive: a message already received maxReceiveCount times moves to the DLQ.

moto counts a visibility timeout in real seconds; the system's clock (functions/shared/clock.py) can be moved
forward by a simulation. A message a delivery left on the queue is made visible again as soon as its timeout has
passed on that clock, as it would have in real time: a chaos run that jumps the clock seven minutes does not then
wait 270 real seconds for a killed worker's message. A message whose visibility the function set itself (its own
backoff, `visibility_set_by_function`) is left to moto.

Every AWS::Events::Rule with a ScheduleExpression gets a timer thread that invokes its Lambda targets with a
"Scheduled Event" (or the target's constant Input). `schedule_interval` shortens the period for local runs.

Test hooks: `EventSources.duplicate_delivery = True` delivers every SQS batch twice (same messageIds and
receipt handles, one after the other; the messages are then deleted according to the second delivery, as if
the first delivery's delete had been lost). `EventSources.fire(rule_logical_id)` runs a schedule now.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config

from functions.shared import clock
from local.deploy import DeployedStack, disable_moto_sqs_triggers
from local.moto_server import ACCOUNT_ID, REGION
from local.streams import StreamMapping, disable_moto_stream_triggers, poll_stream

log = logging.getLogger("local.events")

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
UNSCALED_POLLERS = 1  # locally, for a mapping without ScalingConfig (Lambda itself starts five)


def lambda_client(aws_url: str, read_timeout: float = 960) -> Any:
    # No retries: a retried Invoke would run the handler twice.
    config = Config(read_timeout=read_timeout, retries={"total_max_attempts": 1}, max_pool_connections=32)
    return boto3.session.Session(region_name=REGION).client("lambda", endpoint_url=aws_url, config=config)


@dataclass(frozen=True)
class SqsMapping:
    logical_id: str
    queue_arn: str
    queue_url: str
    function_name: str
    batch_size: int
    batching_window_s: float
    report_batch_item_failures: bool
    visibility_timeout: int
    max_concurrency: int = UNSCALED_POLLERS  # ScalingConfig MaximumConcurrency


@dataclass(frozen=True)
class ScheduleTarget:
    rule_logical_id: str
    rule_arn: str
    schedule_expression: str
    function_arn: str
    target_input: str | None


def sqs_mappings(deployed: DeployedStack, aws_url: str) -> list[SqsMapping]:
    sqs = boto3.session.Session(region_name=REGION).client("sqs", endpoint_url=aws_url)
    found = []
    for lid in deployed.template.of_type("AWS::Lambda::EventSourceMapping"):
        props = deployed.template.props(lid)
        source_arn = deployed.resolve(props.get("EventSourceArn"))
        if isinstance(source_arn, str) and ":dynamodb:" in source_arn:
            continue  # a table's stream: stream_mappings()
        if not isinstance(source_arn, str) or ":sqs:" not in source_arn:
            log.warning("event source mapping %s: only SQS sources run locally (%s)", lid, source_arn)
            continue
        if str(props.get("Enabled", True)).lower() == "false":
            log.info("event source mapping %s is disabled in the template", lid)
            continue
        queue_url = sqs.get_queue_url(QueueName=source_arn.rsplit(":", 1)[1])["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
        found.append(
            SqsMapping(
                logical_id=lid,
                queue_arn=source_arn,
                queue_url=queue_url,
                function_name=_function_name(deployed.resolve(props["FunctionName"])),
                batch_size=int(props.get("BatchSize", 10)),
                batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                visibility_timeout=int(attrs["Attributes"]["VisibilityTimeout"]),
                max_concurrency=int((props.get("ScalingConfig") or {}).get("MaximumConcurrency",
                                                                           UNSCALED_POLLERS)),
            )
        )
    return found


def schedule_targets(deployed: DeployedStack) -> list[ScheduleTarget]:
    found = []
    for lid in deployed.template.of_type("AWS::Events::Rule"):
        props = deployed.template.props(lid)
        expression = props.get("ScheduleExpression")
        if not expression or props.get("State", "ENABLED") != "ENABLED":
            continue
        rule_arn = deployed.resolve({"Fn::GetAtt": [lid, "Arn"]})
        for target in props.get("Targets", []):
            arn = deployed.resolve(target["Arn"])
            if ":lambda:" not in arn:
                log.warning("rule %s target %s: only Lambda targets run locally", lid, arn)
                continue
            if "InputPath" in target or "InputTransformer" in target:
                log.warning("rule %s: InputPath/InputTransformer ignored locally", lid)
            raw_input = target.get("Input")
            found.append(
                ScheduleTarget(lid, rule_arn, expression, arn, deployed.resolve(raw_input) if raw_input else None)
            )
    return found


def _function_name(name_or_arn: str) -> str:
    # FunctionName may be a name, an ARN, or an ARN with a qualifier.
    if name_or_arn.startswith("arn:"):
        return name_or_arn.split(":")[6]
    return name_or_arn


def runs_locally(expression: str) -> bool:
    """rate(...) schedules tick locally (shortened by `schedule_interval`); cron(...) ones, a time of day (the
    nightly internal recon), would tick at that same short interval there, so they only run when fired."""
    return _RATE.match(expression.strip()) is not None


def rate_seconds(expression: str) -> float:
    match = _RATE.match(expression.strip())
    if not match:
        raise ValueError(f"unsupported schedule expression {expression!r} (only rate(...) runs locally)")
    count, unit = int(match.group(1)), match.group(2).rstrip("s")
    return float(count * _UNIT_S[unit])


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda sends for a batch of SQS messages (ReceiveMessage answer -> Records)."""
    records = []
    for m in messages:
        attributes = {
            k: v
            for k, v in m.get("Attributes", {}).items()
            if k
            in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "SequenceNumber",
                "MessageGroupId",
                "MessageDeduplicationId",
                "AWSTraceHeader",
            )
        }
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: _lambda_message_attribute(value) for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


def failed_message_ids(response: Any, batch_ids: list[str]) -> set[str]:
    """Message ids to keep, from a ReportBatchItemFailures answer; like Lambda, a malformed answer fails all."""
    if not response:
        return set()
    if not isinstance(response, dict):
        return set(batch_ids)
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    ids = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not item or item not in batch_ids:
            return set(batch_ids)
        ids.add(item)
    return ids


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


@dataclass(frozen=True)
class _LeftOnQueue:
    receipt_handle: str
    back_at: datetime  # on the system's clock
    real_back_at: float  # time.monotonic(): moto shows it again by itself then


def _visible_again_by_the_clock(sqs: Any, mapping: SqsMapping, left: list[_LeftOnQueue],
                                set_by_function: Callable[[str], bool]) -> list[_LeftOnQueue]:
    """Makes visible the messages whose timeout has passed on the system's clock; returns those still waiting."""
    if not left:
        return left
    now, real_now = clock.now(), time.monotonic()
    waiting = []
    for message in left:
        # moto shows it by itself at real_back_at and may hand it out again under a new receipt handle; it still
        # accepts the old one then, which would show the new delivery's message while it runs: let go a second early
        if real_now >= message.real_back_at - 1 or set_by_function(message.receipt_handle):
            continue
        if now < message.back_at:
            waiting.append(message)
            continue
        try:
            sqs.change_message_visibility(QueueUrl=mapping.queue_url, ReceiptHandle=message.receipt_handle,
                                          VisibilityTimeout=0)
        except Exception:  # noqa: BLE001 - deleted or received again meanwhile: nothing left to show
            log.debug("message of %s no longer waits", mapping.logical_id)
    return waiting


@dataclass
class EventSources:
    aws_url: str
    mappings: list[SqsMapping]
    schedules: list[ScheduleTarget]
    schedule_interval: float | None = None
    # True: every batch is delivered twice; a callable decides per batch (the chaos run draws from its seed).
    duplicate_delivery: bool | Callable[[list[dict[str, Any]]], bool] = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    streams: list[StreamMapping] = field(default_factory=list)  # DynamoDB stream mappings (local/streams.py)
    # receipt handle -> True when a function changed that message's visibility itself (local/lambda_runtime.py)
    visibility_set_by_function: Callable[[str], bool] = lambda _handle: False
    pollers_per_function: int | None = 1  # the local runtime's concurrency per function (None: no limit)

    def start(self) -> None:
        disable_moto_sqs_triggers()
        for mapping in self.mappings:
            pollers = min(mapping.max_concurrency, self.pollers_per_function or mapping.max_concurrency)
            for n in range(max(pollers, 1)):
                self._spawn(f"sqs-{mapping.logical_id}-{n}", self._poll, mapping)
        disable_moto_stream_triggers()
        for stream in self.streams:
            self._spawn(f"stream-{stream.logical_id}", lambda m: poll_stream(self.aws_url, m, self._stop), stream)
        for target in self.schedules:
            if runs_locally(target.schedule_expression):
                self._spawn(f"schedule-{target.rule_logical_id}", self._tick, target)
            else:
                log.info("rule %s (%s): a time-of-day schedule does not tick locally; fire it, or invoke its target "
                         "on demand (the internal recon: python -m ops recon internal)",
                         target.rule_logical_id, target.schedule_expression)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _spawn(self, name: str, target: Any, arg: Any) -> None:
        thread = threading.Thread(target=target, args=(arg,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- SQS ----------------------------------------------------------------------------------------

    def _poll(self, mapping: SqsMapping) -> None:
        session = boto3.session.Session(region_name=REGION)
        sqs = session.client("sqs", endpoint_url=self.aws_url)
        lam = lambda_client(self.aws_url)
        left: list[_LeftOnQueue] = []  # this poller's messages a delivery left to their visibility timeout
        while not self._stop.is_set():
            try:
                left = _visible_again_by_the_clock(sqs, mapping, left, self.visibility_set_by_function)
                # a timeout runs from the receive, as SQS counts it: taken before, so never later than moto's
                received_at, received_real = clock.now(), time.monotonic()
                messages = self._receive_batch(sqs, mapping)
                if messages:
                    kept = self._deliver(sqs, lam, mapping, messages)
                    timeout = timedelta(seconds=mapping.visibility_timeout)
                    left += [_LeftOnQueue(handle, received_at + timeout,
                                          received_real + mapping.visibility_timeout) for handle in kept]
            except Exception:  # noqa: BLE001 - a poller must outlive one bad batch
                if not self._stop.is_set():
                    log.exception("poller %s failed on a batch", mapping.logical_id)
                    self._stop.wait(1)

    def _receive_batch(self, sqs: Any, mapping: SqsMapping) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        window_end: float | None = None
        while not self._stop.is_set() and len(messages) < mapping.batch_size:
            answer = sqs.receive_message(
                QueueUrl=mapping.queue_url,
                MaxNumberOfMessages=min(10, mapping.batch_size - len(messages)),
                WaitTimeSeconds=1,
                VisibilityTimeout=mapping.visibility_timeout,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages.extend(answer.get("Messages", []))
            if not messages:
                break  # back to the poll loop, which shows again what the clock has timed out
            if mapping.batching_window_s <= 0:
                break
            now = time.monotonic()
            window_end = window_end or now + mapping.batching_window_s
            if now >= window_end:
                break
        return messages

    def _deliver(self, sqs: Any, lam: Any, mapping: SqsMapping, messages: list[dict[str, Any]]) -> list[str]:
        """The batch to its function; returns the receipt handles of the messages left on the queue."""
        event = sqs_event(messages, mapping.queue_arn)
        ids = [m["MessageId"] for m in messages]
        duplicate = self.duplicate_delivery
        twice = duplicate(messages) if callable(duplicate) else bool(duplicate)
        for _ in range(2 if twice else 1):
            answer = lam.invoke(FunctionName=mapping.function_name, Payload=json.dumps(event).encode())
            payload = json.loads(answer["Payload"].read() or b"null")
            errored = "FunctionError" in answer
        if errored:
            keep = set(ids)  # every message comes back after the visibility timeout
        else:
            keep = failed_message_ids(payload, ids) if mapping.report_batch_item_failures else set()
        done = [m for m in messages if m["MessageId"] not in keep]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            sqs.delete_message_batch(
                QueueUrl=mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        return [m["ReceiptHandle"] for m in messages if m["MessageId"] in keep]

    # --- schedules ----------------------------------------------------------------------------------

    def _tick(self, target: ScheduleTarget) -> None:
        interval = self.schedule_interval or rate_seconds(target.schedule_expression)
        lam = lambda_client(self.aws_url)
        while not self._stop.wait(interval):
            try:
                self._invoke_schedule(lam, target)
            except Exception:  # noqa: BLE001 - the timer keeps ticking, as EventBridge does
                log.exception("schedule %s failed", target.rule_logical_id)

    def fire(self, rule_logical_id: str) -> list[Any]:
        """Invoke the rule's targets now (synchronously); returns their answers."""
        lam = lambda_client(self.aws_url)
        targets = [t for t in self.schedules if t.rule_logical_id == rule_logical_id]
        if not targets:
            raise KeyError(f"no schedule rule {rule_logical_id}")
        return [self._invoke_schedule(lam, t) for t in targets]

    def _invoke_schedule(self, lam: Any, target: ScheduleTarget) -> Any:
        event = target.target_input or json.dumps(scheduled_event(target.rule_arn))
        answer = lam.invoke(FunctionName=target.function_arn, Payload=event.encode())
        return json.loads(answer["Payload"].read() or b"null")
