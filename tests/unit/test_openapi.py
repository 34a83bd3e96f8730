import json
from pathlib import Path

from functions.payment.api import openapi_document
from infra.names import ROUTES

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_the_one_the_code_generates():
    # Regenerate with `make openapi` after changing the API.
    assert json.loads(COMMITTED.read_text()) == json.loads(openapi_document())


def test_the_document_describes_every_route_and_the_money_format():
    document = json.loads(openapi_document())
    assert set(document["paths"]) == {
        "/v1/payments", "/v1/payment_routes", "/v1/payments/{payment_order_id}", "/v1/checkouts/{checkout_id}",
        "/v1/payments/{payment_order_id}/release", "/v1/sellers/{seller_account}",
        "/v1/sellers/{seller_account}/balance", "/v1/sellers/{seller_account}/statement",
        "/v1/notification_endpoint", "/v1/payments/{payment_order_id}/refunds", "/v1/refunds/{refund_id}",
        "/v1/checkouts/{checkout_id}/offline_payments", "/v1/checkouts/{checkout_id}/offline_payments/bounce",
        "/v1/checkouts/{checkout_id}/payment_details"}
    methods = {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}
    assert methods == {route for route in ROUTES if route[1] != "/v1/openapi.json"}
    assert document["components"]["schemas"]["PayoutStatus"]["enum"] == [
        "HELD", "RELEASED", "TRANSFERRING", "TRANSFERRED", "FAILED"]
    order = document["components"]["schemas"]["PaymentOrderRequest"]
    assert order["properties"]["amount"]["type"] == "string"
