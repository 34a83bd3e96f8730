"""benchmarks/cold_start.py reads the deployed handlers from the template; recon's cold start leaves Arrow out."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from functions.shared.lazy import deferred
from infra import names
from tests.infra.conftest import REPO_ROOT


def _benchmark():
    spec = importlib.util.spec_from_file_location("cold_start", REPO_ROOT / "benchmarks" / "cold_start.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cold_start"] = module
    spec.loader.exec_module(module)
    return module


cold_start = _benchmark()


def test_the_benchmark_takes_every_handler_of_the_template_with_its_layers(synth):
    functions = {f["handler"]: f for f in cold_start.functions_of(synth.template)}
    assert set(functions) == {f.handler for f in names.ALL_FUNCTIONS}
    # the authorizer runs before PaymentApi on every storefront request: its cold start is the API's too
    assert {h for h, f in functions.items() if f["api"]} == {names.PAYMENT_API.handler, names.WEBHOOK_RECEIVER.handler,
                                                             names.API_AUTHORIZER.handler}
    assert functions[names.RECON_FN.handler]["layers"] == ["base", "recon"]
    assert functions[names.EXECUTOR.handler]["layers"] == ["base", "psp"]
    assert all(isinstance(v, str) for f in functions.values() for v in f["env"].values())


def test_the_last_line_gives_the_worst_ratios_of_the_api_and_of_the_others():
    functions = [{"handler": "a.handler", "layers": ["base"], "api": True},
                 {"handler": "b.handler", "layers": ["base"], "api": False},
                 {"handler": "c.handler", "layers": ["base", "recon"], "api": False}]
    times = {"boto3": [0.1, 0.1, 0.3], "a.handler": [0.2, 0.1, 0.2], "b.handler": [0.15] * 3, "c.handler": [0.3] * 3}
    lines = cold_start.report(functions, times).splitlines()
    assert lines[-1] == "worst_ratio_api=2.00 worst_ratio_other=3.00"
    assert lines[-2].endswith("OVER") and not lines[-3].endswith("OVER")
    assert not any(line.startswith("floor") for line in lines)


def test_the_floor_row_gives_its_ratio_to_bare_boto3_and_counts_in_no_worst():
    functions = [{"handler": "a.handler", "layers": ["base"], "api": True}]
    times = {"boto3": [0.1] * 3, cold_start.FLOOR: [0.17] * 3, "a.handler": [0.2] * 3}
    lines = cold_start.report(functions, times).splitlines()
    (floor,) = [line for line in lines if line.startswith("floor")]
    assert floor.split()[-1] == "1.70"
    assert lines[-1] == "worst_ratio_api=2.00 worst_ratio_other=0.00"


def _modules_at_start(template, function, packages):
    """As the deployed function starts: its environment, nothing but the handler imported."""
    (found,) = [f for f in cold_start.functions_of(template) if f["handler"] == function.handler]
    module = function.handler.rpartition(".")[0]
    script = f"import sys, {module}\nprint(sorted({set(packages)!r} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=cold_start.lambda_env(found["env"]),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_recon_starts_without_arrow_and_numpy(synth):
    assert _modules_at_start(synth.template, names.RECON_FN, ["pyarrow", "numpy"]) == "[]"


@pytest.mark.parametrize("function", [names.WEBHOOK_PROCESSOR, names.EXECUTOR, names.REFUND_WORKER],
                         ids=lambda f: f.handler)
def test_functions_calling_stripe_import_its_sdk_at_the_first_call_not_at_start(synth, function):
    assert _modules_at_start(synth.template, function, ["stripe"]) == "[]"


def test_a_deferred_module_is_imported_on_first_use_and_then_read_directly():
    script = ("import sys\nfrom functions.shared.lazy import deferred\ncolorsys = deferred('colorsys')\n"
              "assert 'colorsys' not in sys.modules\nassert colorsys.rgb_to_hsv(1, 0, 0) == (0, 1, 1)\n"
              "assert 'colorsys' in sys.modules and 'rgb_to_hsv' in vars(colorsys)\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True)
    assert "json" in repr(deferred("json"))
