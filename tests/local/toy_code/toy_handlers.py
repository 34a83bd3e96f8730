"""Toy Lambda handlers for the local-stack tests: each records what it received, in this process."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import boto3

CALLS: list[tuple[str, object]] = []
_lock = threading.Lock()
_attempts: dict[str, int] = {}


class PspTransientError(Exception):
    """Same class name as the real one: Step Functions must see it as the error name."""


class PspPermanentError(Exception):
    pass


def _record(name, event):
    with _lock:
        CALLS.append((name, event))


def echo(event, context):
    _record("echo", event)
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "table": os.environ.get("TOY_TABLE"),
        "psp": os.environ.get("PSP_API_BASE"),
        "service": os.environ.get("POWERTOOLS_SERVICE_NAME"),
        "only_table_fn": os.environ.get("ONLY_TABLE_FN"),
        "settings": settings(),
    }


@cache
def settings():
    """A cold-start singleton, as functions/shared/config.py's settings()."""
    return {"only_table_fn": os.environ.get("ONLY_TABLE_FN"), "service": os.environ.get("POWERTOOLS_SERVICE_NAME")}


def table_user(event, context):
    """Reads and writes the table (its role grants only reads); sees its variable in its threads too."""
    db = boto3.client("dynamodb")
    table = os.environ["TOY_TABLE"]
    db.get_item(TableName=table, Key={"pk": {"S": "a"}})
    db.put_item(TableName=table, Item={"pk": {"S": "a"}})
    seen = []
    thread = threading.Thread(target=lambda: seen.append(os.environ.get("ONLY_TABLE_FN")))
    thread.start()
    thread.join()
    with ThreadPoolExecutor(1) as pool:
        seen.append(pool.submit(os.environ.get, "ONLY_TABLE_FN").result())
    return {"seen_in_threads": seen, "settings": settings()}


def batch(event, context):
    _record("batch", event)
    failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"].startswith("fail")]
    return {"batchItemFailures": failures}


def always_fail(event, context):
    _record("always_fail", event)
    raise RuntimeError("this handler always fails")


def api(event, context):
    _record("api", event)
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-toy": "yes"},
        "cookies": ["session=abc; Path=/"],
        "body": '{"received": ' + (event.get("body") or "null") + "}",
    }


def charge(event, context):
    """Fails transiently `transient_failures` times per order, or permanently when asked."""
    _record("charge", event)
    order = event["payment_order_id"]
    with _lock:
        _attempts[order] = _attempts.get(order, 0) + 1
        attempt = _attempts[order]
    if event.get("permanent"):
        raise PspPermanentError(f"card declined for {order}")
    if attempt <= event.get("transient_failures", 0):
        raise PspTransientError(f"PSP timeout on attempt {attempt}")
    return {"outcome": "succeeded", "attempts": attempt}


def mark_failed(event, context):
    _record("mark_failed", event)
    return {"status": "FAILED", "error": event.get("error", {}).get("Error")}


def tick(event, context):
    _record("tick", event)
    return {"ok": True}


def slow(event, context):
    time.sleep(event["sleep"])
    return {"slept": event["sleep"]}


def unmarshallable(event, context):
    return {"a set": {1, 2}}
