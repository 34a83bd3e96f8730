import json
from pathlib import Path

from functions.payment.api import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_the_one_the_code_generates():
    # Regenerate with `make openapi` after changing the API.
    assert json.loads(COMMITTED.read_text()) == json.loads(openapi_document())


def test_the_document_describes_every_route_and_the_money_format():
    document = json.loads(openapi_document())
    assert set(document["paths"]) == {"/v1/payments", "/v1/payments/{payment_order_id}", "/v1/checkouts/{checkout_id}"}
    order = document["components"]["schemas"]["PaymentOrderRequest"]
    assert order["properties"]["amount"]["type"] == "string"
