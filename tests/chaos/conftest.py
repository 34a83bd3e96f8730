import pytest


@pytest.fixture
def sandbox():
    """A Stripe-compatible sandbox on a free port, without faults."""
    from psp_sandbox.server import start_sandbox

    server = start_sandbox(port=0)
    yield server
    server.stop()
