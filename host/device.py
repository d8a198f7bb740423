"""The abstract accelerator device the host driver talks to (docs/driver.md): defined in
``tellme.spec.device`` (the RTL simulation device in ``tellme.sim`` implements it too, and
``sim`` must not import ``host``); re-exported here, where the driver and the host's devices
import it. NumPy only.
"""

from tellme.spec.device import (
    DUMP_REGISTERS,
    Device,
    DeviceBuffer,
    DeviceError,
    DeviceRunError,
    DeviceTimeout,
    register_dump,
)

__all__ = ["Device", "DeviceBuffer", "DeviceError", "DeviceTimeout", "DeviceRunError",
           "register_dump", "DUMP_REGISTERS"]
