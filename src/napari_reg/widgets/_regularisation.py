"""The Register panel's regularisation controls for its deformable stage.

Which controls show depends on the preset's model (``bspline`` or ``syn``); their values
start at the core's own defaults and reach ``register()`` as ``deformable_options``.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import FloatSpinBox

from ._register_settings import BSPLINE_DEFAULTS, SYN_DEFAULTS

__all__ = ["RegularisationControls"]


class RegularisationControls:
    """B-spline grid spacing (mm) and bending weight; SyN update and field smoothing."""

    def __init__(self) -> None:
        self.grid_spacing = FloatSpinBox(
            label="B-spline grid (mm)", min=1.0, max=200.0, step=1.0,
            value=float(BSPLINE_DEFAULTS["grid_spacing_mm"]),
            tooltip="Control-point spacing at the finest level: smaller follows finer detail")
        self.bending = FloatSpinBox(
            label="Bending weight", min=0.0, max=1e6, step=10.0,
            value=float(BSPLINE_DEFAULTS["bending_weight"]),
            tooltip="Weight of the bending-energy penalty, the same smoothness under every "
                    "metric: 1000-100000 smooths visibly (folds are prevented either way)")
        self.update_sigma = FloatSpinBox(
            label="SyN update smoothing (voxels)", min=0.0, max=20.0, step=0.25,
            value=float(SYN_DEFAULTS["update_sigma_voxels"]),
            tooltip="Gaussian sigma of each update (fluid-like regularisation)")
        self.field_sigma = FloatSpinBox(
            label="SyN field smoothing (voxels)", min=0.0, max=20.0, step=0.25,
            value=float(SYN_DEFAULTS["field_sigma_voxels"]),
            tooltip="Gaussian sigma applied to the velocity field (elastic-like)")
        self._by_model = {"bspline": (self.grid_spacing, self.bending),
                          "syn": (self.update_sigma, self.field_sigma)}

    @property
    def widgets(self) -> list[FloatSpinBox]:
        return [w for group in self._by_model.values() for w in group]

    def show_for(self, model: str | None) -> None:
        """Show only the controls of ``model`` (none for a linear preset)."""
        for name, group in self._by_model.items():
            for widget in group:
                widget.visible = name == model

    def options(self, model: str | None) -> dict[str, Any] | None:
        """``deformable_options`` for ``register()``, or None for a linear model."""
        if model == "bspline":
            return {"grid_spacing_mm": float(self.grid_spacing.value),
                    "bending_weight": float(self.bending.value)}
        if model == "syn":
            return {"update_sigma_voxels": float(self.update_sigma.value),
                    "field_sigma_voxels": float(self.field_sigma.value)}
        return None
