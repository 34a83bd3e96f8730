"""Stripe's webhook endpoint is registered for exactly the Stripe event types the processor handles, each one Stripe
knows (Adyen's notifications, `adyen.<eventCode>`, are configured in Adyen's Customer Area, not registered)."""

from functions.shared.names import ADYEN_EVENT_PREFIX, WEBHOOK_EVENT_TYPES
from functions.webhooks.registry import HANDLERS
from psp_sandbox.webhooks import EVENT_TYPES


def test_the_registered_types_are_the_handled_ones():
    assert sorted(WEBHOOK_EVENT_TYPES) == sorted(t for t in HANDLERS if not t.startswith(ADYEN_EVENT_PREFIX))
    assert set(WEBHOOK_EVENT_TYPES) <= EVENT_TYPES
