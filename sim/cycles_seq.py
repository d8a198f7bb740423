"""Golden and cycle model of the sequencer front end (hw/sequencer.py).

* :func:`expected_commands`: the commands the sequencer must emit for program bytes, from
  ``spec.program.decode_program`` of the same bytes: one ``(class, command)`` per record
  before END, in record order, with the fields as the command payload carries them
  (addresses cut to ``addr_width`` bits, f32 fields as raw bits).
* :func:`unpack_command`: a command payload (an int) back into that dict.
* :func:`expected_cycles`: busy cycles of a run with zero-latency blocks (``done`` the cycle
  after the handshake, ``ready`` always high) and a memory that answers a read burst
  ``mem_latency`` cycles after the sequencer raises ARVALID and then streams one beat a cycle.
"""

from __future__ import annotations

import struct

from tellme.hw.sequencer import CLASSES, OP_CLASS, command_fields
from tellme.spec.memory_map import PROGRAM_HEADER_BYTES, PROGRAM_RECORD_BYTES
from tellme.spec.program import OPCODES, OPS, decode_program

__all__ = ["expected_commands", "unpack_command", "expected_cycles"]

_RAW = {"addr": "Q", "u32": "I", "u16": "H", "u8": "B", "f32": "I"}


def expected_commands(blob: bytes, addr_width: int = 40) -> list[tuple[str, dict]]:
    """``[(class, {record, layer, opcode, op, args})]`` of a valid program (raises
    ProgramError otherwise, like the hardware's pass 1)."""
    prog = decode_program(blob)
    mask = (1 << addr_width) - 1
    out = []
    for i, r in enumerate(prog.records):
        if r.op == "END":
            break
        raw = blob[PROGRAM_HEADER_BYTES + i * PROGRAM_RECORD_BYTES:][:PROGRAM_RECORD_BYTES]
        op = OPS[r.op]
        args = {}
        for name, typ, off in op.layout:
            v = struct.unpack_from("<" + _RAW[typ], raw, off)[0]
            args[name] = v & mask if typ == "addr" else v
        out.append((OP_CLASS[r.op], dict(record=i, layer=0xFFFF if r.layer is None else r.layer,
                                         opcode=op.code, op=r.op, args=args)))
    return out


def unpack_command(value: int, addr_width: int = 40) -> dict:
    """A command payload (any class) as the dict of :func:`expected_commands`."""
    record, layer, opcode = value & 0xFFFF, (value >> 16) & 0xFFFF, (value >> 32) & 0xFF
    op = OPCODES[opcode].name
    v, args = value >> 40, {}
    for name, bits in command_fields(op, addr_width):
        args[name] = v & ((1 << bits) - 1)
        v >>= bits
    return dict(record=record, layer=layer, opcode=opcode, op=op, args=args)


def expected_cycles(n_records: int, mem_latency: int, *, max_burst: int = 16,
                    max_outstanding: int = 4) -> dict:
    """Busy cycles of a run of ``n_records`` records (END included) by phase.

    ``mem_latency``: cycles from the cycle the sequencer decides to issue a burst (ARVALID
    rises the cycle after) to the cycle of its first R beat, for an idle memory that streams
    the beats back to back and accepts the next AR while streaming (so pass-1 bursts follow
    each other without gaps when ``max_outstanding`` >= 2).
    """
    beats = 4 * n_records
    bursts = -(-beats // max_burst)
    gaps = 0 if max_outstanding >= 2 else (bursts - 1) * mem_latency
    start = 1
    header = mem_latency + 4
    header_check = 1
    check = mem_latency + beats + gaps + 2 if n_records else 1
    verdict = 1
    per_record = mem_latency + 4 + 1 + 1       # fetch, issue (ready), wait (done next cycle)
    execute = (n_records - 1) * per_record + mem_latency + 4 + 1   # END: fetch and issue
    total = start + header + header_check + check + verdict + execute
    return dict(check=start + header + header_check + check + verdict, execute=execute,
                total=total)


assert set(CLASSES) == set(OP_CLASS.values())
