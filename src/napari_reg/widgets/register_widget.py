"""Register panel: preset, metric, initialisation, Run/Stop, progress, live overlay, curve.

The panel only gathers settings and shows progress; the work is one call of
:func:`napari_reg.register` in a worker process (``runs.process``). Settings
map 1:1 onto ``register()``'s keyword arguments, so a GUI run equals a scripted or
command-line run with the same settings (the run record stores them).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Points
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy
from superqt import QCollapsible

from ..core.engine.presets import PRESETS
from ..core.image import Volume
from ..runs import BackgroundRun, ProcessRun, RunController, RunEnd, RunStatus, warm_up
from ..runs.tasks import register_and_warp
from ._alignment import ALIGNMENT_LAYER_NAME
from ._layer_volumes import layer_volume, manual_initial, paired_landmarks, source_path
from ._live_run import LiveRunView
from ._panel_close import PanelCloseWatcher
from ._register_settings import (
    INIT_CHOICES,
    LIVE_LAYER_NAME,
    METRIC_CHOICES,
    REGISTER_DEFAULTS,
    as_text,
    int_list,
    stage_metrics,
)
from ._regularisation import RegularisationControls
from ._run_progress import RunProgressView
from ._session import RunOutcome, get_session, unwrap_viewer
from ._tooltips import apply_tooltips
from ._worker import GuiCall, RunTicker
from .cost_plot import CostPlotPanel

__all__ = ["RegisterWidget", "METRIC_CHOICES", "INIT_CHOICES", "LIVE_LAYER_NAME"]

@dataclass
class RunContext:
    """What a run was started with (the layers may change while it runs)."""

    fixed: Volume
    moving: Volume
    fixed_layer: Any
    moving_layer: Any
    settings: dict[str, Any]


class RegisterWidget(Container):
    """Run a registration of the session's moving image onto its fixed image."""

    PANEL_INTERVAL_S = 0.2  # curve and bars without live frames: 5 a second (a repaint each)
    # the fields a saved session keeps (the preset first: it sets the others)
    FIELDS = ("preset", "metric", "init", "levels", "iterations", "samples", "seed", "live",
              "grid_spacing", "bending", "update_sigma", "field_sigma")

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer = unwrap_viewer(viewer)
        self._session = get_session(viewer)
        self.roles = Label(value="")
        self.preset = ComboBox(label="Preset", choices=list(PRESETS), value="Affine"
                               if "Affine" in PRESETS else list(PRESETS)[0])
        self.metric = ComboBox(label="Metric", choices=METRIC_CHOICES)
        self.init = ComboBox(label="Initialisation", choices=INIT_CHOICES)
        self.fixed_points = ComboBox(label="Fixed landmarks", choices=self._points, nullable=True)
        self.moving_points = ComboBox(label="Moving landmarks", choices=self._points,
                                      nullable=True)
        self.live = CheckBox(text="Live overlay", value=True)
        self.after = CheckBox(text="Show result (after)", value=True,
                              tooltip="Toggle between the original moving image (before) "
                                      "and the warped one (after)")
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Level iterations", min=0, max=1, value=0,
                                    tooltip="Iterations of the current stage and pyramid "
                                            "level (see the line below)")
        self.overall = ProgressBar(label="Whole run", min=0, max=1000, value=0, tooltip=(
            "All stages and levels, with an estimate of the time left"))
        self.status = Label(value="")
        # Advanced: pyramid, sampling and regularisation, hidden by default (presets first).
        self.levels = SpinBox(label="Levels", min=1, max=8, value=int(REGISTER_DEFAULTS["levels"]),
                              tooltip="Pyramid levels of the linear stage(s); deformable "
                                      "stages use their own schedule")
        self.iterations = LineEdit(label="Iterations / level",
                                   value=as_text(REGISTER_DEFAULTS["iterations"]))
        self.samples = LineEdit(label="Samples / level",
                                value=as_text(REGISTER_DEFAULTS["samples"]))
        self.seed = SpinBox(label="Random seed", min=0, max=2**31 - 1, value=0)
        self.regularisation = RegularisationControls()  # shown for a deformable preset
        r = self.regularisation
        self.grid_spacing, self.bending = r.grid_spacing, r.bending
        self.update_sigma, self.field_sigma = r.update_sigma, r.field_sigma
        self.advanced = Container(widgets=[self.levels, self.iterations, self.samples,
                                           self.seed, *r.widgets], labels=True)
        self.extend([self.roles, self.preset, self.metric, self.init, self.fixed_points,
                     self.moving_points])
        self._collapsible = QCollapsible("Advanced")
        self._collapsible.addWidget(self.advanced.native)
        self.native.layout().addWidget(self._collapsible)
        self.extend([self.live, self.run_button, self.stop_button, self.overall, self.progress,
                     self.status, self.after])

        # Changing text must not re-layout the whole main window ~25 times a second.
        self.status.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.preset.changed.connect(self._apply_preset)
        self.init.changed.connect(self._on_init)
        self.levels.changed.connect(self._fit_levels)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.after.changed.connect(self._show_after)
        self._session.roles_changed.connect(self._on_roles)
        self._session.init_requested.connect(self._on_init_requested)
        self._session.settings_restored.connect(self.restore_fields)
        for name in self.FIELDS:
            getattr(self, name).changed.connect(self._publish)
        events = viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self._on_layer_removed)
        # A Qt-free controller polled by a ticker on the GUI thread; the run goes to a
        # worker process (napari's repaints hold the GIL), started now (runs/process.py).
        self.runs = RunController("napari-reg-register", runner=ProcessRun)
        warm_up()
        self.runs.progress.connect(self._on_progress)
        self.runs.finished.connect(self._on_finished)
        self._ticker = RunTicker(self.runs)
        self._ticker.tick.connect(self._on_tick)
        self.live_view = LiveRunView(viewer, self._session)
        self.progress_view = RunProgressView(lambda: self._cost_panel().plot, self.progress,
                                             self.status, self.PANEL_INTERVAL_S, self.overall)
        self._n_runs = 0
        self._frame_ready = GuiCall(self._ticker.poll_now)  # a frame: newest state, show
        self.live_max_voxels = 1_000_000  # the live overlay's coarse grid in 3D
        self._apply_preset(self.preset.value)
        self._on_init(self.init.value)
        self._on_roles()
        self._publish()
        self.native.destroyed.connect(self._shutdown)
        self._close_watcher = PanelCloseWatcher(self.native, self._on_panel_closed)
        # Dock the cost curve as soon as the panel is up, not at the first Run: adding a
        # dock re-lays out the whole window (a ~70 ms freeze), which should not happen
        # while a registration runs, and the layout should not jump under the user.
        QTimer.singleShot(0, self._dock_cost_panel)
        apply_tooltips(self)  # what each control does, in which units

    def _dock_cost_panel(self) -> None:
        try:
            self._cost_panel()
        except RuntimeError:  # the panel or the viewer was closed before the timer fired
            pass

    def _on_panel_closed(self) -> None:
        """Closed as a dock (napari's "x" only unparents us): the run stops at once."""
        if self.runs.running:
            self.runs.abandon()

    def _shutdown(self, *_args: Any) -> None:
        """The panel is going away (viewer closed): stop the run and its timers."""
        self.runs.abandon()
        self._ticker.stop()
        self.live_view.close()
        self.progress_view.unshown = []  # a late frame-ready call finds nothing to do
        self._session.running = False
        self._session.roles_changed.disconnect(self._on_roles)
        self._session.init_requested.disconnect(self._on_init_requested)
        self._session.settings_restored.disconnect(self.restore_fields)
        events = self._viewer.layers.events
        events.inserted.disconnect(self.reset_choices)
        events.removed.disconnect(self._on_layer_removed)

    # ------------------------------------------------------------------ settings
    def _points(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Points)]

    def _apply_preset(self, name: str) -> None:
        preset = PRESETS.get(name, {})
        if "metric" in preset:
            self.metric.value = preset["metric"]
        if "init" in preset and preset["init"] in dict((v, k) for k, v in INIT_CHOICES):
            self.init.value = preset["init"]
        for key, widget in (("iterations", self.iterations), ("samples", self.samples)):
            widget.value = as_text(preset.get(key, REGISTER_DEFAULTS[key]))
        self.levels.value = int(preset.get("levels", REGISTER_DEFAULTS["levels"]))
        self.regularisation.show_for(preset.get("transform"))

    def _fit_levels(self, n: int) -> None:
        """Keep per-level lists as long as the number of levels: drop the coarsest
        entries, or repeat the coarsest one for added coarse levels."""
        for widget in (self.iterations, self.samples):
            try:
                values = np.atleast_1d(int_list(widget.value, widget.label)).tolist()
            except ValueError:
                continue  # the user is still typing; run() reports it
            if len(values) > 1 and len(values) != n:
                values = ([values[0]] * (n - len(values)) + values)[-n:]
                widget.value = as_text(values)

    def _on_init(self, value: str) -> None:
        self.fixed_points.visible = self.moving_points.visible = value == "landmarks"

    def _on_roles(self) -> None:
        f, m = self._session.fixed_layer, self._session.moving_layer
        self.roles.value = (f"{m.name}  ->  {f.name}" if f is not None and m is not None
                            else "Choose fixed and moving images in the Load panel")

    def settings(self) -> dict[str, Any]:
        """The ``register()`` keyword arguments the panel currently describes.

        The preset's entries first, then every visible setting; ``init='manual'`` is
        resolved by :meth:`run` into an ``initial`` matrix.
        """
        kwargs = dict(PRESETS.get(self.preset.value, {}))
        kwargs.update(metric=self.metric.value, init=self.init.value, levels=self.levels.value,
                      iterations=int_list(self.iterations.value, "Iterations / level"),
                      samples=int_list(self.samples.value, "Samples / level"),
                      seed=int(self.seed.value))
        options = self.regularisation.options(kwargs.get("transform"))
        if options is not None:
            kwargs["deformable_options"] = options
        for key, label in (("iterations", "Iterations / level"), ("samples", "Samples / level")):
            n = np.size(kwargs[key])
            if n not in (1, kwargs["levels"]):
                raise ValueError(f"{label}: {n} values for {kwargs['levels']} levels; give one "
                                 "value per level (coarse to fine) or a single value")
        return kwargs

    def fields(self) -> dict[str, Any]:
        """The panel's fields by name (what a saved session keeps)."""
        return {name: getattr(self, name).value for name in self.FIELDS}

    def restore_fields(self, fields: dict[str, Any]) -> None:
        """Set the fields of a saved session (unknown names are ignored)."""
        for name in self.FIELDS:
            if name in fields:
                getattr(self, name).value = fields[name]

    def _publish(self, *_args: Any) -> None:
        """Keep the session's copy of the fields (and parameters, when they parse)."""
        parameters = self._session.register_settings.get("parameters", {})
        with contextlib.suppress(ValueError):  # still typing: the last valid ones stay
            parameters = self.settings()
        self._session.register_settings = {"fields": self.fields(), "parameters": parameters}

    # ------------------------------------------------------------------ run
    @property
    def running(self) -> bool:
        return self.runs.running

    def run(self) -> BackgroundRun | ProcessRun | None:
        """Start a run in the worker process (refused, with a message, if one is running)."""
        if self.running or self._session.running:
            show_info("A registration is already running: wait for it or press Stop.")
            return None
        fixed_layer, moving_layer = self._session.fixed_layer, self._session.moving_layer
        if fixed_layer is None or moving_layer is None:
            show_error("Choose a fixed and a moving image in the Load panel first "
                       "(Plugins > Registration: napari-reg > 1. Load images).")
            return None
        if fixed_layer is moving_layer:
            show_error("The fixed and the moving image are the same layer.")
            return None
        try:
            kwargs = self.settings()
            fixed = layer_volume(fixed_layer, use_file_affine=True)
            moving = layer_volume(moving_layer, use_file_affine=True)
            kwargs.update(self._session.mask_volumes(layer_volume))
            if kwargs["init"] == "manual":
                kwargs["initial"] = manual_initial(fixed_layer, moving_layer)
                kwargs["init"] = "none"
            elif kwargs["init"] == "landmarks":
                kwargs["landmarks"] = self._landmarks()
        except ValueError as exc:
            show_error(str(exc))
            return None

        self._n_runs += 1
        self.progress_view.start(f"run {self._n_runs}: {self.preset.value}",
                                 stage_metrics(kwargs))
        self.live_view.close()
        if self.live.value:
            self.live_view.begin(fixed, moving, moving_layer, self.live_max_voxels,
                                 self._frame_ready.request)
            for lyr in self._viewer.layers:  # the live overlay supersedes the alignment preview
                if lyr.name == ALIGNMENT_LAYER_NAME:
                    lyr.visible = False
        self._run_settings = kwargs
        context = RunContext(fixed, moving, fixed_layer, moving_layer, dict(kwargs))
        self._session.running = True
        self.run_button.enabled = False
        self.stop_button.enabled = True
        return self.runs.start(functools.partial(register_and_warp, fixed, moving, kwargs),
                               context=context)

    def stop(self) -> None:
        """Ask the running registration to stop (it ends at its next iteration)."""
        if self.runs.running:
            self.runs.stop()
            self.status.value = "Stopping..."

    def _landmarks(self) -> tuple[np.ndarray, np.ndarray]:
        return paired_landmarks(self.fixed_points.value, self.moving_points.value)

    def _cost_panel(self) -> CostPlotPanel:
        panel = self._session.cost_panel
        try:
            if panel is not None:
                panel.isVisible()  # raises RuntimeError if Qt deleted the dock
                return panel
        except RuntimeError:
            pass
        panel = CostPlotPanel()
        window = getattr(self._viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(panel, name="Registration cost", area="bottom")
        self._session.cost_panel = panel
        return panel

    # ------------------------------------------------------------------ GUI-thread updates
    def _on_progress(self, events: list) -> None:
        """A batch of events: the overlay gets the newest transform at once (cheap); the
        panel (curve, bar, status) shows the batch with the next frame or within 0.1 s."""
        self.progress_view.add(events)
        self.live_view.request(events)

    def _on_tick(self) -> None:
        """After a poll of the run (the ticker's, or one a ready live frame asked for):
        the newest state went to the overlay first, so its frame is computed while this
        one is painted."""
        self.progress_view.maybe_show(self.live_view.poll())

    def _on_finished(self, end: RunEnd) -> None:
        self._session.running = False
        self.run_button.enabled = True
        self.stop_button.enabled = False
        if end.status is RunStatus.DONE:
            self._keep_result(end)
            return
        # stopped or failed: the live layer goes back to the last valid result
        self.live_view.show_last_valid()
        if end.status is RunStatus.STOPPED:
            self.progress_view.finish("Stopped.", complete=False)
            show_info("Registration stopped; the result was not kept.")
        else:
            self.progress_view.finish("Failed.", complete=False)
            show_error(f"Registration failed: {end.error}")

    def _keep_result(self, end: RunEnd) -> None:
        result, warped = end.result
        ctx: RunContext = end.context
        self.live_view.show_result(warped, ctx.moving_layer, ctx.fixed, ctx.moving)
        self.progress_view.finish(f"Done in {end.seconds:.1f} s, final cost "
                                  f"{result.final_cost:.5g}", complete=True)
        outcome = RunOutcome(result=result, fixed=ctx.fixed, moving=ctx.moving, warped=warped,
                             fixed_layer_name=ctx.fixed_layer.name,
                             moving_layer_name=ctx.moving_layer.name,
                             inputs={"fixed": source_path(ctx.fixed_layer),
                                     "moving": source_path(ctx.moving_layer),
                                     **self._session.mask_sources(source_path)},
                             settings=ctx.settings)
        self._session.set_outcome(outcome)
        show_info(f"Registration finished in {end.seconds:.1f} s (final cost "
                  f"{result.final_cost:.5g}).")

    def _show_after(self, after: bool) -> None:
        self.live_view.show_after(after)

    def _on_init_requested(self, choice: str) -> None:
        """Another panel asks to start from ``choice`` (e.g. the manual alignment)."""
        self.init.value = choice

    def _on_layer_removed(self, event: Any) -> None:
        self.reset_choices()
        removed = getattr(event, "value", None)
        ctx = self.runs.context
        if ctx is not None and removed in (ctx.fixed_layer, ctx.moving_layer):
            self.runs.stop()
            show_error(f"Layer '{removed.name}' was removed during the registration; "
                       "the run was stopped.")
