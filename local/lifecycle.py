"""Starting and stopping a local stack from the command line: free ports first, and signals that cannot deadlock.

A signal handler runs in the main thread between two bytecodes, possibly while that thread holds a lock (the
old handler called `Event.set()` while the main thread was inside `Event.wait()` on the same Event, and hung).
So the handler here takes no lock and touches no shared object: it raises `StopRequested` into the main thread,
whose `finally` stops the stack, and arms a watchdog that ends the process if stopping itself hangs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 8.0  # a stop that takes longer than this ends the process anyway (tests allow 10 s)


class StopRequested(BaseException):  # noqa: N818 - like KeyboardInterrupt: not an error, and no `except Exception` eats it
    """A stop signal arrived; raised in the main thread wherever it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PortTaken(OSError):
    """A port the stack needs is already bound by another socket."""


@contextlib.contextmanager
def stop_on_signals(grace_s: float = STOP_GRACE_S) -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise StopRequested once; the handlers are restored after.

    Later signals are ignored so that they cannot interrupt the clean-up. A watchdog thread exits the process
    with 128+signum if it is still running (cleaning up, or exiting) `grace_s` seconds after the first signal. It
    hears the signal through the interpreter's wakeup fd, which the C-level handler writes in whichever thread the
    kernel chose, so it fires even when the main thread never gets to run the Python handler.
    """
    state: dict[str, int] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        # No lock here, not even one inside threading (starting a thread takes one): only a dict write.
        if state:
            return
        state["signum"] = signum
        raise StopRequested(signum)

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=_watchdog, args=(reader, grace_s), name="stop-watchdog", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)
        if not state:  # after a stop the watchdog stays armed: the interpreter's exit joins worker threads (a
            # thread pool's), and one blocked on the stack just stopped would otherwise hold the process for ever
            with contextlib.suppress(OSError):
                writer.send(bytes([_DONE]))


_DONE = 0  # not a signal number: the block ended, the watchdog can go


def _watchdog(reader: socket.socket, grace_s: float) -> None:
    """Started before any signal: waits for the first stop signal's byte, then gives the clean-up `grace_s`."""
    while True:
        received = reader.recv(64)
        if not received or _DONE in received:
            return
        stops = [signum for signum in received if signum in STOP_SIGNALS]
        if stops:
            break
    time.sleep(grace_s)
    print(f"stopping took longer than {grace_s:.0f} s: exiting now", file=sys.stderr, flush=True)
    os._exit(128 + stops[0])


def run_stoppable(main: Callable[[], int | None]) -> int:
    """Run a command's main (one that starts a local stack) so that a stop signal unwinds it through its own
    `finally` blocks, which stop the stack; the process then ends at once with 128 + the signal's number, as a
    shell reports. At once: the interpreter's own exit would join worker threads (one may be blocked on the stack
    just stopped) and free the whole heap, minutes for a chaos run's gigabytes of moto state."""
    with stop_on_signals():
        try:
            return main() or 0
        except StopRequested as stop:
            print(f"{stop}: stopped", file=sys.stderr, flush=True)
            _exit_now(128 + stop.signum)


def _exit_now(code: int) -> NoReturn:
    """End the process with `code` after flushing what it printed and logged, skipping the interpreter's exit."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def sleep_until_signalled() -> None:
    """Block the main thread until a stop signal raises StopRequested.

    Short sleeps, not signal.pause(): the kernel may deliver the signal to another thread, and then pause() in
    the main thread never returns; a sleep returns and the interpreter runs the pending handler within 0.2 s.
    """
    while True:
        time.sleep(0.2)


# --- ports -----------------------------------------------------------------------------------------------


def check_ports_free(ports: Mapping[str, int], host: str = "127.0.0.1", flags: str = "") -> None:
    """Raise PortTaken naming the first taken port, who holds it (when /proc tells) and how to choose another.

    The check binds as the servers do (SO_REUSEADDR), so a port left in TIME_WAIT by a stopped stack counts
    as free, exactly as it would for the servers themselves.
    """
    for name, port in ports.items():
        if port and not _bindable(host, port):
            holder = port_holder(port)
            held = f" by {holder}" if holder else " by another program"
            hint = f"; choose another with {flags}" if flags else ""
            raise PortTaken(f"port {port} ({name}) on {host} is already in use{held}{hint}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """'pid 1234 (python -m local)' for the process listening on `port`, or None when the system won't tell."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return f"pid {pid_dir.name} ({_command_line(pid_dir)})"
        except OSError:  # the process ended, or it is not ours to read
            continue
    return None


def _listening_inodes(port: int, proc: Path) -> set[str]:
    listen = "0A"  # TCP_LISTEN in /proc/net/tcp
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == listen and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _command_line(pid_dir: Path) -> str:
    try:
        words = (pid_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words if w)[:120] or "?"
