"""Tenant isolation (issue 21): each storefront client's checkouts, orders, refunds and sellers are its own.

The storefront names its items with its own ids (external); we store them under internal ids:
- the default client's (`make run`, the data stored before keys existed): the external id itself;
- every other client's: `<client_id>~<external id>`.
No external id may hold `~` (schemas.Identifier and AccountId), so a default client's id never equals another
client's internal id, and two clients may use the same checkout_id or payment_order_id without clashing. An id
that does hold `~` (a path parameter has only a length limit) is prefixed even for the default client, so it can
name no item of any client: it answers 404 like any unknown id.

The API layer (functions/payment/api.py) scopes every id coming in and unscopes every id going out; the Notifier
finds an item's client from its internal id (`client_of`). Everything in between works on internal ids only.
"""

from __future__ import annotations

import re
from typing import Any

from functions.shared.names import DEFAULT_CLIENT_ID

SEPARATOR = "~"
CLIENT_ID_PATTERN = r"[A-Za-z0-9_-]{1,40}"
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
# The ids of the API's views that are the storefront's own (dispute ids, PSP ids are not: they are never scoped).
ID_FIELDS = frozenset({"payment_order_id", "checkout_id", "seller_account", "refund_id"})


class ForeignId(ValueError):
    """An id about to go out that is not the caller's client's: answering would leak another client's data."""


def is_valid_client_id(client_id: str) -> bool:
    return _CLIENT_ID.fullmatch(client_id) is not None


def check_client_id(client_id: str) -> str:
    if not is_valid_client_id(client_id):
        raise ValueError(f"a client id is 1 to 40 letters, digits, _ or -; got {client_id!r}")
    return client_id


def _prefix(client_id: str) -> str:
    return check_client_id(client_id) + SEPARATOR


def scoped(client_id: str, external_id: str) -> str:
    """The internal id of `client_id`'s `external_id`."""
    if client_id == DEFAULT_CLIENT_ID and SEPARATOR not in external_id:
        return external_id
    return _prefix(client_id) + external_id


def client_of(internal_id: str) -> str:
    """The client an internal id belongs to: its prefix, or the default client when it has none."""
    client_id, separator, _ = internal_id.partition(SEPARATOR)
    return client_id if separator and is_valid_client_id(client_id) else DEFAULT_CLIENT_ID


def _strip(client_id: str, text: str) -> str:
    """`text` with every internal prefix of `client_id` removed (a prefix starts the text or follows a character
    no client id has: `dp_1:shop_b~po_1` -> `dp_1:po_1`)."""
    return re.sub(rf"(?<![A-Za-z0-9_-]){re.escape(_prefix(client_id))}", "", text)


def unscoped(client_id: str, internal_id: str) -> str:
    """The external id `client_id` knows `internal_id` by (it may be a composite reference such as a dispute
    part's `<dispute>:<order>`). ForeignId when it is not `client_id`'s: never answer another client's id."""
    external = _strip(client_id, internal_id)
    if SEPARATOR in external or (client_id != DEFAULT_CLIENT_ID and external == internal_id):
        raise ForeignId(f"{internal_id!r} is not an id of client {client_id!r}")
    return external


def unscoped_text(client_id: str, text: str) -> str:
    """A message (an error's, a detail's) with `client_id`'s internal ids written as the client knows them."""
    return _strip(client_id, text)


def unscoped_tree(client_id: str, value: Any) -> Any:
    """A JSON-like value (a view's model_dump) with the value of every ID_FIELDS key unscoped, however nested."""
    if isinstance(value, dict):
        return {k: unscoped(client_id, v) if k in ID_FIELDS and isinstance(v, str)
                else unscoped_tree(client_id, v) for k, v in value.items()}
    if isinstance(value, list):
        return [unscoped_tree(client_id, v) for v in value]
    return value
