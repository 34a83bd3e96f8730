"""Loads the sample events of the top-level events/ folder (shaped as AWS sends them)."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from functions.auth.scopes import ROUTE_SCOPES

EVENTS = Path(__file__).resolve().parents[2] / "events"


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(_load(name))


def http_event(method: str, path: str, body: Any = None, path_parameters: dict[str, str] | None = None,
               route_key: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event built from the sample."""
    event = load("api_post_payment.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key or _route_key(method, path)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = body if isinstance(body, str) or body is None else json.dumps(body)
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


def _route_key(method: str, path: str) -> str:
    """The route API Gateway matches (as deployed: one per entry of ROUTE_SCOPES), else `<method> <path>`."""
    for route in ROUTE_SCOPES:
        verb, template = route.split(" ", 1)
        if verb == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return route
    return f"{method} {path}"


class FakeContext:
    function_name = "test-function"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000
