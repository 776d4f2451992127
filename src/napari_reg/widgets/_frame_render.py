"""Computing one live frame: the moving image warped by a transform onto the display grid.

No Qt and no viewer here, so that a frame can be computed in another process
(:class:`FrameRenderer` is the handler a :class:`napari_reg.runs.service.RemoteStream`
runs) as well as on a thread of the viewer's. Direction: ``transform`` maps fixed world
RAS mm to moving world RAS mm; frames are ``moving(T(x))`` at the grid's voxels ``x``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.image import Volume
from ..core.transforms.base import Transform
from ._grid_warp import LIVE_MAP_STEP, warp_to_grid
from ._live_planes import plane_grids, plane_map_step

__all__ = ["Frame", "FrameRequest", "FrameRenderer", "render_frame"]


@dataclass
class Frame:
    """One finished live frame: a coarse whole volume ``data`` on the grid ``affine``
    (voxel -> world RAS mm), or ``planes`` ``(axis, index, plane)`` of the display grid
    (see :mod:`._live_planes`); ``seconds`` the warp took."""

    data: np.ndarray | None
    affine: np.ndarray
    seconds: float
    planes: list[tuple[int, int, np.ndarray]] | None = None


@dataclass
class FrameRequest:
    """What to draw: ``transform`` on the grid ``(shape, grid_affine)``, or with
    ``focus`` (a voxel of that grid, then the full display grid) its orthogonal planes
    (an axis whose index is None has no plane)."""

    transform: Transform
    shape: tuple[int, ...]
    grid_affine: np.ndarray
    focus: tuple[int | None, ...] | None = None


def render_frame(moving: Volume, request: FrameRequest) -> Frame:
    """The frame ``request`` asks for, of the moving image ``moving``."""
    start = time.perf_counter()
    transform, shape, grid_affine = request.transform, request.shape, request.grid_affine
    if request.focus is None:
        data = warp_to_grid(moving, transform, shape, grid_affine, map_step=LIVE_MAP_STEP)
        return Frame(data, grid_affine, time.perf_counter() - start)
    step = plane_map_step(grid_affine, LIVE_MAP_STEP)
    planes = [(axis, request.focus[axis], warp_to_grid(moving, transform, plane_shape,
                                                       plane_affine, map_step=step))
              for axis, plane_shape, plane_affine in plane_grids(shape, grid_affine,
                                                                 request.focus)]
    return Frame(None, grid_affine, time.perf_counter() - start, planes)


class FrameRenderer:
    """``renderer(request) -> Frame`` for one moving image: picklable, sent once to a
    frame process, which then receives only the (small) requests."""

    def __init__(self, moving: Volume):
        self.moving = moving

    def __call__(self, request: FrameRequest) -> Frame:
        return render_frame(self.moving, request)
