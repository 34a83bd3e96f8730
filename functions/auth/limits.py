"""Per-client rate limits (issue 21): at most `limit` requests per second per client, across every authorizer
container. A container takes permits from the client's counter for the current second in leases of up to
LEASE_PERMITS (one DynamoDB write per lease, not per request); when a lease cannot be had it asks for one permit,
and when none is left the request is refused until the next second. Permits a container leased and did not use
are lost with the second: the limit is never exceeded, and may be undershot by a few permits per container.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.shared.tables import ApiRateTable

LEASE_PERMITS = 10
_CLIENTS_KEPT = 10_000  # leases kept per container: bounded


@dataclass
class _Lease:
    second: int
    left: int


_leases: dict[str, _Lease] = {}


def retry_after(client_id: str, limit: int, now: float) -> int:
    """0 when the client may send this request now; else the seconds to wait (Retry-After)."""
    second = int(now)
    lease = _leases.get(client_id)
    if lease is not None and lease.second == second and lease.left > 0:
        lease.left -= 1
        return 0
    table = ApiRateTable.from_settings()
    for permits in dict.fromkeys((min(LEASE_PERMITS, limit), 1)):
        if table.take(client_id, second, permits, limit):
            if len(_leases) >= _CLIENTS_KEPT:
                _leases.clear()
            _leases[client_id] = _Lease(second, permits - 1)
            return 0
    return 1
