"""What the tool prints never shows a payment-method token in full, nor a buyer's name, email or phone.

Dead letters of webhooks carry Stripe objects whose `billing_details` (and a Customer's or a Charge's email) are
the buyer's, typed into Stripe.js: the tool shows that they are there, not what they are.
"""

from __future__ import annotations

import re
from typing import Any

# PSP tokens that stand for a buyer's means of payment (Stripe: pm_, tok_, card_, src_).
_TOKEN = re.compile(r"\b(pm|tok|card|src)_([A-Za-z0-9_]+)")
_SENSITIVE_KEYS = {"payment_method"}
# Objects that describe a person (Stripe's billing_details and shipping, a Customer, our buyer_info), and
# the fields of them that identify the person.
_PERSON_KEYS = {"billing_details", "shipping", "customer_details", "buyer_info"}
_PERSONAL_FIELDS = {"name", "email", "phone", "address", "receipt_email"}
_EMAIL = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
HIDDEN = "…"


def mask_token(token: str) -> str:
    """`pm_1PqRsT2eZvKYlo2C` -> `pm_…lo2C`: enough to tell two apart, not enough to use one."""
    prefix, _, rest = token.partition("_")
    if not rest:
        return "…" if len(token) <= 4 else "…" + token[-4:]
    return f"{prefix}_…{rest[-4:]}" if len(rest) > 4 else f"{prefix}_…"


def mask_text(text: str) -> str:
    """Tokens to their kind and last four, emails to their domain (`…@example.com`)."""
    return _EMAIL.sub(lambda match: f"{HIDDEN}@{match.group(1)}", _TOKEN.sub(lambda m: mask_token(m.group(0)), text))


def mask(value: Any, *, personal: bool = False) -> Any:
    """A copy of a JSON-like value with every payment-method token masked, under any key or inside any text, and
    the identifying fields of a person hidden (`personal`: inside an object that describes one)."""
    if isinstance(value, dict):
        return {key: _masked_field(key, item, personal) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask(item, personal=personal) for item in value]
    if isinstance(value, set):
        return sorted(mask(item, personal=personal) for item in value)
    if isinstance(value, str):
        return mask_text(value)
    return value


def _masked_field(key: str, item: Any, personal: bool) -> Any:
    if key in _SENSITIVE_KEYS and isinstance(item, str):
        return mask_token(item)
    if (personal and key in _PERSONAL_FIELDS or key.endswith("email")) and item not in (None, ""):
        return HIDDEN
    return mask(item, personal=personal or key in _PERSON_KEYS)
