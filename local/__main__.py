"""`python -m local` (make run): the deployed topology on this machine until Ctrl-C, SIGTERM or SIGHUP."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# Only the standard library and local.lifecycle before the stop signals are handled: the stack's imports (boto3,
# moto, the handlers) take a second or two, and a signal in that time must stop the start-up cleanly too.
from local.lifecycle import StopRequested, sleep_until_signalled, stop_on_signals

REPO_ROOT = Path(__file__).resolve().parent.parent

PORT_FLAGS = "--api-port, --aws-port and --psp-port"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--cdk-out", type=Path, default=Path(os.environ.get("CDK_OUTDIR", REPO_ROOT / "cdk.out")))
    parser.add_argument("--stack", default="MarketPay")
    parser.add_argument("--aws-port", type=int, default=5000)
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--psp-port", type=int, default=12111)
    parser.add_argument(
        "--schedule-interval",
        type=float,
        default=None,
        help="seconds between scheduled invocations (default: the template's rate)",
    )
    parser.add_argument("--no-sandbox", action="store_true", help="do not start the PSP sandbox")
    parser.add_argument(
        "--notify-url",
        default=os.environ.get("MARKETPAY_NOTIFY_URL"),
        help="the storefront endpoint status changes are POSTed to (env MARKETPAY_NOTIFY_URL)",
    )
    parser.add_argument(
        "--notify-secret",
        default=os.environ.get("MARKETPAY_NOTIFY_SECRET"),
        help="its signing secret (env MARKETPAY_NOTIFY_SECRET; default: generated and printed)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-5s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    template = args.cdk_out / f"{args.stack}.template.json"
    if not template.exists():
        print(f"{template} not found: synthesize first (python infra/app.py)", file=sys.stderr)
        return 2

    with stop_on_signals():
        try:
            from local.stack import LocalStack, Ports, default_sandbox

            stack = LocalStack(
                cdk_out=args.cdk_out,
                stack_name=args.stack,
                ports=Ports(aws=args.aws_port, api=args.api_port, psp=args.psp_port),
                sandbox=None if args.no_sandbox else default_sandbox,
                schedule_interval=args.schedule_interval,
            )
            return _serve(stack, args)
        except StopRequested as stop:
            print(f"{stop}: stopped", flush=True)
            return 0


def _serve(stack: Any, args: argparse.Namespace) -> int:
    """Start (a signal during start-up stops what was started), print the endpoints, sleep until signalled."""
    started = time.monotonic()
    try:
        stack.start()
    except OSError as exc:
        print(f"cannot start the local stack: {exc}; choose other ports with {PORT_FLAGS}", file=sys.stderr)
        return 1
    try:
        print(f"local stack {args.stack} from {args.cdk_out} (state is in memory: gone when this stops)")
        for name, url in stack.endpoints().items():
            print(f"  {name:4} {url}")
        print("stack outputs:")
        for key, value in sorted(stack.outputs.items()):
            print(f"  {key} = {value}")
        if args.notify_url:
            import urllib.error

            try:
                endpoint = stack.set_notification_endpoint(args.notify_url, args.notify_secret)
            except urllib.error.HTTPError as refused:
                print(f"--notify-url refused: {refused.read().decode()}", file=sys.stderr)
                return 2
            secret = endpoint.get("secret") or "(the one given)"
            print(f"notifications to {endpoint['url']}, signed with {secret}")
        print(f"started in {time.monotonic() - started:.2f} s")
        print(stack.ready_line(), flush=True)
        sleep_until_signalled()
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
