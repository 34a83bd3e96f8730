"""Fixes to moto 5.2.5's DynamoDB that concurrent Lambdas need (pinned moto; tests/local/test_moto_patches.py).

moto's `transact_write_items` deep-copies every table it touches, applies the operations one by one and, when a
condition fails, puts the copies back. Under concurrency that rollback erases whatever other requests wrote in
between (orders vanished, a SUCCESS went back to EXECUTING, a wallet credit disappeared), and the copy costs
O(table size) per transaction. Real DynamoDB checks every condition first and applies all or nothing.

The replacement does the same: under one lock shared by every DynamoDB write, it checks all conditions against
the current items, refuses the whole transaction if any fails (nothing was applied), and otherwise applies the
operations, undoing them item by item should one of them raise.

Reads take the same lock: moto finds an index's items by walking every item's attributes, and a write adding or
removing attributes meanwhile failed the read (a KeyError or "dictionary changed size", answered as a 500; a
10,000-order chaos run died of it). DynamoDB itself never fails a read for a concurrent write. The whole request
holds it, not only the backend call: moto builds its answer from the live item afterwards (a CI run failed there).

Speed fixes, measured with benchmarks/local_throughput.py (each answer never changes while the process lives):
- moto's server lists its own package folders on every request (under its dispatch lock): listed once;
- its Step Functions interpreter builds a new boto3 client for every task: one per port, region and service;
- it parses the state machine's definition with ANTLR for every execution (about 30% of the stack's CPU): the
  parse tree is kept per definition, and each execution still builds its own evaluation components from it;
- SQS computes every queue attribute, counting all messages, whenever one is read (`send_message` reads one,
  `receive_message` one per message it returns): quadratic in the queue's depth. Attributes are now computed
  when read, one by one.

A simulation's clock: a message's DelaySeconds counts on functions/shared/clock.py, which a chaos run moves
forward (`_delays_on_the_system_clock`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

_TABLES_LOCK = threading.RLock()
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for name in ("put_item", "update_item", "delete_item", "batch_write_item",
                 "get_item", "batch_get_item", "query", "scan"):
        setattr(DynamoDBBackend, name, _serialized(getattr(DynamoDBBackend, name)))
    DynamoHandler.call_action = _serialized(DynamoHandler.call_action)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _cache_moto_lookups()
    _cache_state_machine_parses()
    _lazy_queue_attributes()
    _delays_on_the_system_clock()
    _installed = True


def _cache_moto_lookups() -> None:
    from moto import backends
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_sqs

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

    build = lambda_eval_utils.boto_client_for
    clients: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def cached_client(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (os.environ.get("MOTO_PORT", ""), region, service)  # a new local stack listens on a new port
        with lock:
            if key not in clients:
                clients[key] = build(region=region, service=service, state_credentials=state_credentials)
            return clients[key]

    lambda_eval_utils.boto_client_for = cached_client  # type: ignore[assignment]
    state_task_service_sqs.boto_client_for = cached_client  # type: ignore[assignment]


def _cache_state_machine_parses() -> None:
    from antlr4 import CommonTokenStream, InputStream
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLLexer import ASLLexer
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    @functools.lru_cache(maxsize=64)
    def tree_of(definition: str) -> Any:
        listener = asl_parser.SyntaxErrorListener()
        parser = ASLParser(CommonTokenStream(ASLLexer(InputStream(definition))))
        parser.removeErrorListeners()
        parser.addErrorListener(listener)
        tree = parser.state_machine()
        if listener.errors:
            raise asl_parser.ASLParserException(errors=listener.errors)
        return tree

    def parse(definition: str) -> tuple[Any, Any]:
        tree = tree_of(definition)
        return Preprocessor().visit(tree), tree

    asl_parser.AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign]


class _QueueAttributes(Mapping):
    """A queue's attributes, each computed when read (moto builds them all, counting every message, each time)."""

    def __init__(self, queue: Any):
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        self._names = names

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        from moto.core.utils import camelcase_to_underscores

        if name == "Policy":
            return self._queue.policy
        if name == "RedrivePolicy":
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _lazy_queue_attributes() -> None:
    from moto.sqs.models import Queue, SQSBackend

    Queue.attributes = property(_QueueAttributes)  # type: ignore[assignment,method-assign]
    original = SQSBackend.get_queue_attributes

    def get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> dict[str, Any]:
        return dict(original(self, queue_name, attribute_names))  # what the response serialises is a dict

    SQSBackend.get_queue_attributes = get_queue_attributes  # type: ignore[method-assign]


def _delays_on_the_system_clock() -> None:
    """A message's DelaySeconds counts on the system's clock (functions/shared/clock.py), which a simulation
    moves forward: a refund that looks again in 15 minutes is due once the clock has passed them, not 900 real
    seconds later. Without a simulation the clock is real time and nothing changes. (A visibility timeout stays
    in real seconds: a received message may be in a running invocation; local/event_sources.py shows the ones a
    delivery left on the queue by the clock.)"""
    from moto.sqs.models import Message

    from functions.shared import clock

    def clock_ms() -> float:
        return clock.now().timestamp() * 1000

    def delay(self: Any, delay_seconds: int) -> None:
        self.delayed_until = clock_ms() + int(delay_seconds) * 1000

    Message.delay = delay  # type: ignore[method-assign]
    Message.delayed = property(lambda self: clock_ms() < self.delayed_until)  # type: ignore[assignment]


def _serialized(method: Any) -> Any:
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _TABLES_LOCK:
            return method(self, *args, **kwargs)

    return locked


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import get_filter_expression

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _TABLES_LOCK:
        targets: set[tuple[str, str]] = set()
        plan: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        errors: list[tuple[Any, Any, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            target = (op["TableName"], str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None and not get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current):
                old = (current.to_json()["Attributes"]
                       if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current else None)
                errors.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, old))
            else:
                errors.append((None, None, None))
            plan.append((op_type, op, key))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)

        undo: list[tuple[str, dict[str, Any], Any]] = []
        try:
            for op_type, op, key in plan:
                table_name = op["TableName"]
                undo.append((table_name, key, copy.deepcopy(self.get_item(table_name, key))))
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(table_name, op["Item"])
                elif op_type == "Delete":
                    self.delete_item(table_name, key)
                elif op_type == "Update":
                    self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                     expression_attribute_names=names, expression_attribute_values=values)
        except Exception:
            for table_name, key, before in reversed(undo):
                table = self.get_table(table_name)
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    table.put_item(before.to_json()["Attributes"])
            raise
