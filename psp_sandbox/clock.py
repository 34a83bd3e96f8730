"""The sandbox's simulated clock: real time plus an offset that tests advance (idempotency keys expire on it)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime


class SimulatedClock:
    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._start = start  # None: follow the wall clock
        self._origin = time.time()
        self._offset = 0.0

    def now(self) -> float:
        with self._lock:
            base = time.time() if self._start is None else self._start + (time.time() - self._origin)
            return base + self._offset

    def timestamp(self) -> int:
        """Unix seconds, as Stripe's `created` fields."""
        return int(self.now())

    def today(self) -> date:
        return datetime.fromtimestamp(self.now(), UTC).date()

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0
            self._origin = time.time()
