"""Cycle models (``expected_cycles``) of the TLMM engine and the weight-buffer fill.

Stall-free assumption: activations and weight tiles are available when the engine asks, the
output is always ready. The engine model is exact (it mirrors the RTL's table builder and
sweeper); the RTL tests assert measured cycles equal to it.

Engine schedule of one command (edges counted from the edge that accepts the command)::

    A_k = max(A_{k-1} + E + 1, L_{k-2} + 2)   activation beat k accepted (table bank k%2 free)
    F_k = A_k + E                              last table entry written
    S_k = max(F_k + 1, L_{k-1} + 1)            first column block of sweep k issued
    L_k = S_k + nbt - 1                        last column block issued
    last output transferred at L_last + 3      (3-stage lookup / adder / accumulate pipeline)

with A_0 = 1, E = 27 (full table) or 14 (half table), k over n_tokens*kb sweeps. In steady
state a K block takes ``max(nbt, E + 1, (nbt + E + 2) / 2)`` cycles (a table bank is rebuilt
while the other bank is swept, and needs 2 cycles of hand-over): table builds are hidden
completely for tiles of ``nbt >= E + 2`` column blocks. The next command is accepted at
L_last + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from tellme.spec.tlmm import PIPELINE_LATENCY, table_entries


@dataclass(frozen=True)
class CommandTiming:
    issue_done: int      # edge of the last issue (next command accepted one edge later)
    last_output: int     # edge of the last output transfer
    lookups: int         # column-block ops issued (n_tokens*kb*nbt)

    @property
    def efficiency(self) -> float:
        """Issued ops per cycle over the command (1.0 = one column block every cycle)."""
        return self.lookups / self.last_output


def sweep_issues(*, table: str, kb: int, nbt: int, n_tokens: int, first: int = 1,
                 valid: int = 0) -> list[int]:
    """The engine's recurrence (module docstring): the edge of each sweep's last issue
    (``L_k``, k over n_tokens * kb sweeps), the first table fill starting at edge ``first``
    and the first sweep held until edge ``valid`` (the tile's codes usable)."""
    e = table_entries(table)
    a_prev = first
    last = []                      # L_k
    for k in range(kb * n_tokens):
        if k == 0:
            a = first
        else:
            a = a_prev + e + 1
            if k >= 2:
                a = max(a, last[k - 2] + 2)
        f = a + e
        s = max(f + 1, valid) if k == 0 else max(f + 1, last[k - 1] + 1)
        last.append(s + nbt - 1)
        a_prev = a
    return last


def command_timing(*, table: str, kb: int, nbt: int, n_tokens: int) -> CommandTiming:
    """Exact stall-free timing of one engine command (see module docstring)."""
    for name, v in (("kb", kb), ("nbt", nbt), ("n_tokens", n_tokens)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    last = sweep_issues(table=table, kb=kb, nbt=nbt, n_tokens=n_tokens)
    return CommandTiming(issue_done=last[-1], last_output=last[-1] + PIPELINE_LATENCY,
                         lookups=kb * n_tokens * nbt)


def expected_cycles(*, table: str, kb: int, nbt: int, n_tokens: int) -> int:
    """Cycles from the command's acceptance to its last output beat (stall-free)."""
    return command_timing(table=table, kb=kb, nbt=nbt, n_tokens=n_tokens).last_output


def expected_job_cycles(*, table: str, kb: int, tiles: list[int], n_tokens: int) -> int:
    """Back-to-back commands (one per tile, ``tiles`` = column blocks of each), all tiles
    already in the buffer: cycles from the first command's acceptance to the last output."""
    total = 0
    for i, nbt in enumerate(tiles):
        tm = command_timing(table=table, kb=kb, nbt=nbt, n_tokens=n_tokens)
        total += tm.issue_done + 1 if i < len(tiles) - 1 else tm.last_output
    return total


def fill_cycles(*, nbt: int, kb: int, q: int, v: int) -> int:
    """Cycles to write one tile into a free buffer half (one beat of v vectors per cycle)."""
    return nbt * kb * q // v


def steady_kb_cycles(*, table: str, nbt: int) -> float:
    """Average cycles per K block in steady state (see module docstring)."""
    e = table_entries(table)
    return max(nbt, e + 1, (nbt + e + 2) / 2)


# --------------------------------------------------------------------------- layer plans

@dataclass(frozen=True)
class LinearCycles:
    name: str
    kb: int
    nb: int
    tile_nb: int
    tiles: int
    compute: int          # engine cycles of all tiles (stall-free, tiles resident)
    fill: float           # buffer-fill cycles of all tiles (int at v vectors/cycle)


def linear_tiles(n_out: int, k_in: int, *, t: int, q: int, v: int, table: str,
                 half_depth: int, n_tokens: int, nbt_max: int | None = None,
                 bytes_per_cycle: float | None = None, name: str = "linear"
                 ) -> tuple[int, int, int, list[tuple[int, float]]]:
    """(nb, kb, tile_nb, [(compute, fill) per tile]) of one linear on the ping-pong engine.

    Tiles: ``spec.program.tile_columns`` (balanced, at most ``nbt_max`` column blocks; None:
    no limit beyond the buffer half). compute: the engine's stall-free cycles of the tile up to
    its last issue, + 1 (the next command's acceptance); fill: ``fill_cycles`` at ``v`` vectors
    per cycle or, with ``bytes_per_cycle``, no faster than that many bytes of codes per cycle
    (the DDR or port bound).
    """
    from tellme.spec.codes import padded_dims
    from tellme.spec.program import tile_columns

    nb, kb = padded_dims(n_out, k_in, t, q)
    if half_depth < kb:
        raise ValueError(f"{name}: one column block ({kb} words) exceeds a buffer half "
                         f"({half_depth} words)")
    tile_nb = tile_columns(nb, kb, half_depth, nbt_max or nb)      # balanced tiles
    sizes = [min(tile_nb, nb - s) for s in range(0, nb, tile_nb)]
    comp = [command_timing(table=table, kb=kb, nbt=n, n_tokens=n_tokens).issue_done + 1
            for n in sizes]
    fills = [fill_cycles(nbt=n, kb=kb, q=q, v=v) for n in sizes]
    if bytes_per_cycle is not None:
        fills = [max(f, n * kb * q * 5 * t / 8 / bytes_per_cycle)
                 for f, n in zip(fills, sizes, strict=True)]
    return nb, kb, tile_nb, list(zip(comp, fills, strict=True))


def layer_cycles(*, t: int, q: int, v: int, table: str, half_depth: int,
                 shapes: dict[str, tuple[int, int]], n_tokens: int, nbt_max: int | None = None,
                 bytes_per_cycle: float | None = None) -> dict:
    """Tile plan and cycle estimate of one layer's linears on the ping-pong engine.

    Tiles run back to back in layer order; tile i+1 is filled while tile i computes, so a
    tile costs ``max(compute_i, fill_{i+1})`` and the first fill is exposed:
    ``total = fill_0 + sum_i max(compute_i, fill_{i+1})``. Assumes the streamer delivers
    ``v`` vectors per cycle (or no more than ``bytes_per_cycle``) and activations are always
    available. Tiles and fills: :func:`linear_tiles`.
    """
    linears, seq = [], []           # seq: (compute, fill) per tile in order
    for name, (n_out, k_in) in shapes.items():
        nb, kb, tile_nb, tiles = linear_tiles(
            n_out, k_in, t=t, q=q, v=v, table=table, half_depth=half_depth,
            n_tokens=n_tokens, nbt_max=nbt_max, bytes_per_cycle=bytes_per_cycle, name=name)
        seq += tiles
        linears.append(LinearCycles(name, kb, nb, tile_nb, len(tiles),
                                    sum(c for c, _ in tiles), sum(f for _, f in tiles)))
    total = seq[0][1] + sum(max(c, seq[i + 1][1] if i + 1 < len(seq) else 0)
                            for i, (c, _) in enumerate(seq))
    return {
        "linears": linears,
        "compute": sum(lc.compute for lc in linears),
        "fill": sum(lc.fill for lc in linears),
        "total": total + PIPELINE_LATENCY,
        "serial": sum(lc.compute + lc.fill for lc in linears),
    }
