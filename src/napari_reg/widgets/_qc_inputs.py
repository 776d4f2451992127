"""What the QC panel inspects: fixed and warped images on one grid, and the transform.

Two sources:

* ``result``: the session's last registration (``RunOutcome``): the full-resolution
  ``warped`` image on the fixed grid and ``result.transform``;
* ``alignment``: the current manual / landmark alignment, warped here onto a copy of
  the fixed grid (coarsened to at most ``max_voxels`` so that a click stays quick).

"Before" is always the identity (the images where their files put them), resampled
onto the same grid, so before/after numbers compare like with like.
Also: layers of the QC views are created or updated in place by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.transforms.base import MatrixTransform, Transform
from ._alignment import get_alignment
from ._layer_volumes import layer_volume
from ._session import get_session
from .overlay import coarse_grid, warp_to_grid

__all__ = ["QCInputs", "gather", "upsert_layer"]


@dataclass
class QCInputs:
    """Fixed and warped samples on one grid (``shape``, voxel->world ``affine``, RAS mm);
    ``transform`` maps fixed world mm -> moving world mm."""

    fixed: np.ndarray
    warped: np.ndarray
    affine: np.ndarray
    transform: Transform
    fixed_volume: Volume
    moving_volume: Volume
    source: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.fixed.shape)

    def before(self) -> np.ndarray:
        """The moving image on the grid with no transform (identity), float32."""
        return self.warp(self.moving_volume, MatrixTransform(np.eye(len(self.shape) + 1)))

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
                        outcome.moving, source)
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
                    transform, fixed, moving, source)


def upsert_layer(viewer: Any, name: str, data: np.ndarray, affine: np.ndarray,
                 kind: str = "image", **style: Any) -> Any:
    """Show ``data`` (voxel->world ``affine``) in a layer called ``name``: updated in place
    when it exists (style kept as the user left it), else added with ``style``."""
    for layer in viewer.layers:
        if layer.name == name:
            layer.data = data
            layer.affine = affine
            if kind == "image" and "contrast_limits" in style:
                layer.contrast_limits = style["contrast_limits"]
            layer.visible = True
            return layer
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    return add(data, name=name, affine=affine, **style)
