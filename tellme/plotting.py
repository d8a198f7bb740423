"""matplotlib for the plots of ``tellme perf --plot`` and ``tellme hw report --budget --plot``
(the optional ``plot`` extra), imported only when a plot is asked for."""

from __future__ import annotations


def pyplot():
    """matplotlib's pyplot on the Agg backend (ImportError naming the extra when missing)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'tellme[plot]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
