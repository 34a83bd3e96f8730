"""The Recon table as the matcher sees it: the table itself (file guard, run summaries, carried orders) lives
with every other table access in functions/shared/tables.py; its keys in functions/shared/names.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from functions.shared.tables import Claim, ClaimOutcome, ReconTable

__all__ = ["CarryStore", "Claim", "ClaimOutcome", "ReconTable"]


@dataclass
class CarryStore:
    """The matcher's view of the carried orders of one PSP."""

    table: ReconTable
    psp: str

    def carried(self) -> dict[str, dict[str, Any]]:
        return self.table.carried(self.psp)

    def carry(self, order: dict[str, Any], first_seen: str) -> None:
        self.table.carry(self.psp, order, first_seen)

    def mark_raised(self, payment_order_id: str, now: str) -> bool:
        return self.table.mark_raised(self.psp, payment_order_id, now)

    def clear(self, payment_order_id: str) -> None:
        self.table.clear(self.psp, payment_order_id)
