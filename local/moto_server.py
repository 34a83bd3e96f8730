"""moto in server mode: the local AWS endpoint, in this process."""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from moto.core.config import default_user_config
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

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
    _server: BaseWSGIServer
    _thread: threading.Thread
    _saved_config: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        """Stop serving and put moto's process-wide config back (other tests may use mock_aws)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        _restore(self._saved_config)


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
    try:
        server = _bind(port)
    except BaseException:
        _restore(saved_config)
        raise
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    _wait_for_port(port)
    log.info("moto listening on http://%s:%d", HOST, port)
    return MotoServer(port=port, _server=server, _thread=thread, _saved_config=saved_config)


def _bind(port: int) -> BaseWSGIServer:
    """moto's WSGI server, bound here in the caller's thread.

    moto's ThreadedMotoServer binds inside its server thread: when the port is taken, werkzeug prints "Port
    ... is in use" and ends that thread with SystemExit, and start() waits forever for a ready signal. Binding
    here turns the same failure into an OSError the caller sees at once.
    """
    app = DomainDispatcherApplication(create_backend_app)
    try:
        return make_server(HOST, port, app, threaded=True, request_handler=MotoRequestHandler)
    except SystemExit as exit_:  # werkzeug's answer to EADDRINUSE, after printing its message
        raise OSError(f"port {port} (aws) on {HOST} is already in use") from exit_


def _restore(saved_config: dict[str, Any]) -> None:
    default_user_config.clear()
    default_user_config.update(saved_config)


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
