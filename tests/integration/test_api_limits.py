"""Hostile bodies and ids (issue 21, point 9): refused before parsing, in the error shape, nothing written."""

import json

import boto3
import pytest

from functions.payment import api
from tests.support.events import FakeContext, http_event


def call(event):
    answer = api.handler(event, FakeContext())
    return answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {}


def rows(table: str) -> int:
    return boto3.client("dynamodb", region_name="us-east-1").scan(TableName=f"test-{table}")["Count"]


def checkout(name: str = "Ada") -> dict:
    return {"buyer_info": {"buyer_id": "b_1", "name": name}, "checkout_id": "chk_lim",
            "credit_card_info": {"payment_method": "pm_card_visa"},
            "payment_orders": [{"seller_account": "s_1", "amount": "10.00", "currency": "USD",
                                "payment_order_id": "po_lim"}]}


def test_a_body_over_64_kib_is_413_and_nothing_is_written(aws_env):
    status, body, _ = call(http_event("POST", "/v1/payments", checkout(name="A" * 70_000)))
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert rows("PaymentEvents") == 0


@pytest.mark.parametrize("nested", ["[" * 30_000 + "]" * 30_000, '{"a":' * 5_000 + "1" + "}" * 5_000])
def test_deeply_nested_json_is_400_not_a_crash(aws_env, nested):
    status, body, _ = call(http_event("POST", "/v1/payments", nested))
    assert (status, body["error"]["code"]) == (400, "body_too_deep")


def test_brackets_inside_strings_do_not_count_as_nesting(aws_env):
    status, body, _ = call(http_event("POST", "/v1/payments", checkout(name='[[[[{{{{"\\"[[[[' * 10)))
    assert status == 202, body


def test_a_body_just_over_the_depth_limit_is_refused_and_one_at_it_is_parsed(aws_env):
    at_limit = {"checkout_id": "chk_x", "extra": json.loads("[" * (api.MAX_JSON_DEPTH - 1) + "]" * (
        api.MAX_JSON_DEPTH - 1))}
    assert call(http_event("POST", "/v1/payments", at_limit))[1]["error"]["code"] != "body_too_deep"
    over = {"checkout_id": "chk_x", "extra": json.loads("[" * api.MAX_JSON_DEPTH + "]" * api.MAX_JSON_DEPTH)}
    assert call(http_event("POST", "/v1/payments", over))[1]["error"]["code"] == "body_too_deep"


def test_an_id_carrying_a_line_break_never_reaches_a_response_header(aws_env):
    evil = "po_1\r\nSet-Cookie: session=stolen"
    status, body, headers = call(http_event("GET", f"/v1/payments/{evil}",
                                            path_parameters={"payment_order_id": evil}))
    assert status in (404, 422) and "error" in body
    assert all("\r" not in str(v) and "\n" not in str(v) and "stolen" not in str(v) for v in headers.values())


@pytest.mark.parametrize(("method", "path", "route", "allow"), [
    ("DELETE", "/v1/payments/po_1", "ANY /v1/payments/{payment_order_id}", "GET"),
    ("GET", "/v1/payments", "ANY /v1/payments", "POST"),
    ("PATCH", "/v1/sellers/s_1", "ANY /v1/sellers/{seller_account}", "GET, PUT"),
])
def test_a_method_the_path_lacks_is_405_with_allow(aws_env, method, path, route, allow):
    event = http_event(method, path, route_key=route)
    event["requestContext"]["authorizer"] = {}  # 405 whoever asks: it reveals only what the OpenAPI document says
    status, body, headers = call(event)
    assert (status, body["error"]["code"], headers["Allow"]) == (405, "method_not_allowed", allow)


def test_a_body_that_is_not_utf8_is_400_invalid_json_not_a_crash(aws_env):
    import base64

    event = http_event("POST", "/v1/payments", None)
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff|\xfe|\x9d4").decode(), True
    status, body, _ = call(event)
    assert (status, body["error"]["code"]) == (400, "invalid_json")


@pytest.mark.parametrize("media", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_sent_as_anything_but_json_is_415_before_any_parser_runs(aws_env, media):
    event = http_event("POST", "/v1/payments", checkout())
    event["headers"]["content-type"] = media
    status, body, _ = call(event)
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    assert rows("PaymentEvents") == 0


def test_json_with_a_charset_is_json(aws_env):
    event = http_event("POST", "/v1/payments", checkout())
    event["headers"]["content-type"] = "application/json; charset=utf-8"
    assert call(event)[0] == 202
