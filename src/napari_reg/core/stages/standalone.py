"""Running one stage as a registration of its own (``register_bspline``, ``register_syn``).

The same checks and the same run context as :func:`napari_reg.register`, with the given
start instead of an initialisation, for scripts and tests that want only the deformable
part.
"""

from __future__ import annotations

import numpy as np

from ..engine.context import RunContext
from ..engine.events import Callback, Reporter
from ..engine.inputs import check_pair, mask_on_fixed, moving_mask_volume, start_matrix
from ..engine.result import StageResult
from ..engine.stage import Stage
from ..engine.threads import single_threaded_blas
from ..image import Volume
from ..optimize import CancelToken
from ..transforms.base import MatrixTransform, Transform

__all__ = ["run_alone"]


@single_threaded_blas
def run_alone(stage: Stage, fixed: Volume, moving: Volume,
              initial: np.ndarray | Transform | None = None, *,
              fixed_mask: np.ndarray | Volume | None = None, sampling: str = "foreground",
              moving_mask: np.ndarray | Volume | None = None,
              seed: int = 0, callback: Callback | None = None,
              cancel: CancelToken | None = None, stage_index: int = 0) -> StageResult:
    """Check the pair, start from ``initial`` (a linear fixed->moving matrix or Transform;
    identity if None) and run ``stage``; events carry ``stage_index``."""
    fixed_f, moving_f = check_pair(fixed, moving)
    matrix = start_matrix(initial, fixed_f.ndim)
    ctx = RunContext(Reporter(callback), cancel or CancelToken(),
                     fixed_mask=mask_on_fixed(fixed_mask, fixed_f), sampling=sampling,
                     moving_mask=moving_mask_volume(moving_mask, moving_f),
                     seed=seed, stage_index=stage_index)
    ctx.cancel.raise_if_cancelled()
    return stage.run(fixed_f, moving_f, MatrixTransform(matrix), ctx)
