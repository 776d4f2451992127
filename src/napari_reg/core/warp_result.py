"""A finished registration's warped image: ``moving(T(x))`` on the fixed grid.

One function for every front end (the command line's run record, the GUI's kept result,
the session file), so "the result" means the same voxels everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine.result import RegistrationResult
from .image import Volume
from .resample import resample
from .transforms.field import DisplacementField

__all__ = ["warp_result"]


def warp_result(moving: Volume, fixed: Volume, result: RegistrationResult,
                cancel: Any = None, name: str = "warped"
                ) -> tuple[Volume, DisplacementField | None]:
    """The moving image warped by ``result.transform`` onto the fixed grid (float32, linear
    interpolation, 0 outside), and the dense field used for a deformable result.

    ``result.transform`` maps fixed world RAS mm -> moving world RAS mm. A deformable
    result is sampled once as a displacement field on the fixed grid (world mm vectors),
    which resamples in one pass instead of evaluating the model at every voxel; it is
    returned so callers can save it. ``cancel`` (a CancelToken) is checked between the
    steps and slabs of the work (seconds on a 1 mm brain): Stop ends it with
    :class:`~napari_reg.core.optimize.Cancelled`.
    """
    check = cancel.raise_if_cancelled if cancel is not None else None
    if check is not None:
        check()
    field = (result.deformable.displacement_field(fixed, cancel=cancel)
             if result.deformable is not None else None)
    warped = resample(moving, fixed, field if field is not None else result.transform,
                      interpolation="linear", check=check)
    return warped.with_data(warped.data.astype(np.float32, copy=False), name=name), field
