"""Dead-letter messages: read them without consuming them, and move them one at a time.

SQS has no "peek": a message is received (and hidden for a while) or not at all. Looking therefore receives
with a short visibility timeout and makes every message visible again at once afterwards; a crash in between
only hides them for that short while. Every look adds one to a message's ApproximateReceiveCount.

A move is send-to-target, then delete-from-DLQ, message by message: a crash between the two leaves the
message in both queues (every consumer is idempotent), never in neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from functions.shared import aws

PEEK_VISIBILITY_S = 30
# Long enough for the messages of one receive to be handled; what the tool leaves behind is made visible again.
WORK_VISIBILITY_S = 120


@dataclass
class Message:
    """One SQS message as received, with what on-call needs to read at a glance."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["MessageId"])

    @property
    def receipt(self) -> str:
        return str(self.raw["ReceiptHandle"])

    @property
    def body_text(self) -> str:
        return str(self.raw.get("Body", ""))

    @property
    def body(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body_text)
        except ValueError:
            return None

    @property
    def receive_count(self) -> int:
        return int(self.raw.get("Attributes", {}).get("ApproximateReceiveCount", 0))

    @property
    def sent_at(self) -> datetime | None:
        stamp = self.raw.get("Attributes", {}).get("SentTimestamp")
        return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None

    def summary(self) -> Summary:
        return Summary.of(self.body)


@dataclass
class Summary:
    """Order id, step, error and attempts of a dead letter, whichever producer wrote it.

    Shapes: the sweeper's (functions/shared/queues.dead_letter: charge_key, payment_order_ids, step, error,
    attempts, ...), the state machine's ToDeadLetter (infra/constructs/workflow.py: error is {Error, Cause},
    the charge under `input`), a charge message (charge_key, no step: the starter failed on it), an S3
    notification (recon),
    a reconciliation difference (functions/recon ReviewQueue).
    """

    payment_order_id: str = ""
    charge_key: str = ""
    step: str = ""
    error: str = ""
    attempts: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, body: Any) -> Summary:
        if not isinstance(body, dict):
            return cls(error="" if body is not None else "(body is not JSON)")
        order = body.get("input") if isinstance(body.get("input"), dict) else {}
        order_ids = body.get("payment_order_ids") or [o.get("payment_order_id") for o in order.get("orders") or []
                                                      if isinstance(o, dict)]
        summary = cls(
            payment_order_id=str(body.get("payment_order_id") or order.get("payment_order_id")
                                 or ", ".join(str(i) for i in order_ids if i)),
            charge_key=str(body.get("charge_key") or order.get("charge_key") or ""),
            step=str(body.get("step") or ""),
            error=_error_text(body.get("error")),
            attempts=_int(body.get("attempts", body.get("attempt"))),
        )
        if body.get("execution"):
            summary.extra["execution"] = str(body["execution"])
        if not summary.step and summary.charge_key and "step" not in body:
            summary.step = "start (charge message)"
        if "discrepancy_id" in body:  # functions/recon ReviewQueue: a difference reconciliation cannot explain
            summary.step = "review"
            summary.error = f"{body.get('category')}: {body.get('explanation') or ''}".strip(": ")
            summary.extra["file"] = f"{body.get('source_key')} line {body.get('line')}"
            summary.extra["amounts"] = (f"ours {body.get('our_amount')} {body.get('our_currency')}, "
                                        f"theirs {body.get('their_amount')} {body.get('their_currency')}")
        for record in body.get("Records") or []:
            s3 = record.get("s3", {}) if isinstance(record, dict) else {}
            if s3:
                summary.step = "recon"
                summary.extra["file"] = f"s3://{s3.get('bucket', {}).get('name')}/{s3.get('object', {}).get('key')}"
        return summary


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error_text(error: Any) -> str:
    """`{"Error": "KeyError", "Cause": "{\"errorMessage\": ...}"}` -> `KeyError: ...`; strings stay as they are."""
    if error is None:
        return ""
    if not isinstance(error, dict):
        return str(error)
    name = str(error.get("Error", ""))
    cause: Any = error.get("Cause", "")
    try:
        parsed = json.loads(cause) if isinstance(cause, str) else cause
    except ValueError:
        parsed = cause
    if isinstance(parsed, dict):
        cause = parsed.get("errorMessage") or parsed.get("cause") or json.dumps(parsed)
    return f"{name}: {cause}" if cause else name


class Queue:
    """One SQS queue, by URL."""

    def __init__(self, url: str, sqs: Any = None):
        self.url = url
        self.sqs = sqs or aws.client("sqs")

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def depth(self) -> dict[str, int]:
        """Visible and in-flight (received, not yet deleted) message counts."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {"visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))}

    def receive(self, limit: int | None, visibility_s: int) -> Iterator[list[Message]]:
        """Batches of messages until `limit` or the queue answers empty; each stays hidden for `visibility_s`."""
        seen = 0
        while limit is None or seen < limit:
            batch = self._receive_batch(min(10, limit - seen) if limit is not None else 10, visibility_s)
            if not batch:
                return
            seen += len(batch)
            yield [Message(raw) for raw in batch]

    def _receive_batch(self, count: int, visibility_s: int) -> list[dict[str, Any]]:
        kwargs = {"QueueUrl": self.url, "MaxNumberOfMessages": count, "VisibilityTimeout": visibility_s,
                  "MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["All"]}
        messages = self.sqs.receive_message(WaitTimeSeconds=0, **kwargs).get("Messages", [])
        if not messages and self.depth()["visible"] > 0:
            # A short poll samples only some SQS servers; a long poll asks them all before we call it empty.
            messages = self.sqs.receive_message(WaitTimeSeconds=2, **kwargs).get("Messages", [])
        return messages

    def peek(self, limit: int) -> list[Message]:
        """Up to `limit` messages, made visible again before returning (see the module's docstring)."""
        messages: list[Message] = []
        try:
            for batch in self.receive(limit, PEEK_VISIBILITY_S):
                messages.extend(batch)
        finally:
            for message in messages:
                self.release(message)
        return messages

    def release(self, message: Message) -> None:
        self.sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=0)

    def delete(self, message: Message) -> None:
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt)

    def send_copy(self, message: Message) -> str:
        """Send the message's body and attributes (user attributes and the trace header) to this queue."""
        kwargs: dict[str, Any] = {"QueueUrl": self.url, "MessageBody": message.body_text}
        attributes = _clean_attributes(message.raw.get("MessageAttributes"))
        if attributes:
            kwargs["MessageAttributes"] = attributes
        trace = message.raw.get("Attributes", {}).get("AWSTraceHeader")
        if trace:
            kwargs["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}
        return str(self.sqs.send_message(**kwargs)["MessageId"])


def _clean_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """Received attributes carry empty list fields SendMessage refuses; keep type and value only."""
    cleaned: dict[str, Any] = {}
    for name, attribute in (attributes or {}).items():
        kept = {key: attribute[key] for key in ("DataType", "StringValue", "BinaryValue") if key in attribute}
        cleaned[name] = kept
    return cleaned
