"""Fault injection: what can go wrong between a client and Stripe, on demand or at random from a seed.

Kinds (what the client sees):
- `latency`: the answer comes `delay_ms` late (the idempotency key stays in flight meanwhile).
- `timeout`: the connection is held `hold_seconds` (past the client's timeout), then dropped. With
  `after_processing` the request is processed and recorded first.
- `connection_reset`: the socket is reset before anything is processed.
- `http_500`, `http_502`, `http_503`: an `api_error` answer. Edge errors are not stored by the idempotency layer;
  `http_500` with `stored: true` is an error of the API itself and is replayed for the same key.
- `rate_limit`: 429 `rate_limit` with `Retry-After: retry_after`.
- `lost_response`: the request is processed and recorded (charge made, idempotency key stored), then the
  connection drops without an answer.
- `key_expired`: the request's idempotency key is pruned first, as if 24 hours had passed.
Any error kind takes `should_retry` (true/false) to send `Stripe-Should-Retry`.

Random faults are deterministic: the draw for a request depends only on the seed, the request's identity
(method, path, idempotency key or parameters) and how many times that identity was seen. Same seed and same
requests give the same faults, whatever the interleaving of concurrent requests.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from .idempotency import fingerprint

KINDS = (
    "latency",
    "timeout",
    "connection_reset",
    "http_500",
    "http_502",
    "http_503",
    "rate_limit",
    "lost_response",
    "key_expired",
)
ERROR_KINDS = frozenset({"http_500", "http_502", "http_503", "rate_limit"})


class FaultConfigError(ValueError):
    """A fault configuration the sandbox cannot apply."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    delay_ms: int = 300
    hold_seconds: float = 10.0
    after_processing: bool = False
    retry_after: int = 1
    should_retry: bool | None = None
    stored: bool = False

    @classmethod
    def build(cls, kind: str, **params: Any) -> Fault:
        if kind not in KINDS:
            raise FaultConfigError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        allowed = {f.name for f in fields(cls)} - {"kind"}
        unknown = set(params) - allowed
        if unknown:
            raise FaultConfigError(f"unknown fault parameter(s) {sorted(unknown)} for {kind}")
        return cls(kind, **params)

    def status(self) -> int:
        return 429 if self.kind == "rate_limit" else int(self.kind.removeprefix("http_"))


@dataclass(frozen=True, slots=True)
class RequestInfo:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]


@dataclass(slots=True)
class _Queued:
    fault: Fault
    match: dict[str, Any]
    remaining: int


def _matches(match: dict[str, Any], request: RequestInfo) -> bool:
    for name, expected in match.items():
        if name == "method" and request.method.upper() != str(expected).upper():
            return False
        if name == "path" and not request.path.startswith(str(expected)):
            return False
        if name == "idempotency_key" and request.idempotency_key != expected:
            return False
        if name == "metadata":
            metadata = request.params.get("metadata")
            if not isinstance(metadata, dict) or any(metadata.get(k) != v for k, v in expected.items()):
                return False
    return True


_MATCH_KEYS = frozenset({"method", "path", "idempotency_key", "metadata"})


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._seed: int | None = None
            self._rates: dict[str, float] = {}
            self._paths: list[str] = ["/v1/"]
            self._methods: list[str] = []
            self._params: dict[str, dict[str, Any]] = {}
            self._queue: list[_Queued] = []
            self._seen: Counter[str] = Counter()
            self._stats: Counter[str] = Counter()
            self._requests = 0
            self._drawn: Counter[str] = Counter()  # seeded draws only, apart from queued faults
            self._drawn_by_path: dict[str, Counter[str]] = {}  # the same, per configured path prefix
            self._eligible = 0  # requests that went through a seeded draw

    def configure(
        self,
        *,
        seed: int | None = None,
        rates: dict[str, float] | None = None,
        paths: list[str] | None = None,
        methods: list[str] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Random faults: `rates` maps kind → probability per matching request (sum at most 1)."""
        rates = dict(rates or {})
        for kind, rate in rates.items():
            Fault.build(kind)
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
                raise FaultConfigError(f"rate of {kind} must be a number between 0 and 1")
        if sum(rates.values()) > 1:
            raise FaultConfigError("fault rates add up to more than 1")
        for kind, extra in (params or {}).items():
            Fault.build(kind, **extra)
        with self._lock:
            self._seed = seed
            self._rates = rates
            self._paths = list(paths) if paths else ["/v1/"]
            self._methods = [m.upper() for m in methods or []]
            self._params = dict(params or {})
            self._seen.clear()

    def push(self, kind: str, *, match: dict[str, Any] | None = None, times: int = 1, **params: Any) -> Fault:
        """Queue a fault for the next `times` requests that match (all of method, path prefix, key, metadata)."""
        fault = Fault.build(kind, **params)
        match = dict(match or {})
        unknown = set(match) - _MATCH_KEYS
        if unknown:
            raise FaultConfigError(f"unknown match field(s) {sorted(unknown)}; known: {sorted(_MATCH_KEYS)}")
        if times < 1:
            raise FaultConfigError("times must be at least 1")
        with self._lock:
            self._queue.append(_Queued(fault, match, times))
        return fault

    def clear_queued(self) -> int:
        """Drop every queued fault (the seeded draws stay); returns how many were dropped."""
        with self._lock:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def load(self, config: dict[str, Any]) -> None:
        """The admin API's JSON: `{"seed", "rates", "paths", "methods", "params", "next": [{kind, match, ...}]}`."""
        if not isinstance(config, dict):
            raise FaultConfigError("fault configuration must be a JSON object")
        unknown = set(config) - {"seed", "rates", "paths", "methods", "params", "next"}
        if unknown:
            raise FaultConfigError(f"unknown field(s) {sorted(unknown)}")
        if any(k in config for k in ("seed", "rates", "paths", "methods", "params")):
            self.configure(
                seed=config.get("seed"),
                rates=config.get("rates"),
                paths=config.get("paths"),
                methods=config.get("methods"),
                params=config.get("params"),
            )
        for entry in config.get("next") or []:
            entry = dict(entry)
            try:
                kind = entry.pop("kind")
            except KeyError as exc:
                raise FaultConfigError("each queued fault needs a kind") from exc
            self.push(kind, match=entry.pop("match", None), times=entry.pop("times", 1), **entry)

    def decide(self, request: RequestInfo) -> Fault | None:
        """The fault for this request, if any: a matching queued fault first, then the seeded draw."""
        with self._lock:
            self._requests += 1
            for queued in self._queue:
                if _matches(queued.match, request):
                    queued.remaining -= 1
                    if queued.remaining == 0:
                        self._queue.remove(queued)
                    self._stats[queued.fault.kind] += 1
                    return queued.fault
            prefix = next((p for p in self._paths if request.path.startswith(p)), None)
            if not self._rates or prefix is None:
                return None
            if self._methods and request.method.upper() not in self._methods:
                return None
            identity = f"{request.method.upper()} {request.path} " + (
                request.idempotency_key or fingerprint(request.method, request.path, request.params)
            )
            occurrence = self._seen[identity]
            self._seen[identity] += 1
            self._eligible += 1
            draw = random.Random(f"{self._seed}|{identity}|{occurrence}").random()
            cumulative = 0.0
            for kind in KINDS:  # fixed order, so the same draw always picks the same kind
                cumulative += self._rates.get(kind, 0.0)
                if draw < cumulative:
                    self._stats[kind] += 1
                    self._drawn[kind] += 1
                    self._drawn_by_path.setdefault(prefix, Counter())[kind] += 1
                    return Fault.build(kind, **self._params.get(kind, {}))
            return None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "injected": {kind: self._stats[kind] for kind in KINDS if self._stats[kind]},
                "total": sum(self._stats.values()),
                "queued": len(self._queue),
                "drawn": {kind: self._drawn[kind] for kind in KINDS if self._drawn[kind]},
                "drawn_from": self._eligible,
                "drawn_by_path": {path: dict(counts) for path, counts in self._drawn_by_path.items()},
            }

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self._seed,
                "rates": dict(self._rates),
                "paths": list(self._paths),
                "methods": list(self._methods),
                "params": dict(self._params),
                "next": [{**asdict(q.fault), "match": q.match, "times": q.remaining} for q in self._queue],
            }

    def webhook_chaos_seed(self) -> int | None:
        """The seed webhook deliveries draw duplicates and reordering from (webhooks.py), while random faults are
        configured; None otherwise (deliveries then go once, in order)."""
        with self._lock:
            return self._seed if self._rates else None
