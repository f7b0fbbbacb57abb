"""Figures: pure functions from run records (or the runs frame) to plotly figures (``Figure``:
a go.Figure whose notebook output also carries an SVG copy). They import records and nothing
above. ``from parakit.plots import speedup`` keeps working."""

from parakit.plots.advisor import projection, verification  # noqa: F401
from parakit.plots.base import Figure  # noqa: F401
from parakit.plots.experts import experts  # noqa: F401
from parakit.plots.fit import fit_figure  # noqa: F401
from parakit.plots.measures import breakdown, comm_bandwidth, power, wire_bytes  # noqa: F401
from parakit.plots.memory import memory  # noqa: F401
from parakit.plots.switching import switch_cost  # noqa: F401
from parakit.plots.time import loss_time, time_to_loss_figure  # noqa: F401
from parakit.plots.timeline import timeline  # noqa: F401
from parakit.plots.runs import (  # noqa: F401
    PLOTS, loss, speedup, speedup_table, step_times, throughput,
)

__all__ = ["PLOTS", "Figure", "experts", "projection", "verification", "switch_cost", "breakdown", "comm_bandwidth", "fit_figure", "loss_time", "time_to_loss_figure", "loss", "memory", "power", "speedup", "speedup_table",
           "step_times", "throughput", "timeline", "wire_bytes"]
