import pytest
from moto import mock_aws

from functions.shared import clock, psp
from functions.shared.config import reload_settings
from local import moto_patches
from psp_sandbox.server import start_sandbox
from tests.support.aws import create_resources


@pytest.fixture
def aws_env():
    """Fresh moto AWS with the tables and queues of docs/design.md; yields the environment the functions read.

    moto as the local stack runs it: its own TransactWriteItems loses concurrent writes (local/moto_patches.py),
    and some tests here send requests at once."""
    moto_patches.install()
    with mock_aws():
        env = create_resources()
        yield env
    clock.reset()


@pytest.fixture
def sandbox(aws_env, monkeypatch):
    server = start_sandbox(port=0)
    monkeypatch.setenv("PSP_API_BASE", server.url)
    monkeypatch.setenv("PSP_API_KEY", "sk_test_local")
    reload_settings()
    psp.reset_client()
    yield server
    server.stop()
    psp.reset_client()
