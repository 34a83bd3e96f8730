"""A circuit breaker per PSP, shared by every function through DynamoDB (issue 18 point 4).

Closed: calls go. `breaker_failures` failures of a PSP within `breaker_window_s` (only what says the PSP is down:
unreachable, timed out, 5xx; never a decline, a refusal or a 429) open it for `breaker_cooldown_s`: no call is
sent to it meanwhile, and the caller treats it as down (a new charge fails over to the other PSP; anything that
may already exist at the PSP waits and retries, never moves). When the wait is over, one caller at a time holds a
probe lease and tries: its success closes the breaker, its failure opens it again for another wait.

State lives in PspHealth (one item per PSP, functions/shared/tables.py PspHealthTable), so a breaker opened by
one Executor instance holds for every function and instance; `python -m ops psp health` shows it, and an
operator may open or close it by hand (a PSP's announced maintenance, a recovery seen before the probe).

Cost and staleness: each process reads a PSP's item at most once per `CACHE_S` seconds (a healthy PSP costs
one read per process and period, and no write); its own writes refresh its copy. So another instance may send
a few calls during the `CACHE_S` after a breaker opened: they fail as the others did, which is all a breaker
guards against. Safe to die anywhere: each write is one conditional UpdateItem.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from functions.shared import clock
from functions.shared.config import Settings, settings
from functions.shared.tables import PspHealthTable

logger = Logger(child=True)  # the calling function's service and handler
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
CACHE_S = 2.0
PROBE_LEASE_S = 15  # above one PSP call's budget (psp_timeout_s): a probe that died frees the lease after it


@dataclass(frozen=True)
class BreakerView:
    """A PSP's breaker as the ops tool shows it."""

    psp: str
    state: str  # closed, open, half_open (open and its wait over: the next call probes)
    failures: int
    open_until: str
    last_failure: str
    last_failure_at: str
    trips: int
    updated_at: str


class Breaker:
    def __init__(self, table: PspHealthTable, *, failures: int, window_s: int, cooldown_s: int):
        self._table = table
        self._threshold, self._window, self._cooldown = failures, timedelta(seconds=window_s), timedelta(
            seconds=cooldown_s)
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> Breaker:
        config = config or settings()
        return cls(PspHealthTable.from_settings(config), failures=config.breaker_failures,
                   window_s=config.breaker_window_s, cooldown_s=config.breaker_cooldown_s)

    def allows(self, psp: str) -> bool:
        """May a call go to `psp` now? Closed: yes. Open: no, until its wait is over; then yes for the one caller
        that takes the probe lease."""
        item = self._item(psp)
        if item.get("state") != OPEN:
            return True
        now = clock.now()
        if clock.iso(now) < str(item.get("open_until", "")):
            return False
        taken = self._table.take_probe(psp, clock.iso(now), clock.iso(now + timedelta(seconds=PROBE_LEASE_S)))
        self._forget(psp)
        return taken

    def failed(self, psp: str, reason: str) -> None:
        """A call found `psp` down (unreachable, timed out, 5xx)."""
        item, now = self._item(psp), clock.now()
        if item.get("state") == OPEN:
            if clock.iso(now) >= str(item.get("open_until", "")):  # the probe failed: another wait
                self._keep(psp, self._table.trip(psp, clock.iso(now), clock.iso(now + self._cooldown), reason,
                                                 reopen=True))
            return  # a call sent before it opened: already counted in
        counted: dict[str, Any] | None = self._table.count_failure(
            psp, clock.iso(now), clock.iso(now - self._window), reason)
        if int((counted or {}).get("failures", 0)) >= self._threshold:
            # None: another caller tripped it first; our copy is forgotten and read again
            counted = self._table.trip(psp, clock.iso(now), clock.iso(now + self._cooldown), reason, reopen=False)
            if counted is not None:
                logger.warning("circuit breaker opened", extra={"psp": psp, "reason": reason,
                                                                "open_until": counted.get("open_until")})
        self._keep(psp, counted)

    def succeeded(self, psp: str) -> None:
        """`psp` answered (whatever it said): a breaker that counted failures or waited closes."""
        item = self._item(psp)
        if item.get("state", CLOSED) == CLOSED and not item.get("failures"):
            return  # the usual case: nothing to write
        self._keep(psp, self._table.close(psp, clock.iso(), "call"))

    def force(self, psp: str, state: str, *, minutes: int = 0, by: str = "operator") -> BreakerView:
        """An operator opens a PSP's breaker for `minutes` (its announced maintenance) or closes it."""
        now = clock.now()
        if state == OPEN:
            until = clock.iso(now + timedelta(minutes=minutes))
            self._table.close(psp, clock.iso(now), by)  # from any state, so the trip below always applies
            self._table.trip(psp, clock.iso(now), until, f"opened by {by} for {minutes} min", reopen=False)
        else:
            self._table.close(psp, clock.iso(now), by)
        self._forget(psp)
        return self.view(psp)

    def view(self, psp: str, item: dict[str, Any] | None = None) -> BreakerView:
        item = self._table.get(psp) if item is None else item
        state = str(item.get("state", CLOSED))
        if state == OPEN and clock.iso() >= str(item.get("open_until", "")):
            state = HALF_OPEN
        return BreakerView(psp=psp, state=state, failures=int(item.get("failures", 0)),
                           open_until=str(item.get("open_until", "")), last_failure=str(item.get("last_failure", "")),
                           last_failure_at=str(item.get("last_failure_at", "")), trips=int(item.get("trips", 0)),
                           updated_at=str(item.get("updated_at", "")))

    def views(self, psps: tuple[str, ...]) -> list[BreakerView]:
        """Every PSP named or with an item, closed when none was ever written."""
        items = {str(item["psp"]): item for item in self._table.all()}
        return [self.view(psp, items.get(psp, {})) for psp in sorted(set(psps) | set(items))]

    def _item(self, psp: str) -> dict[str, Any]:
        with self._lock:
            cached = self._cache.get(psp)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        item = self._table.get(psp)
        self._keep(psp, item)
        return item

    def _keep(self, psp: str, item: dict[str, Any] | None) -> None:
        if item is None:  # another caller changed it first: read it again next time
            self._forget(psp)
            return
        with self._lock:
            self._cache[psp] = (time.monotonic(), item)

    def _forget(self, psp: str) -> None:
        with self._lock:
            self._cache.pop(psp, None)


_breaker: Breaker | None = None


def breaker() -> Breaker:
    """The process's breaker (its cache shared by every call of the process)."""
    global _breaker
    if _breaker is None:
        _breaker = Breaker.from_settings()
    return _breaker


def reset() -> None:
    """Forget the process's breaker (tests switch tables and settings)."""
    global _breaker
    _breaker = None


def record_call(psp: str, *, down: bool, reason: str = "") -> None:
    """What one call told about `psp`'s health (`down`: unreachable, timed out, 5xx), for its breaker. Nothing in a
    function without a breaker (no PSP_HEALTH_TABLE: its role cannot reach PspHealth); a breaker that cannot be
    written is logged and never fails the payment call that reported to it."""
    if not settings().psp_health_table:
        return
    try:
        if down:
            breaker().failed(psp, reason)
        else:
            breaker().succeeded(psp)
    except (ClientError, BotoCoreError) as error:
        logger.warning("circuit breaker not updated", extra={"psp": psp, "error": type(error).__name__})
