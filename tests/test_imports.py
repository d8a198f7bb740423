"""Import-layer rules (docs/architecture.md): the board side must not pull in dev-only packages.

Each check runs in a fresh interpreter so modules imported by other tests do not leak in.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ("amaranth", "cocotb", "cocotb_tools", "cocotbext", "torch", "transformers", "pynq",
         "safetensors", "tokenizers", "ml_dtypes")

# Modules that must run on the board image (Python 3.10, NumPy 1.x, nothing else).
NUMPY_ONLY = [
    "tellme.quant.config",
    "tellme.quant.codes",
    "tellme.quant.model",
    "tellme.quant.format",
    "tellme.sim.golden",
]


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
        "from tellme.host.cli import build_parser\n"
        "build_parser()")
    assert not (mods & set(HEAVY)), sorted(mods & set(HEAVY))
