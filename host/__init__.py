"""tellme.host: the host driver over an abstract device, tokenizer, sampling, and the CLI.

Runs on the board (Python 3.10, NumPy 1.x): imports NumPy, ``tellme.quant`` format code and
``tellme.sim.golden`` only; ``pynq`` is imported lazily and amaranth/cocotb/torch never.
"""

# The golden backend's numerics modes (backends.create, the CLI's --numerics): float (HF
# semantics), hw (the accelerator's arithmetic, the host's LM head on hidden rows), hw-pl (hw
# with the PL LM head's int8 numerics: what a device with an LM-head unit returns)
NUMERICS = ("float", "hw", "hw-pl")
