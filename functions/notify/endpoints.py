"""The storefront's notification endpoint: set (URL, secret) and read back (URL only)."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field

from functions.payment.schemas import ApiModel
from functions.shared import clock
from functions.shared.errors import NotFound, RequestInvalid
from functions.shared.names import DEFAULT_CLIENT_ID, ENDPOINT_SECRET_PREFIX
from functions.shared.tables import NotificationEndpointsTable

MAX_URL_LENGTH = 2048
# Plain http only to this machine (`make run`, tests); everything else must be https.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class InvalidEndpointUrl(RequestInvalid):
    """The URL is not https (or http to this machine), has no host, or carries credentials or a fragment."""

    code = "invalid_url"


class EndpointRequest(ApiModel):
    """PUT /v1/notification_endpoint. Without `secret`: a new endpoint gets a generated one (answered once),
    an existing endpoint keeps its own. With `secret`: it becomes the signing secret (a rotation)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]
    secret: Annotated[str, Field(min_length=16, max_length=128, pattern=r"^[\x21-\x7e]+$")] | None = None


class EndpointView(ApiModel):
    client_id: str
    url: str
    created_at: str
    updated_at: str


class CreatedEndpointView(EndpointView):
    """The answer to the PUT that generated the secret: the only time it is shown."""

    secret: str


def validate_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as error:
        raise InvalidEndpointUrl(f"url: {error}", details=[{"field": "url", "code": "invalid_url"}]) from None
    problem = None
    if parts.scheme not in ("https", "http") or not host:
        problem = "must be an absolute https URL"
    elif parts.scheme == "http" and host not in LOCAL_HOSTS:
        problem = "must use https (plain http only to 127.0.0.1 or localhost)"
    elif parts.username or parts.password:
        problem = "must not carry credentials"
    elif parts.fragment:
        problem = "must not have a fragment"
    if problem:
        raise InvalidEndpointUrl(f"url {problem}", details=[{"field": "url", "code": "invalid_url",
                                                             "message": problem}])
    return url


def new_secret() -> str:
    return ENDPOINT_SECRET_PREFIX + secrets.token_hex(24)


def set_endpoint(request: EndpointRequest, client_id: str = DEFAULT_CLIENT_ID,
                 table: NotificationEndpointsTable | None = None) -> tuple[EndpointView | CreatedEndpointView, bool]:
    """Store the endpoint; returns it and whether it was created now. A generated secret is in the view once.

    Idempotent as a PUT: the same body again stores the same URL (and secret, when given). Two first PUTs without
    a secret racing: one creates the endpoint with its secret; the other sets the URL on it and answers no secret.
    """
    table = table or NotificationEndpointsTable.from_settings()
    url = validate_url(request.url)
    now = clock.iso()
    if request.secret is not None:
        item = table.replace(client_id, url, request.secret, now)
        return _view(item), item["created_at"] == now
    existing = table.set_url(client_id, url, now)
    if existing is not None:
        return _view(existing), False
    secret = new_secret()
    if table.create(client_id, url, secret, now):
        return CreatedEndpointView(client_id=client_id, url=url, secret=secret, created_at=now, updated_at=now), True
    item = table.set_url(client_id, url, now)
    assert item is not None, "an endpoint is never deleted"
    return _view(item), False


def get_endpoint(client_id: str = DEFAULT_CLIENT_ID, table: NotificationEndpointsTable | None = None) -> EndpointView:
    item = (table or NotificationEndpointsTable.from_settings()).get(client_id)
    if item is None:
        raise NotFound("no notification endpoint is set", code="notification_endpoint_not_found")
    return _view(item)


def _view(item: dict[str, str]) -> EndpointView:
    return EndpointView(client_id=item["client_id"], url=item["url"], created_at=item["created_at"],
                        updated_at=item["updated_at"])
