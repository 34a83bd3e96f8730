"""A circuit breaker per PSP, shared by every function through DynamoDB (issue 18 point 4).

Closed: calls go. `breaker_failures` failures of a PSP within `breaker_window_s` (only what says the PSP is down:
unreachable, timed out, 5xx; never a decline, a refusal or a 429) open it for `breaker_cooldown_s`: no call is
sent meanwhile by those who ask (`allows`, `allows_call`): the Executor asks before each attempt of a charge and
parks the charge while it is open (nothing sent, no attempt spent), and the Payment API routes new charges to the
failover PSP (`psp_down`; functions/shared/routing.py). Refund and transfer workers neither ask nor feed it (no
PSP_HEALTH_TABLE). When the wait is over, one call at a time holds a probe lease (`call_starting` takes it
before each call): its answer closes the breaker, its failure opens it again for another wait. Only the probe
closes it: an answer to a call sent before it opened, or during an operator's open, does not.

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

from functions.shared import clock
from functions.shared.config import Settings, settings
from functions.shared.tables import PspHealthTable

logger = Logger(child=True)  # the calling function's service and handler
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
CACHE_S = 2.0
PROBE_LEASE_S = 15  # above one PSP call's budget (psp_timeout_s): a probe that died frees the lease after it
MIN_TIME_LEFT_S = 3.0  # less of the invocation left: the PSP's answer goes first, the breaker hears nothing


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
        self._leases: dict[tuple[str, int], str] = {}  # (psp, thread) -> the probe lease that thread holds
        self._lock = threading.Lock()

    @property
    def table_name(self) -> str:
        return self._table.table

    @classmethod
    def from_settings(cls, config: Settings | None = None, *, quick: bool = False) -> Breaker:
        config = config or settings()
        return cls(PspHealthTable.from_settings(config, quick=quick), failures=config.breaker_failures,
                   window_s=config.breaker_window_s, cooldown_s=config.breaker_cooldown_s)

    def allows(self, psp: str) -> bool:
        """May a call go to `psp` now? Closed: yes. Open: no, until its wait is over; then yes for the one caller
        that takes the probe lease (its answer, through `succeeded` or `failed`, closes or reopens it)."""
        item = self._item(psp)
        if item.get("state") != OPEN:
            return True
        now = clock.now()
        if clock.iso(now) < str(item.get("open_until", "")):
            return False
        lease = clock.iso(now + timedelta(seconds=PROBE_LEASE_S))
        taken = self._table.take_probe(psp, clock.iso(now), lease)
        self._forget(psp)
        if taken:
            with self._lock:
                self._leases[(psp, threading.get_ident())] = lease
        return taken

    def reopens_at(self, psp: str) -> str:
        """When a call refused by `allows` may ask again: the end of the wait, or of the probe another caller holds
        (at least a few seconds from now)."""
        item, soonest = self._item(psp), clock.iso(clock.now() + timedelta(seconds=5))
        return max(str(item.get("open_until", "")), str(item.get("probe_until", "")), soonest)

    def down(self, psp: str, *, within_s: int = 0) -> bool:
        """For routing new charges: `psp`'s breaker is open with its wait not over (half-open is up: the next call
        is its probe); with `within_s`, also open in any way or closed less than `within_s` seconds ago (a route
        the storefront was given then is still honoured)."""
        item, now = self._item(psp), clock.now()
        if item.get("state") == OPEN:
            return within_s > 0 or clock.iso(now) < str(item.get("open_until", ""))
        closed_at = str(item.get("closed_at", ""))
        return within_s > 0 and closed_at > clock.iso(now - timedelta(seconds=within_s))

    def failed(self, psp: str, reason: str) -> None:
        """A call found `psp` down (unreachable, timed out, 5xx)."""
        now, lease = clock.now(), self._take_lease(psp)
        if lease:  # our probe failed: another wait
            self._keep(psp, self._table.trip(psp, clock.iso(now), clock.iso(now + self._cooldown), reason,
                                             lease=lease))
            return
        if self._item(psp).get("state") == OPEN:
            return  # a call sent before it opened, answering late: it changes nothing while it waits
        counted = self._table.count_failure(psp, clock.iso(now), clock.iso(now - self._window), reason)
        if int((counted or {}).get("failures", 0)) >= self._threshold:
            # None: another caller tripped it first; our copy is forgotten and read again
            counted = self._table.trip(psp, clock.iso(now), clock.iso(now + self._cooldown), reason)
            if counted is not None:
                logger.warning("circuit breaker opened", extra={"psp": psp, "reason": reason,
                                                                "open_until": counted.get("open_until")})
        self._keep(psp, counted)

    def succeeded(self, psp: str) -> None:
        """`psp` answered (whatever it said). Our probe's answer closes an open breaker; any answer forgets a closed
        one's failures. Nothing else closes it: an answer to a call sent before it opened, or while an operator
        holds it open, changes nothing."""
        lease = self._take_lease(psp)
        if lease:
            closed = self._table.close(psp, clock.iso(), "probe", lease=lease)
            if closed is not None:
                logger.info("circuit breaker closed", extra={"psp": psp})
            self._keep(psp, closed)
            return
        item = self._item(psp)
        if item.get("state", CLOSED) == CLOSED and item.get("failures"):
            self._keep(psp, self._table.forget_failures(psp, clock.iso()))

    def force(self, psp: str, state: str, *, minutes: int = 0, by: str = "operator") -> BreakerView:
        """An operator opens a PSP's breaker for `minutes` (its announced maintenance: no probe until then) or
        closes it. One write each, whatever the state."""
        now = clock.now()
        if state == OPEN:
            self._table.force_open(psp, clock.iso(now), clock.iso(now + timedelta(minutes=minutes)), by)
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

    def release_unused(self, psp: str) -> None:
        """A probe lease this thread took in `allows` and no call answered (it sent none: a charge refused before
        its call): given back, so that the next call probes now rather than after PROBE_LEASE_S."""
        lease = self._take_lease(psp)
        if lease:
            self._table.release_probe(psp, clock.iso(), lease)
            self._forget(psp)

    def _take_lease(self, psp: str) -> str:
        """The lease this thread took in `allows` (the probe is the call it made next), once."""
        with self._lock:
            return self._leases.pop((psp, threading.get_ident()), "")

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
    """The process's breaker (its cache shared by every call of the process), on the quick client; built again
    when the settings name another table (never on Lambda; a test or a new local stack in the same process)."""
    global _breaker
    if _breaker is None or _breaker.table_name != settings().psp_health_table:
        _breaker = Breaker.from_settings(quick=True)
    return _breaker


def reset() -> None:
    """Forget the process's breaker (tests switch tables and settings)."""
    global _breaker
    _breaker = None


def call_starting(psp: str, *, time_left_s: float | None = None) -> None:
    """Before each call to `psp`: once its open breaker's wait is over, this call may take the probe lease, so that
    its answer (`record_call`) closes the breaker or opens it for another wait. Nothing is held back: the call goes
    whatever the breaker says, until failover asks `allows` first. Never raises, as `record_call`."""
    if time_left_s is not None and time_left_s < MIN_TIME_LEFT_S:
        return
    try:
        if settings().psp_health_table:
            breaker().allows(psp)
    except Exception as error:  # noqa: BLE001 - a breaker must never fail the payment it watches
        logger.warning("circuit breaker not read", extra={"psp": psp, "error": type(error).__name__})


def allows_call(psp: str, *, time_left_s: float | None = None) -> bool:
    """May a new charge's call go to `psp` now (`Breaker.allows`, the probe lease taken when it is the one)? True
    whenever the breaker cannot say: no PSP_HEALTH_TABLE, too little time left, its table unreadable. A breaker
    that cannot be read never stops a payment."""
    if time_left_s is not None and time_left_s < MIN_TIME_LEFT_S:
        return True
    try:
        return not settings().psp_health_table or breaker().allows(psp)
    except Exception as error:  # noqa: BLE001 - a breaker must never fail the payment it watches
        logger.warning("circuit breaker not read", extra={"psp": psp, "error": type(error).__name__})
        return True


def release_unused_probe(psp: str) -> None:
    """After a charge's attempt: a probe lease it took and never used (no call sent) given back. Never raises."""
    try:
        if settings().psp_health_table:
            breaker().release_unused(psp)
    except Exception as error:  # noqa: BLE001 - a breaker must never fail the payment it watches
        logger.warning("circuit breaker not updated", extra={"psp": psp, "error": type(error).__name__})


def psp_down(psp: str, *, within_s: int = 0) -> bool:
    """`Breaker.down` for routing; False whenever the breaker cannot say (then the rules route as written)."""
    try:
        return bool(settings().psp_health_table) and breaker().down(psp, within_s=within_s)
    except Exception as error:  # noqa: BLE001 - routing goes by the rules when the breaker cannot be read
        logger.warning("circuit breaker not read", extra={"psp": psp, "error": type(error).__name__})
        return False


def record_call(psp: str, *, down: bool, reason: str = "", time_left_s: float | None = None) -> None:
    """What one call told about `psp`'s health (`down`: unreachable, timed out, 5xx), for its breaker. Nothing in a
    function without a breaker (no PSP_HEALTH_TABLE: its role cannot reach PspHealth), nor with less than
    MIN_TIME_LEFT_S of the invocation left. The breaker's calls are single quick attempts, and whatever goes
    wrong with them is logged, never raised: the payment call that reported here goes on as if it had not."""
    if time_left_s is not None and time_left_s < MIN_TIME_LEFT_S:
        return
    try:
        if not settings().psp_health_table:
            return
        if down:
            breaker().failed(psp, reason)
        else:
            breaker().succeeded(psp)
    except Exception as error:  # noqa: BLE001 - a breaker must never fail the payment it watches
        logger.warning("circuit breaker not updated", extra={"psp": psp, "error": type(error).__name__})
