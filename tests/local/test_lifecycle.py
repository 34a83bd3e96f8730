"""`python -m local` as a user runs it: stopped by a signal at any moment, or refused a taken port, it ends fast.

Each case starts the real command in a subprocess on free ports and checks that it exits within 10 s and
leaves no port bound. Stopping politely used to deadlock (a signal handler setting the Event the main thread was
waiting on) and a taken port used to hang start-up forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.lifecycle import PortTaken, check_ports_free, port_holder
from local.moto_server import free_port, start_moto

REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_WITHIN_S = 10.0
READY_WITHIN_S = 60.0
TRIES = 9


class Local:
    """One `python -m local` process on free ports, its output collected by a reader thread."""

    running: list[Local] = []  # killed after each test (`no_stack_left`), so a test failing early leaves none

    def __init__(self, *options: str, **ports: int) -> None:
        self.ports = {"aws": free_port(), "api": free_port(), "psp": free_port(), **ports}
        args = [f"--{name}-port={port}" for name, port in self.ports.items()] + list(options)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local", *args, "--log-level", "WARNING"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        Local.running.append(self)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, False), daemon=True).start()

    def _read(self, stream, lines: list[str], watch_ready: bool) -> None:
        for line in stream:
            lines.append(line)
            if watch_ready and line.startswith("READY "):
                self.ready.set()

    def wait_handling_signals(self) -> None:
        """Until the process catches SIGTERM (/proc's SigCgt mask): before that, Python itself is still starting
        and the default action (death by the signal) applies, as to any program."""
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
            if caught & (1 << (signal.SIGTERM - 1)):
                return
            time.sleep(0.005)
        pytest.fail("the process never handled SIGTERM")

    def wait_ready(self) -> None:
        assert self.ready.wait(READY_WITHIN_S), f"no READY line: {''.join(self.stderr)[-2000:]}"

    @property
    def api_key(self) -> str:
        """The development key the READY line prints (`api_key=mk_test_...`)."""
        (ready,) = [line for line in self.stdout if line.startswith("READY ")]
        return dict(part.split("=", 1) for part in ready.split()[1:])["api_key"]

    def exit_code(self, within_s: float = EXIT_WITHIN_S) -> int:
        try:
            return self.proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running {within_s:.0f} s after the signal; stderr: {''.join(self.stderr)[-2000:]}")

    def assert_ports_released(self) -> None:
        check_ports_free(self.ports)


@pytest.fixture(autouse=True)
def no_stack_left() -> Iterator[None]:
    """A stack the test did not stop (it failed before) is killed, not left serving after the test run."""
    yield
    while Local.running:
        local = Local.running.pop()
        if local.proc.poll() is None:
            local.proc.kill()
            local.proc.wait()


def _load(api_port: int, api_key: str, stop: threading.Event) -> None:
    """Checkouts and reads against the API until told to stop (answers do not matter here)."""
    n = 0
    while not stop.is_set():
        n += 1
        body = {"buyer_info": {"buyer_id": "b"}, "checkout_id": f"chk_load_{n}",
                "credit_card_info": {"payment_method": "pm_card_visa"},
                "payment_orders": [{"seller_account": "s", "amount": "1.00", "currency": "USD",
                                    "payment_order_id": f"po_load_{n}"}]}
        request = urllib.request.Request(f"http://127.0.0.1:{api_port}/v1/payments", json.dumps(body).encode(),
                                         {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=2).read()


@pytest.mark.slow
@pytest.mark.parametrize("try_number", range(TRIES))
def test_sigterm_at_any_moment_stops_within_10_s(try_number: int) -> None:
    # Given the stack starting, ready, or ready and under load (one in three each, at a seeded moment)
    moment = ("start-up", "ready", "load")[try_number % 3]
    local = Local()
    stop_load = threading.Event()
    if moment == "start-up":
        local.wait_handling_signals()
        time.sleep(random.Random(try_number).uniform(0.0, 3.0))
    else:
        local.wait_ready()
    if moment == "load":
        threading.Thread(target=_load, args=(local.ports["api"], local.api_key, stop_load), daemon=True).start()
        time.sleep(random.Random(try_number).uniform(0.2, 1.5))
    # When SIGTERM arrives
    local.proc.send_signal(signal.SIGTERM)
    try:
        code = local.exit_code()
    finally:
        stop_load.set()
    # Then it ended cleanly, in time, and gave every port back
    assert code == 0, "".join(local.stderr)[-2000:]
    local.assert_ports_released()


def test_a_routing_naming_adyen_starts_the_adyen_sandbox_and_prints_its_url() -> None:
    routing = json.dumps({"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]})
    local = Local("--psp-routing", routing, adyen=free_port())
    local.wait_ready()
    adyen = f"http://127.0.0.1:{local.ports['adyen']}"
    (ready,) = [line for line in local.stdout if line.startswith("READY ")]
    assert f"adyen={adyen}" in ready.split()
    assert any(line.startswith(f"Adyen sandbox: Checkout API {adyen}/v71") for line in local.stdout)
    assert any(line.startswith("PSP routing: {") for line in local.stdout)
    with urllib.request.urlopen(f"{adyen}/_sandbox/health", timeout=5) as answer:  # noqa: S310 - loopback
        assert json.loads(answer.read()) == {"ok": True}
    local.proc.send_signal(signal.SIGTERM)
    assert local.exit_code() == 0
    local.assert_ports_released()


def test_without_a_routing_naming_adyen_no_adyen_sandbox_runs() -> None:
    local = Local(adyen=free_port())
    local.wait_ready()
    (ready,) = [line for line in local.stdout if line.startswith("READY ")]
    assert "adyen=off" in ready.split()
    local.proc.send_signal(signal.SIGTERM)
    assert local.exit_code() == 0


def test_an_unreadable_routing_exits_2_before_anything_starts() -> None:
    local = Local("--psp-routing", "{rules")
    assert local.exit_code() == 2
    assert "--psp-routing: PSP_ROUTING is not JSON" in "".join(local.stderr)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_sigint_and_sighup_stop_like_sigterm(signum: int) -> None:
    local = Local()
    local.wait_ready()
    local.proc.send_signal(signum)
    assert local.exit_code() == 0
    assert any("stopped" in line for line in local.stdout)
    local.assert_ports_released()


@pytest.mark.parametrize("taken", ["aws", "api", "psp"])
def test_a_taken_port_exits_1_at_once_naming_port_holder_and_flags(taken: str) -> None:
    # Given another program listening on one of the ports
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # When the stack is started on it
        started = time.monotonic()
        local = Local(**{taken: port})
        code = local.exit_code()
        # Then it exits 1 within 10 s, saying which port, who holds it and how to choose another
        assert code == 1
        assert time.monotonic() - started < EXIT_WITHIN_S
        message = "".join(local.stderr)
        assert f"port {port} ({taken})" in message
        assert f"pid {os.getpid()}" in message
        assert "--aws-port" in message and "--api-port" in message and "--psp-port" in message
        assert not local.stdout or not any(line.startswith("READY") for line in local.stdout)
    # And it left none of its other ports bound
    check_ports_free({name: p for name, p in local.ports.items() if name != taken})


def test_moto_on_a_port_taken_after_the_check_raises_instead_of_hanging() -> None:
    # The race the pre-check cannot see: the port is taken between the check and the bind.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        outcome: list[BaseException | None] = []

        def start() -> None:
            try:
                start_moto(port).stop()
                outcome.append(None)
            except BaseException as error:  # noqa: BLE001 - the test wants whatever came out
                outcome.append(error)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(timeout=EXIT_WITHIN_S)
        assert not thread.is_alive(), "start_moto hung on a taken port"
        assert isinstance(outcome[0], OSError) and f"port {port}" in str(outcome[0])


def test_check_ports_free_names_the_holder_of_a_taken_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_holder(port) is not None and port_holder(port).startswith(f"pid {os.getpid()} ")
        with pytest.raises(PortTaken, match=f"port {port} \\(api\\).*pid {os.getpid()}.*--api-port"):
            check_ports_free({"api": port}, flags="--api-port")
    check_ports_free({"api": port})  # released: free again


def catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (its `SigCgt` mask in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["verification.chaos", "--seed", "1", "--orders", "400"],
                                     ["verification.demo", "--orders", "400"]])
def test_chaos_and_demo_stop_within_10_s_on_sigterm(command: list[str]) -> None:
    # Given a chaos run or a demo with its own stack, started and placing orders
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    # its stop handlers are installed once its imports are done, which takes longer on a busy machine: from then on
    # (the kernel says it catches SIGTERM), 12 s into its run as before
    deadline = started + 120
    while not catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(max(0.0, 12 - (time.monotonic() - started)))
    assert proc.poll() is None and catches_sigterm(proc.pid), proc.stderr.read()[-2000:]
    # When SIGTERM arrives, then it stops its stack and exits within 10 s, reporting the signal in its exit code
    assert terminated(proc) == 128 + signal.SIGTERM, proc.stderr.read()[-2000:]


def terminated(proc: subprocess.Popen) -> int:
    """SIGTERM to a command's process; its exit code, which must come within 10 s (killed and failed if not)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running 10 s after SIGTERM")


# Commands whose exit would hang after a stop: a worker thread blocked on the stack just stopped (the interpreter's
# exit joins it), and an object whose freeing sleeps (a chaos run freeing gigabytes of moto state took minutes, with
# one thread left: daemon threads, the stop watchdog among them, no longer run then). A stop ends the process at
# once, keeping what it printed.
HANGING_EXITS = {
    "blocked worker": """
from concurrent.futures import ThreadPoolExecutor
ThreadPoolExecutor(1).submit(threading.Event().wait)
""",
    "slow to free": """
class SlowToFree:
    def __del__(self):
        time.sleep(60)
state = SlowToFree()
"""}
STOPPABLE = """
import sys, threading, time
from local.lifecycle import run_stoppable
{setup}
def main():
    sys.stdout.write("written, not flushed")
    print("READY", file=sys.stderr, flush=True)
    threading.Event().wait()

sys.exit(run_stoppable(main))
"""


@pytest.mark.parametrize("setup", HANGING_EXITS.values(), ids=HANGING_EXITS.keys())
def test_a_stop_ends_the_process_at_once_whatever_its_exit_would_wait_for(setup: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE.format(setup=setup)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().strip() == "READY"
    assert terminated(proc) == 128 + signal.SIGTERM
    assert proc.stdout.read() == "written, not flushed"
    assert "SIGTERM: stopped" in proc.stderr.read()
