"""The HTTP gateway (payload format 2.0 both ways) and Step Functions tasks calling in-process handlers."""

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from local.gateway import Route, http_response


def _request(url, method, path, body=None, headers=None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_gateway_turns_a_request_into_a_v2_event_and_back(toy_stack, calls):
    resp, data = _request(
        toy_stack.api_url,
        "POST",
        "/v1/payments?x=1&x=2&y=",
        body=b'{"checkout_id": "c1"}',
        headers={"Content-Type": "application/json", "X-Custom": "A", "Cookie": "a=1; b=2"},
    )
    # the Lambda result (201, headers, cookies, body) is the HTTP answer
    assert resp.status == 201
    assert resp.getheader("x-toy") == "yes"
    assert resp.getheader("set-cookie") == "session=abc; Path=/"
    assert json.loads(data) == {"received": {"checkout_id": "c1"}}
    ((name, event),) = calls
    assert name == "api"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/payments"
    assert event["rawPath"] == "/v1/payments"
    assert event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-custom"] == "A"
    assert all(k == k.lower() for k in event["headers"])
    assert event["cookies"] == ["a=1", "b=2"]
    assert "pathParameters" not in event
    assert event["body"] == '{"checkout_id": "c1"}'
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["http"]["method"] == "POST"
    assert ctx["http"]["path"] == "/v1/payments"
    assert ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["stage"] == "$default"
    assert ctx["routeKey"] == "POST /v1/payments"
    assert ctx["requestId"]
    assert toy_stack.runtime.invocations[-1].trigger == "http POST /v1/payments"


def test_gateway_fills_path_parameters(toy_stack, calls):
    resp, _ = _request(toy_stack.api_url, "GET", "/v1/payments/po_123")
    assert resp.status == 201
    ((_, event),) = calls
    assert event["routeKey"] == "GET /v1/payments/{payment_order_id}"
    assert event["pathParameters"] == {"payment_order_id": "po_123"}
    assert "body" not in event and "queryStringParameters" not in event


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("DELETE", "/v1/payments"), ("GET", "/v1/payments/a/b")]
)
def test_unknown_routes_answer_404_like_api_gateway(toy_stack, calls, method, path):
    resp, data = _request(toy_stack.api_url, method, path)
    assert resp.status == 404
    assert json.loads(data) == {"message": "Not Found"}
    assert calls == []


def test_route_matching_prefers_the_most_specific_route():
    routes = sorted(
        [
            Route("$default", "arn:d", "2.0"),
            Route("ANY /v1/{proxy+}", "arn:g", "2.0"),
            Route("GET /v1/payments/{id}", "arn:p", "2.0"),
            Route("GET /v1/payments/special", "arn:s", "2.0"),
        ],
        key=lambda r: r.priority,
    )

    def pick(method, path):
        return next(r.function_arn for r in routes if r.match(method, path) is not None)

    assert pick("GET", "/v1/payments/special") == "arn:s"
    assert pick("GET", "/v1/payments/x") == "arn:p"
    assert pick("POST", "/v1/payments/x") == "arn:g"
    assert pick("GET", "/other") == "arn:d"
    assert Route("ANY /v1/{proxy+}", "arn:g", "2.0").match("GET", "/v1/a/b") == {"proxy": "a/b"}


def test_results_without_status_code_are_json_200s():
    assert http_response({"a": 1}) == (200, [("content-type", "application/json")], b'{"a": 1}')
    assert http_response({"statusCode": 204}) == (204, [], b"")
    assert http_response({"statusCode": 200, "body": "aGk=", "isBase64Encoded": True})[2] == b"hi"


def _run(sfn, arn, name, payload, timeout=20):
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = sfn.describe_execution(executionArn=execution["executionArn"])
        if desc["status"] != "RUNNING":
            return desc, execution["executionArn"]
        time.sleep(0.1)
    raise TimeoutError(name)


def test_state_machine_retries_a_custom_exception_by_its_class_name(toy_stack, calls):
    sfn = toy_stack.client("stepfunctions")
    desc, _ = _run(
        sfn, toy_stack.outputs["StateMachineArn"], "po_retry", {"payment_order_id": "po_retry", "transient_failures": 2}
    )
    assert desc["status"] == "SUCCEEDED"
    assert json.loads(desc["output"])["charge"] == {"outcome": "succeeded", "attempts": 3}
    assert [name for name, _ in calls] == ["charge", "charge", "charge"]  # Retry matched PspTransientError
    outcomes = [r.outcome for r in toy_stack.runtime.invocations if "ChargeFn" in r.function_name][-3:]
    assert outcomes == ["PspTransientError", "PspTransientError", "ok"]


def test_state_machine_catches_a_custom_exception_by_its_class_name(toy_stack, calls):
    sfn = toy_stack.client("stepfunctions")
    desc, arn = _run(
        sfn, toy_stack.outputs["StateMachineArn"], "po_declined", {"payment_order_id": "po_declined", "permanent": True}
    )
    assert desc["status"] == "SUCCEEDED"
    assert json.loads(desc["output"]) == {"status": "FAILED", "error": "PspPermanentError"}
    assert [name for name, _ in calls] == ["charge", "mark_failed"]  # no retry for a permanent error
    history = sfn.get_execution_history(executionArn=arn)["events"]
    # Resource = the function ARN: AWS records LambdaFunctionFailed with the exception class as the error
    failed = [e["lambdaFunctionFailedEventDetails"] for e in history if e["type"] == "LambdaFunctionFailed"]
    assert failed[0]["error"] == "PspPermanentError"
    assert json.loads(failed[0]["cause"])["errorMessage"] == "card declined for po_declined"
