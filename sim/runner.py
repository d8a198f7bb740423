"""One shared helper that turns an Amaranth Component into Verilog under ``build/`` and runs
cocotb tests on it with Verilator.

Usage from a pytest launcher::

    run_cocotb(make_dut, name="tlmm", params=dict(t=4, q=4),
               test_module="tests.rtl.tb_tlmm", extra_env={"SEED": "1"})

The Verilog goes to ``build/sim/<name>-<hash of params+generator sources>/``; the Verilator
model is rebuilt only when that Verilog changes. Waveforms only with ``WAVES=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tellme.hw.toolchain import REPO_ROOT, build_dir, elaborate_verilog, setup_verilator_env


def params_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_verilog(make_dut: Callable[[], object], name: str, params: dict) -> tuple[Path, Path]:
    """Elaborate once per (name, params) and write ``<build>/sim/<name>-<key>/<name>.v``.

    Returns (verilog path, work dir). The file is rewritten only when its text changes, so
    Verilator's own up-to-date check keeps cached builds.
    """
    work = build_dir("sim", f"{name}-{params_key(params)}")
    vfile = work / f"{name}.v"
    text = elaborate_verilog(make_dut(), name)
    if not vfile.exists() or vfile.read_text() != text:
        vfile.write_text(text)
    (work / "params.json").write_text(json.dumps(params, sort_keys=True, default=str))
    return vfile, work


def run_cocotb(make_dut: Callable[[], object], *, name: str, params: dict, test_module: str,
               testcase: str | list[str] | None = None, extra_env: dict | None = None,
               build_args: list[str] | None = None, log_file: Path | None = None) -> Path:
    """Build (if needed) and run cocotb ``test_module`` against the elaborated component.

    ``params`` must determine the design completely (it keys the build dir). ``extra_env`` is
    passed to the cocotb process (use it for test parameters: the testbench reads os.environ).
    Raises on any failing cocotb test. Returns the results.xml path. ``log_file``: the build's
    and the simulation's output go there instead of stdout.
    """
    from cocotb_tools.runner import get_runner

    setup_verilator_env()
    vfile, work = write_verilog(make_dut, name, params)
    runner = get_runner("verilator")
    waves = os.environ.get("WAVES") == "1"
    args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL"]
    if waves:
        args.append("--trace-fst")
    sources = [vfile]
    if "DSP48E2" in vfile.read_text():      # instantiated slices (hw/dsp.py): their sim model
        from tellme.hw.dsp import SIM_MODEL

        sources.append(SIM_MODEL)
    runner.build(sources=sources, hdl_toplevel=name, build_dir=work / "sim_build",
                 always=False, build_args=args + list(build_args or []),
                 timescale=("1ns", "1ps"), waves=waves,
                 log_file=None if log_file is None else Path(log_file).with_suffix(".build.log"))
    env = dict(extra_env or {})
    # cocotb passes this process's sys.path on as PYTHONPATH: make the test modules importable.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    env.setdefault("TELLME_PARAMS", json.dumps(params, sort_keys=True, default=str))
    results = runner.test(hdl_toplevel=name, test_module=test_module, testcase=testcase,
                          build_dir=work / "sim_build", test_dir=work, extra_env=env,
                          waves=waves, log_file=log_file)
    from cocotb_tools.runner import get_results

    n_tests, n_failed = get_results(Path(results))
    if n_tests == 0 or n_failed:
        raise AssertionError(f"cocotb {test_module}: {n_failed} of {n_tests} tests failed "
                             f"(log and results in {work})")
    return Path(results)


def cocotb_params() -> dict:
    """Inside a cocotb test: the ``params`` dict the launcher elaborated the design with."""
    return json.loads(os.environ.get("TELLME_PARAMS", "{}"))

