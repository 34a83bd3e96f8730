"""HTTP API of the payment service (API Gateway HTTP API, payload 2.0). Thin: parse, call the service, answer."""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from functions.auth import scopes, tenancy
from functions.notify import endpoints as notification_endpoints
from functions.payment import details, offline, payouts, refunds, schemas, service
from functions.payment.schemas import (
    AccountId,
    BalanceView,
    CheckoutView,
    ErrorResponse,
    OfflineBounceRequest,
    OfflinePaymentRequest,
    OfflinePaymentView,
    PaymentDetailsRequest,
    PaymentDetailsView,
    PaymentOrderView,
    PaymentRequest,
    RefundRequest,
    RefundView,
    ReleaseView,
    RouteRequest,
    RouteView,
    SellerRequest,
    SellerView,
    StatementLine,
)
from functions.shared.errors import (
    BodyTooDeep,
    BodyTooLarge,
    CardNumberRefused,
    DomainError,
    InvalidJson,
    MethodNotAllowed,
    RateLimited,
    Unauthenticated,
    UnsupportedMediaType,
    error_body,
)
from functions.shared.observability import CORRELATION_HEADER, ORDERS_ACCEPTED, correlation_id_of, service_metrics
from functions.shared.pan import contains_card_number

logger = Logger(service="payment")
metrics = service_metrics()
app = APIGatewayHttpResolver(enable_validation=True)

API_TITLE = "MarketPay payments API"
API_VERSION = "1.0.0"

# Pydantic's error types that have a clearer name in our API.
_CODE_NAMES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "string_pattern_mismatch": "invalid_format",
    "string_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "dict_type": "invalid_type",
    "list_type": "invalid_type",
    "json_invalid": "invalid_json",
}
# Fields whose every invalid value has its own code (issue 15), whatever pydantic's reason.
_FIELD_CODES = {"psp_account_id": "invalid_psp_account_id", "commission_bps": "invalid_commission",
                "auto_release_days": "invalid_auto_release_days",
                "payment_method.type": "invalid_payment_method_type", "payment_method.wallet": "invalid_wallet"}


# What any route may answer besides its own outcomes: the key and its limits, and the request's shape.
_ANY_ROUTE = {
    401: "missing_api_key, invalid_api_key, revoked_api_key",
    403: "insufficient_scope",
    422: "a path or query parameter, or a field, is invalid (code per field in details)",
    429: "rate_limited: wait Retry-After seconds",
}
_WITH_BODY = {400: "invalid_json, body_too_deep", 413: "body_too_large",
              415: "unsupported_media_type: a body is JSON (Content-Type: application/json)"}


def documented(outcomes: dict[int, dict[str, Any]], *, body: bool = False) -> dict[int, dict[str, Any]]:
    """A route's OpenAPI answers: its own, and every error any route may give, each with the error shape."""
    answers = {**outcomes} if any(200 <= status < 300 for status in outcomes) else {200: {"description": "OK"},
                                                                                    **outcomes}
    for status, text in {**_ANY_ROUTE, **(_WITH_BODY if body else {})}.items():
        own = answers.get(status, {}).get("description")
        answers[status] = {"description": f"{own}; or {text}" if own else text}
    for status, answer in answers.items():
        if status >= 400:
            answer["content"] = {"application/json": {"model": ErrorResponse}}
    return answers


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json", body=error_body(code, message, details))


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def _code(error: dict[str, Any]) -> str:
    kind = error.get("type", "invalid")
    field = _field(tuple(error.get("loc", ())))
    if field == "payment_orders" and kind == "too_short":
        return "no_payment_orders"
    if field == "payment_orders" and kind == "too_long":
        return "too_many_payment_orders"
    if field in _FIELD_CODES and kind != "missing":
        return _FIELD_CODES[field]
    return _CODE_NAMES.get(kind, kind)


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    errors = list(error.errors())
    details = [{"field": _field(tuple(e.get("loc", ()))), "code": _code(e), "message": e.get("msg", "")}
               for e in errors]
    first = details[0] if details else {"code": "invalid_request", "message": "invalid request", "field": ""}
    status = 400 if first["code"] == "invalid_json" else 422
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return error_response(status, first["code"], message, details)


@app.not_found
def _no_route(_: Exception) -> Response:
    # API Gateway routes only the template's paths here; what reaches this is a path whose id has characters no
    # route pattern accepts (a line break, a slash).
    return error_response(404, "not_found", "no such resource")


@app.exception_handler(DomainError)
def _domain_error(error: DomainError) -> Response:
    if error.http_status >= 500:
        logger.exception("domain error")
    caller = _caller.get()
    if caller is None:
        return error_response(error.http_status, error.code, error.message, error.details)
    # The services name internal ids in their messages ("payment order shop_b~po_1 not found"): the caller
    # reads its own ids.
    client_id = caller.client_id
    details = [{k: tenancy.unscoped_text(client_id, v) if isinstance(v, str) else v for k, v in d.items()}
               for d in error.details]
    return error_response(error.http_status, error.code, tenancy.unscoped_text(client_id, error.message), details)


# --- tenancy: every id in is scoped with the caller's client, every id out unscoped (functions/auth/tenancy.py) --

# Not Powertools' app.context: that is one dict per module, shared by every thread that resolves at once and
# cleared by each resolve, so two requests in one process (tests do it; a Lambda process never does) would read
# each other's caller. A ContextVar is the request's own.
_caller: ContextVar[scopes.Caller | None] = ContextVar("caller", default=None)
_correlation: ContextVar[str] = ContextVar("correlation_id", default="")
View = TypeVar("View", bound=BaseModel)


def _client_id() -> str:
    caller = _caller.get()
    if caller is None:  # resolved without handler(): closed by default
        raise Unauthenticated("send your API key as `Authorization: Bearer mk_...`", code="missing_api_key")
    return str(caller.client_id)


def _in(external_id: str) -> str:
    return tenancy.scoped(_client_id(), external_id)


def _out(view: View) -> View:
    """The view with every id of the storefront's (however nested) as the caller knows it."""
    return type(view).model_validate(tenancy.unscoped_tree(_client_id(), view.model_dump()))


def _scoped_payment(request: PaymentRequest) -> PaymentRequest:
    orders = [o.model_copy(update={"payment_order_id": _in(o.payment_order_id),
                                   "seller_account": _in(o.seller_account)})
              for o in request.payment_orders]
    return request.model_copy(update={"checkout_id": _in(request.checkout_id), "payment_orders": orders})


@app.post("/v1/payments", responses=documented({202: {"description": "Checkout accepted"}, 409: {
    "description": "checkout_id_conflict, payment_order_id_in_use"}}, body=True))
def create_payment(request: Annotated[PaymentRequest, Body()]) -> Response[CheckoutView]:
    checkout, replayed = service.place_checkout(_scoped_payment(request), correlation_id=_correlation.get())
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    logger.info("checkout placed", extra={"checkout_id": checkout.checkout_id, "replayed": replayed,
                                          "orders": len(checkout.payment_orders)})
    if replayed:
        metrics.add_metric(name="CheckoutsReplayed", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="CheckoutsPlaced", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=ORDERS_ACCEPTED, unit=MetricUnit.Count, value=len(checkout.payment_orders))
    return Response(status_code=202, content_type="application/json", body=_out(checkout),
                    headers=headers)


@app.post("/v1/payment_routes", responses=documented({}, body=True))
def route_payment(request: Annotated[RouteRequest, Body()]) -> RouteView:
    """Where a checkout's charges would go now: ask before the buyer's card is tokenized, and tokenize it for that
    PSP (while the rules' PSP is down, its failover PSP is named)."""
    return service.payment_routes(request)  # routed on the sellers' internal ids, as validation and placing route


@app.get("/v1/payments/<payment_order_id>", responses=documented({404: {"description": "not_found"}}))
def get_payment(payment_order_id: Annotated[str, Path(max_length=64)]) -> PaymentOrderView:
    return _out(service.get_order(_in(payment_order_id)))


@app.get("/v1/checkouts/<checkout_id>", responses=documented({404: {"description": "not_found"}}))
def get_checkout(checkout_id: Annotated[str, Path(max_length=64)]) -> CheckoutView:
    return _out(service.get_checkout(_in(checkout_id)))


@app.post("/v1/checkouts/<checkout_id>/offline_payments",
          responses=documented({
              202: {"description": "Funds recorded: the orders finalize SUCCESS within the sweeper's next run; a "
                                   "replay answers the same, Idempotent-Replayed"},
              404: {"description": "checkout_not_found"},
              409: {"description": "checkout_not_offline, offline_funds_overdue, offline_payment_closed"},
              422: {"description": "offline_amount_mismatch, offline_currency_mismatch, offline_reference_mismatch"}},
              body=True))
def record_offline_payment(checkout_id: Annotated[str, Path(max_length=64)],
                           request: Annotated[OfflinePaymentRequest, Body()]) -> Response[OfflinePaymentView]:
    view, replayed = offline.record_payment(_in(checkout_id), request)
    logger.info("offline payment", extra={"checkout_id": view.checkout_id, "replayed": replayed})
    metrics.add_metric(name="OfflinePaymentsReplayed" if replayed else "OfflinePaymentsRecorded",
                       unit=MetricUnit.Count, value=1)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=202, content_type="application/json", body=_out(view), headers=headers)


@app.post("/v1/checkouts/<checkout_id>/offline_payments/bounce",
          responses=documented({
              202: {"description": "Bounce recorded: each order refunded of what remains (refund `<order>-bounce`); "
                                   "a replay answers the same, Idempotent-Replayed"},
              404: {"description": "checkout_not_found"},
              409: {"description": "checkout_not_offline, offline_payment_not_recorded, offline_payment_not_settled"},
              422: {"description": "offline_currency_mismatch, offline_reference_mismatch"}}, body=True))
def bounce_offline_payment(checkout_id: Annotated[str, Path(max_length=64)],
                           request: Annotated[OfflineBounceRequest, Body()]) -> Response[OfflinePaymentView]:
    view, replayed = offline.bounce(_in(checkout_id), request)
    logger.info("offline payment bounced", extra={"checkout_id": view.checkout_id, "replayed": replayed})
    metrics.add_metric(name="OfflineBouncesReplayed" if replayed else "OfflineBounces", unit=MetricUnit.Count,
                       value=1)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=202, content_type="application/json", body=_out(view), headers=headers)


@app.post("/v1/checkouts/<checkout_id>/payment_details",
          responses=documented({
              202: {"description": "Details recorded: the charge is decided by the PSP within the sweeper's next "
                                   "run; the same details again answer the same, Idempotent-Replayed"},
              404: {"description": "checkout_not_found, charge_not_found"},
              409: {"description": "no_action_pending, payment_details_conflict, action_superseded"},
              422: {"description": "details_not_for_action"}}, body=True))
def submit_payment_details(checkout_id: Annotated[str, Path(max_length=64)],
                           request: Annotated[PaymentDetailsRequest, Body()]) -> Response[PaymentDetailsView]:
    """The buyer's answer to the shopper action a charge at Adyen shows (next_action `adyen_action`): what Drop-in's
    onAdditionalDetails gives. Recorded once; the executor sends it to Adyen."""
    view, replayed = details.record_details(_in(checkout_id), request)
    metrics.add_metric(name="PaymentDetailsReplayed" if replayed else "PaymentDetailsRecorded",
                       unit=MetricUnit.Count, value=1)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=202, content_type="application/json", body=_out(view), headers=headers)


@app.post("/v1/payments/<payment_order_id>/release",
          responses=documented({
              202: {"description": "Released now"}, 200: {"description": "Released before (same body)"},
              404: {"description": "payment_order_not_found"}, 409: {"description": "order_not_settled"},
              503: {"description": "concurrent_change: refunds kept changing the order; send it again"}}))
def release_payment(payment_order_id: Annotated[str, Path(max_length=64)]) -> Response[ReleaseView]:
    view, now = payouts.release(_in(payment_order_id))
    logger.info("release", extra={"payment_order_id": view.payment_order_id, "released_now": now})
    if now:
        metrics.add_metric(name="PayoutsReleased", unit=MetricUnit.Count, value=1)
    return Response(status_code=202 if now else 200, content_type="application/json", body=_out(view))


@app.post("/v1/payments/<payment_order_id>/refunds",
          responses=documented({
              202: {"description": "Refund accepted (PENDING); a replay answers the same, Idempotent-Replayed"},
              404: {"description": "payment_order_not_found"},
              409: {"description": "order_not_settled, refund_id_conflict"},
              422: {"description": "refund_exceeds_remaining, invalid_amount"}}, body=True))
def create_refund(payment_order_id: Annotated[str, Path(max_length=64)],
                  request: Annotated[RefundRequest, Body()]) -> Response[RefundView]:
    view, replayed = refunds.create_refund(_in(payment_order_id),
                                           request.model_copy(update={"refund_id": _in(request.refund_id)}),
                                           correlation_id=_correlation.get())
    logger.info("refund accepted", extra={"refund_id": view.refund_id, "payment_order_id": view.payment_order_id,
                                          "replayed": replayed})
    metrics.add_metric(name="RefundsReplayed" if replayed else "RefundsAccepted", unit=MetricUnit.Count, value=1)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(status_code=202, content_type="application/json", body=_out(view), headers=headers)


@app.get("/v1/refunds/<refund_id>", responses=documented({404: {"description": "refund_not_found"}}))
def get_refund(refund_id: Annotated[str, Path(max_length=64)]) -> RefundView:
    return _out(refunds.get_refund(_in(refund_id)))


SellerAccount = Annotated[AccountId, Path()]


@app.put("/v1/sellers/<seller_account>", responses=documented({
    422: {"description": "invalid_psp_account_id, invalid_commission"}}, body=True))
def put_seller(seller_account: SellerAccount, request: Annotated[SellerRequest, Body()]) -> SellerView:
    return _out(payouts.register_seller(_in(seller_account), request))


@app.get("/v1/sellers/<seller_account>", responses=documented({404: {"description": "seller_not_found"}}))
def get_seller(seller_account: SellerAccount) -> SellerView:
    return _out(payouts.get_seller(_in(seller_account)))


@app.get("/v1/sellers/<seller_account>/balance",
         responses=documented({200: {"description": "Per currency: pending, available, transferred, owed"},
                               404: {"description": "seller_not_found: neither registered nor any money moved"}}))
def get_balance(seller_account: SellerAccount) -> BalanceView:
    return _out(payouts.balance(_in(seller_account)))


@app.get("/v1/sellers/<seller_account>/statement",
         responses=documented({200: {"description": "Movements, oldest first: JSON, or CSV with `Accept: text/csv`",
                                     "content": {"application/json": {"model": list[StatementLine]},
                                                 "text/csv": {"schema": {"type": "string"}}}},
                               404: {"description": "seller_not_found: neither registered nor any money moved"},
                               422: {"description": "invalid_time, invalid_time_window"}}))
def get_statement(
    seller_account: SellerAccount,
    start: Annotated[str | None, Query(alias="from", description="ISO 8601 time, default 30 days before to")] = None,
    end: Annotated[str | None, Query(alias="to", description="ISO 8601 time (excluded), default now")] = None,
) -> Response[list[StatementLine] | str]:
    lines = [_out(line) for line in payouts.statement(_in(seller_account), start, end)]
    if "text/csv" in (app.current_event.headers.get("accept") or ""):
        return Response(status_code=200, content_type="text/csv", body=payouts.statement_csv(lines))
    return Response(status_code=200, content_type="application/json", body=lines)


@app.put("/v1/notification_endpoint",
         responses=documented({201: {"description": "Created: `secret` is in this answer only (when generated)"},
                               200: {"description": "Replaced"}, 422: {"description": "invalid_url"}}, body=True))
def put_notification_endpoint(
    request: Annotated[notification_endpoints.EndpointRequest, Body()],
) -> Response[notification_endpoints.CreatedEndpointView | notification_endpoints.EndpointView]:
    view, created = notification_endpoints.set_endpoint(request, _client_id())
    logger.info("notification endpoint set", extra={"url": view.url, "endpoint_created": created})
    return Response(status_code=201 if created else 200, content_type="application/json",
                    body=view)


@app.get("/v1/notification_endpoint",
         responses=documented({404: {"description": "notification_endpoint_not_found"}}))
def get_notification_endpoint() -> notification_endpoints.EndpointView:
    return notification_endpoints.get_endpoint(_client_id())


@app.get("/v1/openapi.json", include_in_schema=False)
def openapi() -> Response[dict]:
    return Response(status_code=200, content_type="application/json", body=json.loads(openapi_document()))


def openapi_document() -> str:
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    key = HTTPBearer(bearerFormat="mk_test_... or mk_live_...",
                     description="API key of a storefront client (README: API keys and scopes); each route needs "
                                 "one scope: " + ", ".join(f"{route}: {scope or 'any'}"
                                                           for route, scope in scopes.ROUTE_SCOPES.items()))
    return app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION, security_schemes={"apiKey": key},
                                       security=[{"apiKey": []}])


def _refusal(error: DomainError) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    return {"statusCode": error.http_status, "headers": headers,
            "body": error_body(error.code, error.message, error.details), "isBase64Encoded": False}


# A checkout of 50 orders is ~10 KB and 4 levels deep: anything far beyond is refused before it is parsed (a deep
# body would exhaust the JSON parser's recursion; a large one, memory and time).
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16


def _body_text(event: dict[str, Any]) -> str | None:
    """The body as text; None when it is not UTF-8 (API Gateway hands such a body base64-encoded)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded") and body:
        import base64

        try:
            return base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return body


def _json_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings not counted), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _media_refusal(event: dict[str, Any]) -> DomainError | None:
    """A body sent as anything but JSON (a form, multipart...) is refused before a parser for it runs."""
    media = ((event.get("headers") or {}).get("content-type") or "").split(";")[0].strip().lower()
    if event.get("body") and media not in ("", "application/json"):
        return UnsupportedMediaType(f"the body must be application/json, not {media[:100]}")
    return None


def _body_refusal(body: str | None) -> DomainError | None:
    if body is None:
        return InvalidJson("the body is not UTF-8 text")
    if len(body.encode()) > MAX_BODY_BYTES:
        return BodyTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if body.count("[") + body.count("{") > MAX_JSON_DEPTH and _json_depth(body) > MAX_JSON_DEPTH:
        return BodyTooDeep(f"the body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    if contains_card_number(body):
        return CardNumberRefused("card numbers are not accepted: send a PSP payment-method token (pm_...)")
    return None


def _method_not_allowed(route_key: str) -> dict[str, Any]:
    path = route_key.removeprefix("ANY ")
    allowed = sorted(route.split(" ", 1)[0] for route in scopes.ROUTE_SCOPES if route.split(" ", 1)[1] == path)
    answer = _refusal(MethodNotAllowed(f"{path} answers {', '.join(allowed)}"))
    answer["headers"]["Allow"] = ", ".join(allowed)
    return answer


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Every answer carries the request's correlation id (X-Correlation-Id: the caller's if usable, else new)."""
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    correlation_id = correlation_id_of(headers.get(CORRELATION_HEADER.lower()))
    logger.set_correlation_id(correlation_id)
    token = _correlation.set(correlation_id)
    try:
        answer = _answer(event, context)
    finally:
        _correlation.reset(token)
    answer["headers"] = {**(answer.get("headers") or {}), CORRELATION_HEADER: correlation_id}
    return answer


def _answer(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("routeKey", "").startswith("ANY "):  # no method route took it: the path lacks this method
        return _method_not_allowed(event["routeKey"])
    try:
        caller = scopes.caller(event)
    except DomainError as refused:
        logger.info("request refused", extra={"code": refused.code, "route": event.get("routeKey")})
        metrics.add_metric(name="RequestsUnauthorized", unit=MetricUnit.Count, value=1)
        return _refusal(refused)
    logger.append_keys(client_id=caller.client_id, key_id=caller.key_id)
    # These checks run before anything parses or logs the body, so a PAN never reaches a log or a table.
    refused = _media_refusal(event) or _body_refusal(_body_text(event))
    if refused is not None:
        logger.warning("request body refused", extra={"code": refused.code, "path": event.get("rawPath")})
        if isinstance(refused, CardNumberRefused):
            metrics.add_metric(name="CardNumbersRefused", unit=MetricUnit.Count, value=1)
        return _refusal(refused)
    token = _caller.set(caller)  # the routes act for this client only
    client = schemas.placing_client.set(str(caller.client_id))  # and validation reads this client's checkouts
    try:
        return app.resolve(event, context)
    finally:
        schemas.placing_client.reset(client)
        _caller.reset(token)
