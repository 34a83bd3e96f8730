"""What GET /v1/payments/{id} shows of an order's disputes (none: nothing added, the answer as before)."""

from __future__ import annotations

from typing import Any

from functions.payment.schemas import DisputeSummary
from functions.shared.money import Money
from functions.shared.tables import DisputesTable


def order_dispute_fields(order: dict[str, Any]) -> dict[str, Any]:
    ids = sorted(order.get("dispute_ids") or ())
    if not ids:
        return {}
    found = DisputesTable.from_settings().get_many(ids)
    order_id, currency = order["payment_order_id"], order["currency"]
    return {"disputes": [
        DisputeSummary(dispute_id=i, status=found[i]["dispute_status"],
                       amount=Money(int(found[i]["parts"][order_id]["amount_minor"]), currency).to_major())
        for i in sorted(found, key=lambda i: (found[i]["created_at"], i)) if order_id in found[i]["parts"]]}
