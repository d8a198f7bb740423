"""Import-layer rules (docs/architecture.md): the dependency direction between the packages,
and the board side pulling in nothing but NumPy.

The direction is checked statically over every import statement of every module, lazy imports
inside functions included; the run-time checks run in a fresh interpreter so modules imported
by other tests do not leak in.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("amaranth", "cocotb", "cocotb_tools", "cocotbext", "torch", "transformers", "pynq",
         "safetensors", "tokenizers", "ml_dtypes")

# Layer of each folder (the longest matching package prefix wins) and what each layer may
# import (besides itself). "root" is the tellme package: the dispatcher, CliError, progress.
FOLDERS = {"tellme": "root", "spec": "spec", "quant": "quant", "sim/golden": "golden",
           "sim": "sim", "hw": "hw", "host": "host", "studies": "studies"}
PACKAGES = {"tellme": "root", "tellme.spec": "spec", "tellme.quant": "quant",
            "tellme.sim.golden": "golden", "tellme.sim": "sim", "tellme.hw": "hw",
            "tellme.host": "host", "tellme.studies": "studies"}
ALLOWED = {
    "root": {"root"},
    "spec": set(),
    "quant": {"root", "spec"},
    "golden": {"root", "spec", "quant"},
    "hw": {"root", "spec", "quant"},
    "sim": {"root", "spec", "quant", "golden", "hw"},
    "host": {"root", "spec", "quant", "golden"},
    "studies": {"root", "spec", "quant", "golden", "hw", "sim", "host"},
}

# Modules that must run on the board image (Python 3.10, NumPy 1.x, nothing else).
NUMPY_ONLY = [
    "tellme.spec.codes", "tellme.spec.tiling", "tellme.spec.config", "tellme.spec.models",
    "tellme.spec.numerics", "tellme.spec.tlmm", "tellme.spec.attention", "tellme.spec.kv_layout",
    "tellme.spec.targets", "tellme.spec.registers", "tellme.spec.memory_map", "tellme.spec.program",
    "tellme.spec.shell", "tellme.spec.device", "tellme.quant.model", "tellme.quant.format",
    "tellme.sim.golden",
    "tellme.progress", "tellme.host.device", "tellme.host.driver", "tellme.host.golden_device",
    "tellme.host.pynq_device",
]


def layer_of_module(name: str) -> str | None:
    best = max((p for p in PACKAGES if name == p or name.startswith(p + ".")), key=len,
               default=None)
    return PACKAGES.get(best)


def module_files():
    """(layer, dotted module name, path) of every module of the distribution."""
    for folder, layer in FOLDERS.items():
        pkg = next(p for p, lay in PACKAGES.items() if lay == layer)
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder)
            if layer == "sim" and rel.parts[0] == "golden":
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield layer, ".".join([pkg, *parts]), path


def tellme_imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every ``tellme`` import in the file, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("tellme")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module
                                                                   else []))
            else:
                mod = node.module or ""
            if mod.startswith("tellme"):
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def test_dependency_direction():
    bad = []
    for layer, name, path in module_files():
        for line, target in tellme_imports(name, path):
            tl = layer_of_module(target)
            if tl != layer and tl not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {layer} imports {target} ({tl})")
    assert not bad, "imports against the direction table:\n" + "\n".join(bad)


def test_direction_check_sees_lazy_and_relative_imports():
    """The checker resolves relative imports and sees imports inside functions."""
    hits = {m: n for n, m in tellme_imports("tellme.sim.cli", REPO / "sim/cli.py")}
    assert "tellme.sim.bench" in hits                                 # lazy, in register()
    rel = tellme_imports("tellme.sim.golden.model", REPO / "sim/golden/model.py")
    assert any(m == "tellme.sim.golden.hf" for _, m in rel)         # from . import hf


def test_packages_list_matches_the_folders():
    """pyproject lists every package (a non-editable install on the board needs them all)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    found = set()
    for pkg, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([pkg, *rel]))
    assert set(cfg["packages"]) == found


def imported_after(stmt: str) -> set[str]:
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"{stmt}\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def third_party(mods: set[str]) -> set[str]:
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("tellme", "numpy")
            and not m.startswith("_")}


@pytest.mark.parametrize("module", NUMPY_ONLY)
def test_numpy_only(module):
    assert third_party(imported_after(f"import {module}")) == set()


def test_host_and_cli_stay_light():
    mods = imported_after(
        "import importlib, pkgutil, tellme.host\n"
        "for m in pkgutil.iter_modules(tellme.host.__path__):\n"
        "    importlib.import_module('tellme.host.' + m.name)\n"
        "from tellme.cli import build_parser\n"
        "build_parser()")
    assert not (mods & set(HEAVY)), sorted(mods & set(HEAVY))
