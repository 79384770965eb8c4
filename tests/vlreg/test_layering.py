"""Layers import downward only: every ``import`` in vlreg, function-level ones included, is checked.

The layers, from the bottom (a module may import its own layer and those below it):

==========  ==================================================================================
foundation  ``errors``, ``compat``: what every layer raises and the import guard
io          ``io/``: weight files, fingerprints, frozen-source records, run directories
core        the registry, configs and building, devices, collectives, recipes, the results table
components  ``models/``, ``data/`` (the synthetic world's files too), ``metrics/``: the registered parts
interop     ``interop/``: other code bases' checkpoints in and out
training    ``objectives/``, ``tasks/``: what a training step and an evaluation mean
runner      ``runner/``: the loop, checkpoints, the feature cache
pipeline    ``pipeline.py``: projects of stages
commands    ``cli.py``, ``run.py``, ``config_view.py``, every ``__main__.py`` and the package's facade
            (``vlreg/__init__.py``: ``vlreg.load_model``, ``vlreg.create``)
world       ``world/``: the synthetic world's stages, a client of the public API
bench       ``bench/``: the benchmark suites
==========  ==================================================================================

``from vlreg import register`` counts as an import of the module the facade takes the name
from (``vlreg.registry``). :data:`ALLOWED` lists the upward imports that are accepted, each
with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.common import ROOT

PACKAGE = ROOT / "vlreg"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("vlreg.errors", "vlreg.compat")),
    ("io", ("vlreg.io",)),
    ("core", ("vlreg.registry", "vlreg.builtins", "vlreg.config", "vlreg.build", "vlreg.yaml_marks",
              "vlreg.recipes", "vlreg.device", "vlreg.distributed", "vlreg.reporting")),
    ("components", ("vlreg.models", "vlreg.data", "vlreg.metrics")),
    ("interop", ("vlreg.interop",)),
    ("training", ("vlreg.objectives", "vlreg.tasks")),
    ("runner", ("vlreg.runner",)),
    ("pipeline", ("vlreg.pipeline",)),
    ("commands", ("vlreg", "vlreg.cli", "vlreg.run", "vlreg.__main__", "vlreg.config_view")),
    ("world", ("vlreg.world",)),
    ("bench", ("vlreg.bench",)),
]

ALLOWED: dict[tuple[str, str], str] = {}
"""``(importing module, imported module)``: an upward import that is accepted, and why."""


def layer_of(module: str) -> Optional[int]:
    """The index of a module's layer in :data:`LAYERS` (the longest matching prefix; the package itself,
    ``vlreg``, matches only itself; a package's ``__main__`` is a command, or of its package's layer where
    that is higher), or None."""
    if module.endswith(".__main__") and module != "vlreg.__main__":
        package = layer_of(module.rpartition(".")[0])
        return None if package is None else max(package, layer_of("vlreg.__main__"))
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and "." in prefix
            if (module == prefix or inside) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def _facade_names(root: Path) -> dict[str, str]:
    """``{name: module}`` for the names ``vlreg/__init__.py`` imports from its modules at its top level."""
    names = {}
    for node in ast.parse((root / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{root.name}.{node.module}"
    return names


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported vlreg module)`` for every import in a file, at any depth."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    facade = _facade_names(root)
    seen = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name:
                    seen.add((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != root.name:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if _is_module(submodule, root):
                    seen.add((node.lineno, submodule))
                elif source == root.name and alias.name in facade:
                    seen.add((node.lineno, facade[alias.name]))
                else:
                    seen.add((node.lineno, source))
    yield from sorted(seen)


def violations(root: Path = PACKAGE) -> list[str]:
    """Every upward import not in :data:`ALLOWED`, and every module no layer holds, one line each."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = layer_of(module)
        if own is None:
            found.append(f"{path.relative_to(root.parent)}: module {module} is in no layer; add it to LAYERS")
            continue
        for line, target in imports(path, root):
            theirs = layer_of(target)
            if theirs is not None and theirs > own and (module, target) not in ALLOWED:
                found.append(f"{path.relative_to(root.parent)}:{line}: {module} ({LAYERS[own][0]}) imports "
                             f"{target} ({LAYERS[theirs][0]})")
    return found


def test_layers_import_downward_only():
    found = violations()
    assert not found, "upward imports:\n" + "\n".join(found)


def test_every_allowed_import_still_exists():
    present = {(module_name(path, PACKAGE), target) for path in PACKAGE.rglob("*.py")
               for _, target in imports(path, PACKAGE)}
    assert set(ALLOWED) <= present, f"allowed but no longer imported: {sorted(set(ALLOWED) - present)}"


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "vlreg"
    for name, text in {"__init__.py": "from .registry import register\n", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("code, target, layer", [
    ("from ..runner.checkpoint import load\n", "vlreg.runner.checkpoint", "runner"),        # relative
    ("def read():\n    from vlreg.runner import checkpoint\n", "vlreg.runner.checkpoint", "runner"),  # in a function
    ("import vlreg.runner.checkpoint\n", "vlreg.runner.checkpoint", "runner"),
    ("from .. import load_model\n", "vlreg", "commands"),                                   # the facade's own
])
def test_an_upward_import_fails(tmp_path, code, target, layer):
    package = _package(tmp_path, {"io/__init__.py": "", "io/weights.py": code, "registry.py": "",
                                  "runner/__init__.py": "", "runner/checkpoint.py": "def load(): pass\n"})
    (package / "__init__.py").write_text("from .registry import register\n\ndef load_model(): pass\n")
    assert [line.split(": ", 1)[1] for line in violations(package)] == [
        f"vlreg.io.weights (io) imports {target} ({layer})"]


def test_a_downward_import_and_the_facade_pass(tmp_path):
    package = _package(tmp_path, {"io/__init__.py": "", "registry.py": "from .io import weights\n",
                                  "io/weights.py": "", "models/__init__.py": "from vlreg import register\n"})
    assert violations(package) == []


def test_a_module_in_no_layer_fails(tmp_path):
    package = _package(tmp_path, {"registry.py": "", "scratch.py": ""})
    assert violations(package) == ["vlreg/scratch.py: module vlreg.scratch is in no layer; add it to LAYERS"]
