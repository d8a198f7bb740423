"""Plots of ``tellme perf --plot`` (sim/perf.py, docs/performance.md): decode tokens/s against
context with the DDR roofline, the one-weight-port bound and TeLLMe's figure; the time per
token by block, stacked; resources per block against the target's budget (from the cached
synthesis results, ``hw.report.cached_budget``). PNGs; needs matplotlib (the ``plot``
extra)."""

from __future__ import annotations

from pathlib import Path

FOOT = ("projection of the top as built (sim/cycles_top.py, validated against the RTL top "
        "in simulation, not on a board)")


def plot_report(report: dict, out_dir) -> list:
    """The decode and per-block plots of ``report`` (``perf.project`` with the plot contexts)
    in ``out_dir``; returns their paths."""
    from tellme.plotting import pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report['model']}-{report['target']}".replace("/", "_")
    return [_decode(plt, report, out_dir / f"{stem}-decode.png"),
            _blocks(plt, report, out_dir / f"{stem}-blocks.png")]


def _decode(plt, report: dict, path: Path) -> Path:
    import matplotlib.ticker

    dec = report["_all_decode"]
    ctx = sorted(dec)
    tv = report["tellme_v2"]
    a = report["assumptions"]
    clk = a["clock_mhz"] * 1e6
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(ctx, [dec[c]["tok_s"] for c in ctx], "o-", color="tab:blue",
            label="top as built (host A53 LM head)")
    ax.plot(ctx, [dec[c]["pl_lm_head"]["tok_s"] for c in ctx], "s--", color="tab:blue",
            label="top as built, PL LM head")
    # the one weight port alone: the codes at 16 B/cycle, nothing else (an upper bound)
    ax.plot(ctx, [1 / dec[c]["weight_port"]["seconds"] for c in ctx], "-", color="tab:orange",
            lw=1, label="bound: codes through the one 128-bit weight port")
    ov = report.get("_all_overlapped")
    if ov:
        ax.plot(ctx, [ov[c]["tok_s"] for c in ctx], "^:", color="tab:gray",
                label="blocks in parallel (not the top as built)")
    ax.plot(ctx, [dec[c]["roofline"]["tok_s_peak"] for c in ctx], "k-", lw=1,
            label=f"DDR roofline ({a['ddr_peak_gbps']:g} GB/s peak)")
    ax.plot(ctx, [dec[c]["roofline"]["tok_s_sustained"] for c in ctx], "k:", lw=1,
            label=f"DDR roofline x {a['ddr_efficiency']:.2f}")
    if tv["comparable"]:
        ax.axhline(tv["decode_tok_s"], color="tab:red", ls="-.",
                   label=f"TeLLMe v2 published ({tv['decode_tok_s']:g} tok/s)")
    goals = report.get("goals")
    if goals:
        for g in goals:
            if g["unit"] == "tok/s":
                c = int(g["goal"].split()[2])
                ax.plot([c], [g["want"]], "*", color="tab:green", ms=11)
        ax.plot([], [], "*", color="tab:green", ms=11, label="issue 15 goals")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ctx, [str(c) for c in ctx])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("context (keys)")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{report['model']} on {report['target']} at {clk / 1e6:g} MHz: decode "
                 f"(projection)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.text(0.01, 0.01, FOOT, fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _blocks(plt, report: dict, path: Path) -> Path:
    from .perf import BLOCK_LABELS, BLOCKS

    dec = report["_all_decode"]
    ctx = sorted(dec)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = range(len(ctx))
    bottom = [0.0] * len(ctx)
    for b in BLOCKS:
        v = [dec[c]["per_token_s"][b] * 1e3 for c in ctx]
        ax.bar(xs, v, bottom=bottom, label=BLOCK_LABELS[b])
        bottom = [x + y for x, y in zip(bottom, v, strict=True)]
    ax.set_xticks(list(xs), [str(c) for c in ctx])
    ax.set_xlabel("context (keys)")
    ax.set_ylabel("ms per decode token")
    ax.set_title(f"{report['model']} on {report['target']}: time per token by block, the top "
                 f"as built (projection)", fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, FOOT, fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_budget_cached(target: str, out_dir) -> tuple[Path | None, str | None]:
    """The resource plot (``hw.budget.plot_budget``: each budget line's LUT / FF / DSP / BRAM
    / URAM against its limits) from the cached synthesis results of ``target``; (None, a
    note naming the command that makes them) when some block has none."""
    from tellme.hw import report as hw_report
    from tellme.hw.budget import plot_budget

    result, missing = hw_report.cached_budget(target)
    if result is None:
        return None, (f"budget plot skipped: no cached synthesis of {', '.join(missing)}; "
                      f"make it with: tellme hw report --target {target} --budget")
    return plot_budget(result, Path(out_dir)), None
