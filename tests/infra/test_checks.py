"""The synthesized app passes cfn-lint and cdk-nag, packages only functions/, and honours its settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import names
from infra.constructs.functions import LAYER_METADATA, LAYERS
from tests.infra.conftest import REPO_ROOT, run_app

# One synthesis per xdist worker: keep every test that reads it on the same worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("infra-synth")


def cfn_lint() -> list[str]:
    found = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    assert found, "cfn-lint is a dev dependency (pyproject.toml)"
    return [found]


def test_cfn_lint_reports_nothing(synth):
    done = subprocess.run(
        [*cfn_lint(), "--format", "json", "--", str(synth.template_path)], capture_output=True, text=True
    )
    findings = json.loads(done.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=1)
    # Not even warnings (the one CDK-made warning, W3005, is switched off in the template's metadata), so a
    # plain `cfn-lint cdk.out/MarketPay.template.json` exits 0.
    assert findings == [] and done.returncode == 0, done.stdout + done.stderr


def test_cdk_nag_ran_and_every_finding_is_acknowledged_with_a_reason(synth):
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    acknowledged = nag["suppressedViolations"]
    assert acknowledged, "cdk-nag reports nothing at all: is the plugin still registered?"
    for finding in acknowledged:
        assert len(finding["reason"]) > 40, finding["ruleName"]
        # issue 21: a reason that holds only outside production is not a reason
        assert not re.search(r"non-production|not fixed yet|until (it|we)|for now", finding["reason"], re.I), finding
    assert "AwsSolutions-APIG4" not in {f["ruleName"] for f in acknowledged if "webhooks" not in f["reason"]}
    assert "AwsSolutions" not in synth.output  # nothing printed as an unacknowledged error or warning


def _asset_dir(synth, s3_key: str) -> Path:
    """The staged asset folder of an S3Key (`<asset hash>.zip`) in the cloud assembly."""
    return synth.outdir / f"asset.{s3_key.removesuffix('.zip')}"


def test_the_code_asset_holds_only_the_functions_package(synth):
    code_keys = {r["Properties"]["Code"]["S3Key"] for r in synth.of_type("AWS::Lambda::Function").values()}
    assert len(code_keys) == 1, "one code asset shared by every function"
    asset = _asset_dir(synth, code_keys.pop())
    assert sorted(p.name for p in asset.iterdir()) == ["functions"]
    assert not list(asset.rglob("__pycache__")) and not list(asset.rglob("*.pyc"))
    assert (asset / "functions" / "shared" / "money.py").is_file()


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_handler_string_names_a_module_and_function_in_the_asset(synth, function):
    code_keys = {r["Properties"]["Code"]["S3Key"] for r in synth.of_type("AWS::Lambda::Function").values()}
    asset = _asset_dir(synth, code_keys.pop())
    module, _, attribute = function.handler.rpartition(".")
    source = asset / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"{function.handler}: no {source.relative_to(asset)}"
    assert f"def {attribute}(" in source.read_text()


@pytest.mark.parametrize("name", LAYERS)
def test_each_layer_asset_is_its_layer_folder(synth, stand_in_layer, name):
    (layer,) = [r for r in synth.of_type("AWS::Lambda::LayerVersion").values()
                if r["Metadata"][LAYER_METADATA] == name]
    asset = _asset_dir(synth, layer["Properties"]["Content"]["S3Key"])
    assert (asset / "python" / "README").read_text() == (stand_in_layer / name / "python" / "README").read_text()
    assert not (asset / ".stamp").exists()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_cdk_json_runs_the_same_app_with_the_same_defaults():
    config = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert config["app"].endswith("python infra/app.py")
    assert config["context"][names.CTX_PSP_KEY_PARAMETER] == names.DEFAULT_PSP_KEY_PARAMETER
    assert config["context"][names.CTX_DESTROY] is False


def test_missing_layer_folder_stops_synthesis_with_a_hint(tmp_path):
    done = run_app(tmp_path / "out", tmp_path / "no-layer")
    assert done.returncode != 0
    assert "scripts/build_layer.py" in done.stderr


def test_context_switches_to_a_dev_stack_and_another_psp_key(tmp_path, stand_in_layer):
    """`-c destroy=true -c psp_api_key_parameter=...`: data goes with the stack, the Executor reads the other key."""
    done = run_app(tmp_path, stand_in_layer, {names.CTX_DESTROY: "true", names.CTX_PSP_KEY_PARAMETER: "/dev/psp-key"})
    assert done.returncode == 0, done.stderr
    resources = json.loads((tmp_path / "MarketPay.template.json").read_text())["Resources"]
    stateful = [r for r in resources.values() if r["Type"] in {"AWS::DynamoDB::Table", "AWS::S3::Bucket"}]
    # fifteen tables (webhooks, notifications, refunds, disputes: one each; API keys and their rate counters; the
    # PSPs' circuit breakers), the bucket, its log bucket
    assert len(stateful) == 17
    assert {r["DeletionPolicy"] for r in stateful} == {"Delete"}
    (executor,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == names.EXECUTOR.handler
    ]
    assert executor["Properties"]["Environment"]["Variables"]["PSP_API_KEY_PARAMETER"] == "/dev/psp-key"
    granted = json.dumps([r for r in resources.values() if r["Type"] == "AWS::IAM::Policy"])
    assert "parameter/dev/psp-key" in granted and "marketpay/stripe/secret-key" not in granted


EUR_CARDS_TO_ADYEN = {"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]}


def test_context_routes_eur_cards_to_adyen_and_only_the_executor_and_refund_worker_read_its_key(tmp_path,
                                                                                                stand_in_layer):
    """`-c psp_routing=... -c adyen_merchant_account=... -c adyen_api_key_parameter=...`: the API routes with the
    rules, the Executor charges and the Refund worker refunds that account with that key, and no other function
    may read the key."""
    done = run_app(tmp_path, stand_in_layer, {names.CTX_PSP_ROUTING: json.dumps(EUR_CARDS_TO_ADYEN),
                                              names.CTX_ADYEN_MERCHANT_ACCOUNT: "MarketPayECOM",
                                              names.CTX_ADYEN_KEY_PARAMETER: "/prod/adyen-key"})
    assert done.returncode == 0, done.stderr
    resources = json.loads((tmp_path / "MarketPay.template.json").read_text())["Resources"]
    env = {r["Properties"]["Handler"]: r["Properties"]["Environment"]["Variables"]
           for r in resources.values() if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]}
    api, executor, worker = (env[names.PAYMENT_API.handler], env[names.EXECUTOR.handler],
                             env[names.REFUND_WORKER.handler])
    assert json.loads(api["PSP_ROUTING"]) == EUR_CARDS_TO_ADYEN
    assert (api["ADYEN_MERCHANT_ACCOUNT"], api["ADYEN_API_KEY_PARAMETER"]) == ("MarketPayECOM", "/prod/adyen-key")
    assert (executor["ADYEN_MERCHANT_ACCOUNT"], executor["ADYEN_API_KEY_PARAMETER"]) == ("MarketPayECOM",
                                                                                          "/prod/adyen-key")
    assert (worker["ADYEN_MERCHANT_ACCOUNT"], worker["ADYEN_API_KEY_PARAMETER"]) == ("MarketPayECOM", "/prod/adyen-key")
    assert executor["PSP_API_KEY_PARAMETER"] == "/marketpay/stripe/secret-key"  # Stripe's key as before
    assert [h for h, variables in env.items() if "PSP_ROUTING" in variables] == [names.PAYMENT_API.handler]
    readers = [lid for lid, r in resources.items() if r["Type"] == "AWS::IAM::Policy"
               and "parameter/prod/adyen-key" in json.dumps(r)]
    assert len(readers) == 2, readers
    assert {r.split("Role")[0] for r in readers} == {f"{names.FUNCTIONS}{names.EXECUTOR.name}",
                                                     f"{names.FUNCTIONS}{names.REFUND_WORKER.name}"}, readers


@pytest.mark.parametrize(("context", "refusal"), [
    ({names.CTX_PSP_ROUTING: json.dumps(EUR_CARDS_TO_ADYEN)}, "ADYEN_MERCHANT_ACCOUNT"),  # no account to charge
    ({names.CTX_PSP_ROUTING: "{rules"}, "not JSON"),
    ({names.CTX_PSP_ROUTING: json.dumps({"default": "adyen"})}, "adyen"),  # Adyen takes cards only
    ({names.CTX_ADYEN_ENVIRONMENT: "live"}, "ADYEN_LIVE_PREFIX"),
    ({names.CTX_ADYEN_ENVIRONMENT: "prod"}, "'test' or 'live'"),
    ({names.CTX_ADYEN_KEY_PARAMETER: "adyen-key"}, "SSM parameter path"),
    ({names.CTX_ADYEN_HMAC_KEY_PARAMETER: "hmac-key"}, "adyen_hmac_key_parameter must be an SSM parameter path"),
    ({names.CTX_PSP_ROUTING: json.dumps({"rules": [{"name": "s", "psp": "stripe", "sellers": ["a" * 40] * 60}]})},
     "at most"),
])
def test_psp_context_that_would_stop_a_cold_start_stops_the_synthesis(context, refusal):
    """Checked by the functions' own settings model before any construct is built (infra/psp_context.py), so a
    deploy never carries settings that stop every function given them, Stripe's charges included."""
    from infra.psp_context import PspContextError, from_context

    with pytest.raises(PspContextError, match=refusal):
        from_context(context.get)


def test_default_psp_context_routes_nothing_to_adyen():
    from infra.psp_context import PspSettings, from_context

    assert from_context({}.get) == PspSettings(routing="", adyen_key_parameter="/marketpay/adyen/api-key",
                                               adyen_merchant_account="", adyen_environment="test")
