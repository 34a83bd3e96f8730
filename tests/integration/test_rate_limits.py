"""Per-client rate limits (issue 21, point 4): permits per client and second, leased by authorizer containers from
one DynamoDB counter, so the limit holds across containers; a refusal is a 429 with Retry-After."""

import json

import pytest

from functions.auth import authorizer, limits
from functions.auth.keys import issue
from functions.payment import api
from functions.shared.tables import ApiKeysTable
from tests.support.events import FakeContext, http_event


@pytest.fixture
def fresh(aws_env):
    limits._leases.clear()
    authorizer._cache.clear()
    yield
    limits._leases.clear()
    authorizer._cache.clear()


def allowed(client: str, limit: int, now: float, container: dict) -> bool:
    """One request as one authorizer container sees it (its own leases)."""
    saved = dict(limits._leases)
    limits._leases.clear()
    limits._leases.update(container)
    try:
        return limits.retry_after(client, limit, now) == 0
    finally:
        container.clear()
        container.update(limits._leases)
        limits._leases.clear()
        limits._leases.update(saved)


def test_a_client_gets_its_limit_per_second_and_again_the_next_second(fresh):
    container: dict = {}
    assert [allowed("shop_1", 5, 100.2, container) for _ in range(7)] == [True] * 5 + [False] * 2
    assert allowed("shop_1", 5, 101.0, container)
    assert allowed("shop_2", 5, 100.9, container)  # another client has its own count


def test_the_limit_holds_across_containers_leasing_from_one_counter(fresh):
    a, b = {}, {}
    outcomes = [allowed("shop_1", 15, 200.5, c) for _ in range(12) for c in (a, b)]
    assert sum(outcomes) == 15  # never more, whatever container asks
    assert not allowed("shop_1", 15, 200.9, {})


def test_a_rate_limited_client_gets_429_with_retry_after_in_the_error_shape(aws_env):
    event = http_event("GET", "/v1/payments/po_1", path_parameters={"payment_order_id": "po_1"})
    event["requestContext"]["authorizer"] = {"lambda": {"error": "rate_limited", "retry_after": "1"}}
    answer = api.handler(event, FakeContext())
    assert answer["statusCode"] == 429 and answer["headers"]["Retry-After"] == "1"
    assert json.loads(answer["body"])["error"]["code"] == "rate_limited"


def test_the_authorizer_applies_the_keys_own_limit(fresh):
    key = issue(ApiKeysTable.from_settings(), "shop_1", rate_limit_per_s=2)
    verdict = authorizer.identify(f"Bearer {key}")
    assert [authorizer._within_rate(verdict, 300.1).get("error") for _ in range(3)] == [None, None, "rate_limited"]


def test_issue_refuses_a_limit_below_one(fresh):
    with pytest.raises(ValueError, match="at least 1"):
        issue(ApiKeysTable.from_settings(), "shop_1", rate_limit_per_s=0)
