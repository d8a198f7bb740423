"""Cycle model of the LM-head unit (hw/lm_head.py ``LmHead``), exact for the RTL when the unit
starts idle, ``q`` and ``w`` never idle and ``o`` is never stalled (tests/rtl/tb_lm_head.py
checks it). Cycle 0 is the command's transfer.

* q: beats at cycles ``1 .. d/8``; the weight stream starts at ``c0 = d/8 + 1``.
* block b (``n_b = min(64, vocab - 64 b)`` rows, ``SB = 256 / lanes`` scale beats, ``M = 64 d /
  lanes`` MAC beats): its first scale beat at ``c0`` (b = 0) or ``max(last MAC beat of b-1
  + 1, S(b-1) end + 1)``, the other beats on consecutive cycles, except the last MAC beat,
  which waits for ``L(b-1) end + 1`` (the hold bank free);
* its accumulators are held ``CAPTURE`` (5) cycles after its last MAC beat;
* job S(b) (``s_j = RN32(A dscale_j)``): starts (a registered decision) at ``max(last scale
  beat + 1, L(b-1) end + 1)`` and issues one row per cycle on the next ``n_b`` cycles;
* job L(b) (the logits): starts at ``max(hold + 0, S(b) end + POST_LATENCY + 1)`` (its s-RAM
  entries written) and issues on the next ``n_b`` cycles; logit j leaves ``POST_LATENCY`` (8)
  cycles after its issue.

So a block costs ``max(SB + M, 2 n_b + POST_LATENCY + CAPTURE + 4)``-ish cycles: weight-bound
(one beat per cycle) when ``64 d / lanes`` covers the two sweeps, else post-processor-bound.
"""

from __future__ import annotations

from tellme.spec.lm_head import HEAD_ROWS, Q_BEAT, SCALE_BYTES, check_d, head_blocks


def row_cycles(vocab: int, d: int, lanes: int) -> dict:
    """One row from an idle unit: ``{"w": [cycle of each block's first scale beat], "out":
    [transfer cycle of each logit], "cycles": last logit cycle + 1}`` (cycle 0: the command)."""
    from tellme.hw.lm_head import CAPTURE, POST_LATENCY

    check_d(d)
    nb = head_blocks(vocab)
    SB = SCALE_BYTES // lanes
    M = HEAD_ROWS // lanes * d
    c0 = d // Q_BEAT + 1
    firsts, outs = [], []
    last_mac = s_end = l_end = None
    for b in range(nb):
        n = min(HEAD_ROWS, vocab - HEAD_ROWS * b)
        sc0 = c0 if b == 0 else max(last_mac + 1, s_end + 1)
        firsts.append(sc0)
        s_last = sc0 + SB - 1
        s_start = s_last + 1 if l_end is None else max(s_last + 1, l_end + 1)
        s_end = s_start + n
        mac_last = sc0 + SB + M - 1
        last_mac = mac_last if l_end is None else max(mac_last, l_end + 1)
        l_start = max(last_mac + CAPTURE, s_end + POST_LATENCY + 1)
        outs += [l_start + 1 + j + POST_LATENCY for j in range(n)]
        l_end = l_start + n
    return {"w": firsts, "out": outs, "cycles": outs[-1] + 1}

