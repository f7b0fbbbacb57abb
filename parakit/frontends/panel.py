"""``parakit.Panel``: a control panel for runs, in the pattern of ipywidgets' Variable
Inspector example: a plain class that holds standard widgets, shows itself through
``_repr_mimebundle_`` and closes them all with ``close()``.

Every change of a control checks the settings with ``Session.config`` (no engine is touched)
and explains in one line what does not fit. A run goes in a background thread, so the kernel
stays free; its figures update while it runs, at most ``1 / DRAW_EVERY_S`` times a second.
Moving a toggle or the workers slider while it runs asks the run to switch to it
(``Session.switch``): training goes on from the step the ranks agree on, and says which.
"""

from __future__ import annotations

import functools
import html
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from parakit.config.run import RunConfig, Workload
from parakit.config.layouts import Strategy
from parakit.config.levers import Compression, CompressionKind, Precision
from parakit.config.recovery import FailurePolicy, OnFailure
from parakit.config.switch import change_text
from parakit.frontends.callbacks import reported
from parakit.frontends.options import own_models
from parakit.frontends.panel_figures import PanelFigures
from parakit.frontends.text import outcome_line
from parakit.records.result import OK, STOPPED, RunResult, run_label
from parakit.session.session import Session
from parakit.session.sweep import MAX_REPEATS

DRAW_EVERY_S = 0.25  # each redraw is a message to the browser: 4 a second reads as live
STOP_WAIT_S = 15.0  # close() waits this long for a stopped run to end
ONE_WORKER_STRATEGIES = {"single", "ddp", "fsdp"}  # a missing baseline of these keeps its strategy
LIVE_SWITCHES = ("strategy", "precision", "compression", "workers")  # moved during a run: the run switches
# The compressions that take a number, and which field of Compression it fills.
COMPRESSION_VALUE = {CompressionKind.POWERSGD: "rank", CompressionKind.TOPK: "ratio",
                     CompressionKind.RANDOMK: "ratio"}
_TOGGLE_STYLE = {"button_width": "80px"}


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
        models: your own models beside the built-ins, by the name the model toggle shows:
            a zero-argument callable (an nn.Module class), or a tuple (model, data) or
            (model, data, loss), e.g. ``{"tiny": Tiny, "mine": (make_model, batches, my_loss)}``.

    Attributes:
        results: the runs made from this panel, oldest first (each also in the run store).
        figures: the live plotly FigureWidgets by name.
        closed: True once ``close()`` ran.
    """

    def __init__(self, session: Session | None = None, models: Mapping[str, Any] | None = None):
        self.models = own_models(models)
        self._own_session = session is None
        self.session = session if session is not None else Session(progress=False)
        self.results: list[RunResult] = []
        self.closed = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._latest, self._live_x, self._live_y, self._last_draw = {}, [], [], 0.0
        self._partial: dict[str, tuple[list[int], list[float]]] = {}  # stopped runs: the loss seen live
        self._switched_to: dict[str, Any] = {}  # what the run going on was last asked to train with
        self.switches: list[tuple[int, dict[str, Any]]] = []  # the run going on: (step, settings) switched to
        self._build_controls()
        self._build_figures()
        self.widget = self._layout()
        for control in self._controls:
            control.observe(self._on_change, names="value")
        self.run_button.on_click(self._on_run)
        self.baseline_button.on_click(self._on_baseline)
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
        self.model = toggle(options=[w.value for w in Workload] + list(self.models), value=defaults.model,
                            description="model")
        self.workers = widgets.IntSlider(value=self.session.workers, min=1, max=self._max_workers(),
                                         description="workers")
        self.steps = widgets.BoundedIntText(value=defaults.steps, min=1, max=10**7, description="steps",
                                            layout=widgets.Layout(width="180px"))
        self.batch_size = widgets.BoundedIntText(value=defaults.batch_size, min=1, max=2**24,
                                                 description="batch size",
                                                 layout=widgets.Layout(width="180px"))
        self.run_button = widgets.Button(description="Run", icon="play", button_style="success")
        # Shown when the speed-up has no baseline: runs the missing 1-worker run.
        self.baseline_button = widgets.Button(description="Run the 1-worker baseline", icon="play",
                                              layout=widgets.Layout(display="none", width="auto"))
        # Not a live control: how many times Run runs these settings (intervals from their spread)
        self.repeats = widgets.BoundedIntText(value=1, min=1, max=MAX_REPEATS, description="repeats",
                                              layout=widgets.Layout(width="160px"))
        # Not live either: what the next run does if it loses a worker (0 steps: no checkpoints)
        self.on_failure = toggle(options=[o.value for o in OnFailure], value=OnFailure.FAIL.value,
                                 description="on failure")
        self.checkpoint_every = widgets.BoundedIntText(0, min=0, max=10**7, description="checkpoint every")
        # A lesson's lever, not live: one rank made FACTOR times slower ("1:2"), empty for none
        self.straggler = widgets.Text(value="", placeholder="RANK:FACTOR", description="straggler",
                                      layout=widgets.Layout(width="220px"))
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=defaults.steps, description="0 steps")
        self.problem = widgets.HTML()  # one line: why these settings do not fit together
        self.status = widgets.HTML()  # one line: what the last or current run does
        self.log = widgets.Output()  # errors from callbacks, which Jupyter would otherwise hide
        self._controls = [self.strategy, self.precision, self.compression, self.compression_rank,
                          self.compression_ratio, self.model, self.workers, self.steps, self.batch_size,
                          self.on_failure, self.checkpoint_every, self.straggler]

    def _build_figures(self) -> None:
        self.drawn = PanelFigures()
        self.figures = self.drawn.figures
        self.loss_figure, self.speedup_figure = self.figures["loss"], self.figures["speedup"]
        self.breakdown_figure, self.power_figure = self.figures["breakdown"], self.figures["power"]
        self._draw_runs()

    def _layout(self) -> widgets.Widget:
        row = lambda *children: widgets.HBox(list(children))  # noqa: E731
        controls = widgets.VBox([
            self.strategy, self.precision,
            row(self.compression, self.compression_rank, self.compression_ratio),
            self.model, row(self.workers, self.steps, self.batch_size, self.repeats),
            row(self.on_failure, self.checkpoint_every, self.straggler),
            row(self.run_button, self.stop_button, self.progress, self.baseline_button),
            self.problem, self.status,
        ])
        # Two figures a row on a 1280-px notebook; they wrap under one another when narrower.
        figures = widgets.Box(list(self.figures.values()),
                              layout=widgets.Layout(display="flex", flex_flow="row wrap", width="100%"))
        return widgets.VBox([controls, figures, self.log])

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
        own = self.models.get(self.model.value, {})
        return {
            "model": self.model.value, **own, "strategy": self.strategy.value,
            "precision": self.precision.value, "compression": str(compression),
            "workers": self.workers.value, "steps": self.steps.value,
            "batch_size": self.batch_size.value,
            **({"straggler": self.straggler.value.strip()} if self.straggler.value.strip() else {}),
        }

    def failure_settings(self) -> dict[str, Any]:
        """What the next run does if a worker is lost, as Session.run's keyword arguments."""
        every = self.checkpoint_every.value or None
        return {"on_failure": self.on_failure.value, **({"checkpoint_every": every} if every else {})}

    @reported
    def _on_change(self, change: dict | None = None) -> None:
        field = COMPRESSION_VALUE.get(CompressionKind(self.compression.value))
        self.compression_rank.layout.display = None if field == "rank" else "none"
        self.compression_ratio.layout.display = None if field == "ratio" else "none"
        if self._running and change is not None:
            self._ask_switch()  # a toggle moved while the run goes: the run switches to it
            return
        self._check()

    def _ask_switch(self) -> None:
        """Ask the run going on to switch to what the toggles and the workers slider now say;
        in a thread, as the ranks take a step or two to agree on where."""
        now = {k: v for k, v in self.settings().items() if k in LIVE_SWITCHES}
        change = {k: v for k, v in now.items() if v != self._switched_to.get(k)}
        if not change:
            return
        before, self._switched_to = self._switched_to, now
        self.status.value = f"switching to {html.escape(change_text(change))} ..."
        threading.Thread(target=self._switch_in_background, args=(change, before), name="parakit-panel-switch",
                         daemon=True).start()

    def _switch_in_background(self, change: dict[str, Any], before: dict[str, Any]) -> None:
        try:
            step = self.session.switch(**change)
        except (ValueError, RuntimeError) as e:  # does not fit, or the run ended first: say so
            self._switched_to = before  # the run still trains as before
            self.problem.value = f"<span style='color:#b00020'>cannot switch: {html.escape(str(e))}</span>"
            return
        self.problem.value = ""
        self.status.value = f"switching to {html.escape(change_text(change))} at step {step}"
        self.switches.append((step, change))  # last: a reader that sees it sees the status too

    def _check(self) -> RunConfig | None:
        """Check the settings without touching an engine; explain and disable Run if they do
        not fit. Returns the config, or None."""
        try:
            config = self.session.config(**self.settings())
            FailurePolicy(**self.failure_settings()).check_run(config)  # the same check as Session.run's
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

    @reported
    def _on_run(self, _button: widgets.Button | None = None) -> None:
        if self._running or self._check() is None:  # .click() works on a disabled button too
            return
        settings = self.settings()
        self._running, self._stop_requested = True, False
        self._switched_to, self.switches = {k: settings[k] for k in LIVE_SWITCHES}, []
        self._latest, self._live_x, self._live_y, self._last_draw = {}, [], [], 0.0
        self._live_power: list[tuple[float, float]] = []
        with self.run_button.hold_sync(), self.stop_button.hold_sync():
            self.run_button.disabled, self.stop_button.disabled = True, False
        with self.progress.hold_sync():
            self.progress.value, self.progress.max = 0, settings["steps"]
            self.progress.bar_style, self.progress.description = "", f"0/{settings['steps']}"
        self.status.value = f"starting {html.escape(run_label(settings))} ..."
        self._draw_runs(live=run_label(settings))
        self._thread = threading.Thread(target=self._run_in_background, args=({**settings, **self.failure_settings()},),
                                        name="parakit-panel-run", daemon=True)
        self._thread.start()

    @reported
    def _on_baseline(self, _button: widgets.Button | None = None) -> None:
        """Run the 1-worker run the speed-up figure misses: these settings on one worker (the
        same strategy where it runs on one, else single; no straggler, which needs two)."""
        if self._running:
            return
        workers, strategy, straggler = self.workers.value, self.strategy.value, self.straggler.value
        self.workers.value, self.straggler.value = 1, ""
        if strategy not in ONE_WORKER_STRATEGIES:
            self.strategy.value = "single"
        try:
            self._on_run()
        finally:  # the controls go back to what the user chose, for the next Run
            self.workers.value, self.strategy.value, self.straggler.value = workers, strategy, straggler

    def _run_in_background(self, settings: dict[str, Any]) -> None:
        result, shown = None, None
        try:
            for _ in range(self.repeats.value):
                if self._stop_requested:
                    break
                if result is not None:  # the repeat before: shown as done, this one starts
                    self._finish(shown := result)
                    self._live_x, self._live_y = [], []
                result = self.session.run(on_progress=self._on_progress, **settings)
                if not result.ok:
                    break
        except Exception:  # noqa: BLE001 - shown in the panel; the thread must not die silently
            self.log.append_stderr(traceback.format_exc())
        finally:
            try:
                if result is not shown or result is None:  # not shown already as a repeat
                    self._finish(result)
            except Exception:  # noqa: BLE001
                self.log.append_stderr(traceback.format_exc())
            finally:
                self._running = False
                self.stop_button.disabled = True
                self._on_change()

    @reported
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
        self.drawn.live(self._live_x, self._live_y, self._latest.get("breakdown"), self._live_power)

    @reported
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
        self.status.value = html.escape(outcome_line(result, self.results))
        self._draw_runs()

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """Wait for the run going in the background; returns the latest run (or None)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.results[-1] if self.results else None

    # -- figures -------------------------------------------------------------------------
    def _draw_runs(self, live: str | None = None) -> None:
        """Redraw every figure from the finished runs; offer the missing baseline's run."""
        missing = self.drawn.runs(self.results, self._partial, live, self.workers.max)
        self.baseline_button.layout.display = None if missing and self.results else "none"

    # -- display and cleanup -------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop a run still going, close every widget, and stop the engines if the panel
        started them."""
        self.closed = True
        if self._running:
            self._on_stop()
            self.wait(STOP_WAIT_S)
        for child in [*self._controls, self.run_button, self.stop_button, self.baseline_button, self.progress,
                      self.problem, self.status, self.log, *self.figures.values()]:
            child.close()
        self.widget.close()
        if self._own_session:
            self.session.close()

