"""boto3 clients, built lazily once per process (cold start), never at import time.

AWS_ENDPOINT_URL (honoured by boto3 itself) points them at the local stack; nothing here knows about it.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10, max_pool_connections=50
)
# Calls made beside a payment call (the PSP circuit breaker): one attempt, short waits; a failure is the
# caller's to ignore, never a reason to hold the payment call.
_QUICK = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=0.5, read_timeout=0.5,
                max_pool_connections=50)
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    return _client(service, _CONFIG)


def quick_client(service: str) -> Any:
    return _client(service, _QUICK)


def _client(service: str, config: Config) -> Any:
    key = f"{service}:{id(config)}"
    cached = _clients.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(service, config=config)
        return _clients[key]


def error_code(error: ClientError) -> str:
    """The AWS error code of a failed call ("" when the answer has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def reset_clients() -> None:
    """Drop cached clients (tests switch endpoints or mocks)."""
    with _lock:
        _clients.clear()
