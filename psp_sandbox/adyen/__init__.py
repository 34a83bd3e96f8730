"""An Adyen-compatible sandbox (Checkout API v71 and signed notifications), beside the Stripe one; it shares that
one's fault injector and clock."""

from .server import AdyenSandbox, AdyenSandboxServer, start_adyen_sandbox

__all__ = ["AdyenSandbox", "AdyenSandboxServer", "start_adyen_sandbox"]
