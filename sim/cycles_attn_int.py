"""Cycle model of the integer attention engine (hw/attention/int_engine.py).

Exact for the RTL when every input is offered without gaps and the output is never stalled
(asserted by tests/rtl/tb_attn_int.py). A call has two parts that overlap across calls:

* front (command to hand-off): 1 (command) + nq * head_dim / q_beat (q load) + nq (q scale per
  lane) + bpr * beat + QUANT_DRAIN (the lanes' quantisers, one element per cycle, zeros past
  head_dim up to the last K beat; bpr = ceil(head_dim / beat)) + per K/V
  segment of ``kv_schedule``: K rows * bpr beats, V ``v_stream_cycles`` (its blocks, head_dim
  beats each, behind the weight preparation), each + ``drain`` (the beat pipeline empties);
* finish (one lane after the other): DIV (1/L) + head_dim (normaliser, one output per cycle)
  + NEXT, on the other accumulator bank, while the next call's front runs.

The hand-off waits for the previous call's finish; the next command is taken the cycle after
the hand-off. :func:`calls_cycles` runs that recurrence over a list of calls (from the first
command to the last output, inclusive); :func:`call_cycles` is one call alone.
``layer_cycles`` gives one layer's attention (decode or prefill) for the rate analysis:
``engines`` independent engines take the calls round-robin.
"""

from __future__ import annotations

from tellme.spec.attention import decode_calls, kv_schedule, prefill_calls

DIV = 26             # 1/L per lane: init, 24 restoring steps, rounding
NEXT = 2             # normaliser drain between lanes
TAIL = 3             # last issue -> last output (N1, N2, output register)
QUANT_DRAIN = 5      # quantiser pipeline (QLAT = 4) empties
W_READY = 7          # last key issued -> its block may stream (P1..P6 and the ready count)
BANKS = 3            # weight banks


def tree_levels(beat: int) -> int:
    return (beat - 1).bit_length()


def drain(beat: int) -> int:
    """Cycles from the last beat of a segment to the next segment (stages 0..T+3, T = 1 +
    tree levels, then one cycle to see the pipeline empty)."""
    return tree_levels(beat) + 6


def v_stream_cycles(first: int, end: int, *, head_dim: int, beat: int) -> int:
    """STREAM cycles of a V segment over keys [first, end): its whole blocks, each streaming
    head_dim beats once its weights are ready (preparation: beat keys per block, one per
    cycle, at most BANKS blocks ahead of the stream)."""
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
    return stream_end[-1] + 1


def front_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int,
                 q_beat: int | None = None) -> int:
    """Command accept to hand-off (exclusive) of one call."""
    ql = min(beat, 8) if q_beat is None else q_beat
    bpr = -(-head_dim // beat)
    stream = 0
    for kind, r0, rows in kv_schedule(n, depth):
        if kind == "K":
            stream += rows * bpr
        else:
            stream += v_stream_cycles(r0, r0 + rows, head_dim=head_dim, beat=beat)
        stream += drain(beat)
    return 1 + nq * head_dim // ql + nq + bpr * beat + QUANT_DRAIN + stream


def calls_cycles(calls, *, head_dim: int, beat: int, depth: int,
                 q_beat: int | None = None) -> int:
    """Cycles of back-to-back calls [(n, nq), ...]: first command to last output."""
    lane = DIV + head_dim + NEXT
    c, xfree, last = 0, 0, 0
    for n, nq in calls:
        h = max(c + front_cycles(n, nq, head_dim=head_dim, beat=beat, depth=depth,
                                 q_beat=q_beat), xfree)
        xfree = h + 1 + nq * lane
        last = xfree - NEXT - 1 + TAIL
        c = h + 1
    return last + 1


def call_cycles(n: int, nq: int, *, head_dim: int, beat: int, depth: int,
                q_beat: int | None = None) -> int:
    """Cycles of one engine call alone (command to last output, inclusive)."""
    return calls_cycles([(n, nq)], head_dim=head_dim, beat=beat, depth=depth, q_beat=q_beat)


def layer_cycles(kind: str, *, pos: int = 0, n_q: int = 1, start: int = 0, heads: int,
                 kv_heads: int, head_dim: int, lanes: int, beat: int, depth: int,
                 engines: int = 1, q_beat: int | None = None) -> int:
    """Cycles of one layer's attention on ``engines`` engines (calls dealt round-robin, each
    engine's calls back to back; the busiest engine)."""
    if kind == "decode":
        calls = decode_calls(pos, heads, kv_heads, lanes)
    elif kind == "prefill":
        calls = prefill_calls(n_q, start, heads, kv_heads, lanes)
    else:
        raise ValueError(f"kind must be 'decode' or 'prefill', got {kind!r}")
    per = [[] for _ in range(engines)]
    for i, c in enumerate(calls):
        per[i % engines].append((c.n, len(c.lim)))
    return max(calls_cycles(p, head_dim=head_dim, beat=beat, depth=depth, q_beat=q_beat)
               for p in per if p)
