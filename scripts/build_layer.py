"""Build the Lambda layer of runtime dependencies into build/layer/python (arm64, CPython 3.11 wheels).

The pins are pyproject.toml's [project].dependencies, minus boto3/botocore (the Lambda runtime ships them).
A stamp file records what was built; when it matches, nothing is done (use --force to rebuild). The layer is
built in a temporary folder and moved into place only when complete, so an interrupted build leaves either the
previous layer or none, never half of one.

    python scripts/build_layer.py [--force] [--out build/layer]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "layer"
STAMP = ".stamp"  # the Makefile's target for the layer
# What the Lambda functions run on (infra/constructs/functions.py: PYTHON_3_11, ARM_64).
PLATFORM = "manylinux2014_aarch64"
PYTHON_VERSION = "3.11"
IMPLEMENTATION = "cp"
PROVIDED_BY_RUNTIME = {"boto3", "botocore"}
# What no function imports, removed after the install (pyarrow and numpy alone are ~200 MB): Arrow Flight and
# Parquet encryption (extensions nothing links against), C++ headers and Cython sources, the packages' own tests,
# and the two copies of libarrow_python the loader never asks for (it asks for its SONAME, `.so.2000`).
TRIM = (
    "pyarrow/include", "pyarrow/src", "pyarrow/tests", "pyarrow/*.pyx", "pyarrow/*.pxd", "pyarrow/*.pxi",
    "pyarrow/includes", "pyarrow/libarrow_flight.so*", "pyarrow/libarrow_python_flight.so*", "pyarrow/_flight.*",
    "pyarrow/flight.py", "pyarrow/libarrow_python_parquet_encryption.so*", "pyarrow/_parquet_encryption.*",
    "pyarrow/_dataset_parquet_encryption.*", "pyarrow/_pyarrow_cpp_tests.*", "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*", "numpy/*/tests", "numpy/tests", "numpy/f2py", "numpy/_core/include",
)
# Lambda's limit for a function and its layers together, unzipped, less room for the function's own code.
MAX_LAYER_MB = 240


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The runtime pins for the layer; every one must be exact (==) so a build is reproducible."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = sorted(d.strip() for d in deps if _name(d) not in PROVIDED_BY_RUNTIME)
    loose = [d for d in pins if "==" not in d]
    if loose:
        raise SystemExit(f"layer dependencies must be pinned with ==: {loose}")
    return pins


def pip_command(target: Path, pins: list[str]) -> list[str]:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--target", str(target),
        "--platform", PLATFORM,
        "--implementation", IMPLEMENTATION,
        "--python-version", PYTHON_VERSION,
        "--only-binary=:all:",
    ]  # fmt: skip
    if sys.version_info[:2] != (3, 11):
        # Bytecode compiled by another interpreter is useless to the 3.11 runtime (and /opt is read-only there).
        command.append("--no-compile")
    return command + pins


def trim(packages: Path) -> None:
    """Remove the TRIM paths from an installed folder of packages."""
    for pattern in TRIM:
        for path in packages.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def stamp_of(pins: list[str]) -> dict[str, object]:
    return {"requirements": pins, "trim": list(TRIM), "platform": PLATFORM, "python": PYTHON_VERSION,
            "implementation": IMPLEMENTATION}


def is_up_to_date(out: Path, stamp: dict[str, object]) -> bool:
    stamp_file = out / STAMP
    if not (out / "python").is_dir() or not stamp_file.is_file():
        return False
    try:
        return json.loads(stamp_file.read_text()) == stamp
    except ValueError:
        return False


def build(out: Path, force: bool = False) -> bool:
    """Build the layer into `out`; returns False when it was already up to date."""
    pins = requirements()
    stamp = stamp_of(pins)
    if not force and is_up_to_date(out, stamp):
        (out / STAMP).touch()  # newer than its inputs now, so make does not ask again
        return False
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "python").mkdir(parents=True)
    subprocess.run(pip_command(staging / "python", pins), check=True)
    leaked = sorted(p.name for p in (staging / "python").iterdir() if p.name in PROVIDED_BY_RUNTIME)
    if leaked:
        raise SystemExit(f"{leaked} came in as a dependency: the layer must not shadow the runtime's copy")
    trim(staging / "python")
    size_mb = sum(f.stat().st_size for f in (staging / "python").rglob("*") if f.is_file()) / 2**20
    if size_mb > MAX_LAYER_MB:
        raise SystemExit(f"the layer is {size_mb:.0f} MB unzipped; Lambda allows {MAX_LAYER_MB} MB for it")
    (staging / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="layer folder (default build/layer)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp says up to date")
    args = parser.parse_args(argv)
    built = build(args.out.resolve(), force=args.force)
    print(f"layer {'built' if built else 'up to date'}: {args.out}/python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
