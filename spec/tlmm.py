"""TLMM engine facts that the generator, the golden model and the cycle model share.

* :data:`TABLE_BITS`, :func:`acc_bits`: widths of the table entries and of the exact
  accumulators (docs/hw/tlmm.md).
* :data:`TABLE_ENTRIES`: entries per lookup table by table kind: ``full`` is TeLLMe's 27-entry
  table, ``half`` stores code 0 and the 13 positive patterns and negates on read.
* :data:`PIPELINE_LATENCY`: cycles from an op's issue (weight read) to its output beat: issue ->
  lookups and pair sums -> adder tree (two halves) and accumulator read -> accumulate (the
  tree's last addition with the accumulator) / emit.
"""

from __future__ import annotations

from .codes import N_CODES

TABLE_BITS = 10          # one entry: sum of 3 int8 values, |.| <= 384 -> signed 10 bits
TABLE_ENTRIES = {"full": N_CODES, "half": (N_CODES + 1) // 2}
PIPELINE_LATENCY = 3


def acc_bits(k: int) -> int:
    """Signed accumulator width that holds any sum of ``k`` int8 x ternary products exactly."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(128 * k).bit_length() + 1


def table_entries(table: str) -> int:
    """Entries of one lookup table of kind ``table`` ("full" or "half")."""
    try:
        return TABLE_ENTRIES[table]
    except KeyError:
        raise ValueError(f"unknown table kind {table!r}; known: {', '.join(TABLE_ENTRIES)}") \
            from None
