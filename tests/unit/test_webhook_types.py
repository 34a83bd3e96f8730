"""The webhook endpoint is registered for exactly the event types the processor handles, each one Stripe knows."""

from functions.shared.names import WEBHOOK_EVENT_TYPES
from functions.webhooks.registry import HANDLERS
from psp_sandbox.webhooks import EVENT_TYPES


def test_the_registered_types_are_the_handled_ones():
    assert sorted(WEBHOOK_EVENT_TYPES) == sorted(HANDLERS)
    assert set(WEBHOOK_EVENT_TYPES) <= EVENT_TYPES
