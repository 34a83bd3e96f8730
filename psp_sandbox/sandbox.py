"""The Sandbox aggregate. The HTTP server (server.py) and the admin API (admin.py) both take one; neither imports
the other."""

from __future__ import annotations

import threading
from typing import Any

from .api import StripeApi
from .clock import SimulatedClock
from .faults import FaultInjector
from .idempotency import IdempotencyStore
from .state import SandboxState
from .webhooks import Webhooks


class Sandbox:
    """Everything the sandbox knows: books, idempotency keys, faults, clock. Usable without the HTTP server."""

    def __init__(self, *, seed: int | None = None, clock_start: float | None = None):
        self.clock = SimulatedClock(clock_start)
        self.state = SandboxState(self.clock)
        self.idempotency = IdempotencyStore(self.clock)
        self.faults = FaultInjector()
        self.api = StripeApi(self.state)
        self.stopping = threading.Event()
        self._requests = 0
        self._lock = threading.Lock()
        self.webhooks = Webhooks(self.clock, self.faults, self.state.new_id, self.stopping)
        self.state.on_event = self.webhooks.emit
        self.api.add_webhooks(self.webhooks)
        if seed is not None:
            self.faults.configure(seed=seed)

    def next_request_id(self) -> str:
        with self._lock:
            self._requests += 1
            return f"req_sbx{self._requests:011x}"

    def reset(self, seed: int | None = None) -> None:
        self.state.reset()
        self.webhooks.reset()
        self.idempotency.reset()
        self.faults.reset()
        self.clock.reset()
        if seed is not None:
            self.faults.configure(seed=seed)

    def advance_clock(self, seconds: float) -> int:
        """Move simulated time forward; returns how many idempotency keys that pruned."""
        self.clock.advance(seconds)
        return self.idempotency.prune()

    def charges(self) -> list[dict[str, Any]]:
        return self.state.charge_records()

    def transfers(self) -> list[dict[str, Any]]:
        return self.state.transfer_records()
