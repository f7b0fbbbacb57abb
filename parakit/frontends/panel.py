"""``parakit.Panel``: a control panel for runs, in the pattern of ipywidgets' Variable
Inspector example: a plain class that holds standard widgets, shows itself through
``_repr_mimebundle_`` and closes them all with ``close()``.

Every change of a control checks the settings with ``Session.config`` (no engine is touched)
and explains in one line what does not fit. A run goes in a background thread, so the kernel
stays free; its figures update while it runs, at most ``1 / DRAW_EVERY_S`` times a second.
"""

from __future__ import annotations

import functools
import html
import threading
import time
import traceback
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from parakit.config.run import RunConfig, Workload
from parakit.config.layouts import Strategy
from parakit.config.levers import Compression, CompressionKind, Precision
from parakit.plots.measures import BREAKDOWN_PARTS, breakdown, power
from parakit.plots.base import TEMPLATE
from parakit.plots.runs import loss, speedup
from parakit.records.result import OK, STOPPED, RunResult, headline, run_label
from parakit.session.session import Session

DRAW_EVERY_S = 0.25  # each redraw is a message to the browser: 4 a second reads as live
STOP_WAIT_S = 15.0  # close() waits this long for a stopped run to end
# The compressions that take a number, and which field of Compression it fills.
COMPRESSION_VALUE = {CompressionKind.POWERSGD: "rank", CompressionKind.TOPK: "ratio",
                     CompressionKind.RANDOMK: "ratio"}
_TOGGLE_STYLE = {"button_width": "80px"}


def _reported(method):
    """A widget callback whose errors go to the panel's log, not the kernel's (unseen) log."""

    @functools.wraps(method)
    def wrapper(self: "Panel", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - shown to the user, whatever it is
            self.log.append_stderr(traceback.format_exc())
            return None

    return wrapper


class Panel:
    """Pick a strategy, precision, compression, workers and model, press Run, and watch the
    loss and the speed-up fill in. Finished runs stay on the figures, so changing a setting
    and pressing Run again compares them side by side.

    Example:
        >>> panel = parakit.Panel(session)   # or %parakit panel
        >>> panel                            # shows it in the notebook

    Args:
        session: the engines to run on; by default the panel starts its own (and closes them
            in ``close()``).

    Attributes:
        results: the runs made from this panel, oldest first (each also in the run store).
        figures: the live plotly FigureWidgets by name.
    """

    def __init__(self, session: Session | None = None):
        self._own_session = session is None
        self.session = session if session is not None else Session(progress=False)
        self.results: list[RunResult] = []
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._latest: dict[str, Any] = {}
        self._live_x: list[int] = []
        self._live_y: list[float] = []
        self._last_draw = 0.0
        self._partial: dict[str, tuple[list[int], list[float]]] = {}  # stopped runs: the loss seen live
        self._build_controls()
        self._build_figures()
        self.widget = self._layout()
        for control in self._controls:
            control.observe(self._on_change, names="value")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self._on_change()

    # -- building ----------------------------------------------------------------------
    def _build_controls(self) -> None:
        defaults = RunConfig()  # what a run gets when it does not say
        toggle = functools.partial(widgets.ToggleButtons, style=_TOGGLE_STYLE)
        self.strategy = toggle(options=[s.value for s in Strategy], value=defaults.strategy.value,
                               description="strategy")
        self.precision = toggle(options=[p.value for p in Precision], value=defaults.precision.value,
                                description="precision")
        self.compression = toggle(options=[k.value for k in CompressionKind],
                                  value=defaults.compression.kind.value, description="compression")
        self.compression_rank = widgets.BoundedIntText(
            value=Compression.DEFAULT_RANK, min=1, max=1024, description="rank",
            layout=widgets.Layout(width="160px"))
        self.compression_ratio = widgets.BoundedFloatText(
            value=Compression.DEFAULT_RATIO, min=1e-6, max=1.0, step=0.01, description="ratio",
            layout=widgets.Layout(width="160px"))
        self.model = toggle(options=[w.value for w in Workload], value=defaults.model,
                            description="model")
        self.workers = widgets.IntSlider(value=self.session.workers, min=1, max=self._max_workers(),
                                         description="workers")
        self.steps = widgets.BoundedIntText(value=defaults.steps, min=1, max=10**7, description="steps",
                                            layout=widgets.Layout(width="180px"))
        self.batch_size = widgets.BoundedIntText(value=defaults.batch_size, min=1, max=2**24,
                                                 description="batch size",
                                                 layout=widgets.Layout(width="180px"))
        self.run_button = widgets.Button(description="Run", icon="play", button_style="success")
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=defaults.steps, description="0 steps")
        self.problem = widgets.HTML()  # one line: why these settings do not fit together
        self.status = widgets.HTML()  # one line: what the last or current run does
        self.log = widgets.Output()  # errors from callbacks, which Jupyter would otherwise hide
        self._controls = [self.strategy, self.precision, self.compression, self.compression_rank,
                          self.compression_ratio, self.model, self.workers, self.steps, self.batch_size]

    def _build_figures(self) -> None:
        self.loss_figure = go.FigureWidget()
        self.speedup_figure = go.FigureWidget()
        self.breakdown_figure = go.FigureWidget()
        self.power_figure = go.FigureWidget()
        # Live figures by name, drawn from _draw_live (while a run goes) and _draw_runs (when
        # it ends); the last trace(s) of loss, breakdown and power are the running run's.
        self.figures = {"loss": self.loss_figure, "speedup": self.speedup_figure,
                        "breakdown": self.breakdown_figure, "power": self.power_figure}
        self._draw_runs()

    def _layout(self) -> widgets.Widget:
        row = lambda *children: widgets.HBox(list(children))  # noqa: E731
        controls = widgets.VBox([
            self.strategy, self.precision,
            row(self.compression, self.compression_rank, self.compression_ratio),
            self.model, row(self.workers, self.steps, self.batch_size),
            row(self.run_button, self.stop_button, self.progress),
            self.problem, self.status,
        ])
        return widgets.VBox([controls, row(self.loss_figure, self.speedup_figure),
                             row(self.breakdown_figure, self.power_figure), self.log])

    def _max_workers(self) -> int:
        """The slider's end: every GPU, or a few CPU engines (Session.config has the final say)."""
        if self.session.gpus:
            return max(self.session.workers, len(self.session.gpus))
        return max(self.session.workers, 4, self.session.facts.cpu_count)

    # -- settings ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The run the controls describe, as keyword arguments of ``Session.run``."""
        kind = CompressionKind(self.compression.value)
        value = {"rank": self.compression_rank.value, "ratio": self.compression_ratio.value}
        field = COMPRESSION_VALUE.get(kind)
        compression = Compression(kind, **({field: value[field]} if field else {}))
        return {
            "model": self.model.value, "strategy": self.strategy.value,
            "precision": self.precision.value, "compression": str(compression),
            "workers": self.workers.value, "steps": self.steps.value,
            "batch_size": self.batch_size.value,
        }

    @_reported
    def _on_change(self, change: dict | None = None) -> None:
        field = COMPRESSION_VALUE.get(CompressionKind(self.compression.value))
        self.compression_rank.layout.display = None if field == "rank" else "none"
        self.compression_ratio.layout.display = None if field == "ratio" else "none"
        self._check()

    def _check(self) -> RunConfig | None:
        """Check the settings without touching an engine; explain and disable Run if they do
        not fit. Returns the config, or None."""
        try:
            config = self.session.config(**self.settings())
        except ValueError as e:
            self.problem.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
            self.run_button.disabled = True
            self.run_button.tooltip = str(e)
            return None
        self.problem.value = ""
        self.run_button.disabled = self._running
        self.run_button.tooltip = ""
        return config

    # -- a run ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    @_reported
    def _on_run(self, _button: widgets.Button | None = None) -> None:
        if self._running or self._check() is None:  # .click() works on a disabled button too
            return
        settings = self.settings()
        self._running, self._stop_requested = True, False
        self._latest, self._live_x, self._live_y, self._last_draw = {}, [], [], 0.0
        self._live_power: list[tuple[float, float]] = []
        with self.run_button.hold_sync(), self.stop_button.hold_sync():
            self.run_button.disabled, self.stop_button.disabled = True, False
        with self.progress.hold_sync():
            self.progress.value, self.progress.max = 0, settings["steps"]
            self.progress.bar_style, self.progress.description = "", f"0/{settings['steps']}"
        self.status.value = f"starting {html.escape(run_label(settings))} ..."
        self._draw_runs(live=run_label(settings))
        self._thread = threading.Thread(target=self._run_in_background, args=(settings,),
                                        name="parakit-panel-run", daemon=True)
        self._thread.start()

    def _run_in_background(self, settings: dict[str, Any]) -> None:
        result = None
        try:
            if not self._stop_requested:
                result = self.session.run(on_progress=self._on_progress, **settings)
        except Exception:  # noqa: BLE001 - shown in the panel; the thread must not die silently
            self.log.append_stderr(traceback.format_exc())
        finally:
            try:
                self._finish(result)
            except Exception:  # noqa: BLE001
                self.log.append_stderr(traceback.format_exc())
            finally:
                self._running = False
                self.stop_button.disabled = True
                self._on_change()

    @_reported
    def _on_progress(self, progress: dict[str, Any]) -> None:
        """Rank 0's progress, a few times a second, in the run's thread."""
        if self._stop_requested:
            self.session.stop()  # Stop was pressed before the run had begun: ask again
        step, value = progress.get("step"), progress.get("loss")
        if value is not None and step is not None and (not self._live_x or step > self._live_x[-1]):
            self._live_x.append(step)
            self._live_y.append(value)
        sample = progress.get("power")  # (t_s, watts, util, memory) or None
        if sample and (not self._live_power or sample[0] > self._live_power[-1][0]):
            self._live_power.append((sample[0], sample[1]))
        self._latest = progress
        now = time.monotonic()
        if now - self._last_draw >= DRAW_EVERY_S:
            self._last_draw = now
            self._draw_live()

    def _draw_live(self) -> None:
        step, steps = self._latest.get("step", 0), self._latest.get("steps", self.progress.max)
        with self.progress.hold_sync():
            self.progress.max, self.progress.value = steps, step
            self.progress.description = f"{step}/{steps}"
        value = self._latest.get("loss")
        self.status.value = f"running: step {step}/{steps}" + (f", loss {value:.4f}" if value is not None else "")
        with self.loss_figure.batch_update():
            live = self.loss_figure.data[-1]
            live.x, live.y = list(self._live_x), list(self._live_y)
        split = self._latest.get("breakdown")
        if split:
            with self.breakdown_figure.batch_update():
                for trace, key in zip(self.breakdown_figure.data[-len(BREAKDOWN_PARTS):], BREAKDOWN_PARTS):
                    trace.x, trace.y = ["running"], [split[key] * 1e3]
                axis = self.breakdown_figure.layout.xaxis
                if axis.tickvals is not None and "running" not in axis.tickvals:
                    axis.tickvals, axis.ticktext = (*axis.tickvals, "running"), (*axis.ticktext, "running")
        if self._live_power:
            with self.power_figure.batch_update():
                live = self.power_figure.data[-1]
                live.x, live.y = [t for t, _ in self._live_power], [w for _, w in self._live_power]

    @_reported
    def _on_stop(self, _button: widgets.Button | None = None) -> None:
        if not self._running:
            return
        self._stop_requested = True
        self.stop_button.disabled = True
        self.status.value = "stopping ..."
        self.session.stop()

    def _finish(self, result: RunResult | None) -> None:
        if self._latest:
            self._draw_live()  # the last progress, even if it came sooner than DRAW_EVERY_S
        if result is None:
            self.status.value = "<span style='color:#b00020'>the run did not start: see the log below</span>"
            self.progress.bar_style = "danger"
            self._draw_runs()
            return
        self.results.append(result)
        if result.status != OK and self._live_x:
            self._partial[result.run_id] = (list(self._live_x), list(self._live_y))
        with self.progress.hold_sync():
            if result.ok:
                self.progress.value = self.progress.max
                self.progress.description = f"{self.progress.max}/{self.progress.max}"
            self.progress.bar_style = {OK: "success", STOPPED: "warning"}.get(result.status, "danger")
            if result.summary.get("diverged_at_step") is not None:
                self.progress.bar_style = "warning"
        self.status.value = html.escape(_outcome(result))
        self._draw_runs()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Wait for the run going in the background; returns the latest run (or None)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.results[-1] if self.results else None

    # -- figures -------------------------------------------------------------------------
    def _draw_runs(self, live: str | None = None) -> None:
        """Redraw from the finished runs: a loss line each (the loss seen live for a stopped
        one) plus an empty live line, and the speed-up so far."""
        figure = loss(self.results)
        by_id = {r.run_id: r for r in self.results}
        for trace in figure.data:
            run = by_id[trace.customdata[0][0]]
            trace.name = f"{run_label(run.config, run.world_size)} · {run.run_id[-6:]}"
        for run_id, (xs, ys) in self._partial.items():
            run = by_id[run_id]
            figure.add_scatter(x=xs, y=ys, mode="lines", line={"dash": "dot"},
                               name=f"{run_label(run.config, run.world_size)} · {run_id[-6:]} ({run.status})")
        figure.add_scatter(x=[], y=[], mode="lines+markers", name=f"running: {live}" if live else "running",
                           line={"color": "black"}, showlegend=live is not None)
        _replace(self.loss_figure, figure)
        try:
            figure = speedup(self.results)
        except ValueError as e:  # no 1-worker run yet: the ideal line, and what to do
            figure = go.Figure()
            figure.add_scatter(x=[1, self.workers.max], y=[1, self.workers.max], mode="lines",
                               name="ideal (linear)", line={"dash": "dash", "color": "gray"})
            figure.update_layout(template=TEMPLATE, xaxis_title="workers (ranks)",
                                 yaxis_title="speed-up (x)",
                                 title={"text": "Speed-up vs 1 worker (samples/s)",
                                        "subtitle": {"text": str(e)}})
        _replace(self.speedup_figure, figure)
        figure = breakdown(self.results)
        for key, (name, colour) in BREAKDOWN_PARTS.items():  # the running run's bar, filled live
            figure.add_bar(x=[], y=[], name=f"running: {name}", marker_color=colour, opacity=0.5,
                           showlegend=False, hovertemplate=f"running: {name} %{{y:.2f}} ms<extra></extra>")
        _replace(self.breakdown_figure, figure)
        figure = power(self.results)
        figure.add_scatter(x=[], y=[], mode="lines", name=f"running: {live}" if live else "running",
                           line={"color": "black"}, showlegend=live is not None)
        _replace(self.power_figure, figure)

    # -- display and cleanup -------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop a run still going, close every widget, and stop the engines if the panel
        started them."""
        if self._running:
            self._on_stop()
            self.wait(STOP_WAIT_S)
        for child in [*self._controls, self.run_button, self.stop_button, self.progress,
                      self.problem, self.status, self.log, *self.figures.values()]:
            child.close()
        self.widget.close()
        if self._own_session:
            self.session.close()


def _replace(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Show ``figure`` in ``widget`` in one message to the browser."""
    with widget.batch_update():
        widget.data = []
        widget.add_traces(list(figure.data))
        widget.layout = figure.layout


def _outcome(result: RunResult) -> str:
    return f"{headline(result)} ({result.run_id})"
