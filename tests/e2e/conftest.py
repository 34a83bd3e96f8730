"""End-to-end tests: the synthesized template on the local stack, started by the test session on free ports."""

import logging
from pathlib import Path

import pytest

from local.moto_server import free_port
from local.stack import LocalStack, Ports
from verification.storefront import ApiClient

TEMPLATE = Path(__file__).resolve().parents[2] / "cdk.out" / "MarketPay.template.json"
pytestmark = pytest.mark.xdist_group("e2e")


def start_stack(log_level: str = "WARNING", **options) -> LocalStack:
    if not TEMPLATE.exists():
        pytest.fail("cdk.out is missing: run `make synth` (make test does it first)")
    for noisy in ("local.lambda", "local.gateway", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port(), adyen=free_port()),
                      extra_env={"POWERTOOLS_LOG_LEVEL": log_level}, **options).start()


def running_stack(**options):
    """A module's stack: started with `options`, stopped after, and every AWS call its functions made was granted
    by the calling function's role."""
    running = start_stack(**options)
    yield running
    ungranted = running.ungranted_calls()
    running.stop()
    assert not ungranted, f"AWS calls the calling function's role does not grant: {ungranted}"


@pytest.fixture(scope="module")
def stack():
    yield from running_stack()


@pytest.fixture(scope="module")
def api(stack):
    return ApiClient(stack.api_url, stack.api_key)
