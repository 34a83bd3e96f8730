"""moto in server mode: the local AWS endpoint, in this process."""

from __future__ import annotations

import copy
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from moto.core.config import default_user_config
from moto.moto_api._internal.models import moto_api_backend
from moto.server import ThreadedMotoServer

from local import moto_patches

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
HOST = "127.0.0.1"

log = logging.getLogger("local.moto")

# Dummy credentials: nothing in this process may ever reach real AWS.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@dataclass
class MotoServer:
    port: int
    _server: ThreadedMotoServer
    _saved_config: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        """Stop serving and put moto's process-wide config back (other tests may use mock_aws)."""
        self._server.stop()
        default_user_config.clear()
        default_user_config.update(self._saved_config)


def start_moto(port: int) -> MotoServer:
    """Start moto on 127.0.0.1:port with Step Functions executing definitions.

    moto's Step Functions interpreter calls the other services at http://localhost:$MOTO_PORT, so MOTO_PORT
    must name this server's port. Backends are process-global: they are reset here, so each start is empty.
    """
    os.environ["MOTO_PORT"] = str(port)
    saved_config = copy.deepcopy(default_user_config)
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    # moto's Lambda must stay on its Docker path: lambda_runtime replaces that path with in-process dispatch.
    default_user_config["lambda"] = {**default_user_config.get("lambda", {}), "use_docker": True}
    moto_api_backend.reset()
    moto_patches.install()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    _wait_for_port(port)
    log.info("moto listening on http://%s:%d", HOST, port)
    return MotoServer(port=port, _server=server, _saved_config=saved_config)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
