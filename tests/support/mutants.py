"""Mutation runs of a generated block: rebuild the block's module with one source pattern
replaced and confirm that its cocotb testbench fails (used by tests/rtl/*_mutants.py).
"""

from __future__ import annotations

import glob
import re
import shutil
import sys
from pathlib import Path


def run_mutants(module, mutants: dict, names, make, *, name: str, params: dict,
                test_module: str, label: str = "") -> int:
    """For each mutant ``name -> (pattern, replacement)`` in ``names`` (default: all): compile
    ``module``'s source with the pattern (which must occur exactly once) replaced, build
    ``make(mutated_module)`` and run ``test_module`` on it. Prints KILLED (with the failing
    tests) or SURVIVED per mutant, removes the build dirs, and returns 1 if any survived."""
    from tellme.sim.runner import run_cocotb

    src = Path(module.__file__).read_text()
    pkg = module.__name__.rpartition(".")[0]
    tag = f" ({label})" if label else ""
    survived = 0
    for mutant in names or mutants:
        a, b = mutants[mutant]
        if src.count(a) != 1:
            raise SystemExit(f"mutant {mutant}: pattern not found once in {module.__file__}")
        mod = type(sys)(f"{module.__name__}_mutant")
        mod.__package__ = pkg
        exec(compile(src.replace(a, b), module.__file__, "exec"), mod.__dict__)
        try:
            run_cocotb(lambda mod=mod: make(mod), name=name, params=params,
                       test_module=test_module, extra_env={"SEED": "1"})
            print(f"{mutant}{tag}: SURVIVED", flush=True)
            survived += 1
        except AssertionError:
            failing = []
            for x in glob.glob(f"build/sim/{name}-*/*.xml"):
                failing += re.findall(r'name="(\w+)"[^>]*><failure', Path(x).read_text())
            print(f"{mutant}{tag}: KILLED by {', '.join(failing)}", flush=True)
        finally:
            for d in glob.glob(f"build/sim/{name}-*"):
                shutil.rmtree(d)
    return 1 if survived else 0
