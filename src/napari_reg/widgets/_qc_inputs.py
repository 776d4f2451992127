"""What the QC panel inspects: fixed and warped images on one grid, and the transform.

Two sources:

* ``result``: the session's last registration (``RunOutcome``): the full-resolution
  ``warped`` image on the fixed grid and ``result.transform``;
* ``alignment``: the current manual / landmark alignment, warped here onto a copy of
  the fixed grid (coarsened to at most ``max_voxels`` so that a click stays quick).

"Before" is always the identity (the images where their files put them), resampled
onto the same grid, so before/after numbers compare like with like.
The views are drawn on the axis-aligned grid the fixed image is shown on
(:func:`napari_reg.display_grid.axis_aligned_grid`; for an oblique fixed image napari
would otherwise draw them without their out-of-plane rotation and warn on every slice);
the numbers (NCC, MI, Dice) keep the fixed grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import qc
from ..core.image import Volume
from ..core.transforms.base import MatrixTransform, Transform
from ..display_grid import axis_aligned_grid, display_copy
from ._alignment import get_alignment
from ._layer_volumes import layer_volume
from ._lm_model import pair_rows
from ._session import get_session
from .overlay import coarse_grid, warp_to_grid

__all__ = ["QCInputs", "before_after", "gather"]


@dataclass
class QCInputs:
    """Fixed and warped samples on one grid (``shape``, voxel->world ``affine``, RAS mm);
    ``transform`` maps fixed world mm -> moving world mm; ``linear`` is its homogeneous
    linear part when it is not linear itself (``T = A o W``), else None."""

    fixed: np.ndarray
    warped: np.ndarray
    affine: np.ndarray
    transform: Transform
    fixed_volume: Volume
    moving_volume: Volume
    source: str
    linear: np.ndarray | None = None
    _display: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None,
                                                                       repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape)

    def before(self) -> np.ndarray:
        """The moving image on the grid with no transform (identity), float32."""
        return self.warp(self.moving_volume, MatrixTransform(np.eye(len(self.shape) + 1)))

    def on_display_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fixed, warped, affine)`` on the axis-aligned grid the fixed image is shown on
        (the same arrays when this grid is axis-aligned already), float32."""
        if self._display is None:
            fixed = display_copy(Volume(self.fixed, self.affine, "fixed"))
            warped = display_copy(Volume(self.warped, self.affine, "warped"))
            self._display = (np.asarray(fixed.data, np.float32),
                             np.asarray(warped.data, np.float32), fixed.affine)
        return self._display

    def display_reference(self, max_voxels: int) -> tuple[tuple[int, ...], np.ndarray]:
        """``(shape, affine)`` of an axis-aligned grid over the fixed image with at most
        ``max_voxels`` voxels (where maps of the transform are drawn)."""
        shape, affine = axis_aligned_grid(self.fixed_volume)
        return coarse_grid(Volume(np.broadcast_to(np.float32(0), shape), affine, "display"),
                           max_voxels)

    def warp(self, volume: Volume, transform: Transform, order: int = 1) -> np.ndarray:
        """``volume(T(x))`` on this grid (``order`` 0 for label maps)."""
        return warp_to_grid(volume, transform, self.shape, self.affine, order=order)


def gather(viewer: Any, source: str, max_voxels: int = 4_000_000) -> QCInputs:
    """Collect the QC inputs of ``source`` (``"result"`` or ``"alignment"``).

    Raises ValueError with a user message when there is nothing to inspect.
    """
    session = get_session(viewer)
    if source == "result":
        outcome = session.outcome
        if outcome is None:
            raise ValueError("No registration result yet: run one in the Register panel, or "
                             "inspect the current alignment instead.")
        warped = np.asarray(outcome.warped.data, dtype=np.float32)
        return QCInputs(np.asarray(outcome.fixed.data, dtype=np.float32), warped,
                        outcome.fixed.affine, outcome.result.transform, outcome.fixed,
                        outcome.moving, source,
                        None if outcome.result.transform.is_linear
                        else outcome.result.linear_matrix)
    alignment = get_alignment(viewer)
    fixed_layer, moving_layer = alignment.layers()
    fixed = layer_volume(fixed_layer, use_file_affine=True)
    moving = layer_volume(moving_layer, use_file_affine=True)
    shape, grid = coarse_grid(fixed, max_voxels)
    transform = alignment.transform
    identity = MatrixTransform(np.eye(fixed.ndim + 1))
    if shape == fixed.shape:
        fixed_data = np.asarray(fixed.data, dtype=np.float32)
    else:
        fixed_data = warp_to_grid(fixed, identity, shape, grid)
    return QCInputs(fixed_data, warp_to_grid(moving, transform, shape, grid), grid,
                    transform, fixed, moving, source, getattr(transform, "affine_matrix", None))


def before_after(inp: QCInputs, fixed_points: Any = None, moving_points: Any = None,
                 fixed_labels: Any = None, moving_labels: Any = None
                 ) -> dict[str, tuple[float, float]]:
    """``{measure: (before, after)}`` on the fixed grid: NCC and MI; the mean TRE (mm) of
    the paired landmarks of two Points layers; Dice per label of two Labels layers (the
    moving one warped nearest-neighbour). Before = identity."""
    ident = MatrixTransform(np.eye(len(inp.shape) + 1))
    before = inp.before()
    out = {name.upper(): (qc.similarity(inp.fixed, before, name),
                          qc.similarity(inp.fixed, inp.warped, name)) for name in ("ncc", "mi")}
    if fixed_points is not None and moving_points is not None:
        rows = [r for r in pair_rows(fixed_points, moving_points) if r.paired]
        if rows:
            f = np.array([r.fixed for r in rows])
            m = np.array([r.moving for r in rows])
            out[f"TRE mean mm ({len(rows)} pairs)"] = (
                float(qc.target_registration_error(ident, f, m).mean()),
                float(qc.target_registration_error(inp.transform, f, m).mean()))
    if fixed_labels is not None and moving_labels is not None:
        fixed = inp.warp(layer_volume(fixed_labels, use_file_affine=True), ident, order=0)
        moving = layer_volume(moving_labels, use_file_affine=True)
        dice_before = qc.dice_per_label(fixed, inp.warp(moving, ident, order=0))
        dice_after = qc.dice_per_label(fixed, inp.warp(moving, inp.transform, order=0))
        out.update({f"Dice label {k}": (dice_before[k], dice_after.get(k, float("nan")))
                    for k in sorted(dice_before)})
    return out
