"""Webhooks in: Stripe's signed events (receiver.py) -> WebhookQueue -> the processor (processor.py): deduplicated
by event id, dispatched by type through registry.py to handlers that re-drive the existing paths."""
