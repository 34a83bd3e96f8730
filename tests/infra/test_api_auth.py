"""The HTTP API as deployed (issue 21): every storefront route behind the API-key authorizer; only the PSP's webhook
route without it (its signature authenticates it)."""

from __future__ import annotations

import pytest

from infra import names

pytestmark = pytest.mark.xdist_group("infra-synth")


def test_every_storefront_route_has_the_authorizer_and_only_the_webhook_routes_have_none(synth):
    (authorizer_id,) = synth.of_type("AWS::ApiGatewayV2::Authorizer")
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in synth.of_type("AWS::ApiGatewayV2::Route").values()}
    open_routes = {key for key, route in routes.items() if route.get("AuthorizationType", "NONE") == "NONE"}
    assert open_routes == {f"POST {names.WEBHOOK_PATH}", f"POST {names.ADYEN_WEBHOOK_PATH}"}  # the PSPs' signatures
    for method, path in names.ROUTES:
        route = routes[f"{method} {path}"]
        assert route["AuthorizationType"] == "CUSTOM" and route["AuthorizerId"] == {"Ref": authorizer_id}


def test_the_authorizer_is_a_simple_request_authorizer_without_identity_source_or_gateway_cache(synth):
    ((_, authorizer),) = synth.of_type("AWS::ApiGatewayV2::Authorizer").items()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST" and props["EnableSimpleResponses"] is True
    assert props["AuthorizerPayloadFormatVersion"] == "2.0"
    # no identity source: a request without a key reaches it, so the API answers 401 in its own error shape
    assert props.get("IdentitySource", []) == [] and props["AuthorizerResultTtlInSeconds"] == 0
    assert names.API_AUTHORIZER.name in str(props["AuthorizerUri"])


def test_api_gateway_may_invoke_the_authorizer(synth):
    permissions = [p["Properties"] for p in synth.of_type("AWS::Lambda::Permission").values()]
    assert any(names.API_AUTHORIZER.name in str(p["FunctionName"]) and p["Principal"] == "apigateway.amazonaws.com"
               for p in permissions)


def test_every_path_has_an_any_route_behind_the_authorizer_for_the_405(synth):
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in synth.of_type("AWS::ApiGatewayV2::Route").values()}
    for path in {path for _, path in names.ROUTES}:
        assert routes[f"ANY {path}"]["AuthorizationType"] == "CUSTOM"
    assert f"ANY {names.WEBHOOK_PATH}" not in routes
