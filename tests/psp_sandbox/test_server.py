"""Form decoding, concurrency, the command line, loopback-only binding, the modules' import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import stripe

import psp_sandbox
from psp_sandbox.forms import decode_form
from psp_sandbox.server import start_sandbox, wait_until_ready

from .conftest import pay

ROOT = Path(__file__).resolve().parents[2]


def test_decode_nested_form():
    body = (
        "amount=2500&metadata[payment_order_id]=po_1&metadata[checkout_id]=co+1&payment_method_types[0]=card"
        "&payment_method_types[1]=link&automatic_payment_methods[enabled]=true&expand[]=latest_charge"
        "&expand[]=customer&metadata[empty]="
    )
    assert decode_form(body) == {
        "amount": "2500",
        "metadata": {"payment_order_id": "po_1", "checkout_id": "co 1", "empty": ""},
        "payment_method_types": ["card", "link"],
        "automatic_payment_methods": {"enabled": "true"},
        "expand": ["latest_charge", "customer"],
    }


def test_concurrent_requests_charge_once_per_key(make_client, sandbox):
    client = make_client(retries=4)
    keys = [f"po_{i % 4}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda key: pay(client, key=key), keys))

    by_key: dict[str, set[str]] = {}
    for key, pi in zip(keys, results, strict=True):
        by_key.setdefault(key, set()).add(pi.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert sorted(r["idempotency_key"] for r in sandbox.charges()) == ["po_0", "po_1", "po_2", "po_3"]
    assert sandbox.state.successful_charges_by("payment_order_id") == {
        k: [next(r["charge_id"] for r in sandbox.charges() if r["idempotency_key"] == k)] for k in by_key
    }


def test_command_line_prints_a_ready_line_and_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "psp_sandbox", "--port", "0", "--seed", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("psp_sandbox ready on http://127.0.0.1:")
        url = line.split()[3]
        wait_until_ready(url)
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": url})
        assert pay(client, key="po_cli").status == "succeeded"
    finally:
        process.terminate()
        process.wait(timeout=5)
    assert process.returncode == 0


def test_binds_to_loopback_only():
    with pytest.raises(ValueError):
        start_sandbox(port=0, host="0.0.0.0")


def test_the_sandbox_modules_import_each_other_without_a_cycle():
    package = Path(psp_sandbox.__file__).parent
    imports: dict[str, set[str]] = {}
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1]
        # `from .state import X` names the module; `from . import errors` names it among the imported names
        imports[source.stem] = {n.module for n in relative if n.module} | {
            alias.name for n in relative if not n.module for alias in n.names
        }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in imports.get(start, ()))

    assert "server" not in imports["admin"] and "admin" not in imports["sandbox"]
    assert [m for m in imports if reaches(m, m, set())] == []
