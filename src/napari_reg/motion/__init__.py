"""Motion correction of 4D series on disk: frames in parallel, resumable, whole outputs.

The per-frame maths lives in :mod:`napari_reg.core.motion`; this package is the file side:
``series`` (reading and checking a series), ``frames`` (one frame as a task for a worker
process or a Dask worker, its result kept on disk for resuming), ``outputs`` (the output
set, staged in a sibling folder and moved into place with one rename) and ``run``
(:func:`run_motion`, what ``napari-reg motion`` calls).
"""

from ..core.motion import MotionError, MotionSettings
from .outputs import OUTPUT_NAMES, write_output_set
from .run import FrameOutcome, MotionReport, run_motion
from .series import Series, load_series

__all__ = ["MotionError", "MotionSettings", "FrameOutcome", "MotionReport", "run_motion",
           "Series", "load_series", "OUTPUT_NAMES", "write_output_set"]
