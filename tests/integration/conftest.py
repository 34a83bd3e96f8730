import pytest
from moto import mock_aws

from functions.shared import clock
from tests.support.aws import create_resources


@pytest.fixture
def aws_env():
    """Fresh moto AWS with the tables and queues of docs/design.md; yields the environment the functions read."""
    with mock_aws():
        env = create_resources()
        yield env
    clock.reset()
