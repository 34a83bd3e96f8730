import pytest
from moto import mock_aws

from functions.shared import clock
from local import moto_patches
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
