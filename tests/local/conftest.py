import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
for path in (str(REPO), str(HERE), str(HERE / "toy_code")):
    if path not in sys.path:
        sys.path.insert(0, path)

# Dummy credentials before anything builds a boto3 client: nothing here may reach real AWS.
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[key] = value
os.environ.pop("AWS_PROFILE", None)

import local_toy_stack as toy  # noqa: E402

from local.moto_server import free_port  # noqa: E402
from local.stack import LocalStack, Ports  # noqa: E402


@pytest.fixture(scope="module")
def toy_stack(tmp_path_factory):
    """The toy template deployed on free ports (so tests can run beside `make run`), without the PSP."""
    cdk_out = toy.write_cdk_out(tmp_path_factory.mktemp("toy") / "cdk.out")
    stack = LocalStack(
        cdk_out=cdk_out,
        stack_name=toy.STACK,
        ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
        code_root=toy.CODE_DIR,
        sandbox=None,
    )
    with stack:
        yield stack


@pytest.fixture
def calls():
    """The toy handlers' record of calls, emptied for each test."""
    import toy_handlers

    toy_handlers.CALLS.clear()
    return toy_handlers.CALLS
