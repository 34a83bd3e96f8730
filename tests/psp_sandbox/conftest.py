"""One sandbox server for the whole folder, wiped before each test; clients are the unmodified stripe SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import stripe

from psp_sandbox.server import SandboxServer, start_sandbox

API_KEY = "sk_test_sandbox"


@pytest.fixture(scope="session")
def _server() -> Iterator[SandboxServer]:
    server = start_sandbox(port=0)
    yield server
    server.stop()


@pytest.fixture
def sandbox(_server: SandboxServer) -> SandboxServer:
    _server.reset()
    return _server


ClientFactory = Callable[..., stripe.StripeClient]


@pytest.fixture
def make_client(sandbox: SandboxServer) -> ClientFactory:
    def make(api_key: str = API_KEY, *, retries: int = 0, timeout: float | None = None) -> stripe.StripeClient:
        http_client = stripe.RequestsClient(timeout=timeout) if timeout else None
        return stripe.StripeClient(
            api_key,
            base_addresses={"api": sandbox.url},
            max_network_retries=retries,
            http_client=http_client,
        )

    return make


@pytest.fixture
def client(make_client: ClientFactory) -> stripe.StripeClient:
    return make_client()


def pay(
    client: stripe.StripeClient,
    pm: str = "pm_card_visa",
    *,
    amount: int = 2500,
    currency: str = "usd",
    key: str | None = None,
    order: str | None = None,
    **extra: object,
) -> stripe.PaymentIntent:
    """Create and confirm a PaymentIntent the way the executor does."""
    params = {
        "amount": amount,
        "currency": currency,
        "payment_method": pm,
        "confirm": True,
        "payment_method_types": ["card"],
        "metadata": {"payment_order_id": order or key or "po_test", "checkout_id": "co_test"},
        **extra,
    }
    options = {"idempotency_key": key} if key else {}
    return client.v1.payment_intents.create(params=params, options=options)  # type: ignore[arg-type]
