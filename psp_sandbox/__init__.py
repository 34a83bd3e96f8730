"""A Stripe-compatible PSP sandbox: idempotency as Stripe documents it, test cards, fault injection,
ground-truth records and settlement export. See README.md."""

from .server import Sandbox, SandboxServer, start_sandbox

__all__ = ["Sandbox", "SandboxServer", "start_sandbox"]
