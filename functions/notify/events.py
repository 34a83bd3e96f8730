"""From a stream record of a table to the notification the storefront receives (pure: no AWS calls).

Which tables are watched is one table of StreamSource below: the stream's table (by the Settings field holding
its name), the item's key and status attributes, the event type's prefix and the payload builder. A table added
later (refunds, disputes) is one more line here and one more stream in infra/constructs/notifications.py.

An event is made for an INSERT or MODIFY whose status attribute differs between the old and the new image (a
re-drive EXECUTING -> EXECUTING, or any write that leaves the status alone, makes none). Its id is derived from
(source, key, new status, the new image's updated_at), so a redelivered stream record gives the same id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.auth import tenancy
from functions.shared.config import Settings
from functions.shared.money import Money
from functions.shared.names import notification_event_id
from functions.shared.observability import CORRELATION_FIELD, correlated
from functions.shared.tables import from_item

# The order's pay-out fields of the API's view: the payout.* events carry them.
_ORDER_PAYOUT_FIELDS = {"payout_status", "commission", "seller_net", "transfer_id", "netted", "transferred",
                        "payout_failure_reason"}


def order_payload(item: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/payments/{id} without its pay-out fields (no payment method, no buyer data: the view has none)."""
    from functions.payment.service import order_view  # the API's own view: one home for what an order shows

    return order_view(item, None).model_dump(mode="json", exclude=_ORDER_PAYOUT_FIELDS)


def payout_payload(item: dict[str, Any]) -> dict[str, Any]:
    """An order's pay-out: amounts as decimal strings in the currency's units, commission and net once released,
    what the transfer netted and sent once it is known."""
    from functions.payment.payouts import sent_fields  # the API's own rule for what a transfer sent

    currency = item["currency"]

    def major(field: str) -> str | None:
        return Money(int(item[field]), currency).to_major() if field in item else None

    return {
        "payment_order_id": item["payment_order_id"], "checkout_id": item.get("checkout_id"),
        "seller_account": item["seller_account"], "currency": currency, "payout_status": item["payout_status"],
        "gross": major("gross_minor"), "commission": major("commission_minor"), "seller_net": major("net_minor"),
        "transfer_id": item.get("transfer_id"), **sent_fields(item),
        "payout_failure_code": item.get("payout_failure_code"),
        "payout_failure_reason": item.get("payout_failure_reason"), "released_at": item.get("released_at"),
        "transferred_at": item.get("transferred_at"), "created_at": item.get("created_at"),
        "updated_at": item.get("updated_at"),
    }


def refund_payload(item: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/refunds/{id}: amounts as decimal strings, the timing, shares and reversal once known."""
    from functions.payment.refunds import refund_view  # the API's own view: one home for what a refund shows

    return refund_view(item).model_dump(mode="json")


def dispute_payload(item: dict[str, Any]) -> dict[str, Any]:
    """A dispute: its amount, the orders it is attributed to and their parts (decimal strings)."""
    currency = item["currency"]
    return {
        "dispute_id": item["dispute_id"], "dispute_status": item["dispute_status"], "currency": currency,
        "amount": Money(int(item["amount_minor"]), currency).to_major(), "reason": item.get("reason"),
        "payment_intent": item.get("payment_intent"),
        "orders": [{"payment_order_id": order_id, "seller_account": part["seller_account"],
                    "amount": Money(int(part["amount_minor"]), currency).to_major()}
                   for order_id, part in sorted((item.get("parts") or {}).items())],
        "created_at": item.get("created_at"), "updated_at": item.get("updated_at"),
    }


def client_of_key(key: str) -> Callable[[dict[str, Any]], str | None]:
    """The item belongs to the client its key `key` (one of our ids) is scoped with (functions/auth/tenancy.py)."""
    return lambda item: tenancy.client_of(str(item[key]))


def dispute_client(item: dict[str, Any]) -> str | None:
    """A dispute (a PSP id) belongs to the client of the orders it is attributed to: one PaymentIntent, so one
    checkout and one client. None when it has no part: no order, so no client to tell."""
    clients = {tenancy.client_of(order_id) for order_id in item.get("parts") or {}}
    assert len(clients) <= 1, f"dispute {item.get('dispute_id')} spans clients {sorted(clients)}"
    return next(iter(clients), None)


@dataclass(frozen=True)
class StreamSource:
    name: str  # the event type's prefix: `<name>.<status in lower case>`
    table_setting: str  # the Settings field with the table's name
    key: str
    status: str
    payload: Callable[[dict[str, Any]], dict[str, Any]]
    client: Callable[[dict[str, Any]], str | None]  # whose endpoint hears of the item (None: nobody's)


SOURCES: tuple[StreamSource, ...] = (
    StreamSource("payment_order", "payment_orders_table", "payment_order_id", "payment_order_status", order_payload,
                 client_of_key("payment_order_id")),
    StreamSource("payout", "payouts_table", "payment_order_id", "payout_status", payout_payload,
                 client_of_key("payment_order_id")),
    StreamSource("refund", "refunds_table", "refund_id", "refund_status", refund_payload, client_of_key("refund_id")),
    StreamSource("dispute", "disputes_table", "dispute_id", "dispute_status", dispute_payload, dispute_client),
)


def table_of_stream(stream_arn: str) -> str:
    """`arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>` -> `<name>`."""
    return stream_arn.split(":table/", 1)[1].split("/stream/", 1)[0]


def source_of(stream_arn: str, config: Settings) -> StreamSource | None:
    table = table_of_stream(stream_arn)
    return next((s for s in SOURCES if getattr(config, s.table_setting, None) == table), None)


def event_of(record: dict[str, Any], source: StreamSource) -> dict[str, Any] | None:
    """The notification of one stream record, or None when its status did not change (or it is a REMOVE)."""
    addressed = addressed_event_of(record, source)
    return addressed[1] if addressed else None


def addressed_event_of(record: dict[str, Any], source: StreamSource) -> tuple[str | None, dict[str, Any]] | None:
    """(the client the item belongs to, its notification), or None when its status did not change (or it is a
    REMOVE). The payload's ids are the client's own (unscoped), as its API answers show them."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = record.get("dynamodb", {})
    new = from_item(images.get("NewImage") or {})
    old = from_item(images.get("OldImage") or {})
    status, previous = new.get(source.status), old.get(source.status)
    if not status or status == previous:
        return None
    key = str(new[source.key])
    version = str(new.get("updated_at") or images.get("SequenceNumber", ""))
    client_id = source.client(new)
    payload = source.payload(new)
    # The checkout's correlation id, when the item has one (orders: README "Correlation id").
    return client_id, correlated({
        "id": notification_event_id(source.name, key, status, version),
        "object": "event",
        "type": f"{source.name}.{status.lower()}",
        "created": new.get("updated_at"),
        "data": {"object": tenancy.unscoped_tree(client_id, payload) if client_id else payload,
                 "previous_status": previous},
    }, new.get(CORRELATION_FIELD))
