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


def load_script(name: str):
    """A module of scripts/ (not a package), registered so its dataclasses resolve their module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build_layer = load_script("build_layer")


class FakePip:
    """Stands in for `pip install --target T pins...`: for each pin writes its package and a .dist-info with a
    RECORD, plus a shared `typing_extensions` every resolution brings (or fails, or leaks an extra package)."""

    def __init__(self, fail: bool = False, extra_package: str | None = None, shared_version: str = "4.0"):
        self.calls: list[list[str]] = []
        self.fail = fail
        self.extra_package = extra_package
        self.shared_version = shared_version

    def __call__(self, command: list[str], check: bool) -> subprocess.CompletedProcess:
        self.calls.append(command)
        if "compileall" in command:
            return subprocess.CompletedProcess(command, 0)
        target = Path(command[command.index("--target") + 1])
        pins = [arg for arg in command if "==" in arg]
        for pin in pins:
            name, version = pin.split("==")
            _distribution(target, name.replace("-", "_"), version)
        _distribution(target, "typing_extensions", self.shared_version)
        if self.extra_package:
            (target / self.extra_package).mkdir()
        if self.fail:
            raise subprocess.CalledProcessError(1, command)
        return subprocess.CompletedProcess(command, 0)


def _distribution(target: Path, package: str, version: str) -> None:
    (target / package).mkdir(parents=True, exist_ok=True)
    (target / package / "__init__.py").write_text("")
    info = target / f"{package}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    files = [f"{package}/__init__.py", f"{info.name}/METADATA", f"{info.name}/RECORD", "../../bin/tool"]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


REAL_TARGET_INTERPRETER = build_layer.target_interpreter


@pytest.fixture(autouse=True)
def no_target_interpreter(monkeypatch):
    """No python3.13 for the builds of these tests, unless a test gives one."""
    monkeypatch.setattr(build_layer, "target_interpreter", lambda target: None)


@pytest.fixture
def fake_pip(monkeypatch) -> FakePip:
    pip = FakePip()
    monkeypatch.setattr(build_layer.subprocess, "run", pip)
    return pip


def _installed(out: Path) -> set[str]:
    return {p.name for p in (out / "python").iterdir()}


def test_pins_are_pyprojects_runtime_dependencies_without_boto3():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = build_layer.requirements()
    assert pins == sorted(d for d in deps if not d.startswith(("boto3", "botocore")))
    assert "aws-lambda-powertools==3.37.0" in pins and "pydantic==2.14.3" in pins and "stripe==16.1.0" in pins


def test_each_pin_is_in_exactly_one_layer():
    pins = build_layer.requirements()
    by_layer = {layer: build_layer.layer_pins(layer, pins) for layer in build_layer.LAYERS}
    assert sorted(p for layer in by_layer.values() for p in layer) == pins
    assert [p.split("==")[0] for p in by_layer["psp"]] == ["Adyen", "stripe"]
    assert [p.split("==")[0] for p in by_layer["recon"]] == ["numpy", "pyarrow"]


def test_a_pin_in_no_layer_stops_the_build():
    with pytest.raises(SystemExit, match="requests"):
        build_layer.layer_pins("base", ["pydantic==2.14.3", "requests==2.0"])


def test_a_loose_pin_is_refused(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["stripe>=16", "boto3==1.44.5"]\n')
    with pytest.raises(SystemExit, match="pinned"):
        build_layer.requirements(pyproject)


def test_pip_targets_arm64_cpython_313_wheels_of_amazon_linux_2023_only(tmp_path):
    command = build_layer.pip_command(tmp_path, ["stripe==16.1.0"])
    for flag, value in [("--target", str(tmp_path)), ("--implementation", "cp"), ("--python-version", "3.13")]:
        assert command[command.index(flag) + 1] == value
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    # glibc 2.34 on Amazon Linux 2023: every manylinux tag up to it, none above, and only aarch64.
    assert {"manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64",
            "manylinux_2_34_aarch64"} <= set(platforms)
    assert "manylinux_2_35_aarch64" not in platforms and all(p.endswith("_aarch64") for p in platforms)
    assert "--only-binary=:all:" in command and "--no-compile" in command
    assert command[-1] == "stripe==16.1.0"


def test_a_host_target_installs_for_the_running_interpreter(tmp_path):
    host = build_layer.Target(f"{sys.version_info.major}.{sys.version_info.minor}")
    command = build_layer.pip_command(tmp_path, ["stripe==16.1.0"], host)
    assert "--platform" not in command and "--python-version" not in command and "--no-compile" not in command


def test_build_installs_into_python_and_writes_the_stamp(tmp_path, fake_pip):
    out = tmp_path / "base"
    assert build_layer.build(out, "base") is True
    assert {"aws_lambda_powertools", "pydantic", "typing_extensions"} <= _installed(out)
    stamp = json.loads((out / ".stamp").read_text())
    assert stamp["layer"] == "base"
    assert stamp["requirements"] == build_layer.layer_pins("base", build_layer.requirements())
    assert not (tmp_path / "base.partial").exists()


def test_a_layer_holds_only_what_the_base_layer_does_not(tmp_path, fake_pip):
    out = tmp_path / "psp"
    build_layer.build(out, "psp")
    assert _installed(out) == {"Adyen", "Adyen-16.0.0.dist-info", "stripe", "stripe-16.1.0.dist-info"}
    # resolved together with the base pins, so shared dependencies take the base's versions
    assert any("pydantic==2.14.3" in call and "stripe==16.1.0" in call for call in fake_pip.calls)


def test_a_shared_dependency_at_another_version_than_the_base_is_refused(tmp_path, monkeypatch):
    pips = iter([FakePip(shared_version="4.0"), FakePip(shared_version="5.0")])
    monkeypatch.setattr(build_layer.subprocess, "run", lambda command, check: next(pips)(command, check))
    with pytest.raises(SystemExit, match="typing-extensions 5.0 here but 4.0"):
        build_layer.build(tmp_path / "psp", "psp")
    assert not (tmp_path / "psp").exists()


def test_an_up_to_date_layer_is_not_rebuilt_unless_forced(tmp_path, fake_pip):
    out = tmp_path / "base"
    build_layer.build(out, "base")
    assert build_layer.build(out, "base") is False
    assert len(fake_pip.calls) == 1
    assert build_layer.build(out, "base", force=True) is True
    assert len(fake_pip.calls) == 2


def test_a_changed_stripe_pin_rebuilds_the_psp_layer_only(tmp_path, fake_pip, monkeypatch):
    for layer in build_layer.LAYERS:
        build_layer.build(tmp_path / layer, layer)
    pins = [p.replace("stripe==16.1.0", "stripe==99.0.0") for p in build_layer.requirements()]
    monkeypatch.setattr(build_layer, "requirements", lambda: pins)
    rebuilt = [layer for layer in build_layer.LAYERS if build_layer.build(tmp_path / layer, layer)]
    assert rebuilt == ["psp"]
    assert "stripe==99.0.0" in fake_pip.calls[-1]


def test_a_changed_base_pin_rebuilds_every_layer(tmp_path, fake_pip, monkeypatch):
    for layer in build_layer.LAYERS:
        build_layer.build(tmp_path / layer, layer)
    pins = [p.replace("pydantic==2.14.3", "pydantic==9.0.0") for p in build_layer.requirements()]
    monkeypatch.setattr(build_layer, "requirements", lambda: pins)
    assert all(build_layer.build(tmp_path / layer, layer) for layer in build_layer.LAYERS)


def test_a_failed_install_keeps_the_previous_layer(tmp_path, fake_pip, monkeypatch):
    out = tmp_path / "base"
    build_layer.build(out, "base")
    previous = (out / ".stamp").read_text()
    monkeypatch.setattr(build_layer.subprocess, "run", FakePip(fail=True))
    with pytest.raises(subprocess.CalledProcessError):
        build_layer.build(out, "base", force=True)
    assert (out / ".stamp").read_text() == previous
    assert (out / "python" / "pydantic").is_dir()


def test_a_layer_that_would_shadow_the_runtime_boto3_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(build_layer.subprocess, "run", FakePip(extra_package="boto3"))
    with pytest.raises(SystemExit, match="boto3"):
        build_layer.build(tmp_path / "base", "base")
    assert not (tmp_path / "base").exists()


def test_the_layer_is_compiled_by_the_target_interpreter_when_there_is_one(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setattr(build_layer, "target_interpreter", lambda target: "/usr/bin/python3.13")
    build_layer.build(tmp_path / "base", "base")
    compile_command = fake_pip.calls[-1]
    assert compile_command[:3] == ["/usr/bin/python3.13", "-m", "compileall"]
    assert "unchecked-hash" in compile_command and compile_command[-1] == str(tmp_path / "base.partial" / "python")
    assert json.loads((tmp_path / "base" / ".stamp").read_text())["bytecode"] is True


def test_without_the_target_interpreter_the_layer_has_no_bytecode_and_says_so(tmp_path, fake_pip, monkeypatch,
                                                                              capsys):
    monkeypatch.setattr(build_layer, "target_interpreter", lambda target: None)
    build_layer.build(tmp_path / "base", "base")
    assert all("compileall" not in call for call in fake_pip.calls)
    assert "ships no bytecode" in capsys.readouterr().err
    # a python3.13 installed later makes the stamp differ: the layer is rebuilt with bytecode
    monkeypatch.setattr(build_layer, "target_interpreter", lambda target: "/usr/bin/python3.13")
    assert build_layer.build(tmp_path / "base", "base") is True


def test_an_interpreter_is_taken_only_when_it_runs_the_target_version(tmp_path, monkeypatch):
    monkeypatch.setattr(build_layer, "target_interpreter", REAL_TARGET_INTERPRETER)
    shim = tmp_path / "python3.13"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2; exit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("LAYER_PYTHON", str(shim))
    monkeypatch.setattr(build_layer.shutil, "which", lambda name: None)
    monkeypatch.setattr(build_layer.Path, "home", lambda: tmp_path)
    assert build_layer.target_interpreter(build_layer.LAMBDA) is None
    monkeypatch.setenv("LAYER_PYTHON", sys.executable)  # a real interpreter, of its own version
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert build_layer.target_interpreter(build_layer.Target(host, ("any",))) == sys.executable
    assert build_layer.target_interpreter(build_layer.Target(host)) is None  # a host build compiles itself


def test_main_builds_every_layer_and_clears_the_single_layer_of_before(tmp_path, fake_pip):
    (tmp_path / "python" / "stripe").mkdir(parents=True)
    (tmp_path / ".stamp").write_text("{}")
    assert build_layer.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(build_layer.LAYERS)


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
        "data += b'payment_metadata[checkout_id]\\ntxn_1,2026-01-30 10:11:12,usd,12.34,0.50,charge,pi_1,chk_1\\n'\n"
        "print(sum(len(block.lines) for block in stripe.stream(io.BytesIO(data))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(packages), str(REPO_ROOT)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "1"
