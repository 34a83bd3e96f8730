"""scripts/build_layer.py: the pins come from pyproject.toml, a stamp skips rebuilds, a failed build leaves
nothing half-made. pip itself is replaced by a fake (no network)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.infra.conftest import REPO_ROOT


def _load():
    spec = importlib.util.spec_from_file_location("build_layer", REPO_ROOT / "scripts" / "build_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_layer = _load()


class FakePip:
    """Stands in for `pip install --target T ...`: records the command, writes one package (or fails)."""

    def __init__(self, fail: bool = False, extra_package: str | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail
        self.extra_package = extra_package

    def __call__(self, command: list[str], check: bool) -> subprocess.CompletedProcess:
        self.calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "stripe").mkdir(parents=True)
        (target / "stripe" / "__init__.py").write_text("")
        if self.extra_package:
            (target / self.extra_package).mkdir()
        if self.fail:
            raise subprocess.CalledProcessError(1, command)
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def fake_pip(monkeypatch) -> FakePip:
    pip = FakePip()
    monkeypatch.setattr(build_layer.subprocess, "run", pip)
    return pip


def test_pins_are_pyprojects_runtime_dependencies_without_boto3():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = build_layer.requirements()
    assert pins == sorted(d for d in deps if not d.startswith(("boto3", "botocore")))
    assert "aws-lambda-powertools==3.37.0" in pins and "pydantic==2.14.3" in pins and "stripe==16.1.0" in pins


def test_a_loose_pin_is_refused(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["stripe>=16", "boto3==1.44.5"]\n')
    with pytest.raises(SystemExit, match="pinned"):
        build_layer.requirements(pyproject)


def test_pip_targets_arm64_cpython_311_wheels_only(tmp_path):
    command = build_layer.pip_command(tmp_path, ["stripe==16.1.0"])
    for flag, value in [
        ("--target", str(tmp_path)),
        ("--platform", "manylinux2014_aarch64"),
        ("--implementation", "cp"),
        ("--python-version", "3.11"),
    ]:
        assert command[command.index(flag) + 1] == value
    assert "--only-binary=:all:" in command
    assert command[-1] == "stripe==16.1.0"


def test_build_installs_into_python_and_writes_the_stamp(tmp_path, fake_pip):
    out = tmp_path / "layer"
    assert build_layer.build(out) is True
    assert (out / "python" / "stripe" / "__init__.py").is_file()
    stamp = json.loads((out / ".stamp").read_text())
    assert stamp["requirements"] == build_layer.requirements()
    assert not (tmp_path / "layer.partial").exists()


def test_an_up_to_date_layer_is_not_rebuilt_unless_forced(tmp_path, fake_pip):
    out = tmp_path / "layer"
    build_layer.build(out)
    assert build_layer.build(out) is False
    assert len(fake_pip.calls) == 1
    assert build_layer.build(out, force=True) is True
    assert len(fake_pip.calls) == 2


def test_a_changed_pin_triggers_a_rebuild(tmp_path, fake_pip, monkeypatch):
    out = tmp_path / "layer"
    build_layer.build(out)
    monkeypatch.setattr(build_layer, "requirements", lambda: ["stripe==99.0.0"])
    assert build_layer.build(out) is True
    assert fake_pip.calls[-1][-1] == "stripe==99.0.0"


def test_a_failed_install_keeps_the_previous_layer(tmp_path, fake_pip, monkeypatch):
    out = tmp_path / "layer"
    build_layer.build(out)
    previous = (out / ".stamp").read_text()
    monkeypatch.setattr(build_layer.subprocess, "run", FakePip(fail=True))
    with pytest.raises(subprocess.CalledProcessError):
        build_layer.build(out, force=True)
    assert (out / ".stamp").read_text() == previous
    assert (out / "python" / "stripe").is_dir()


def test_a_layer_that_would_shadow_the_runtime_boto3_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(build_layer.subprocess, "run", FakePip(extra_package="boto3"))
    with pytest.raises(SystemExit, match="boto3"):
        build_layer.build(tmp_path / "layer")
    assert not (tmp_path / "layer").exists()


def test_the_trimmed_pyarrow_and_numpy_still_read_a_stripe_report(tmp_path):
    """The trim removes only what no function imports: this machine's wheels (same layout as the arm64 ones),
    trimmed, run the columnar reader in a fresh interpreter that finds no other copy."""
    import numpy
    import pyarrow

    packages = tmp_path / "python"
    for package in (pyarrow, numpy):
        shutil.copytree(Path(package.__file__).parent, packages / package.__name__, symlinks=True)
    libs = Path(numpy.__file__).parent.parent / "numpy.libs"
    if libs.is_dir():
        shutil.copytree(libs, packages / "numpy.libs")
    build_layer.trim(packages)
    assert not list(packages.glob("pyarrow/*flight*")) and not (packages / "pyarrow" / "tests").exists()
    script = (
        "import sys, io; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2])\n"
        "import pyarrow, numpy\n"
        "assert pyarrow.__file__.startswith(sys.argv[1]) and numpy.__file__.startswith(sys.argv[1])\n"
        "from functions.recon.parsers import stripe\n"
        "data = b'balance_transaction_id,created_utc,currency,gross,fee,reporting_category,payment_intent_id,'\n"
        "data += b'payment_metadata[payment_order_id]\\ntxn_1,2026-01-30 10:11:12,usd,12.34,0.50,charge,pi_1,po_1\\n'\n"
        "print(sum(len(block.lines) for block in stripe.stream(io.BytesIO(data))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(packages), str(REPO_ROOT)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "1"
