"""The host driver: one weight file on one accelerator device, prefill and decode calls
(docs/driver.md). NumPy only; runs on the board (Python 3.10, NumPy 1.x).

>>> dev = GoldenDevice("kv260")                  # or PynqDevice("tellme_kv260_<hash>_<src>.bit")
>>> drv = Driver(dev, "host/models/demo/model.tlm", max_context=256)
>>> logits = drv.prefill([5, 17, 300])           # float32 [vocab] of the last position
>>> logits = drv.decode(42)                      # the next position

Loading checks the device's ID, VERSION and CAP_* registers against this host and the weight
file (a mismatch is refused naming both), lays the session out with ``spec.memory_map``
(refused, naming the sizes, when it exceeds the device's budget), copies the weight file and
the RoPE table into one device buffer once, and points the DDR window at it. Each call writes
the token ids and the program (``spec.program.build_program``), starts the accelerator, waits
(``timeout_s``), and reads the output: logits, or final hidden rows to which the host applies
the LM head with the golden hw numerics. A timeout or an error run raises
:class:`DriverError` with the register dump; the device is soft-reset first, so the next
call (of a new sequence) runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tellme.quant.format import read_weight_file, write_weight_file
from tellme.quant.model import TernaryModel
from tellme.sim.golden import hw_numerics as hw
from tellme.sim.golden.lm_head_int import refine_top_k
from tellme.sim.golden.program_exec import rope_table_bytes
from tellme.spec.kv_layout import decode_elems
from tellme.spec.memory_map import MEMORY_MAP_VERSION, MemoryMapError, memory_map, row_stride
from tellme.spec.numerics import STREAM_FORMATS
from tellme.spec.program import (
    ERRORS,
    KV_DTYPES,
    PROGRAM_VERSION,
    Program,
    WeightInfo,
    build_program,
    encode_program,
)
from tellme.spec.registers import ID_MAGIC, PORTS, REGMAP_VERSION, const_words
from tellme.spec.targets import TARGET_NAMES, target as get_target
from tellme.spec.tiling import Tiling

from .backends import Backend, BackendError
from .device import (
    DUMP_REGISTERS,
    Device,
    DeviceError,
    DeviceRunError,
    DeviceTimeout,
    register_dump,
)

#: seconds a call may take before it is declared hung. The longest call the board runs is a
#: 1024-token prefill chunk: about 2 s projected on the KV260 for bitnet_b1_58-large
#: (21.7K cycles per token-layer at 250 MHz, docs/hw/budget.md), so 30 s is a hang.
DEFAULT_TIMEOUT_S = 30.0
CAP_REGISTERS = ("CAP_TLMM", "CAP_BUFFERS", "CAP_ATTN", "CAP_ROWS")


class DriverError(BackendError):
    """A load or call the driver refuses or that failed on the device (message says which)."""


def _tiling_str(t: Tiling) -> str:
    return f"T={t.t} Q={t.q}"


def check_identity(dev: Device, tiling: Tiling, file_target: str | None = None):
    """(target name, stream format) of the device after checking ID, VERSION, CAP_* against
    this host's formats and a weight file laid out for ``tiling`` (``file_target``: the
    target the file was converted for, if it says). DriverError naming both sides."""
    magic = dev.reg("ID")
    if magic != ID_MAGIC:
        raise DriverError(f"not a tellme accelerator: ID reads {magic:#010x}, expected "
                          f"{ID_MAGIC:#010x} (wrong bitstream or control address?)")
    ver = dev.fields("VERSION")
    want = {"REGMAP": REGMAP_VERSION, "PROGRAM": PROGRAM_VERSION,
            "MEMORY_MAP": MEMORY_MAP_VERSION}
    bad = [f"{k.lower()} v{ver[k]} (host v{v})" for k, v in want.items() if ver[k] != v]
    if bad:
        raise DriverError("the device implements other formats than this host: device "
                          + ", ".join(bad) + "; use the host package of the bitstream's build")
    build = dev.fields("CAP_BUILD")
    if build["TARGET"] >= len(TARGET_NAMES):
        raise DriverError(f"device CAP_BUILD.TARGET {build['TARGET']} is not a known target "
                          f"({', '.join(TARGET_NAMES)})")
    tname = TARGET_NAMES[build["TARGET"]]
    fmts = {f.man: f for f in STREAM_FORMATS.values()}
    if build["FMT_MAN"] not in fmts:
        raise DriverError(f"device stream format with {build['FMT_MAN']} fraction bits is "
                          f"unknown to this host")
    fmt = fmts[build["FMT_MAN"]]
    kv = [name for i, name in enumerate(KV_DTYPES) if build["KV_FORMATS"] >> i & 1]
    if "int8" not in kv:
        raise DriverError(f"device KV formats {', '.join(kv) or 'none'}: this host's programs "
                          f"(format v{PROGRAM_VERSION}) keep an int8 KV cache")
    expect = const_words(tname, dev.reg("BUILD_HASH"), fmt)
    for name in CAP_REGISTERS:
        got = dev.reg(name)
        if got != expect[name]:
            raise DriverError(f"device {name} {got:#010x} differs from the {tname} build's "
                              f"{expect[name]:#010x} (spec/targets.py): a build this host does "
                              f"not know")
    cap = dev.fields("CAP_TLMM")
    dev_tiling = Tiling(cap["T"], cap["Q"])
    if dev_tiling != tiling:
        src = f" (converted for {file_target})" if file_target else ""
        raise DriverError(f"the weight file is laid out for tiling {_tiling_str(tiling)}{src}, "
                          f"the device is a {tname} build with tiling "
                          f"{_tiling_str(dev_tiling)}: convert the checkpoint with "
                          f"--target {tname}")
    return tname, fmt


def session_sizes(tgt, max_context: int, max_tokens: int | None = None,
                  out_rows: int | None = None, output: str = "logits") -> tuple[int, int]:
    """The driver's (tokens per call, output rows per call) defaults for target record
    ``tgt`` (also what ``tellme board check`` sizes the CMA need with)."""
    if max_tokens is None:
        max_tokens = min(tgt.tlmm["tok_max"], max_context)
    if out_rows is None:
        out_rows = min(max_tokens, 16) if output == "logits" else max_tokens
    return max_tokens, out_rows


def pl_head_fits(device: Device, config) -> bool:
    """Whether ``device``'s build has an LM-head unit (CAP_ROWS.LM_HEAD_LANES) that takes
    ``config``'s hidden size: then the device returns logits (the PL head's int8 numerics),
    else final hidden rows for the host's head."""
    from tellme.spec.lm_head import fits

    cap = device.fields("CAP_ROWS")
    return fits(config.hidden_size, cap.get("LM_HEAD_LANES", 0),
                256 * cap.get("LM_HEAD_MAX_D", 0))


def _weights_path(weights, tiling: Tiling, tmp: list) -> Path:
    """A weight-file path for ``weights`` (a path, or a TernaryModel written at ``tiling`` with
    its q/k rows in adjacent-pair RoPE order: the accelerator's RoPE unit rotates adjacent
    pairs, and the permutation leaves every logit unchanged, quant/rope_permute.py)."""
    if isinstance(weights, TernaryModel):
        from tellme.quant.rope_permute import to_adjacent

        d = tempfile.TemporaryDirectory(prefix="tellme-driver-")
        tmp.append(d)
        return Path(write_weight_file(to_adjacent(weights), Path(d.name) / "model.tlm",
                                      tiling))
    path = Path(weights)
    if not path.is_file():
        raise DriverError(f"weight file not found: {path}")
    return path


class Driver:
    """One weight file loaded on ``device`` for sequences of up to ``max_context`` tokens.

    ``weights``: a weight-file path or a TernaryModel (written at the device's tiling);
    ``max_tokens``: tokens per call (prefill chunk); ``out_rows``: output rows per call (the
    chunk size of :meth:`logits`); ``output``: "logits" (the accelerator's LM head) or
    "hidden" (final-norm rows; the host applies the LM head); None: logits when the build has
    an LM-head unit for the model's hidden size (:func:`pl_head_fits`); ``timeout_s``: per call."""

    def __init__(self, device: Device, weights, max_context: int | None = None,
                 max_tokens: int | None = None, out_rows: int | None = None,
                 output: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.dev, self.timeout_s, self._tmp = device, float(timeout_s), []
        self.buf = None
        # identity first (cheap) with the file's tiling from its header
        if isinstance(weights, TernaryModel):
            cap = device.fields("CAP_TLMM")
            path = _weights_path(weights, Tiling(cap["T"], cap["Q"]), self._tmp)
        else:
            path = _weights_path(weights, None, self._tmp)
        wf = read_weight_file(path, verify=False)
        file_target = wf.header.get("meta", {}).get("target")
        self.target, self.fmt = check_identity(device, wf.tiling, file_target)
        self.config = c = wf.config
        if output is None:
            output = "logits" if pl_head_fits(device, c) else "hidden"
        self.info = WeightInfo.from_header(wf.header, wf.section("scales"))
        # the host LM head: float32 [vocab, hidden] for output "hidden"; for "logits" the
        # file's head rows, read a few at a time (the PL head's top candidates)
        self._head = wf.tensor(wf.head_name) if output == "hidden" else None
        self._wf = wf
        self.max_context = c.max_context if max_context is None else int(max_context)
        tgt = get_target(self.target)
        max_tokens, out_rows = session_sizes(tgt, self.max_context, max_tokens, out_rows,
                                             output)
        nbytes = path.stat().st_size
        kw = dict(weights_nbytes=nbytes, max_tokens=max_tokens, out_rows=out_rows,
                  output=output, fmt=self.fmt, budget=device.budget_bytes)
        try:
            probe = memory_map(c, tgt, self.max_context, **kw)
        except MemoryMapError as e:
            raise DriverError(f"{path.name} ({nbytes:,} bytes) does not fit {device.name}: "
                              f"{e}") from None
        try:
            self.buf = device.allocate(probe.total_bytes)
        except DeviceError as e:
            raise DriverError(f"{device.name}: the session needs {probe.total_bytes:,} "
                              f"contiguous bytes ({self.max_context}-token context); "
                              f"allocation failed: {e}") from None
        self.mmap = memory_map(c, tgt, self.max_context, base=self.buf.device_address, **kw)
        self.base = self.buf.device_address
        self.buf.write(self._off("weights"), np.fromfile(path, dtype=np.uint8))
        self.buf.write(self._off("rope"), rope_table_bytes(self.mmap))
        if output == "logits":                       # the PL LM head's int8 rows
            self.buf.write(self._off("head"), wf.pl_head_image())
        self.buf.sync_to_device()
        self.score_c = hw.score_scale(c.head_dim)
        self.lm_head = hw.bound(self.fmt).lm_head
        self.length = 0
        self.calls = 0
        device.soft_reset()                          # whatever a previous user left
        device.set_reg64("WIN_BASE", self.base)
        device.set_reg64("WIN_SIZE", self.mmap.total_bytes)
        device.set_reg("CTRL", IRQ_EN_DONE=1, IRQ_EN_ERROR=1)

    def _off(self, region: str) -> int:
        return self.mmap.region(region).addr - self.base

    def close(self) -> None:
        if self.buf is not None:
            self.buf.free()
            self.buf = None
        for d in self._tmp:
            d.cleanup()

    # -- one call -----------------------------------------------------------------------------

    def run(self, ids, start: int, last_only: bool = True) -> np.ndarray:
        """Run ``ids`` at positions ``start..``: float32 logits [rows, vocab] (rows 1 with
        ``last_only``), computed on the device or, for output "hidden", on the host."""
        ids = np.asarray(ids, dtype="<u4").reshape(-1)
        n = ids.size
        if start + n > self.max_context:
            raise DriverError(f"positions {start}..{start + n - 1} exceed the configured "
                              f"context of {self.max_context} tokens")
        kind = "decode" if n == 1 and start > 0 else "prefill"
        prog = build_program(self.config, self.mmap, kind, start, n, weights=self.info,
                             score_c=self.score_c, last_only=last_only)
        tok = self.mmap.buffer("tokens").addr
        self.buf.write(tok - self.base, ids)
        self.buf.sync_to_device(tok - self.base, ids.nbytes)
        self.execute(prog, f"{kind} of {n} token{'s' * (n > 1)} at position {start}")
        return self._output(1 if last_only else n)

    def execute(self, prog: Program, what: str) -> int:
        """Write ``prog`` into the next program slot, run it and wait for it (DriverError,
        with the register dump, on a timeout or an error); returns the program's address.
        ``what`` names the run in messages."""
        blob = encode_program(prog)
        slot = self.calls % self.mmap.program_slots
        addr = self.mmap.program_addr(slot)
        self.buf.write(addr - self.base, blob)
        self.buf.sync_to_device(addr - self.base, len(blob))
        self.calls += 1
        d = self.dev
        d.set_reg("IRQ_STATUS", IRQ_STATUS_ALL)
        d.set_reg64("PROG_ADDR", addr)
        d.set_reg("CMD", START=1)
        if not d.wait(self.timeout_s):
            self._fail_timeout(what, prog)
        if d.fields("STATUS")["ERROR"]:
            self._fail_error(what, prog)
        return addr

    def _output(self, rows: int) -> np.ndarray:
        c = self.config
        if self.mmap.output == "hidden":
            return np.asarray(self.lm_head(self._rows("out", rows, c.hidden_size), self._head),
                              dtype=np.float32)
        # the PL head's logits, its top PL_TOP_K per row recomputed with the host's head on
        # the final-norm rows the program left in the h buffer (refine_top_k)
        logits = np.ascontiguousarray(self._raw("out", rows, 4 * c.vocab_size)).view("<f4")
        return refine_top_k(logits.astype(np.float32), self._rows("h", rows, c.hidden_size),
                            lambda idx: self._wf.rows(self._wf.head_name, idx), fmt=self.fmt)

    def _raw(self, buffer: str, rows: int, nbytes: int) -> np.ndarray:
        """uint8 [rows, nbytes]: the first ``rows`` rows of ``nbytes`` bytes a record wrote
        into an act buffer (at the records' stride for that row, ``row_stride``)."""
        b = self.mmap.buffer(buffer)
        st = row_stride(nbytes, 1)
        self.buf.sync_from_device(b.addr - self.base, (rows - 1) * st + nbytes)
        return self.buf.read(b.addr - self.base, rows * st).reshape(rows, st)[:, :nbytes]

    def _rows(self, buffer: str, rows: int, cols: int) -> np.ndarray:
        """The first ``rows`` rows of ``cols`` stream-format elements of an act buffer."""
        eb = self.fmt.bits // 8
        bits = decode_elems(self._raw(buffer, rows, cols * eb).tobytes(), eb)
        return self.fmt.from_bits(bits).reshape(rows, cols)

    def _where(self, prog: Program, record: int) -> str:
        if record == 0xFFFF:
            return "the program header"
        if 0 <= record < len(prog.records):
            r = prog.records[record]
            layer = "" if r.layer is None else f", layer {r.layer}"
            return f"record {record} ({r.op}{layer})"
        return f"record {record}"

    def _dump(self) -> str:
        return register_dump(self.dev, DUMP_REGISTERS)

    def _reset_after_failure(self) -> str:
        self.dev.soft_reset()
        self.length = 0
        if self.dev.fields("STATUS")["BUSY"]:
            return ("; the device is still BUSY after SOFT_RESET: reload the bitstream "
                    "(tellme board reset)")
        return "; the device was soft-reset (the sequence is lost: start a new one)"

    def _fail_timeout(self, what: str, prog: Program):
        st = self.dev.fields("STATUS")
        dump = self._dump()
        after = self._reset_after_failure()
        raise DriverError(f"{self.dev.name}: the {what} did not finish within "
                          f"{self.timeout_s:g} s (timeout_s); STATUS BUSY={st['BUSY']} at "
                          f"{self._where(prog, st['RECORD'])}{after}.\nRegisters at the "
                          f"timeout:\n{dump}") from DeviceTimeout(what)

    def _fail_error(self, what: str, prog: Program):
        flags = {k: v for k, v in self.dev.fields("ERR_FLAGS").items() if v}
        info = self.dev.fields("ERR_INFO")
        addr = self.dev.reg64("ERR_ADDR")
        dump = self._dump()
        parts = []
        if "BAD_PROGRAM" in flags:
            name, meaning = ERRORS.get(info["CODE"], ("UNKNOWN", "no such error code"))
            parts.append(f"BAD_PROGRAM code {info['CODE']} {name} ({meaning})")
        for f in ("AXI_SLVERR", "AXI_DECERR"):
            if f in flags:
                port = PORTS[info["PORT"]] if info["PORT"] < len(PORTS) else info["PORT"]
                parts.append(f"{f} on port {port}")
        for f in ("TIMEOUT", "BAD_REG"):
            if f in flags:
                parts.append(f"{f} (ERR_FLAGS)")
        after = self._reset_after_failure()
        err = DeviceRunError(what, flags, info["CODE"], info["RECORD"])
        raise DriverError(f"{self.dev.name}: the {what} stopped with an error: "
                          f"{'; '.join(parts) or 'STATUS.ERROR without a flag'} at "
                          f"{self._where(prog, info['RECORD'])}, ERR_ADDR {addr:#x}{after}."
                          f"\nRegisters at the error:\n{dump}") from err

    # -- sequences ----------------------------------------------------------------------------

    def prefill(self, ids, start: int = 0) -> np.ndarray:
        """Run a prompt (chunks of ``max_tokens``) from ``start``; logits [vocab] of its last
        position."""
        ids = [int(t) for t in ids]
        if not ids:
            raise DriverError("prefill needs at least one token")
        if start + len(ids) > self.max_context:
            raise DriverError(f"the prompt is {len(ids)} tokens (from position {start}), "
                              f"longer than the configured context of {self.max_context} "
                              f"tokens")
        self.length = start
        step = self.mmap.max_tokens
        for i in range(0, len(ids), step):
            out = self.run(ids[i:i + step], start + i, last_only=True)
        self.length = start + len(ids)
        return out[-1]

    def decode(self, token: int) -> np.ndarray:
        """One decode step at the next position; logits [vocab]."""
        if self.length >= self.max_context:
            raise DriverError(f"the sequence is full: {self.length} tokens = the configured "
                              f"context")
        out = self.run([int(token)], self.length, last_only=True)
        self.length += 1
        return out[-1]

    def logits(self, ids) -> np.ndarray:
        """Logits [len(ids), vocab] of every position of a fresh sequence (chunks of
        ``out_rows``)."""
        ids = [int(t) for t in ids]
        if len(ids) > self.max_context:
            raise DriverError(f"{len(ids)} tokens exceed the configured context of "
                              f"{self.max_context} tokens")
        step = min(self.mmap.out_rows, self.mmap.max_tokens)
        rows = [self.run(ids[i:i + step], i, last_only=False)
                for i in range(0, len(ids), step)]
        self.length = len(ids)
        return np.concatenate(rows)


IRQ_STATUS_ALL = 0b11


class DeviceBackend(Backend):
    """A :class:`Backend` over a :class:`Driver` (the accelerator's hw numerics whatever
    ``numerics`` says: the device has no float mode)."""

    name = "device"

    def __init__(self, model, numerics: str = "hw", device: Device | None = None,
                 driver: Driver | None = None, **driver_kw):
        super().__init__(model, "hw")
        if driver is None:
            if device is None:
                raise BackendError("DeviceBackend needs a device or a driver")
            driver = Driver(device, model, **driver_kw)
        self.driver = driver
        self.name = f"{type(self).name}:{driver.dev.name}"
        self.max_context = driver.max_context

    def reset(self, max_len: int) -> None:
        if max_len > self.max_context:
            raise BackendError(f"{max_len} tokens exceed the configured context of "
                               f"{self.max_context}")
        self.driver.length = 0
        self.length = 0

    def prefill(self, tokens) -> np.ndarray:
        out = self.driver.prefill(tokens, 0)
        self.length = self.driver.length
        return out

    def decode(self, token: int) -> np.ndarray:
        out = self.driver.decode(token)
        self.length = self.driver.length
        return out

    def logits(self, tokens) -> np.ndarray:
        return self.driver.logits(tokens)

    def close(self) -> None:
        """Free the session's buffers and release the device."""
        self.driver.close()
        self.driver.dev.close()


__all__ = ["Driver", "DriverError", "DeviceBackend", "check_identity", "pl_head_fits",
           "session_sizes",
           "DEFAULT_TIMEOUT_S"]
