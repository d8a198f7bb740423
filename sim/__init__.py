"""tellme.sim: NumPy golden model (bit-exact spec of the hardware), cycle models, RTL simulation.

``tellme.sim.golden`` imports NumPy only; the RTL runner and drivers import cocotb/amaranth
lazily (only when used).
"""
