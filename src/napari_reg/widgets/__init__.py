"""Thin napari dock widgets over the core (no maths here; the core never imports Qt).

* ``load_widget.LoadWidget``: fixed / moving images (open layers or files through the
  plugin's reader), optional fixed mask (Labels), swap, moving opacity.
* ``register_widget.RegisterWidget``: preset, metric, initialisation, advanced pyramid
  settings, Run / Stop, progress, before/after toggle.
* ``export_widget.ExportWidget``: ITK transform or displacement field, warped NIfTI,
  run record JSON, apply the result to other layers.
* ``overlay.LiveOverlay``: moving(T(x)) resampled onto (a coarse copy of) the fixed grid
  while the optimiser runs, correct in every view.
* ``cost_plot.CostPlotPanel``: cost vs iteration, level boundaries, earlier runs.
* ``_worker``: the registration thread and the ~25 Hz GUI-thread poller.
* ``_session``: per-viewer state shared by the panels.

Direction convention everywhere: a result maps FIXED world RAS mm to MOVING world RAS mm.
"""
