"""tellme.host: the host driver over an abstract device, tokenizer, sampling, and the CLI.

Runs on the board (Python 3.10, NumPy 1.x): imports NumPy, ``tellme.quant`` format code and
``tellme.sim.golden`` only; ``pynq`` is imported lazily and amaranth/cocotb/torch never.
"""
