"""Pay-in logic behind the API: place a checkout once, read orders and checkouts back."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger

from functions.disputes.view import order_dispute_fields
from functions.payment import payouts, refunds
from functions.payment.schemas import (
    ChargeRouteView,
    CheckoutView,
    NextAction,
    OfflineInstructions,
    PaymentOrderView,
    PaymentRequest,
    RouteRequest,
    RouteView,
    charge_routes,
)
from functions.shared import breaker, clock, queues
from functions.shared.charges import group_orders
from functions.shared.config import settings
from functions.shared.errors import CheckoutConflict, NotFound, RequestInvalid
from functions.shared.money import Money
from functions.shared.names import AWAITING_FUNDS, OFFLINE_PSP, charge_key, offline_reference
from functions.shared.observability import correlated
from functions.shared.routing import Charge, Route, Routing
from functions.shared.status import OrderStatus
from functions.shared.tables import (
    CheckoutExists,
    PaymentTables,
    PayoutsTable,
    WriteConflict,
    created_bucket,
    sweep_shard,
)

logger = Logger(service="payment")

_WRITE_ATTEMPTS = 4


class RouteChanged(RequestInvalid):
    """The checkout's charges route to a PSP that cannot charge its payment method (the route changed between the
    storefront's question and its checkout): nothing written; the storefront asks the route again."""

    code = "payment_method_not_for_routed_psp"


def request_fingerprint(request: PaymentRequest) -> str:
    """Hash of the request's meaning: the same checkout sent again, however formatted, has the same hash."""
    canonical = {
        "buyer_info": request.buyer_info.model_dump(exclude_none=True),
        "checkout_id": request.checkout_id,
        "payment_method": request.token,
        **({"wallet": request.wallet} if request.wallet else {}),
        # the method, not the buyer's mandate acceptance nor browser: a retry from another IP address or window is
        # the same checkout (an Adyen card's encrypted fields are the payment_method above)
        **{k: v for k, v in request.method_fields.items()
           if k not in ("mandate_data", "adyen_payment_method", "adyen_browser")},
        "payment_orders": [
            {"payment_order_id": o.payment_order_id, "seller_account": o.seller_account,
             "amount_minor": o.money().minor, "currency": o.money().currency}
            for o in request.payment_orders
        ],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def place_checkout(request: PaymentRequest, tables: PaymentTables | None = None, correlation_id: str = ""
                   ) -> tuple[CheckoutView, bool]:
    """Store the checkout and its orders atomically, then hand the orders to the executor.

    `correlation_id` (the API's) is stored on the checkout, its orders and charges, and goes from there to the
    workflow, the PSP's metadata and the notifications; a replay keeps the first request's.

    Returns the checkout as first answered and whether this call was a replay. If the function dies after the
    write and before the send, the sweeper enqueues the NOT_STARTED orders once their grace period ends.
    """
    tables = tables or PaymentTables.from_settings()
    config = settings()
    now = clock.now()
    created_at = clock.iso(now)
    due_at = clock.iso(now + timedelta(seconds=config.enqueue_grace_s))
    payment_method = request.stored_payment_method
    wallet = {"wallet": request.wallet} if request.wallet else {}
    offline = request.offline_method  # check | money_order: no PSP; the orders wait for the funds (issue 17)
    funds_due = clock.iso(now + timedelta(days=config.offline_funds_days)) if offline else ""
    summaries = [
        {"payment_order_id": o.payment_order_id, "seller_account": o.seller_account,
         "amount_minor": o.money().minor, "currency": o.money().currency}
        for o in request.payment_orders
    ]
    event = correlated({
        "checkout_id": request.checkout_id,
        "request_hash": request_fingerprint(request),
        "buyer_info": request.buyer_info.model_dump(exclude_none=True),
        "payment_method": payment_method,
        **wallet,
        "payment_orders": summaries,
        **({"offline_instructions": offline_instructions(request.checkout_id, offline, summaries, funds_due)}
           if offline else {}),
        "pending_order_ids": {s["payment_order_id"] for s in summaries},
        "is_payment_done": False,
        "created_at": created_at,
    }, correlation_id)
    routes = {} if offline else route_charges(request, summaries, config.routing)
    # A token or encrypted card is charged only where it was issued. Validation routed as placing does (one look at
    # each PSP's health), so a route elsewhere is a replay of a checkout placed during a failover (answered below as
    # first placed: its write is refused) or a route that changed under us: then nothing is written.
    elsewhere = sorted(c for c, route in routes.items() if route.psp != request.owner)
    if elsewhere and tables.get_checkout(request.checkout_id) is None:
        raise RouteChanged(f"the checkout's {', '.join(elsewhere)} charges are routed away from {request.owner}, "
                           "whose payment method it carries: ask POST /v1/payment_routes again")
    orders = [
        correlated({
            **summary,
            "checkout_id": request.checkout_id,
            "charge_key": charge_key(request.checkout_id, summary["currency"]),
            "payment_method": payment_method,
            **wallet,
            "psp": OFFLINE_PSP if offline else routes[summary["currency"]].psp,
            # the rule that chose it, when one did (none does by default: the items are as they always were)
            **({"psp_route": routes[summary["currency"]].rule} if not offline and routes[summary["currency"]].rule
               else {}),
            "payment_order_status": (OrderStatus.EXECUTING if offline else OrderStatus.NOT_STARTED).value,
            "wallet_updated": False,
            "ledger_updated": False,
            "created_at": created_at,
            "updated_at": created_at,
            "created_bucket": created_bucket(summary["payment_order_id"], created_at),
            # The open-orders index (until final or dead-lettered): what watchers and on-call read. The
            # sweeper reads the charges' own index.
            "sweep_shard": sweep_shard(summary["payment_order_id"], config.sweep_shards),
            "due_at": funds_due or due_at,
            # a check's reference, so a bank deposit naming it finds the order (the orders' reference index)
            **({"psp_reference": offline_reference(charge_key(request.checkout_id, summary["currency"]))}
               if offline else {}),
        }, correlation_id)
        for summary in summaries
    ]
    grouped = group_orders(orders)
    charges = [correlated({**charge_item(request.checkout_id, currency, shares, payment_method, created_at, due_at,
                                         list(grouped)), **request.method_fields}, correlation_id)
               for currency, shares in grouped.items()]
    if offline:
        charges = [awaiting_funds(charge, offline, funds_due) for charge in charges]
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            tables.create_checkout(event, orders, charges)
            break
        except WriteConflict:
            if attempt == _WRITE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (2**attempt))
        except CheckoutExists as exists:
            existing = exists.existing or tables.get_checkout(request.checkout_id)
            if existing is None or existing["request_hash"] != event["request_hash"]:
                raise CheckoutConflict(
                    f"checkout {request.checkout_id} exists with a different request"
                ) from None
            return checkout_as_placed(existing), True

    if offline:  # nothing to start: the sweeper's due_at is the funds' deadline, a recorded payment brings it on
        return checkout_as_placed(event), False
    try:
        unsent = queues.enqueue_charges([(c["charge_key"], request.checkout_id) for c in charges],
                                        {c["charge_key"]: correlation_id for c in charges})
    except Exception:  # the charges are stored; the sweeper will enqueue them after the grace period
        logger.exception("enqueue failed; the sweeper will enqueue the charges",
                         extra={"checkout_id": request.checkout_id})
        unsent = [c["charge_key"] for c in charges]
    if unsent:
        logger.warning("charges not enqueued", extra={"checkout_id": request.checkout_id, "unsent": unsent})
    return checkout_as_placed(event), False


def payment_routes(request: RouteRequest) -> RouteView:
    """Each currency's charge's PSP for a checkout placed now with a new payment method: the rules' PSP, or its
    failover PSP while the rules' PSP is down (its breaker open, its wait not over)."""
    routes = charge_routes(request.payment_orders, request.payment_method_type, request.buyer_country, owner=None,
                           down=breaker.psp_down, down_now=breaker.psp_down)
    psps = {route.psp for route in routes.values()}
    return RouteView(routes=[ChargeRouteView(currency=currency, psp=route.psp, rule=route.rule,
                                             failover_from=route.failover_from or None)
                             for currency, route in routes.items()],
                     psp=psps.pop() if len(psps) == 1 else None)


def route_charges(request: PaymentRequest, summaries: list[dict[str, Any]], routing: Routing) -> dict[str, Route]:
    """Each currency's charge's PSP: the routing rules look at the charge (its total, the method, the buyer's
    country, its sellers), since one charge is one payment at one PSP."""
    method = request.payment_method.type if request.payment_method is not None else "card"
    routes = {}
    for currency, shares in group_orders(summaries).items():
        total = sum((Money(s["amount_minor"], currency) for s in shares), Money.zero(currency))
        sellers = frozenset(s["seller_account"] for s in shares)
        # as validation routed it (the same look at each PSP's health); a failover PSP is chosen only for its own
        # payment method, which validation checked it can charge
        routes[currency] = routing.route(Charge(total, method, request.buyer_info.country, sellers),
                                         owner=request.owner, down=request.psp_down,
                                         down_now=request.psp_down_now)
    return routes


def charge_item(checkout_id: str, currency: str, orders: list[dict[str, Any]], payment_method: str,
                created_at: str, due_at: str, checkout_currencies: list[str] | None = None) -> dict[str, Any]:
    """The charge of a checkout in one currency, as stored: its orders, their sum, and the sweeper's deadline
    (the outbox: if the message is lost, the sweeper enqueues the charge once `due_at` passes).
    `checkout_currencies`: all of the checkout's, so the executor knows its PaymentMethod pays several charges."""
    key = charge_key(checkout_id, currency)
    total = sum((Money(o["amount_minor"], currency) for o in orders), Money.zero(currency))
    return {
        "charge_key": key, "checkout_id": checkout_id, "currency": currency, "amount_minor": total.minor,
        "payment_method": payment_method, "psp": orders[0]["psp"],
        **({"psp_route": orders[0]["psp_route"]} if orders[0].get("psp_route") else {}),
        "checkout_currencies": checkout_currencies or [currency],
        "orders": [{"payment_order_id": o["payment_order_id"], "seller_account": o["seller_account"],
                    "amount_minor": o["amount_minor"], "psp": o["psp"]} for o in orders],
        "charge_status": OrderStatus.NOT_STARTED.value, "attempts": 0, "psp_calls": 0,
        "created_at": created_at, "updated_at": created_at,
        "sweep_shard": sweep_shard(key, settings().sweep_shards), "due_at": due_at,
    }


def offline_instructions(checkout_id: str, method: str, summaries: list[dict[str, Any]], due_by: str
                         ) -> list[dict[str, Any]]:
    """What the buyer of a check or money order is told, per currency: whom to pay, how much, what to write on it
    (the charge's reference) and by when. Stored on the checkout's event at placement, never changed."""
    totals: dict[str, int] = {}
    for summary in summaries:
        totals[summary["currency"]] = totals.get(summary["currency"], 0) + summary["amount_minor"]
    return [{"method": method, "pay_to": settings().offline_pay_to,
             "reference": offline_reference(charge_key(checkout_id, currency)),
             "amount_minor": total, "currency": currency, "due_by": due_by}
            for currency, total in totals.items()]


def awaiting_funds(charge: dict[str, Any], method: str, due_by: str) -> dict[str, Any]:
    """An offline charge as stored: EXECUTING from the start (attempt 1 is the wait; no workflow runs), due in the
    sweep index at the funds' deadline. Recording the funds brings it forward (functions/payment/offline.py); the
    deadline's re-drive ends it FAILED funds_not_received (functions/executor/handler.py)."""
    return {**charge, "charge_status": OrderStatus.EXECUTING.value, "attempts": 1, "started_attempt": 1,
            "first_attempt_at": charge["created_at"], "due_at": due_by, "psp_status": AWAITING_FUNDS,
            "offline_method": method, "offline_reference": offline_reference(charge["charge_key"]),
            "funds_due_by": due_by}


def instructions_view(item: dict[str, Any]) -> OfflineInstructions:
    return OfflineInstructions(method=item["method"], pay_to=item["pay_to"], reference=item["reference"],
                               amount=Money(int(item["amount_minor"]), item["currency"]).to_major(),
                               currency=item["currency"], due_by=item["due_by"])


def checkout_as_placed(event: dict[str, Any]) -> CheckoutView:
    """The answer to the POST: the checkout as it was stored, every order NOT_STARTED, or EXECUTING waiting for
    the funds of a check or money order (replays match it)."""
    offline = event.get("offline_instructions")
    return CheckoutView(
        checkout_id=event["checkout_id"],
        is_payment_done=False,
        created_at=event["created_at"],
        instructions=[instructions_view(item) for item in offline] if offline else None,
        payment_orders=[
            PaymentOrderView(
                payment_order_id=o["payment_order_id"],
                payment_order_status=(OrderStatus.EXECUTING if offline else OrderStatus.NOT_STARTED).value,
                amount=Money(o["amount_minor"], o["currency"]).to_major(),
                currency=o["currency"],
                seller_account=o["seller_account"],
                checkout_id=event["checkout_id"],
                created_at=event["created_at"],
                updated_at=event["created_at"],
                wallet=event.get("wallet"),
                offline_funds="awaiting" if offline else None,
            )
            for o in event["payment_orders"]
        ],
    )


def order_view(item: dict[str, Any], payout: dict[str, Any] | None = None) -> PaymentOrderView:
    failed = item["payment_order_status"] == OrderStatus.FAILED.value
    waiting = item["payment_order_status"] == OrderStatus.EXECUTING.value and item.get("next_action")
    return PaymentOrderView(
        payment_order_id=item["payment_order_id"],
        payment_order_status=item["payment_order_status"],
        amount=Money(item["amount_minor"], item["currency"]).to_major(),
        currency=item["currency"],
        seller_account=item["seller_account"],
        checkout_id=item["checkout_id"],
        ledger_updated=bool(item.get("ledger_updated")),
        wallet_updated=bool(item.get("wallet_updated")),
        psp_reference=item.get("psp_reference"),
        failure_code=item.get("failure_code") if failed else None,
        failure_reason=item.get("failure_reason") if failed else None,
        created_at=item.get("created_at"),
        updated_at=item.get("updated_at"),
        wallet=item.get("wallet"),
        next_action=NextAction(**item["next_action"]) if waiting else None,
        action_expires_at=item.get("action_expires_at") if waiting else None,
        offline_funds=_offline_funds(item),
        **payouts.payout_fields(payout, settled=_has_payout(item)),
        **refunds.order_refund_fields(item),
        **order_dispute_fields(item),
    )


_OFFLINE_FUNDS = {OrderStatus.NOT_STARTED.value: "awaiting", OrderStatus.EXECUTING.value: "awaiting",
                  OrderStatus.SUCCESS.value: "received", OrderStatus.FAILED.value: "not_received"}


def _offline_funds(item: dict[str, Any]) -> str | None:
    """Where a check's or money order's funds are, for its order: None for any other payment method."""
    if item.get("psp") != OFFLINE_PSP:
        return None
    return "bounced" if item.get("bounced_at") else _OFFLINE_FUNDS[item["payment_order_status"]]


def get_order(payment_order_id: str, tables: PaymentTables | None = None) -> PaymentOrderView:
    item = (tables or PaymentTables.from_settings()).get_order(payment_order_id)
    if item is None:
        raise NotFound(f"payment order {payment_order_id} not found")
    payout = PayoutsTable.from_settings().get(payment_order_id) if _has_payout(item) else None
    return order_view(item, payout)


def _has_payout(order: dict[str, Any]) -> bool:
    return order["payment_order_status"] == OrderStatus.SUCCESS.value and bool(settings().payouts_table)


def _waiting_instructions(event: dict[str, Any], views: list[PaymentOrderView]) -> list[OfflineInstructions] | None:
    """A check or money order's instructions, for each currency whose orders still wait for the funds."""
    waiting = {view.currency for view in views if view.payment_order_status == OrderStatus.EXECUTING.value}
    shown = [instructions_view(item) for item in event.get("offline_instructions") or []
             if item["currency"] in waiting]
    return shown or None


def get_checkout(checkout_id: str, tables: PaymentTables | None = None) -> CheckoutView:
    tables = tables or PaymentTables.from_settings()
    event = tables.get_checkout(checkout_id)
    if event is None:
        raise NotFound(f"checkout {checkout_id} not found")
    ids = [o["payment_order_id"] for o in event["payment_orders"]]
    items = tables.get_orders(ids)
    settled = [i for i in ids if i in items and _has_payout(items[i])]
    found = PayoutsTable.from_settings().get_many(settled) if settled else {}
    views = [order_view(items[i], found.get(i)) for i in ids if i in items]
    return CheckoutView(
        checkout_id=checkout_id,
        is_payment_done=bool(event.get("is_payment_done")),
        created_at=event["created_at"],
        # The buyer's pending challenge (3-D Secure), the first order's that waits for one: each currency's
        # charge is its own PaymentIntent, so a checkout of several shows each on its orders.
        next_action=next((view.next_action for view in views if view.next_action), None),
        instructions=_waiting_instructions(event, views),
        payment_orders=views,
    )
