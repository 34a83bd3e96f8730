"""A Stripe-compatible PSP sandbox: idempotency as Stripe documents it, test cards, fault injection,
ground-truth records and settlement export. See README.md."""

from .sandbox import Sandbox
from .server import SandboxServer, start_sandbox

__all__ = ["Sandbox", "SandboxServer", "start_sandbox"]
