"""benchmarks/cost_model.py prices what the synthesized template deploys: each function's memory, architecture and
log level are read from it, so a change there changes the figure (and nothing is a constant of the model)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.cost_model import Deployed, Run, components
from tests.infra.conftest import REPO_ROOT

RUN = Run(orders=100, checkouts=40, charges=50, api_requests=40,
          invocations={"PaymentApi": 40, "ApiAuthorizer": 40, "Executor": 50, "Wallet": 50, "Notifier": 100},
          seconds={"PaymentApi": 4.0, "ApiAuthorizer": 1.0, "Executor": 35.0, "Wallet": 5.0, "Notifier": 5.0},
          sqs_requests=300, express_executions=50, express_billed_seconds=60.0,
          table_write_units={"Charges": 300, "Wallet": 400}, index_write_units={"Charges": 350},
          read_units=200, stored_bytes={"PaymentOrders": 200_000})


def edited(synth, tmp_path, name, change):
    template = json.loads(synth.template_path.read_text())
    lid = synth.logical_id("AWS::Lambda::Function", f"Functions{name}")
    change(template["Resources"][lid]["Properties"])
    path = tmp_path / "MarketPay.template.json"
    path.write_text(json.dumps(template))
    return Deployed.read(path)


def total(deployed):
    return sum(components(RUN, deployed).values())


def test_the_template_is_read_as_deployed(synth):
    deployed = Deployed.read(synth.template_path)
    executor = deployed.functions["Executor"]
    props = synth.props(synth.logical_id("AWS::Lambda::Function", "FunctionsExecutor"))
    assert (executor.memory_mb, executor.architecture, executor.log_level) == (
        props["MemorySize"], props["Architectures"][0], props["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"])
    assert {"PaymentApi", "ApiAuthorizer", "Executor", "Notifier", "Deliverer", "WebhookReceiver"} <= set(
        deployed.functions)


def test_a_memory_size_changed_in_the_template_changes_the_figure(synth, tmp_path):
    before = total(Deployed.read(synth.template_path))
    after = total(edited(synth, tmp_path, "Executor", lambda p: p.update(MemorySize=p["MemorySize"] * 4)))
    executor_gb_s = RUN.seconds["Executor"] / 1024 * 3 * synth.props(
        synth.logical_id("AWS::Lambda::Function", "FunctionsExecutor"))["MemorySize"]
    assert round((after - before) / 1e6 * RUN.orders, 9) == round(executor_gb_s * 0.0000133334, 9)


def test_x86_and_a_chattier_log_level_cost_more(synth, tmp_path):
    before = total(Deployed.read(synth.template_path))
    assert total(edited(synth, tmp_path, "Executor", lambda p: p.update(Architectures=["x86_64"]))) > before
    debug = edited(synth, tmp_path, "Notifier",
                   lambda p: p["Environment"]["Variables"].update(POWERTOOLS_LOG_LEVEL="DEBUG"))
    assert components(RUN, debug)["cloudwatch_logs"] > components(RUN, Deployed.read(synth.template_path))[
        "cloudwatch_logs"]


def test_the_log_sample_rate_is_read_and_priced_as_debug_for_that_share(synth, tmp_path):
    deployed = Deployed.read(synth.template_path)
    executor = deployed.functions["Executor"]
    assert (executor.log_level, executor.log_sample_rate) == ("WARNING", 0.01)  # the order's path
    assert deployed.functions["Sweeper"].log_sample_rate == 0.0

    def logs(level, rate):
        def change(props):
            props["Environment"]["Variables"].update(POWERTOOLS_LOG_LEVEL=level, POWERTOOLS_LOGGER_SAMPLE_RATE=rate)
        return components(RUN, edited(synth, tmp_path, "Notifier", change))["cloudwatch_logs"]

    warning, sampled, always_debug, info = logs("WARNING", "0"), logs("WARNING", "0.01"), logs("WARNING", "1"), \
        logs("INFO", "0")
    # 100 Notifier invocations per 100 orders: 1% of them at DEBUG (2500 bytes) instead of WARNING (350)
    assert round((sampled - warning) / 1e6 * RUN.orders * 1e9 / 0.50, 3) == round(100 * 0.01 * (2500 - 350), 3)
    assert warning < sampled < info < always_debug


def test_the_table_and_last_line_of_a_saved_run(synth, tmp_path):
    path = tmp_path / "run.json"
    RUN.save(path)
    done = subprocess.run([sys.executable, "benchmarks/cost_model.py", "--run", str(path), "--template",
                           str(synth.template_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any("dynamodb_index_writes" in line for line in lines)
    assert any("storefront_polling" in line for line in lines)
    assert lines[-1] == f"cost_per_million_orders_usd={total(Deployed.read(synth.template_path)):.2f}"
