"""Board-side install (issue 13 item 6): the host package as the board gets it.

A wheel of this repository without dependencies (what `tellme board deploy` copies, docs/board.md)
goes into a fresh virtual environment holding only NumPy 1.x (the Kria-PYNQ image's major
version; PYNQ 3.0.1's compiled parts need NumPy 1); there the driver runs the demo model on the
simulation device (GoldenDevice: the accelerator's registers, DDR and sequencer as the golden
model executes them) and its logits must equal, bit for bit, the golden model's in the
development environment. The venv must not see the development dependencies (amaranth,
cocotb): the board has none of them.

Needs `pip` to find a NumPy 1.x wheel (the package index this machine is configured with); the
test is skipped, saying so, only when no such wheel can be found at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tellme.host.generate import DEFAULT_MODEL
from tellme.sim.golden.model import forward

REPO = Path(__file__).resolve().parents[1]
IDS = [5, 17, 300, 9, 1000, 42, 7, 4095]
NUMPY_1 = "numpy>=1.22,<2"

BOARD_SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    assert np.__version__.startswith("1."), np.__version__
    for dev in ("amaranth", "cocotb", "torch"):
        assert importlib.util.find_spec(dev) is None, dev + " is visible on the board side"
    from tellme.host.driver import Driver
    from tellme.host.golden_device import GoldenDevice
    ids = [int(x) for x in sys.argv[2].split(",")]
    d = Driver(GoldenDevice("kv260"), sys.argv[1], max_context=64, timeout_s=30)
    rows = [d.prefill(ids[:5])]
    rows += [d.decode(t) for t in ids[5:]]
    np.save(sys.argv[3], np.stack(rows).astype(np.float32))
    print("numpy", np.__version__)
""")


def _run(cmd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


def test_host_package_on_numpy_1_without_dev_dependencies(tmp_path):
    wheels = tmp_path / "wheels"
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "-w", str(wheels), str(REPO)])
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("tellme-*.whl")
    venv = tmp_path / "board-venv"
    r = _run([sys.executable, "-m", "venv", str(venv)])
    assert r.returncode == 0, r.stderr[-2000:]
    py = venv / "bin" / "python"
    r = _run([str(py), "-m", "pip", "install", "-q", NUMPY_1])
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip(f"no {NUMPY_1} wheel reachable from this machine's package index")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "board_logits.npy"
    r = _run([str(py), "-c", BOARD_SCRIPT, str(DEFAULT_MODEL), ",".join(map(str, IDS)),
              str(out)], cwd=tmp_path)                    # not the repo: the installed wheel
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.startswith("numpy 1."), r.stdout
    got = np.load(out)
    from tellme.host.generate import load_model_and_tokenizer

    want = forward(load_model_and_tokenizer()[0], np.asarray(IDS), numerics="hw",
                   head="pl")[4:]                         # the device's PL LM head
    assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))
