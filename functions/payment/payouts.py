"""Pay-out logic behind the API: sellers, the release of an order (commission frozen), balances, statements.

The API only moves the pay-out item and hands it to the Transfer worker through PayoutsQueue; the worker applies
the release to the wallet and the ledger, then transfers. A lost send is recovered by the sweeper at due_at.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from functions.payment.schemas import (
    BalanceView,
    BucketAmounts,
    ReleaseView,
    SellerRequest,
    SellerView,
    StatementLine,
)
from functions.shared import aws, clock, psp_units
from functions.shared.config import settings
from functions.shared.errors import ConcurrentChange, DomainError, NotFound, RequestInvalid
from functions.shared.money import Money
from functions.shared.names import NETTING
from functions.shared.observability import CORRELATION_FIELD, correlated
from functions.shared.status import OrderStatus, PayoutStatus
from functions.shared.tables import PaymentTables, PayoutsTable, SellersTable, WalletTable

logger = Logger(service="payment")

STATEMENT_DEFAULT_DAYS = 30
_RELEASE_TRIES = 3
STATEMENT_MAX_DAYS = 366
_BUCKETS = ("pending", "available", "transferred", "owed")


class OrderNotSettled(DomainError):
    """A release of an order that is not SUCCESS (not charged yet, or failed)."""

    code = "order_not_settled"
    http_status = 409


def commission_of(gross: Money, commission_bps: int) -> int:
    """Rounded down, and further down until the seller's net is an amount the PSP can transfer (Stripe moves
    KWD, BHD, JOD, OMR and TND in steps of 0.010): the seller is never short-changed by rounding."""
    if not 0 <= commission_bps <= 10_000:
        raise ValueError(f"commission_bps {commission_bps} outside 0..10000")
    commission = gross.minor * commission_bps // 10_000
    while commission > 0 and not psp_units.representable(Money(gross.minor - commission, gross.currency)):
        commission -= 1
    return commission


# --- sellers -----------------------------------------------------------------------------------------------


def seller_view(item: dict[str, Any]) -> SellerView:
    return SellerView.model_validate(item)


def register_seller(seller_account: str, request: SellerRequest) -> SellerView:
    """Create or replace the seller; a connected account wakes the pay-outs that were waiting for one."""
    now = clock.iso()
    item = SellersTable.from_settings().put(
        seller_account, commission_bps=request.commission_bps, psp_account_id=request.psp_account_id,
        auto_release_days=request.auto_release_days, now=now)
    if request.psp_account_id:
        woken = PayoutsTable.from_settings().wake_awaiting(seller_account, now)
        unsent = send_to_transfer(woken)
        if woken:
            logger.info("waiting pay-outs woken", extra={"seller_account": seller_account, "woken": len(woken),
                                                         "unsent": len(unsent)})
    return seller_view(item)


def get_seller(seller_account: str) -> SellerView:
    item = SellersTable.from_settings().get(seller_account)
    if item is None:
        raise _not_found(seller_account)
    return seller_view(item)


# --- pay-out items -----------------------------------------------------------------------------------------


def held_item(order: dict[str, Any], settled_at: str, auto_release_days: int | None) -> dict[str, Any]:
    """The HELD pay-out of a SUCCESS order (finalize, or the first release of an order settled before)."""
    item = {
        "payment_order_id": order["payment_order_id"], "seller_account": order["seller_account"],
        "checkout_id": order["checkout_id"], "currency": order["currency"], "gross_minor": order["amount_minor"],
        "psp": order.get("psp") or "stripe", "charge_id": order.get("charge_id"), "settled_at": settled_at,
        "transfer_attempts": 0, "created_at": settled_at, "updated_at": settled_at,
    }
    item = correlated(item, order.get(CORRELATION_FIELD))  # the checkout's: its notifications carry it
    if auto_release_days is not None:
        item["auto_release_at"] = clock.iso(clock.parse_iso(settled_at) + timedelta(days=auto_release_days))
    return item


def create_held(orders: list[dict[str, Any]], settled_at: str, payouts: PayoutsTable | None = None,
                sellers: SellersTable | None = None) -> list[str]:
    """Store the HELD pay-outs of SUCCESS orders (put if new: a resumed finalize changes nothing)."""
    if not orders:
        return []
    registered = (sellers or SellersTable.from_settings()).get_many({o["seller_account"] for o in orders})
    items = [held_item(o, settled_at, registered.get(o["seller_account"], {}).get("auto_release_days"))
             for o in orders]
    return (payouts or PayoutsTable.from_settings()).create_held(items)


def release_payout(item: dict[str, Any], now: datetime, payouts: PayoutsTable,
                   sellers: SellersTable) -> dict[str, Any] | None:
    """HELD -> RELEASED with the seller's commission of now (unregistered: default_commission_bps), due for the
    worker after the enqueue grace. The new item, or None if another caller released it first. The sweeper's
    auto-release calls this too."""
    config = settings()
    seller = sellers.get(item["seller_account"])
    bps = int(seller["commission_bps"]) if seller else config.default_commission_bps
    commission = commission_of(Money(item["gross_minor"], item["currency"]), bps)
    return payouts.release(item["payment_order_id"], bps, commission, item["gross_minor"] - commission,
                           clock.iso(now), clock.iso(now + timedelta(seconds=config.enqueue_grace_s)))


def release_view(item: dict[str, Any]) -> ReleaseView:
    currency = item["currency"]
    return ReleaseView(
        payment_order_id=item["payment_order_id"], seller_account=item["seller_account"], currency=currency,
        gross=Money(item["gross_minor"], currency).to_major(),
        commission=Money(item["commission_minor"], currency).to_major(),
        seller_net=Money(item["net_minor"], currency).to_major(), released_at=item["released_at"])


def release(payment_order_id: str) -> tuple[ReleaseView, bool]:
    """The storefront confirms delivery. Returns the release and whether this call made it (202) or an earlier
    one did (200, the same body)."""
    order = PaymentTables.from_settings().get_order(payment_order_id)
    if order is None:
        raise NotFound(f"payment order {payment_order_id} not found", code="payment_order_not_found")
    if order["payment_order_status"] != OrderStatus.SUCCESS.value:
        raise OrderNotSettled(f"payment order {payment_order_id} is {order['payment_order_status']}, not SUCCESS")
    payouts, sellers = PayoutsTable.from_settings(), SellersTable.from_settings()
    item = payouts.get(payment_order_id)
    if item is None:  # settled before pay-outs existed
        create_held([order], order.get("updated_at") or clock.iso(), payouts, sellers)
        item = payouts.get(payment_order_id)
    assert item is not None
    for _ in range(_RELEASE_TRIES):  # a refund while HELD changes the gross the commission is computed from
        if item["payout_status"] != PayoutStatus.HELD.value:
            break
        released = release_payout(item, clock.now(), payouts, sellers)
        if released is not None:
            send_to_transfer([payment_order_id])
            return release_view(released), True
        item = payouts.get(payment_order_id) or item
    if item["payout_status"] == PayoutStatus.HELD.value:  # every try lost its race to a refund: none was written
        raise ConcurrentChange(f"payment order {payment_order_id} changed during the release: send it again")
    return release_view(item), False


def send_to_transfer(order_ids: list[str]) -> list[str]:
    """One message per pay-out to PayoutsQueue; returns the ids not sent (the sweeper sends them at due_at)."""
    unsent: list[str] = []
    for start in range(0, len(order_ids), 10):
        batch = order_ids[start : start + 10]
        try:
            answer = aws.client("sqs").send_message_batch(
                QueueUrl=settings().payouts_queue_url,
                Entries=[{"Id": str(i), "MessageBody": json.dumps({"payment_order_id": order_id})}
                         for i, order_id in enumerate(batch)])
        except Exception:  # the pay-outs are due: the sweeper sends them after the grace period
            logger.exception("send to PayoutsQueue failed; the sweeper will send", extra={"ids": batch})
            unsent += batch
            continue
        unsent += [batch[int(entry["Id"])] for entry in answer.get("Failed", [])]
    return unsent


def payout_fields(item: dict[str, Any] | None, settled: bool = False) -> dict[str, Any]:
    """What GET /v1/payments/{id} shows of the order's pay-out. A SUCCESS order whose item finalize has not
    written yet is HELD all the same (a release then writes the item itself); nothing before SUCCESS."""
    if item is None:
        return {"payout_status": PayoutStatus.HELD.value} if settled else {}
    currency = item["currency"]
    released = "net_minor" in item
    return {
        "payout_status": item["payout_status"],
        "commission": Money(item["commission_minor"], currency).to_major() if released else None,
        "seller_net": Money(item["net_minor"], currency).to_major() if released else None,
        "transfer_id": item.get("transfer_id"),
        **sent_fields(item),
        "payout_failure_reason": item.get("payout_failure_reason"),
    }


def sent_fields(item: dict[str, Any]) -> dict[str, str | None]:
    """`netted` and `transferred` once the transfer is known: the net less the seller's debt it kept back."""
    if not item.get("transfer_id") or "net_minor" not in item:
        return {"netted": None, "transferred": None}
    netted = int(item.get("netted_minor") or 0)
    return {"netted": Money(netted, item["currency"]).to_major(),
            "transferred": Money(int(item["net_minor"]) - netted, item["currency"]).to_major()}


# --- balance and statement ---------------------------------------------------------------------------------


def _not_found(seller_account: str) -> NotFound:
    return NotFound(f"seller {seller_account} not found", code="seller_not_found")


def _known(seller_account: str) -> bool:
    """Registered, or money moved for it. A seller neither (of another client, or never heard of) is a 404, as
    GET /v1/sellers/{seller_account} answers, not an empty balance."""
    return (SellersTable.from_settings().get(seller_account) is not None
            or bool(WalletTable.from_settings().balances(seller_account)))


def balance(seller_account: str) -> BalanceView:
    totals = WalletTable.from_settings().balances(seller_account)
    if not totals and SellersTable.from_settings().get(seller_account) is None:
        raise _not_found(seller_account)
    return BalanceView(seller_account=seller_account, balances={
        currency: BucketAmounts(**{b: Money(int(amounts.get(f"{b}_minor", 0)), currency).to_major()
                                   for b in _BUCKETS})
        for currency, amounts in sorted(totals.items())
    })


def statement_window(start: str | None, end: str | None) -> tuple[str, str]:
    """[from, to) as stored timestamps; default the last 30 days. 422 for a bad or reversed window."""
    def parse(text: str, field: str) -> datetime:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RequestInvalid(f"{field}: {text!r} is not an ISO 8601 time", code="invalid_time") from None
        if moment.tzinfo is None:
            raise RequestInvalid(f"{field}: {text!r} needs a time zone (Z or +hh:mm)", code="invalid_time")
        return moment

    stop = parse(end, "to") if end else clock.now()
    begin = parse(start, "from") if start else stop - timedelta(days=STATEMENT_DEFAULT_DAYS)
    if begin >= stop:
        raise RequestInvalid("from must be before to", code="invalid_time_window")
    if stop - begin > timedelta(days=STATEMENT_MAX_DAYS):
        raise RequestInvalid(f"a statement covers at most {STATEMENT_MAX_DAYS} days", code="invalid_time_window")
    return clock.iso(begin), clock.iso(stop)


def statement(seller_account: str, start: str | None, end: str | None) -> list[StatementLine]:
    begin, stop = statement_window(start, end)
    lines = [statement_line(m) for m in WalletTable.from_settings().movements(seller_account, begin, stop)
             if not _zero_netting(m)]
    if not lines and not _known(seller_account):
        raise _not_found(seller_account)
    return lines


def _zero_netting(movement: dict[str, Any]) -> bool:
    """The once-only netting record is written even when nothing was netted; no money moved, so no line."""
    return movement["kind"] == NETTING and int(movement.get("net_minor", 0)) == 0


def statement_line(movement: dict[str, Any]) -> StatementLine:
    currency = movement["currency"]

    def major(field: str) -> str | None:
        return Money(int(movement[field]), currency).to_major() if field in movement else None

    return StatementLine(
        created_at=movement["created_at"], kind=movement["kind"],
        payment_order_id=movement.get("payment_order_id") or movement["reference"], currency=currency,
        gross=major("gross_minor"), commission=major("commission_minor"), net=major("net_minor"),
        transfer_id=movement.get("transfer_id"),
        **{b: Money(int(movement.get(f"{b}_delta", 0)), currency).to_major() for b in _BUCKETS},
    )


def statement_csv(lines: list[StatementLine]) -> str:
    fields = list(StatementLine.model_fields)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: ("" if v is None else v) for k, v in line.model_dump().items()})
    return out.getvalue()
