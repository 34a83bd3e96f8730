"""API keys over HTTP, on the local stack as deployed (the gateway runs the template's authorizer before PaymentApi):
401 without a valid key, 403 without the scope, both in the API's error shape; the webhook route takes no key."""

import json
import os
import time

import pytest

from functions.auth.keys import issue, key_hash
from functions.shared.names import ENV_API_KEYS_TABLE
from functions.shared.tables import ApiKeysTable
from verification.storefront import ApiClient

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def keys(stack) -> ApiKeysTable:
    return ApiKeysTable(os.environ[ENV_API_KEYS_TABLE])  # the operator's view of the stack (its tools' environment)


@pytest.mark.parametrize(("key", "code"), [(None, "missing_api_key"), ("mk_test_nope", "invalid_api_key"),
                                           ("mk_live_" + "x" * 43, "invalid_api_key")])
def test_a_request_without_a_valid_key_is_401_in_the_error_shape(stack, key, code):
    status, body, _ = ApiClient(stack.api_url, key).request("GET", "/v1/payments/po_nope")
    assert (status, body["error"]["code"]) == (401, code)


def test_a_key_without_the_scope_is_403_and_with_it_the_route_answers(stack, keys):
    reader = ApiClient(stack.api_url, issue(keys, "default", ["payments:read"]))
    status, body, _ = reader.request("POST", "/v1/payments", {"checkout_id": "chk_scope"})
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    assert reader.request("GET", "/v1/payments/po_nope")[0] == 404


def test_a_key_revoked_before_its_first_use_is_refused(stack, keys):
    key = issue(keys, "default")
    keys.revoke(key_hash(key), "2026-12-05T00:00:00+00:00")
    status, body, _ = ApiClient(stack.api_url, key).request("GET", "/v1/payments/po_nope")
    assert (status, body["error"]["code"]) == (401, "revoked_api_key")


def test_the_webhook_route_takes_no_key_and_refuses_a_bad_signature_with_400(stack):
    status, body, _ = ApiClient(stack.api_url, None).request("POST", "/v1/webhooks/stripe", {"id": "evt_x"})
    assert (status, body["error"]["code"]) == (400, "invalid_signature")


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(stack, keys):
    # a limit of 1 per second: three requests within one second span at most two seconds, so one is refused
    client = ApiClient(stack.api_url, issue(keys, "shop_rate", rate_limit_per_s=1))  # the limit is per client
    started = time.monotonic()
    answers = [client.request("GET", "/v1/payments/po_nope") for _ in range(3)]
    assert time.monotonic() - started < 1.0, "too slow to prove anything: three requests took a second"
    refused = [(status, body, headers) for status, body, headers in answers if status == 429]
    assert refused and all(b["error"]["code"] == "rate_limited" and h["retry-after"] == "1" for _, b, h in refused)
    assert {status for status, _, _ in answers} <= {404, 429}


def test_another_clients_checkout_reaches_success_and_stays_its_own(stack, api, keys):
    from tests.e2e.test_http_flows import checkout_body, unique, wait_final

    # Given shop_b's key
    shop_b = ApiClient(stack.api_url, issue(keys, "shop_b"))
    checkout_id = unique("chk_tenant")
    sent = checkout_body(checkout_id, orders=[("seller_t", "21.00", "USD")])
    order_id = sent["payment_orders"][0]["payment_order_id"]

    # When shop_b places a checkout
    status, placed, headers = shop_b.post_checkout(sent)
    assert status == 202 and "idempotent-replayed" not in headers, placed

    # Then its order reaches SUCCESS through the workflow, read back with shop_b's ids
    order = wait_final(shop_b, order_id, timeout=20)
    assert order["payment_order_status"] == "SUCCESS" and order["wallet_updated"] and order["ledger_updated"]
    assert (order["payment_order_id"], order["checkout_id"], order["seller_account"], order["amount"]) == (
        order_id, checkout_id, "seller_t", "21.00")
    status, checkout, _ = shop_b.get_checkout(checkout_id)
    assert status == 200 and checkout["is_payment_done"] and [o["amount"] for o in checkout["payment_orders"]] == [
        "21.00"]
    assert "~" not in json.dumps([placed, order, checkout])

    # And the default client's key gets 404 on it, by its ids or by the internal one
    for path in (f"/v1/payments/{order_id}", f"/v1/checkouts/{checkout_id}", f"/v1/payments/shop_b~{order_id}"):
        status, body, _ = api.request("GET", path)
        assert status == 404 and "~" not in json.dumps(body).replace(f"shop_b~{order_id}", ""), (path, body)

    # And the default client may place the same ids: its own checkout, charged on its own
    assert api.post_checkout(checkout_body(checkout_id, orders=[("seller_t", "4.00", "USD")]))[0] == 202
    assert wait_final(api, order_id, timeout=20)["amount"] == "4.00"
    assert wait_final(shop_b, order_id, timeout=5)["amount"] == "21.00"


def test_a_method_a_path_lacks_is_405_as_deployed(api):
    status, body, headers = api.request("DELETE", "/v1/payments/po_nope")
    assert (status, body["error"]["code"], headers["allow"]) == (405, "method_not_allowed", "GET")
    assert api.request("GET", "/v1/payments/po_nope")[0] == 404  # the method route still wins
