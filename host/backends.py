"""Inference backends behind ``tellme generate`` / ``eval`` / ``demo``.

A backend runs one sequence at a time over a KV cache it owns:

* ``reset(max_len)``      start a new sequence with room for ``max_len`` tokens;
* ``prefill(tokens)``     append the prompt, return its LAST position's logits, float32 [vocab];
* ``decode(token)``       append one token, return its logits, float32 [vocab];
* ``logits(tokens)``      (optional, for evaluation) logits of every position of a fresh sequence.

Registered backends, in order of preference for ``--backend auto``:

* ``board``   the accelerator on a KV260/ZCU104: the host driver over the PYNQ device
  (``tellme.host.driver``, ``tellme.host.pynq_device``), bitstream in ``TELLME_BITSTREAM``;
* ``rtl-sim`` the accelerator's Verilog in Verilator, same host driver (a child process;
  slow, never chosen by ``auto``);
* ``golden``  the NumPy golden model (``tellme.sim.golden.model``), ``float`` or ``hw`` numerics.

A backend joins by subclassing :class:`Backend` and calling :func:`register`; ``available()``
says whether it can run here (and why not), so ``auto`` picks the best one that can.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from . import NUMERICS


class BackendError(Exception):
    """Unknown or unavailable backend, or a sequence that does not fit."""


class Backend(ABC):
    name: str = ""
    #: preference for ``auto``: higher wins among available backends
    priority: int = 0

    def __init__(self, model, numerics: str = "float"):
        self.model = model
        self.numerics = numerics
        self.max_context = model.config.max_context
        self.length = 0

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(can run here, reason if not)."""
        return True, ""

    @abstractmethod
    def reset(self, max_len: int) -> None: ...

    @abstractmethod
    def prefill(self, tokens) -> np.ndarray: ...

    @abstractmethod
    def decode(self, token: int) -> np.ndarray: ...

    def logits(self, tokens) -> np.ndarray:
        """Logits [len(tokens), vocab] of a fresh sequence (default: prefill one by one)."""
        self.reset(len(tokens))
        return np.stack([self.decode(t) for t in tokens])

    def close(self) -> None:  # noqa: B027 - optional, most backends hold no device
        """Release what the backend holds (a device session); default: nothing."""

    def _check_room(self, n: int, cap: int) -> None:
        if self.length + n > cap:
            raise BackendError(f"sequence of {self.length + n} tokens exceeds the "
                               f"{cap}-token cache (model context {self.max_context})")


class GoldenBackend(Backend):
    """The NumPy golden model; ``numerics`` is ``float`` (HF semantics), ``hw`` (bit-exact
    specification of the accelerator's arithmetic, the host's LM head on its hidden rows) or
    ``hw-pl`` (``hw`` with the PL LM head's int8 numerics: what a device with an LM-head unit
    returns)."""

    name = "golden"
    priority = 0

    def __init__(self, model, numerics: str = "float"):
        super().__init__(model, numerics)
        from tellme.sim.golden.model import GoldenModel

        hw = numerics in ("hw", "hw-pl")
        self.gm = GoldenModel(model, numerics="hw" if hw else numerics,
                              head="pl" if numerics == "hw-pl" else "host")
        self.cache = None
        self.cap = 0

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import tellme.sim.golden.model  # noqa: F401
        except ImportError as e:
            return False, f"golden model not importable ({e})"
        return True, ""

    def reset(self, max_len: int) -> None:
        if max_len > self.max_context:
            raise BackendError(f"{max_len} tokens exceed the model context of "
                               f"{self.max_context}")
        self.cache = self.gm.new_cache(max_len)
        self.cap = max_len
        self.length = 0

    def _forward(self, tokens) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        if self.cache is None:
            raise BackendError("reset() must be called before prefill/decode")
        self._check_room(len(tokens), self.cap)
        out = np.asarray(self.gm.forward(tokens, self.cache), dtype=np.float32)
        self.length += len(tokens)
        return out

    def prefill(self, tokens) -> np.ndarray:
        if len(tokens) == 0:
            raise BackendError("prefill needs at least one token")
        return self._forward(tokens)[-1]

    def decode(self, token: int) -> np.ndarray:
        return self._forward([token])[-1]

    def logits(self, tokens) -> np.ndarray:
        self.reset(len(tokens))
        return self._forward(tokens)


RTL_SIM_TIMEOUT_S = 1800.0      # per call on the Verilator top (the board's default: 30 s)


class RtlSimBackend(Backend):
    """The accelerator top in Verilator (``tellme.sim.rtl_remote.RemoteRtlDevice``, a child
    process) under the same host driver as the board: the smallest simulation build that holds
    the model (``sim``, else ``sim-demo``), logits from the top's PL LM head when the hidden
    size fits it (else the final hidden rows and the host's head). Slow: thousands of simulated
    cycles per second; never chosen by ``auto``."""

    name = "rtl-sim"
    priority = -10

    @classmethod
    def available(cls):
        sim = _simulation()
        if sim is None:
            return False, "the simulation layer (tellme.sim) is not importable here"
        return sim.rtl_sim_available()

    def __new__(cls, model, numerics="hw"):
        from .driver import DeviceBackend

        target = sim_target(model.config)
        dev = _simulation().RemoteRtlDevice(target)
        try:
            # logits from the PL head if it fits; the timeout is wall-clock seconds and the
            # simulation runs about 17,000 cycles a second (a demo row's LM head: 4 s)
            be = DeviceBackend(model, device=dev, timeout_s=RTL_SIM_TIMEOUT_S)
        except BaseException:
            dev.close()
            raise
        be.name = f"{cls.name}:{target}"
        return be

    def reset(self, max_len):  # pragma: no cover - __new__ returns a DeviceBackend
        raise NotImplementedError

    prefill = decode = reset


def _simulation():
    """``tellme.sim.rtl_remote`` (the RTL simulation device), looked up by name: the host layer
    runs on the board image without the simulation layer (Verilator, cocotb, the hardware
    generators), which builds on it, not the other way round. None when it cannot be
    imported."""
    import importlib

    try:
        return importlib.import_module("tellme.sim.rtl_remote")
    except ImportError:
        return None


def sim_target(config, max_context: int | None = None) -> str:
    """The smallest RTL simulation build that holds ``config`` (``sim``, then ``sim-demo``);
    BackendError naming both builds' limits otherwise."""
    from tellme.spec.memory_map import MemoryMapError, check_model_fits
    from tellme.spec.targets import TARGETS

    from .driver import session_sizes

    ctx = config.max_context if max_context is None else max_context
    why = []
    for name in ("sim", "sim-demo"):
        tgt = TARGETS[name]
        try:
            check_model_fits(config, tgt, ctx, session_sizes(tgt, ctx)[0])
            return name
        except MemoryMapError as e:
            why.append(f"{name}: {e}")
    raise BackendError("no RTL simulation build holds this model (" + "; ".join(why) + ")")


class BoardBackend(Backend):
    """The accelerator on a KV260/ZCU104: the host driver over the PYNQ device, with the
    bitstream named by the environment variable TELLME_BITSTREAM (docs/driver.md)."""

    name = "board"
    priority = 20

    @classmethod
    def available(cls):
        import importlib.util
        import os

        if importlib.util.find_spec("pynq") is None:
            return False, "pynq is not importable (the board backend runs on a KV260/ZCU104 " \
                          "with PYNQ; docs/driver.md)"
        bit = os.environ.get("TELLME_BITSTREAM", "")
        if not bit:
            return False, "no bitstream: set TELLME_BITSTREAM to bitstreams/<target>/" \
                          "tellme_<target>_<hash>_<src>.bit (docs/driver.md)"
        if not os.path.isfile(bit):
            return False, f"TELLME_BITSTREAM={bit}: no such file"
        return True, ""

    def __new__(cls, model, numerics="hw"):
        import os

        from .driver import DeviceBackend
        from .pynq_device import PynqDevice

        # logits from the PL LM head when the build has one for this hidden size, else the
        # final hidden rows and the host's head (driver.pl_head_fits)
        be = DeviceBackend(model, device=PynqDevice(os.environ["TELLME_BITSTREAM"]))
        be.name = cls.name
        return be

    def reset(self, max_len):  # pragma: no cover - __new__ returns a DeviceBackend
        raise NotImplementedError

    prefill = decode = reset


_REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (GoldenBackend, RtlSimBackend, BoardBackend):
    register(_cls)


def names() -> list[str]:
    return sorted(_REGISTRY, key=lambda n: -_REGISTRY[n].priority)


def resolve(name: str = "auto") -> type[Backend]:
    """The backend class for ``name`` (``auto``: the highest-priority available one)."""
    if name == "auto":
        for n in names():
            ok, _ = _REGISTRY[n].available()
            if ok:
                return _REGISTRY[n]
        raise BackendError("no backend is available: " + "; ".join(
            f"{n}: {_REGISTRY[n].available()[1]}" for n in names()))
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r} (choose from: auto, {', '.join(names())})")
    ok, why = _REGISTRY[name].available()
    if not ok:
        raise BackendError(f"backend {name!r} is not available: {why}")
    return _REGISTRY[name]


def create(name: str, model, numerics: str = "float") -> Backend:
    if numerics not in NUMERICS:
        raise BackendError(f"numerics must be one of {', '.join(NUMERICS)}, got {numerics!r}")
    return resolve(name)(model, numerics=numerics)
