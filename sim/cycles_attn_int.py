"""Cycle model of the integer attention engine (hw/attention/int_engine.py).

Exact for the RTL when every input is offered without gaps and the output is never stalled
(asserted by tests/rtl/tb_attn_int.py). The engine has four units that work on consecutive
calls at once; :func:`calls_cycles` runs their per-call recurrence (cycle 0 = the first command
accepted, the result = cycles to the last output, inclusive):

* loader (call t): command accepted at a_t; q load nq * head_dim / q_beat cycles, L_MAX
  cycles until the last beat's max|q| is in, g nq cycles (one lane per cycle into a G_LAT-stage
  pipeline), then the hand-off to the quantiser at hl_t = max(a_t + load + L_MAX + nq + G_LAT
  + 1, k_{t-1} + 1) (the quantiser is free the cycle after the stream unit took call t-1);
  a_{t+1} = hl_t + 1.
* quantiser (call t): from hl_t + 1, bpr = ceil(head_dim / beat) words of ``beat`` elements,
  one element per cycle; a word starts only in an allowed cycle of the stream unit's current
  call t-1 (:func:`stream_plan`: K rows with more than ``k_margin`` rows left, a V segment
  from the cycle its last weight is written through its drain, and everything from the
  hand-off on); ready q_t = last element + Q_READY.
* stream unit: takes call t at k_t = max(q_t, h_{t-1}) (in the hand-off cycle of t-1 if the
  call is ready by then), streams from k_t + 1 for S_t cycles (``kv_schedule`` segments: K rows
  * bpr beats, V ``v_stream_cycles``, each + ``drain``), hands off at h_t = max(k_t + 1 + S_t,
  x_{t-1}) once the finishing unit is free.
* finishing unit: per lane 1/L (DIV cycles from the hand-off or from the previous lane's
  start) overlaps the previous lane's outputs, o_beat a cycle (hd_out = head_dim / o_beat
  cycles a lane): lane l starts emitting at h_t + DIV + l * max(DIV, hd_out) + 1; free (x_t)
  the cycle after the last issue, the last output TAIL cycles after it.

``layer_cycles`` gives one layer's attention (decode or prefill) for the rate analysis:
``engines`` independent engines take the calls round-robin.
"""

from __future__ import annotations

from tellme.spec.attention import kv_schedule, layer_calls

DIV = 29             # start (hand-off or emitter take) -> next 1/L held: L and L - 1, the
#                      leading one of L - 1, beta and the normalised L, 24 steps, the rounding
#                      step (its increment is added at the emitter's take)
TAIL = 11            # last issue -> last output (N1 .. N11: A read, |A|, RN32 (3), product
#                      (2), RN_fmt (4, the output register))
Q_READY = 9          # last quantiser issue -> call may be taken (QLAT = 8 stages drained)
W_READY = 10         # last key issued -> its block may stream (P1..P9 and the ready count)
L_MAX = 2            # last q beat accepted -> first g issue (the beat's register, the max tree)
G_LAT = 4            # last g issue -> hand-off to the quantiser (G1..G4: the last g written)
K_TAIL = 6           # K beat: tree sum (stage T) -> logit (S, S * mk parts, S * mk, rounding
#                      in three stages)
Q_CHAIN = 7          # quantiser issue -> element into the operand shift chain
W_CHAIN = 8          # weight issue -> weight into the operand shift chain
BANKS = 3            # weight banks


CHAIN = 8            # DSP48E2 slices per MAC cascade (at most the beat)


def mac_latency(beat: int) -> int:
    """T: accepted beat -> the lane's sum: a cascade of c = min(beat, CHAIN) slices (3 + c - 1
    stages, hw/dsp.py), then a registered tree over the beat / c cascade sums."""
    c = min(beat, CHAIN)
    return 3 + (c - 1) + (beat // c - 1).bit_length()


def drain(beat: int) -> int:
    """Cycles from the last beat of a segment to the next segment (stages 0..T+K_TAIL, T =
    ``mac_latency``, then one cycle to see the pipeline empty)."""
    return mac_latency(beat) + K_TAIL + 2


def k_margin(beat: int, bpr: int) -> int:
    """A quantiser word may start in a K segment while more than this many rows are left
    (the word's last element, Q_CHAIN cycles after its issue, must be in the shift chain before
    the next V segment's first weight, W_CHAIN cycles after that segment's first issue, which
    comes ``drain`` cycles after the K segment's last beat)."""
    gap = max(0, beat + Q_CHAIN - W_CHAIN - drain(beat) - 1)
    return -(-gap // bpr)


def _v_plan(first: int, end: int, *, head_dim: int, beat: int) -> tuple[int, int]:
    """(STREAM cycles, cycle of the last weight issue) of a V segment over keys [first, end)."""
    nb = (end + beat - 1) // beat - first // beat
    issue_end, stream_end = [], []
    for k in range(nb):
        start = issue_end[k - 1] + 1 if k else 0
        if k >= BANKS:
            start = max(start, stream_end[k - BANKS] + 1)
        issue_end.append(start + beat - 1)
        s = issue_end[k] + W_READY
        if k:
            s = max(s, stream_end[k - 1] + 1)
        stream_end.append(s + head_dim - 1)
    return stream_end[-1] + 1, issue_end[-1]


def v_stream_cycles(first: int, end: int, *, head_dim: int, beat: int) -> int:
    """STREAM cycles of a V segment over keys [first, end): its whole blocks, each streaming
    head_dim beats once its weights are ready (preparation: beat keys per block, one per
    cycle, at most BANKS blocks ahead of the stream)."""
    return _v_plan(first, end, head_dim=head_dim, beat=beat)[0]


def stream_plan(n: int, *, head_dim: int, beat: int, depth: int
                ) -> tuple[int, list[tuple[int, int]]]:
    """(S, windows) of one call's stream: S = cycles from the first STREAM cycle to the
    hand-off state; windows = [(first, last)] cycles (from the first STREAM cycle) in which the
    quantiser may start a word (from S on it always may)."""
    bpr = -(-head_dim // beat)
    dr = drain(beat)
    off, win = 0, []
    for kind, r0, rows in kv_schedule(n, depth):
        if kind == "K":
            thr = k_margin(beat, bpr)
            if rows > thr:
                win.append((off, off + (rows - thr) * bpr - 1))
            off += rows * bpr + dr
        else:
            vc, ie = _v_plan(r0, r0 + rows, head_dim=head_dim, beat=beat)
            win.append((off + ie + W_READY, off + vc + dr - 1))
            off += vc + dr
    return off, win


def front_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int,
                 q_beat: int | None = None) -> int:
    """Command accept to hand-off (exclusive) of one call on an idle engine."""
    ql = min(beat, 8) if q_beat is None else q_beat
    bpr = -(-head_dim // beat)
    s, _ = stream_plan(n, head_dim=head_dim, beat=beat, depth=depth)
    # hand-off to the quantiser, its words back to back, take, stream
    return 1 + nq * head_dim // ql + L_MAX + nq + G_LAT + 1 + bpr * beat - 1 + Q_READY + 1 + s


def calls_cycles(calls, *, head_dim: int, beat: int, depth: int,
                 q_beat: int | None = None, o_beat: int = 1) -> int:
    """Cycles of back-to-back calls [(n, nq), ...]: first command to last output."""
    ql = min(beat, 8) if q_beat is None else q_beat
    hd_out = head_dim // o_beat               # emitter cycles of a lane
    bpr = -(-head_dim // beat)
    a = 0                     # next command accepted
    k_prev = None             # take of the previous call (None: the stream unit never took one)
    h_prev = 0                # its hand-off
    win, s_end = [], 0        # the previous call's quantiser windows (absolute), hand-off state
    xfree, last = 0, 0
    for n, nq in calls:
        hl = a + nq * head_dim // ql + L_MAX + nq + G_LAT + 1
        if k_prev is not None:
            hl = max(hl, k_prev + 1)
        a = hl + 1
        c = hl + 1                                        # first QUANT cycle
        for _ in range(bpr):
            if k_prev is not None and c < s_end:
                c = next((max(c, w0) for w0, w1 in win if w1 >= c), s_end)
            c += beat
        q_ready = c - 1 + Q_READY
        k = q_ready if k_prev is None else max(q_ready, h_prev)
        s, rel = stream_plan(n, head_dim=head_dim, beat=beat, depth=depth)
        win = [(k + 1 + w0, k + 1 + w1) for w0, w1 in rel]
        s_end = k + 1 + s
        h = max(s_end, xfree)
        take = h + DIV + (nq - 1) * max(DIV, hd_out)       # emitter takes the last lane's 1/L
        xfree = take + hd_out + 1
        last = take + hd_out + TAIL
        k_prev, h_prev = k, h
    return last + 1


def call_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int,
                q_beat: int | None = None, o_beat: int = 1) -> int:
    """Cycles of one engine call alone (command to last output, inclusive)."""
    return calls_cycles([(n, nq)], head_dim=head_dim, beat=beat, depth=depth, q_beat=q_beat,
                        o_beat=o_beat)


def layer_cycles(kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0, heads: int,
                 kv_heads: int, head_dim: int, lanes: int, beat: int, depth: int,
                 engines: int = 1, q_beat: int | None = None, o_beat: int = 1) -> int:
    """Cycles of one layer's attention on ``engines`` engines (calls dealt round-robin, each
    engine's calls back to back; the busiest engine)."""
    calls = layer_calls(kind, pos=pos, n_q=n_q, start=start, heads=heads, kv_heads=kv_heads,
                        lanes=lanes)
    per = [[] for _ in range(engines)]
    for i, c in enumerate(calls):
        per[i % engines].append((c.n, len(c.lim)))
    return max(calls_cycles(p, head_dim=head_dim, beat=beat, depth=depth, q_beat=q_beat,
                            o_beat=o_beat)
               for p in per if p)
