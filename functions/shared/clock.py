"""The system's clock. One place, so the local stack and the simulations can move time for everyone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(UTC) + _offset


def iso(moment: datetime | None = None) -> str:
    """Sortable UTC timestamp with milliseconds, the format of every *_at attribute."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def advance(seconds: float) -> None:
    """Move the clock forward (simulations of key expiry and deadlines; never used by handlers)."""
    global _offset
    _offset += timedelta(seconds=seconds)


def reset() -> None:
    global _offset
    _offset = timedelta(0)
