"""Each function gets the layers of what it imports, and with them fits Lambda's 250 MB unzipped.

Sizes are measured on the real layer folders (build/layer/<name>/python, built by `make synth` before any
`make test`) plus the function's code asset of the synthesized template.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from infra.constructs.functions import EXTRA_LAYERS, LAYER_METADATA, LAYERS
from tests.infra.conftest import REPO_ROOT
from tests.infra.test_build_layer import build_layer, load_script

function_sizes = load_script("function_sizes")
BUILT_LAYERS = REPO_ROOT / "build" / "layer"
# What the python3.13 runtime itself provides besides the standard library.
RUNTIME_PACKAGES = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}


@pytest.fixture(scope="module")
def built_layers() -> Path:
    missing = [name for name in LAYERS if not (BUILT_LAYERS / name / "python").is_dir()]
    if missing:
        pytest.fail(f"layers {missing} are not built: run `make synth` (scripts/build_layer.py) first")
    return BUILT_LAYERS


def _handlers_and_layers(synth) -> dict[str, list[str]]:
    resources = synth.resources
    return {
        fn["Properties"]["Handler"]: [resources[ref["Ref"]]["Metadata"][LAYER_METADATA]
                                      for ref in fn["Properties"]["Layers"]]
        for fn in synth.of_type("AWS::Lambda::Function").values()
    }


def test_the_infra_layers_are_the_built_layers():
    assert set(LAYERS) == set(build_layer.LAYERS)


def test_every_function_with_its_layers_fits_in_250_mb_unzipped(synth, built_layers):
    sizes = function_sizes.function_sizes(
        synth.template,
        lambda s3_key: synth.outdir / f"asset.{s3_key.removesuffix('.zip')}",
        lambda name, _s3_key: built_layers / name / "python",
    )
    print(function_sizes.table(sizes))
    assert len(sizes) == len(synth.of_type("AWS::Lambda::Function"))
    assert all(s.code_mb > 0 and s.layers_mb[LAYERS[0]] > 1 for s in sizes)  # measured, not stand-ins
    over = {s.handler: round(s.total_mb) for s in sizes if s.total_mb > function_sizes.LIMIT_MB}
    assert not over, f"over Lambda's 250 MB unzipped with their layers: {over}"


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(module: str, source: Path) -> set[str]:
    """Every module named by an import in `source`, lazy ones included (inside functions, or
    functions/shared/lazy.py's `deferred("name")`: the package must be there when they run); imports under
    `if TYPE_CHECKING:` are not run and are skipped."""
    found: set[str] = set()
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "deferred" and node.args:
            found.add(ast.literal_eval(node.args[0]))
        elif isinstance(node, ast.ImportFrom):
            anchor = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            base = ".".join(filter(None, [anchor, node.module]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source.read_text()))
    return found


def top_level_imports(handler_module: str) -> set[str]:
    """Top-level names of the modules outside functions/ that a handler module reaches through functions/."""
    seen: set[str] = set()
    todo, outside = [handler_module], set()
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):  # packages run their __init__
            source = _module_file(parent)
            if parent in seen or source is None:
                continue
            seen.add(parent)
            for name in _imported(parent, source):
                top = name.split(".")[0]
                todo.append(name) if top == "functions" else outside.add(top)
    return outside


def third_party_imports(handler_module: str) -> set[str]:
    return {n for n in top_level_imports(handler_module) if n not in sys.stdlib_module_names and n != "__future__"}


# PEP 594: gone from the standard library in 3.13, still there on the 3.11 the tests run on.
REMOVED_IN_313 = {"aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "mailcap", "msilib", "nis",
                  "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib", "lib2to3"}


def test_no_handler_imports_what_python_313_removed(synth):
    for handler in _handlers_and_layers(synth):
        assert not top_level_imports(handler.rpartition(".")[0]) & REMOVED_IN_313, handler


def test_the_import_walk_finds_the_sdks_behind_the_shared_modules():
    assert "stripe" in third_party_imports("functions.executor.handler")
    assert {"pyarrow", "numpy"} <= third_party_imports("functions.recon.handler")
    assert "stripe" not in third_party_imports("functions.payment.api")


def test_each_function_has_the_layers_of_the_packages_it_imports(synth, built_layers):
    provided = {name: {p.name.split(".")[0].removesuffix(".py") for p in (built_layers / name / "python").iterdir()}
                for name in LAYERS}
    for handler, layers in _handlers_and_layers(synth).items():
        imports = third_party_imports(handler.rpartition(".")[0])
        available = RUNTIME_PACKAGES.union(*(provided[layer] for layer in layers))
        assert imports <= available, f"{handler} imports {sorted(imports - available)} but has layers {layers}"
        needed = {layer for layer in layers if provided[layer] & imports}
        assert set(layers) - {LAYERS[0]} <= needed, f"{handler} has layers it never imports from: {layers}"


def test_extra_layers_name_existing_functions(synth):
    names_in_template = set(synth.of_type("AWS::Lambda::Function"))
    for function_name in EXTRA_LAYERS:
        assert any(lid.startswith(f"Functions{function_name}") for lid in names_in_template), function_name


def _assembly(tmp_path: Path, code_mb: int, layer_mb: int) -> Path:
    """A cloud assembly with one function and one layer whose files have the given sizes (sparse files)."""
    for asset, mb in (("code", code_mb), ("layer", layer_mb)):
        (tmp_path / f"asset.{asset}").mkdir()
        with open(tmp_path / f"asset.{asset}" / "blob", "wb") as blob:
            blob.truncate(mb * 2**20)
    template = {"Resources": {
        "Deps": {"Type": "AWS::Lambda::LayerVersion", "Metadata": {LAYER_METADATA: "base"},
                 "Properties": {"Content": {"S3Key": "layer.zip"}}},
        "Fn": {"Type": "AWS::Lambda::Function",
               "Properties": {"Handler": "functions.x.handler", "Code": {"S3Key": "code.zip"},
                              "Layers": [{"Ref": "Deps"}]}},
    }}  # fmt: skip
    (tmp_path / function_sizes.STACK_TEMPLATE).write_text(json.dumps(template))
    return tmp_path


def test_the_size_report_sums_code_and_layers_and_passes_at_the_limit(tmp_path, capsys):
    assert function_sizes.main([str(_assembly(tmp_path, 10, 240))]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "functions.x.handler" and row[-1] == "250.0"


def test_the_size_report_fails_a_function_over_250_mb(tmp_path, capsys):
    assert function_sizes.main([str(_assembly(tmp_path, 11, 240))]) == 1
    assert "functions.x.handler" in capsys.readouterr().err
