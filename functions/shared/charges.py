"""The charge of a checkout in one currency: its workflow execution's name, its orders by currency (its key and
its PSP idempotency key: functions/shared/names.py).

A checkout is charged once per currency (docs/decisions.md 2026-12-04): one PaymentIntent for the sum of that
currency's orders. Every order of the charge shares its outcome; wallet and ledger stay per order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

MAX_EXECUTION_NAME = 80  # Step Functions' limit
_NOT_IN_EXECUTION_NAME = re.compile(r"[^A-Za-z0-9_\-]")


def execution_name(key: str, attempt: int) -> str:
    """Deterministic and valid (letters, digits, - and _; at most 80): the same attempt gets the same name.

    A key of a client other than the default (`shop_b~chk_1#USD`, functions/auth/tenancy.py) always carries the
    key's digest: `~` becomes `-` as `#` does, and `shop_b-chk_1` is a checkout id the default client may use."""
    name = f"{_NOT_IN_EXECUTION_NAME.sub('-', key)}-{attempt}"
    if len(name) <= MAX_EXECUTION_NAME and "~" not in key:
        return name
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    suffix = f"-{digest}-{attempt}"
    return name[: MAX_EXECUTION_NAME - len(suffix)] + suffix


def group_orders(orders: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Orders by their charge's currency, in request order (dicts keep insertion order)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for order in orders:
        grouped.setdefault(order["currency"], []).append(order)
    return grouped
