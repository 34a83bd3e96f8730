"""`python -m psp_sandbox --port 12111 [--host 127.0.0.1] [--seed N]`"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from .server import start_sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="psp_sandbox", description="Stripe-compatible PSP sandbox")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--host", default="127.0.0.1", help="loopback only")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fault draws")
    parser.add_argument("--log-requests", action="store_true")
    args = parser.parse_args(argv)
    server = start_sandbox(args.port, args.host, seed=args.seed, log_requests=args.log_requests)
    print(f"psp_sandbox ready on {server.url} (seed={args.seed})", flush=True)
    serve_until_stopped(server)


def serve_until_stopped(server: Any) -> None:
    """Until SIGTERM or Ctrl-C, then the server's stop (both sandboxes' `python -m`)."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
