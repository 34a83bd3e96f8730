"""Build the Lambda layers of runtime dependencies into build/layer/<name>/python (arm64, CPython 3.13 wheels).

Three layers, so that no function carries packages it never imports (docs/decisions.md, 2026-12-04):
`base` (every function), `psp` (the functions that import the PSP SDK) and `recon` (the columnar reader).
The pins are pyproject.toml's [project].dependencies, minus boto3/botocore (the Lambda runtime ships them); each
pin belongs to exactly one layer. A `psp` or `recon` layer holds only what the base layer does not already
provide (Lambda merges a function's layers into one /opt/python).

Each layer has a stamp recording what was built; when it matches, nothing is done (use --force to rebuild), so
a changed stripe pin rebuilds the psp layer only. A layer is built in a temporary folder and moved into place
only when complete, so an interrupted build leaves either the previous layer or none, never half of one.

    python scripts/build_layer.py [--layer base|psp|recon ...] [--force] [--out build/layer]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "layer"
STAMP = ".stamp"  # the Makefile's target for a layer
BASE = "base"
# Which pinned distribution goes into which layer; infra/constructs/functions.py gives each function the base
# layer plus the ones it imports from (tests/infra/test_layer_sizes.py checks that against the imports).
LAYERS: dict[str, tuple[str, ...]] = {
    BASE: ("aws-lambda-powertools", "pydantic"),
    "psp": ("stripe", "adyen"),
    "recon": ("numpy", "pyarrow"),
}
PROVIDED_BY_RUNTIME = {"boto3", "botocore"}
# What no function imports, removed after the install (pyarrow and numpy alone are ~200 MB): Arrow Flight and
# Parquet encryption (extensions nothing links against), C++ headers and Cython sources, the packages' own tests,
# the two copies of libarrow_python the loader never asks for (it asks for its SONAME, `.so.2000`), and the
# console scripts.
TRIM = (
    "pyarrow/include", "pyarrow/src", "pyarrow/tests", "pyarrow/*.pyx", "pyarrow/*.pxd", "pyarrow/*.pxi",
    "pyarrow/includes", "pyarrow/libarrow_flight.so*", "pyarrow/libarrow_python_flight.so*", "pyarrow/_flight.*",
    "pyarrow/flight.py", "pyarrow/libarrow_python_parquet_encryption.so*", "pyarrow/_parquet_encryption.*",
    "pyarrow/_dataset_parquet_encryption.*", "pyarrow/_pyarrow_cpp_tests.*", "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*", "numpy/*/tests", "numpy/tests", "numpy/f2py", "numpy/_core/include",
    "bin",
)
# Lambda's limit for a function and its layers together, unzipped (scripts/function_sizes.py checks the sum),
# less room for the function's own code.
MAX_LAYERS_MB = 240


@dataclass(frozen=True)
class Target:
    """The interpreter the wheels are for; no platforms = the running interpreter's own (benchmarks)."""

    python_version: str
    platforms: tuple[str, ...] = ()
    implementation: str = "cp"


# What the Lambda functions run on (infra/constructs/functions.py: PYTHON_3_13, ARM_64): Amazon Linux 2023,
# glibc 2.34, so any manylinux wheel from glibc 2.17 (manylinux2014) to 2.34. pip does not widen a
# manylinux_2_x tag by itself, so every one is listed.
LAMBDA = Target(
    "3.13",
    tuple(f"manylinux_2_{minor}_aarch64" for minor in range(34, 16, -1)) + ("manylinux2014_aarch64",),
)


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The runtime pins for the layers; every one must be exact (==) so a build is reproducible."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = sorted(d.strip() for d in deps if _name(d) not in PROVIDED_BY_RUNTIME)
    loose = [d for d in pins if "==" not in d]
    if loose:
        raise SystemExit(f"layer dependencies must be pinned with ==: {loose}")
    return pins


def layer_pins(layer: str, pins: list[str]) -> list[str]:
    """The pins of one layer; a pin that belongs to no layer (or to two) stops the build."""
    owners = {_name(p): [name for name, members in LAYERS.items() if _name(p) in members] for p in pins}
    unplaced = sorted(name for name, found in owners.items() if len(found) != 1)
    if unplaced:
        raise SystemExit(f"put each runtime dependency in exactly one of LAYERS: {unplaced}")
    return [p for p in pins if owners[_name(p)] == [layer]]


def pip_command(target_dir: Path, pins: list[str], target: Target = LAMBDA) -> list[str]:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(target_dir), "--only-binary=:all:",
    ]  # fmt: skip
    if target.platforms:
        for platform in target.platforms:
            command += ["--platform", platform]
        command += ["--implementation", target.implementation, "--python-version", target.python_version]
    if target.python_version != f"{sys.version_info.major}.{sys.version_info.minor}":
        # Bytecode compiled by another interpreter is useless to the runtime (and /opt is read-only there).
        command.append("--no-compile")
    return command + pins


def trim(packages: Path) -> None:
    """Remove the TRIM paths from an installed folder of packages."""
    for pattern in TRIM:
        for path in packages.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def target_interpreter(target: Target) -> str | None:
    """An interpreter of the target's version to compile the layer's bytecode with: $LAYER_PYTHON, python3.13 on
    PATH, or pyenv's (this machine's image has one); each is asked its version, as pyenv's shims exist for
    versions they do not run."""
    if not target.platforms:
        return None
    version = target.python_version
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in (os.environ.get("LAYER_PYTHON"), shutil.which(f"python{version}"), *map(str, pyenv)):
        if candidate and _version_of(candidate) == version:
            return candidate
    return None


def _version_of(interpreter: str) -> str | None:
    try:
        return subprocess.check_output([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                       text=True, stderr=subprocess.DEVNULL, timeout=30).strip()
    except (OSError, subprocess.SubprocessError):
        return None


def compile_bytecode(packages: Path, target: Target) -> bool:
    """Bytecode for the target interpreter, where one is on PATH. /opt is read-only on Lambda: without it every
    cold start compiles the layer's modules again (~285 ms more for the API's import, measured here). Hash-based
    and unchecked, so the files' times after unzipping do not matter."""
    interpreter = target_interpreter(target)
    if interpreter is None:
        return False
    subprocess.run([interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                    str(packages)], check=True)
    return True


def distributions(packages: Path) -> dict[str, importlib.metadata.Distribution]:
    found = importlib.metadata.distributions(path=[str(packages)])
    return {_name(d.metadata["Name"]): d for d in found}


def remove_provided(packages: Path, provided: dict[str, str]) -> None:
    """Remove from `packages` the distributions the base layer provides (name -> version), file by file as
    each RECORD lists them. A different version than the base's stops the build: two copies would meet in
    /opt/python."""
    for name, dist in distributions(packages).items():
        if name not in provided:
            continue
        if dist.version != provided[name]:
            raise SystemExit(f"{name} {dist.version} here but {provided[name]} in the base layer: pin it")
        for file in dist.files or ():
            path = (packages / file).resolve()
            if path.is_relative_to(packages.resolve()) and path.is_file():
                path.unlink()  # RECORD lists the .dist-info's own files too
    for folder in sorted((p for p in packages.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()


def stamp_of(layer: str, pins: list[str], target: Target) -> dict[str, object]:
    base = layer_pins(BASE, pins)
    return {"layer": layer, "requirements": layer_pins(layer, pins), "base": [] if layer == BASE else base,
            "trim": list(TRIM), "platforms": list(target.platforms), "python": target.python_version,
            "implementation": target.implementation, "bytecode": target_interpreter(target) is not None}


def is_up_to_date(out: Path, stamp: dict[str, object]) -> bool:
    stamp_file = out / STAMP
    if not (out / "python").is_dir() or not stamp_file.is_file():
        return False
    try:
        return json.loads(stamp_file.read_text()) == stamp
    except ValueError:
        return False


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def _install(staging: Path, layer: str, pins: list[str], target: Target) -> None:
    packages = staging / "python"
    packages.mkdir(parents=True)
    base = layer_pins(BASE, pins)
    if layer == BASE:
        subprocess.run(pip_command(packages, base, target), check=True)
    else:
        # Resolved together with the base pins, so shared dependencies get the base's versions; then the
        # base's distributions are taken out again.
        subprocess.run(pip_command(staging / "base", base, target), check=True)
        provided = {name: d.version for name, d in distributions(staging / "base").items()}
        subprocess.run(pip_command(packages, base + layer_pins(layer, pins), target), check=True)
        remove_provided(packages, provided)
        shutil.rmtree(staging / "base")
    leaked = sorted(p.name for p in packages.iterdir() if p.name in PROVIDED_BY_RUNTIME)
    if leaked:
        raise SystemExit(f"{leaked} came in as a dependency: the layer must not shadow the runtime's copy")
    trim(packages)
    if target.platforms and not compile_bytecode(packages, target):
        print(f"warning: no python{target.python_version} (LAYER_PYTHON, PATH, pyenv): the {layer} layer ships "
              "no bytecode, so Lambda compiles its modules at every cold start", file=sys.stderr)


def build(out: Path, layer: str = BASE, force: bool = False, target: Target = LAMBDA) -> bool:
    """Build one layer into `out` (its folder, holding python/); returns False when it was already up to date."""
    if layer not in LAYERS:
        raise SystemExit(f"no layer {layer!r}; the layers are {sorted(LAYERS)}")
    pins = requirements()
    stamp = stamp_of(layer, pins, target)
    if not force and is_up_to_date(out, stamp):
        (out / STAMP).touch()  # newer than its inputs now, so make does not ask again
        return False
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _install(staging, layer, pins, target)
    layer_mb = size_mb(staging / "python")
    if layer_mb > MAX_LAYERS_MB:
        raise SystemExit(f"the {layer} layer is {layer_mb:.0f} MB unzipped; Lambda allows {MAX_LAYERS_MB} MB")
    (staging / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the layers (default build/layer)")
    parser.add_argument("--layer", action="append", choices=sorted(LAYERS), help="only this layer (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp says up to date")
    args = parser.parse_args(argv)
    root = args.out.resolve()
    for stale in (root / "python", root / STAMP):  # the single layer of before 2026-12-04
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    for layer in args.layer or LAYERS:
        built = build(root / layer, layer, force=args.force)
        print(f"{layer} layer {'built' if built else 'up to date'}: {root / layer}/python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
