"""The exact full-resolution warp of a finished run, off the GUI thread.

Kept apart from the live frames (:mod:`.overlay`): this one is exact and cancellable,
those are fast approximations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.image import Volume
from ..core.resample import resample
from ..core.transforms.base import Transform
from ..core.transforms.field import DisplacementField
from ._grid_warp import warp_to_grid

__all__ = ["warp_volume"]


def warp_volume(moving: Volume, fixed: Volume, transform: Transform,
                cancel: Any = None, slab_voxels: int = 1_000_000) -> Volume:
    """The exact full-resolution warped image ``moving(T(x))`` on the fixed grid (float32).

    Safe to call on a worker thread (numpy/scipy only). A non-linear map is warped in
    slabs along the first voxel axis so that ``cancel`` (a CancelToken) is honoured
    between slabs: exact B-spline warps of a 1 mm brain take many seconds.
    """
    if cancel is not None:
        cancel.raise_if_cancelled()
    if transform.is_linear:
        data = warp_to_grid(moving, transform, fixed.shape, fixed.affine)
    elif isinstance(transform, DisplacementField) and transform.same_grid(fixed.shape,
                                                                           fixed.affine):
        # Vectors stored on the fixed grid: one resampling pass, no model evaluation.
        data = resample(moving, fixed, transform).data.astype(np.float32, copy=False)
    else:
        data = np.empty(fixed.shape, dtype=np.float32)
        per_slice = int(np.prod(fixed.shape[1:]))
        rows = max(1, slab_voxels // per_slice)
        for start in range(0, fixed.shape[0], rows):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(start + rows, fixed.shape[0])
            shift = np.eye(fixed.ndim + 1)
            shift[0, fixed.ndim] = start  # slab voxel (0, j, k) is fixed voxel (start, j, k)
            data[start:stop] = warp_to_grid(moving, transform, (stop - start,) +
                                            fixed.shape[1:], fixed.affine @ shift)
    return Volume(data, fixed.affine.copy(), f"{moving.name} warped")
