"""Cold start of every deployed handler, against a bare `import boto3` in the same run.

    python benchmarks/cold_start.py [--runs 7] [--template cdk.out/MarketPay.template.json]

Each handler of the template is imported in a fresh `python -I -S` whose sys.path is what Lambda gives the
function: its code (functions/), its layers in the template's order, the standard library, then a "runtime"
folder with boto3 and its dependencies only (as /var/runtime has them). Nothing else: no pandas, no dev tools.

The layers are the deployed ones (same pins, same split, same trim: scripts/build_layer.py) built for this
interpreter into build/cold-start/<layer>: the cp313 aarch64 wheels of build/layer cannot load on this
CPython 3.11 x86_64 machine, and the .venv's site-packages would let a handler import what its layers lack.

A first, uncounted round writes bytecode for the function code; then each round starts every handler and bare
boto3 once in turn, so the slow minutes of this shared machine fall on all of them alike. The time is the
import's, measured inside the process (interpreter start-up is the same for all). The ratio is the median of a
handler's runs over the median of boto3's. The last line reads `worst_ratio_api=<x> worst_ratio_other=<y>`.

A floor row is measured the same way: boto3, Powertools' Logger and Metrics and one pydantic model
(benchmarks/cold_start_floor.py), the least a handler that validates with pydantic at import can cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import build_layer  # noqa: E402

LAYERS_DIR = REPO_ROOT / "build" / "cold-start"
HOST = build_layer.Target(f"{sys.version_info.major}.{sys.version_info.minor}")
# What the Lambda Python runtime ships besides the standard library (boto3 and its dependencies).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
TARGET_API, TARGET_OTHER = 1.5, 2.5  # issue 14: times a bare `import boto3`
BARE = "boto3"
FLOOR = "cold_start_floor"  # boto3 + Powertools + one pydantic model (benchmarks/cold_start_floor.py)
CHILD = "import sys, time\nsys.path[:0] = {front!r}\nsys.path += {back!r}\n" \
        "start = time.process_time()\nimport {module}\nprint(time.process_time() - start)\n"


def runtime_folder() -> Path:
    """boto3 and its dependencies, linked from this interpreter's packages into a folder of their own."""
    import boto3

    site = Path(boto3.__file__).resolve().parent.parent
    folder = LAYERS_DIR / "runtime"
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        link = folder / name
        if not link.exists():
            link.symlink_to(site / name)
    return folder


def host_layers(names: set[str]) -> dict[str, Path]:
    """The deployed layers built for this interpreter (once: scripts/build_layer.py's stamps)."""
    for name in sorted(names):
        build_layer.build(LAYERS_DIR / name, name, target=HOST)
    return {name: LAYERS_DIR / name / "python" for name in names}


def stand_in(value: Any, key: str) -> str:
    """An environment value as the function would see it; deploy-time tokens become fixed stand-ins."""
    return value if isinstance(value, str) else f"stand-in-{key.lower()}"


def functions_of(template: dict[str, Any]) -> list[dict[str, Any]]:
    resources = template["Resources"]
    api = {p["Properties"]["FunctionName"]["Fn::GetAtt"][0] for p in resources.values()
           if p["Type"] == "AWS::Lambda::Permission" and p["Properties"].get("Principal") == "apigateway.amazonaws.com"}
    found = []
    for lid, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        layers = [resources[ref["Ref"]]["Metadata"]["MarketPayLayer"] for ref in props.get("Layers", [])]
        env = {k: stand_in(v, k) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        found.append({"handler": props["Handler"], "layers": layers, "env": env, "api": lid in api})
    return sorted(found, key=lambda f: f["handler"])


def import_seconds(module: str, front: list[str], back: list[str], env: dict[str, str]) -> float:
    script = CHILD.format(front=front, back=back, module=module)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"importing {module} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def lambda_env(function_env: dict[str, str]) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin"), "LANG": "C.UTF-8", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_NAME": "cold-start",
            "AWS_ACCESS_KEY_ID": "stand-in", "AWS_SECRET_ACCESS_KEY": "stand-in", **function_env}


def measure(functions: list[dict[str, Any]], runs: int) -> dict[str, list[float]]:
    layers = host_layers({name for f in functions for name in f["layers"]})
    back = [str(runtime_folder())]
    floor_front = [str(REPO_ROOT / "benchmarks"), str(layers["base"])] if "base" in layers else None
    cases = [(BARE, BARE, [], lambda_env({}))] + ([(FLOOR, FLOOR, floor_front, lambda_env({}))] if floor_front else [])
    cases += [
        (f["handler"], f["handler"].rpartition(".")[0],
         [str(REPO_ROOT)] + [str(layers[name]) for name in f["layers"]], lambda_env(f["env"]))
        for f in functions
    ]
    times: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for round_ in range(runs + 1):
        for name, module, front, env in cases:
            seconds = import_seconds(module, front, back, env)
            if round_:  # round 0 writes the function code's bytecode, as any later run finds it
                times[name].append(seconds)
    return times


def report(functions: list[dict[str, Any]], times: dict[str, list[float]]) -> str:
    bare_ms = statistics.median(times[BARE]) * 1000
    lines = [f"{'handler':<40} {'layers':<12} {'median ms':>9} {'min-max ms':>13} {'x boto3':>7} {'target':>6}",
             f"{'import boto3 (bare)':<40} {'-':<12} {bare_ms:>9.0f} {_spread(times[BARE]):>13} {1:>7.2f}"]
    if times.get(FLOOR):
        ms = statistics.median(times[FLOOR]) * 1000
        lines.append(f"{'floor: boto3+Powertools+1 pydantic model':<40} {'base':<12} {ms:>9.0f} "
                     f"{_spread(times[FLOOR]):>13} {ms / bare_ms:>7.2f}")
    worst = {True: 0.0, False: 0.0}
    for f in functions:
        ms = statistics.median(times[f["handler"]]) * 1000
        ratio, target = ms / bare_ms, TARGET_API if f["api"] else TARGET_OTHER
        worst[f["api"]] = max(worst[f["api"]], ratio)
        flag = "" if ratio <= target else "  OVER"
        lines.append(f"{f['handler']:<40} {'+'.join(f['layers']):<12} {ms:>9.0f} {_spread(times[f['handler']]):>13} "
                     f"{ratio:>7.2f} {target:>6.1f}{flag}")
    lines.append(f"worst_ratio_api={worst[True]:.2f} worst_ratio_other={worst[False]:.2f}")
    return "\n".join(lines)


def _spread(samples: list[float]) -> str:
    return f"{min(samples) * 1000:.0f}-{max(samples) * 1000:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="counted runs per handler (default 7)")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "cdk.out" / "MarketPay.template.json")
    args = parser.parse_args(argv)
    if not args.template.is_file():
        raise SystemExit(f"{args.template} is missing: run `make synth` first")
    functions = functions_of(json.loads(args.template.read_text()))
    print(report(functions, measure(functions, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
