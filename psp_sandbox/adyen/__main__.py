"""`python -m psp_sandbox.adyen --port 12112 [--host 127.0.0.1] [--seed N] [--notify-url URL]`"""

from __future__ import annotations

import argparse

from psp_sandbox.__main__ import serve_until_stopped

from .server import start_adyen_sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="psp_sandbox.adyen", description="Adyen-compatible PSP sandbox")
    parser.add_argument("--port", type=int, default=12112)
    parser.add_argument("--host", default="127.0.0.1", help="loopback only")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random fault draws")
    parser.add_argument("--notify-url", default="", help="where signed notifications are POSTed")
    args = parser.parse_args(argv)
    server = start_adyen_sandbox(args.port, args.host, seed=args.seed, notify_url=args.notify_url)
    print(f"adyen sandbox ready on {server.checkout_base} (seed={args.seed})", flush=True)
    serve_until_stopped(server)


if __name__ == "__main__":
    main()
