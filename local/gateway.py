"""A local API Gateway HTTP API: the template's routes on 127.0.0.1, Lambda proxy payload format 2.0.

Routes come from the template's AWS::ApiGatewayV2::Route resources (route key -> integration -> function).
Requests become the payload-2.0 event API Gateway sends; the function's answer becomes the HTTP response by
the same rules (a dict with statusCode is taken as is; any other JSON is a 200 application/json body).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.deploy import API_ID, DeployedStack
from local.event_sources import lambda_client
from local.moto_server import ACCOUNT_ID
from local.template import getatt_target

log = logging.getLogger("local.gateway")

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Authorizer:
    """A REQUEST Lambda authorizer (payload 2.0, simple responses), as the route's AuthorizerId names it."""

    function_arn: str
    identity_source: tuple[str, ...]  # e.g. ("$request.header.Authorization",); empty: always called


@dataclass(frozen=True)
class Route:
    route_key: str  # "POST /v1/payments", "ANY /{proxy+}" or "$default"
    function_arn: str
    payload_format: str
    authorizer: Authorizer | None = None

    @property
    def method(self) -> str:
        return "ANY" if self.route_key == "$default" else self.route_key.split(" ", 1)[0]

    @property
    def path(self) -> str | None:
        return None if self.route_key == "$default" else self.route_key.split(" ", 1)[1]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route serves the request, else None."""
        if self.method not in ("ANY", method):
            return None
        if self.path is None:
            return {}
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", self.path):
            if part.startswith("{") and part.endswith("+}"):
                pattern += f"(?P<{_group(part[1:-2])}>.+)"
            elif part.startswith("{"):
                pattern += f"(?P<{_group(part[1:-1])}>[^/]+)"
            else:
                pattern += re.escape(part)
        found = re.fullmatch(pattern, path)
        if not found:
            return None
        names = re.findall(r"\{([^}+]+)\+?\}", self.path)
        # API Gateway hands path parameters percent-decoded (UTF-8): /v1/sellers/a%3Ab -> "a:b"
        return {name: unquote(found.group(_group(name)), errors="replace") for name in names}

    @property
    def priority(self) -> tuple[int, int, int]:
        """API Gateway picks the most specific route: literal over parameters over greedy, method over ANY."""
        if self.path is None:
            return (3, 0, 0)
        greedy = 1 if "+}" in self.path else 0
        params = self.path.count("{")
        return (greedy, params, 1 if self.method == "ANY" else 0)


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


def http_api_routes(deployed: DeployedStack) -> list[Route]:
    template = deployed.template
    routes = []
    for lid in template.of_type("AWS::ApiGatewayV2::Route"):
        props = template.props(lid)
        integration_id = _integration_of(props.get("Target"))
        if integration_id is None or integration_id not in template.resources:
            log.warning("route %s (%s) has no Lambda integration locally", lid, props.get("RouteKey"))
            continue
        integration = template.props(integration_id)
        if str(integration.get("PayloadFormatVersion", "2.0")) != "2.0":
            log.warning(
                "route %s uses payload format %s: served as 2.0 locally", lid, integration["PayloadFormatVersion"]
            )
        uri = deployed.resolve(integration["IntegrationUri"])
        routes.append(Route(props["RouteKey"], _function_arn(uri), str(integration.get("PayloadFormatVersion", "2.0")),
                            _authorizer(deployed, props)))
    return sorted(routes, key=lambda r: r.priority)


def _authorizer(deployed: DeployedStack, route: dict[str, Any]) -> Authorizer | None:
    if route.get("AuthorizationType", "NONE") == "NONE":
        return None
    props = deployed.template.props(getatt_target(route["AuthorizerId"]))
    if props.get("AuthorizerType") != "REQUEST" or not props.get("EnableSimpleResponses"):
        raise ValueError(f"only REQUEST authorizers with simple responses are served locally: {props}")
    if props.get("AuthorizerResultTtlInSeconds", 0):
        raise ValueError("authorizer caching is not served locally: set results_cache_ttl to 0")
    return Authorizer(_function_arn(deployed.resolve(props["AuthorizerUri"])), tuple(props.get("IdentitySource", [])))


def _identity(event: dict[str, Any], source: str) -> str:
    """The value of an identity source ($request.header.X, $request.querystring.X) in a request, "" if absent."""
    kind, _, name = source.removeprefix("$request.").partition(".")
    if kind == "header":
        return event.get("headers", {}).get(name.lower(), "")
    if kind == "querystring":
        return (event.get("queryStringParameters") or {}).get(name, "")
    raise ValueError(f"identity source not served locally: {source}")


def _integration_of(target: Any) -> str | None:
    """Target is "integrations/<id>", as a Join or Sub around a Ref to the integration."""
    if isinstance(target, dict) and "Fn::Join" in target:
        for part in target["Fn::Join"][1]:
            ref = getatt_target(part)
            if ref:
                return ref
    if isinstance(target, dict) and "Fn::Sub" in target:
        match = re.search(
            r"\$\{([^}.]+)\}", target["Fn::Sub"] if isinstance(target["Fn::Sub"], str) else target["Fn::Sub"][0]
        )
        return match.group(1) if match else None
    return None


def _function_arn(uri: str) -> str:
    # A Lambda ARN, or arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<arn>/invocations
    match = re.search(r"(arn:aws:lambda:[^/]+?)(/invocations)?$", uri)
    if not match:
        raise ValueError(f"integration URI is not a Lambda function: {uri}")
    return match.group(1)


def build_event(
    route: Route,
    params: dict[str, str],
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event."""
    now = datetime.now(UTC)
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    request_id = base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("=")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": joined.get("host", "127.0.0.1"),
            "domainPrefix": joined.get("host", "127.0.0.1").split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if params:
        event["pathParameters"] = params
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Lambda answer (payload 2.0) -> status, headers, body."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return 200, [("content-type", "application/json")], json.dumps(result).encode()
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("set-cookie", c) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, raw


class Gateway:
    def __init__(self, routes: list[Route], aws_url: str, port: int, host: str = "127.0.0.1") -> None:
        self.routes = routes
        self._lambda = lambda_client(aws_url, read_timeout=60)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug(fmt, *args)

            def _serve(self) -> None:
                gateway.serve(self)

            def __getattr__(self, name: str) -> Any:
                # every method, known to http.server or not (TRACE, QUERY...), goes to the routes: an ANY route
                # takes it, as API Gateway's would, instead of http.server's 501
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None

    def serve(self, req: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        split = urlsplit(req.path)
        length = int(req.headers.get("content-length") or 0)
        body = req.rfile.read(length) if length else b""
        found = self.find(req.command, split.path)
        if found is None:
            status, headers, raw = 404, [("content-type", "application/json")], b'{"message":"Not Found"}'
        else:
            route, params = found
            event = build_event(
                route,
                params,
                req.command,
                split.path,
                split.query,
                list(req.headers.items()),
                body,
                req.client_address[0],
            )
            denied = self._authorize(route, event)
            status, headers, raw = denied if denied else self._call(route, event)
        req.send_response(status)
        sent = {k.lower() for k, _ in headers}
        for name, value in headers:
            req.send_header(name, value)
        if "content-type" not in sent:
            req.send_header("content-type", "application/json")
        req.send_header("content-length", str(len(raw)))
        req.send_header("apigw-requestid", uuid.uuid4().hex[:16])
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(raw)
        log.info("http %s %s -> %d (%.0f ms)", req.command, req.path, status, (time.monotonic() - started) * 1000)

    def _authorize(self, route: Route, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """Run the route's authorizer as API Gateway does: 401 when an identity source is missing (the authorizer
        is not called), 403 when it refuses, else its context in requestContext.authorizer.lambda."""
        authorizer = route.authorizer
        if authorizer is None:
            return None
        json_type = [("content-type", "application/json")]
        if any(not _identity(event, source) for source in authorizer.identity_source):
            return 401, json_type, b'{"message":"Unauthorized"}'
        request = {**{k: v for k, v in event.items() if k not in ("body", "isBase64Encoded", "version")},
                   "version": "2.0", "type": "REQUEST",
                   "routeArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT_ID}:{API_ID}/$default/"
                               f"{event['requestContext']['http']['method']}{event['rawPath']}",
                   "identitySource": [_identity(event, s) for s in authorizer.identity_source]}
        answer = self._lambda.invoke(FunctionName=authorizer.function_arn, Payload=json.dumps(request).encode())
        verdict = json.loads(answer["Payload"].read() or b"null")
        if "FunctionError" in answer or not isinstance(verdict, dict) or "isAuthorized" not in verdict:
            return 500, json_type, b'{"message":"Internal Server Error"}'
        if verdict["isAuthorized"] is not True:
            return 403, json_type, b'{"message":"Forbidden"}'
        event["requestContext"]["authorizer"] = {"lambda": verdict.get("context") or {}}
        return None

    def _call(self, route: Route, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        answer = self._lambda.invoke(FunctionName=route.function_arn, Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read() or b"null")
        if "FunctionError" in answer:
            return 500, [("content-type", "application/json")], b'{"message":"Internal Server Error"}'
        try:
            return http_response(payload)
        except (TypeError, ValueError):
            return 500, [("content-type", "application/json")], b'{"message":"Internal Server Error"}'
