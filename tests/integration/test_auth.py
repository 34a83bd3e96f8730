"""API keys (issue 21): the authorizer says who calls, PaymentApi refuses what the key may not do; against moto."""

import json

import pytest

from functions.auth import authorizer
from functions.auth.keys import issue, key_hash
from functions.auth.scopes import ROUTE_SCOPES
from functions.payment import api
from functions.shared.names import SCOPES
from functions.shared.tables import ApiKeysTable
from infra import names
from tests.support.events import FakeContext, http_event


@pytest.fixture
def keys(aws_env):
    authorizer._cache.clear()
    yield ApiKeysTable.from_settings()
    authorizer._cache.clear()


def authorize(key: str | None, route_key: str = "GET /v1/payments/{payment_order_id}") -> dict:
    event = http_event("GET", "/v1/payments/po_1", route_key=route_key)
    event["headers"] = {"authorization": f"Bearer {key}"} if key else {}
    event["type"] = "REQUEST"
    return authorizer.handler(event, FakeContext())


def call_as(context: dict, method: str, path: str, body=None, params=None) -> tuple[int, dict]:
    event = http_event(method, path, body, path_parameters=params)
    event["requestContext"]["authorizer"] = {"lambda": context}
    answer = api.handler(event, FakeContext())
    return answer["statusCode"], json.loads(answer["body"])


def test_a_valid_key_names_its_client_and_scopes_and_only_its_hash_is_stored(keys):
    key = issue(keys, "shop_1", ["payments:read", "refunds"])
    answer = authorize(key)
    assert answer == {"isAuthorized": True, "context": {"client_id": "shop_1", "scopes": "payments:read refunds",
                                                         "key_id": key[:14], "rate_limit": ""}}
    stored = keys.get(key_hash(key))
    assert stored["client_id"] == "shop_1" and key not in json.dumps(stored)
    assert key.startswith("mk_test_") and len(key) == len("mk_test_") + 43


@pytest.mark.parametrize(("header_key", "error"), [
    (None, "missing_api_key"),
    ("mk_test_short", "invalid_api_key"),
    ("mk_test_" + "A" * 43, "invalid_api_key"),  # well formed, never issued
])
def test_missing_malformed_and_unknown_keys_get_no_client(keys, header_key, error):
    assert authorize(header_key)["context"] == {"error": error}


def test_a_revoked_key_is_refused_once_the_cached_answer_expires(keys, monkeypatch):
    key = issue(keys, "shop_1")
    assert authorizer.identify(f"Bearer {key}", now=100.0)["client_id"] == "shop_1"
    keys.revoke(key_hash(key), "2026-12-05T00:00:00+00:00")
    # within the cache time (60 s) the answer kept is reused: the README's "a revoked key may work for 60 s"
    assert authorizer.identify(f"Bearer {key}", now=159.0)["client_id"] == "shop_1"
    assert authorizer.identify(f"Bearer {key}", now=161.0) == {"error": "revoked_api_key", "key_id": key[:14]}


def test_the_cache_is_bounded_whatever_keys_a_caller_sprays(keys, monkeypatch):
    monkeypatch.setattr(authorizer, "_CACHE_LIMIT", 3)
    for n in range(10):
        authorizer.identify(f"Bearer mk_test_{n:043d}")
    assert len(authorizer._cache) <= 3


def test_issue_refuses_unknown_or_no_scopes(keys):
    with pytest.raises(ValueError, match="scopes must be some of"):
        issue(keys, "shop_1", ["payments:write", "admin"])
    with pytest.raises(ValueError):
        issue(keys, "shop_1", [])


def test_every_storefront_route_needs_a_scope_and_the_webhook_route_is_not_among_them():
    assert {f"{m} {p}" for m, p in names.ROUTES} == set(ROUTE_SCOPES)
    assert not any(names.WEBHOOK_PATH in route for route in ROUTE_SCOPES)


@pytest.mark.parametrize("context", [{}, {"error": "missing_api_key"}, {"error": "invalid_api_key"},
                                     {"error": "revoked_api_key", "key_id": "mk_test_abcdef"}])
def test_without_a_client_the_api_answers_401_in_its_error_shape_and_writes_nothing(aws_env, context):
    status, body = call_as(context, "POST", "/v1/payments", {"checkout_id": "chk_1"})
    assert status == 401
    assert body["error"]["code"] == context.get("error", "missing_api_key")
    assert body["error"]["message"]


def test_a_key_without_the_routes_scope_gets_403_naming_the_scope(aws_env):
    reader = {"client_id": "shop_1", "scopes": "payments:read", "key_id": "mk_test_abcdef"}
    status, body = call_as(reader, "POST", "/v1/payments/po_1/refunds", {"refund_id": "rf_1"},
                           params={"payment_order_id": "po_1"})
    assert status == 403
    assert body["error"]["code"] == "insufficient_scope"
    assert [d["required_scope"] for d in body["error"]["details"]] == ["refunds"]
    # the same key reads: the route's own answer (here, no such order)
    assert call_as(reader, "GET", "/v1/payments/po_1", params={"payment_order_id": "po_1"})[0] == 404


@pytest.mark.parametrize("route", sorted(r for r, scope in ROUTE_SCOPES.items() if scope))
def test_each_route_refuses_a_key_holding_every_other_scope(aws_env, route):
    needed = ROUTE_SCOPES[route]
    others = {"client_id": "shop_1", "scopes": " ".join(s for s in SCOPES if s != needed), "key_id": "k"}
    event = http_event(*route.split(" ", 1), route_key=route)
    event["requestContext"]["authorizer"] = {"lambda": others}
    assert api.handler(event, FakeContext())["statusCode"] == 403
