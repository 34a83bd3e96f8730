"""Stub so the stack synthesizes: helper P2 (branch payout-transfer) replaces this file with the Transfer worker."""

from __future__ import annotations

from typing import Any

from functions.shared import psp


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise NotImplementedError(f"the Transfer worker ({psp.__name__} calls) is on branch payout-transfer")
