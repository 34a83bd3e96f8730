"""Local throughput: 1,000 orders through the local stack, and what bounds it.

`python benchmarks/local_throughput.py [--orders 1000] [--concurrency 1,4]` starts its own local stack on free
ports for each `function_concurrency` value, places about orders/2.5 checkouts through the API (8 client
threads, no replays), and waits until every order is final. It prints, per run: orders per second (first POST →
all orders final), p50/p99 latency of `POST /v1/payments`, and a sampling profile of the stack's threads that
splits busy time between moto (moto/, werkzeug/), the AWS SDK (botocore/, boto3/), the project's own code
(functions/, local/, psp_sandbox/), other libraries and the standard library. The last line is the faster run:
`orders_per_s=<n> p50_ms=<n> p99_ms=<n>`.

The profile samples every thread's stack every few milliseconds. A sample whose innermost frame is waiting (a
socket read, a lock, a queue, a selector) is idle and not counted; otherwise it goes to the innermost frame that
is not the standard library (urllib3 and requests count as their caller: botocore or stripe); one blocked on a
`with ...lock:` line is counted apart (moto's dispatcher serialises requests behind one). Threads of the
benchmark itself (the storefront client and the watcher) are counted apart as "load generator".
"""

from __future__ import annotations

import argparse
import json
import linecache
import logging
import math
import os
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local.lifecycle import run_stoppable  # noqa: E402
from local.moto_server import free_port  # noqa: E402
from local.stack import LocalStack, Ports  # noqa: E402
from verification.driver import place_all, watch_until_settled  # noqa: E402
from verification.storefront import ApiClient, make_checkouts  # noqa: E402

STDLIB = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
SITE = sysconfig.get_paths()["purelib"]
RESULT = "RESULT "
CATEGORIES = (
    ("moto", ("/moto/", "/werkzeug/")),
    ("botocore/boto3", ("/botocore/", "/boto3/", "/s3transfer/")),
    ("project", tuple(f"{REPO}/{d}/" for d in ("functions", "local", "psp_sandbox"))),
)
LOAD_GENERATOR = (f"{REPO}/verification/", f"{REPO}/benchmarks/")
TRANSPARENT = ("/urllib3/", "/requests/", "/http/", "/json/", "/email/")  # count as their caller
IDLE = {  # (file suffix, function) of frames that wait rather than work
    ("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("threading.py", "join"),
    ("selectors.py", "select"), ("socket.py", "readinto"), ("socket.py", "accept"), ("ssl.py", "read"),
    ("queue.py", "get"), ("socketserver.py", "serve_forever"), ("thread.py", "_worker"),
}


def category_of(filename: str) -> str | None:
    for name, markers in CATEGORIES:
        if any(m in filename for m in markers):
            return name
    if filename.startswith(SITE) and not any(m in filename for m in TRANSPARENT):
        return "other libraries"
    return None


@dataclass
class Sampler:
    """Samples every thread's stack (sys._current_frames) from a background thread."""

    interval_s: float = 0.01
    busy: Counter = field(default_factory=Counter)
    idle: int = 0
    lock_waits: Counter = field(default_factory=Counter)  # place -> samples blocked entering `with <lock>:`
    functions: Counter = field(default_factory=Counter)  # (category, innermost project-or-library function)
    libraries: Counter = field(default_factory=Counter)
    cost_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self._sample(frame)
            self.cost_s += time.perf_counter() - started

    def _sample(self, frame: Any) -> None:
        code = frame.f_code
        if (os.path.basename(code.co_filename), code.co_name) in IDLE:
            self.idle += 1
            return
        line = linecache.getline(code.co_filename, frame.f_lineno).strip()
        if line.startswith("with ") and "lock" in line.lower():
            # Blocked on a lock (acquiring is C code, so the frame is the `with` line): waiting, not working.
            self.lock_waits[f"{_short(code.co_filename)}:{code.co_name}"] += 1
            return
        found: str | None = None
        where = ""
        walk = frame
        while walk is not None:
            filename = walk.f_code.co_filename
            if filename.startswith(LOAD_GENERATOR):
                self.busy["load generator (and its sleeps)"] += 1
                return
            if found is None:
                found = category_of(filename)
                if found is not None:
                    where = f"{_short(filename)}:{walk.f_code.co_name}"
                    if found == "other libraries":
                        self.libraries[filename[len(SITE):].lstrip("/").split("/")[0]] += 1
            walk = walk.f_back
        found = found or "standard library / interpreter"
        self.busy[found] += 1
        self.functions[(found, where or f"{_short(code.co_filename)}:{code.co_name}")] += 1


def _short(filename: str) -> str:
    for prefix in (SITE + "/", str(REPO) + "/", *(p + "/" for p in STDLIB)):
        if filename.startswith(prefix):
            return filename[len(prefix):]
    return filename


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


@dataclass
class RunResult:
    concurrency: int | None
    orders: int
    seconds: float
    post_ms: list[float]
    cpu_s: float
    sampler: Sampler
    unsettled: dict[str, str]
    late: list[str]

    @property
    def orders_per_s(self) -> float:
        return self.orders / self.seconds


def stragglers(final_at: dict[str, float], statuses: dict[str, list[str]], slack_s: float = 10.0) -> list[str]:
    """Orders that became final well after 99% of them: the tail that decides orders/s on a small run."""
    if not final_at:
        return []
    p99 = percentile(list(final_at.values()), 99)
    return [f"{order_id} final at {t:.0f} s ({' -> '.join(statuses[order_id])})"
            for order_id, t in sorted(final_at.items(), key=lambda kv: kv[1]) if t > p99 + slack_s]


def one_run(orders: int, concurrency: int | None, seed: int, timeout_s: float, stall_s: float) -> RunResult:
    workload = make_checkouts(max(1, round(orders / 2.5)), seed=seed, decline_rate=0.1, prefix=f"bench{concurrency}")
    stack = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()), function_concurrency=concurrency,
                       extra_env={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"}).start()
    try:
        sampler = Sampler().start()
        cpu_before, started = time.process_time(), time.perf_counter()
        record = place_all(ApiClient(stack.api_url, stack.api_key), workload, seed=seed, replay_rate=0.0,
                           conflict_rate=0.0, read_after_write=False, threads=8)
        unsettled: dict[str, str] = {}
        progress = {"done": -1, "at": time.monotonic()}
        final_at: dict[str, float] = {}

        def on_tick(done: int, _total: int) -> None:
            now = time.perf_counter() - started
            for order_id, statuses in record.observed_statuses.items():
                if statuses[-1] in ("SUCCESS", "FAILED") and order_id not in final_at:
                    final_at[order_id] = now
            if done != progress["done"]:
                progress.update(done=done, at=time.monotonic())

        def on_idle() -> None:
            if time.monotonic() - progress["at"] > stall_s:
                raise TimeoutError(f"no order became final for {stall_s} s")

        try:
            watch_until_settled(stack, stack.outputs, record.accepted_order_ids, record, timeout_s=timeout_s,
                                interval_s=1.0, on_tick=on_tick, on_idle=on_idle,
                                is_settled=lambda o: o["payment_order_status"] in ("SUCCESS", "FAILED"))
        except TimeoutError:
            unsettled = {order_id: statuses[-1] for order_id, statuses in record.observed_statuses.items()
                         if statuses[-1] not in ("SUCCESS", "FAILED")}
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        sampler.stop()
        if record.rejected:
            print(f"  {len(record.rejected)} checkouts rejected: {record.rejected[:3]}")
        return RunResult(concurrency, len(record.accepted_order_ids), seconds, record.post_latencies_ms, cpu,
                         sampler, unsettled, stragglers(final_at, record.observed_statuses))
    finally:
        stack.stop()


def print_run(result: RunResult) -> None:
    s = result.sampler
    print(f"\nfunction_concurrency={result.concurrency}: {result.orders} orders final in {result.seconds:.1f} s "
          f"= {result.orders_per_s:.1f} orders/s; POST /v1/payments p50 {percentile(result.post_ms, 50):.0f} ms, "
          f"p99 {percentile(result.post_ms, 99):.0f} ms (n={len(result.post_ms)})")
    print(f"  process CPU {result.cpu_s:.1f} s over {result.seconds:.1f} s wall "
          f"({result.cpu_s / result.seconds:.0%} of one core; the GIL caps Python at about 100%)")
    for line in result.late:
        print(f"  late: {line}")
    if result.unsettled:
        print(f"  NOT SETTLED ({len(result.unsettled)}): " +
              ", ".join(f"{k}={v}" for k, v in sorted(result.unsettled.items())[:20]))
    total = sum(s.busy.values())
    system = total - s.busy["load generator (and its sleeps)"]
    print(f"  profile: {total} busy samples ({s.idle} idle thread-samples skipped; sampler cost "
          f"{s.cost_s / result.seconds:.1%} of wall)")
    for name, count in s.busy.most_common():
        share = f"{count / system:6.1%} of the stack" if not name.startswith("load generator") else " " * 19
        print(f"    {name:<32} {count:7d}  {count / total:6.1%} {share}")
    if s.lock_waits:
        print("    thread-samples blocked on a lock (not counted above): "
              + ", ".join(f"{k} {v}" for k, v in s.lock_waits.most_common(4)))
    if s.libraries:
        print("    other libraries: " + ", ".join(f"{k} {v}" for k, v in s.libraries.most_common(6)))
    print("  hottest places (innermost non-stdlib frame):")
    for (name, where), count in s.functions.most_common(12):
        print(f"    {count / total:6.1%}  {name:<16} {where}")


def run_in_child(args: argparse.Namespace, concurrency: str) -> dict[str, Any]:
    """One configuration per process: moto, the handlers' module state and cached clients are process-global."""
    command = [sys.executable, __file__, "--orders", str(args.orders), "--seed", str(args.seed), "--timeout",
               str(args.timeout), "--stall", str(args.stall), "--one", concurrency]
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    lines = child.stdout.splitlines()
    print("\n".join(line for line in lines if not line.startswith(RESULT)))
    found = [json.loads(line[len(RESULT):]) for line in lines if line.startswith(RESULT)]
    if not found:
        raise SystemExit(f"the run with function_concurrency={concurrency} failed (exit {child.returncode})")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,4",
                        help="function_concurrency values to compare ('none' = no limit)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--stall", type=float, default=150.0, help="give up when no order became final for this long")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    args = parser.parse_args(argv)

    if args.one is not None:
        logging.basicConfig(level=logging.WARNING)
        for noisy in ("local", "werkzeug", "moto", "psp_sandbox"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ.setdefault(key, value)
        concurrency = None if args.one.lower() == "none" else int(args.one)
        result = one_run(args.orders, concurrency, args.seed, args.timeout, args.stall)
        print_run(result)
        print(RESULT + json.dumps({"concurrency": args.one, "orders_per_s": result.orders_per_s,
                                   "p50_ms": percentile(result.post_ms, 50), "p99_ms": percentile(result.post_ms, 99),
                                   "unsettled": result.unsettled, "late": result.late}), flush=True)
        return 0

    results = [run_in_child(args, value.strip()) for value in args.concurrency.split(",")]
    best = max(results, key=lambda r: r["orders_per_s"])
    if len(results) > 1:
        print("\n" + ", ".join(f"function_concurrency={r['concurrency']}: {r['orders_per_s']:.1f} orders/s"
                               for r in results) + f" -> faster: function_concurrency={best['concurrency']}")
    for r in results:
        if r["late"]:
            print(f"function_concurrency={r['concurrency']}: {len(r['late'])} orders final long after the rest: "
                  + "; ".join(r["late"]))
        if r["unsettled"]:
            print(f"function_concurrency={r['concurrency']}: {len(r['unsettled'])} orders never settled: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(r["unsettled"].items())))
    print(f"orders_per_s={best['orders_per_s']:.1f} p50_ms={best['p50_ms']:.0f} p99_ms={best['p99_ms']:.0f}")
    return 1 if any(r["unsettled"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(run_stoppable(main))
