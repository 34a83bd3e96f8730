"""Payment-method tokens are not card data, but they are never printed in full either."""

from __future__ import annotations

import re
from typing import Any

# PSP tokens that stand for a buyer's means of payment (Stripe: pm_, tok_, card_, src_).
_TOKEN = re.compile(r"\b(pm|tok|card|src)_([A-Za-z0-9_]+)")
_SENSITIVE_KEYS = {"payment_method"}


def mask_token(token: str) -> str:
    """`pm_1PqRsT2eZvKYlo2C` -> `pm_…lo2C`: enough to tell two apart, not enough to use one."""
    prefix, _, rest = token.partition("_")
    if not rest:
        return "…" if len(token) <= 4 else "…" + token[-4:]
    return f"{prefix}_…{rest[-4:]}" if len(rest) > 4 else f"{prefix}_…"


def mask_text(text: str) -> str:
    return _TOKEN.sub(lambda match: mask_token(match.group(0)), text)


def mask(value: Any) -> Any:
    """A copy of a JSON-like value with every payment-method token masked, under any key or inside any text."""
    if isinstance(value, dict):
        return {
            key: mask_token(item) if key in _SENSITIVE_KEYS and isinstance(item, str) else mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    if isinstance(value, set):
        return sorted(mask(item) for item in value)
    if isinstance(value, str):
        return mask_text(value)
    return value
