"""The names a user chooses from (GUI, command line, scripts) and the presets offered first.

A model name is a stage: the four linear models, then ``bspline`` (cubic B-spline FFD)
and ``syn`` (symmetric diffeomorphic), which run after an affine stage unless the stages
are given explicitly.
"""

from __future__ import annotations

from typing import Any

from ..transforms.base import ParametricTransform
from ..transforms.linear import Affine, Rigid, Similarity, Translation

__all__ = ["PRESETS", "LINEAR_MODELS", "DEFORMABLE_MODELS", "TRANSFORMS", "INIT_METHODS",
           "METRICS", "DEFAULT_BINS", "LINEAR_MI_OPTIONS", "FINEST_SIGMA_VOXELS",
           "default_deformable_metric"]

LINEAR_MODELS: dict[str, type[ParametricTransform]] = {
    "translation": Translation,
    "rigid": Rigid,
    "similarity": Similarity,
    "affine": Affine,
}
# Deformable models run after the linear stages (core/stages/bspline.py, syn.py).
DEFORMABLE_MODELS = ("bspline", "syn")
TRANSFORMS = (*LINEAR_MODELS, *DEFORMABLE_MODELS)
INIT_METHODS = ("none", "geometry", "com", "moments", "landmarks")
METRICS = ("ssd", "sad", "ncc", "mi", "nmi")

# Presets a user picks first (GUI and CLI); everything else keeps its default.
PRESETS: dict[str, dict[str, Any]] = {
    "Rigid": {"transform": "rigid", "metric": "mi", "init": "com"},
    "Affine": {"transform": "affine", "metric": "mi", "init": "com"},
    "Affine + B-spline": {"transform": "bspline", "metric": "mi", "init": "com"},
    "Affine + diffeomorphic": {"transform": "syn", "metric": "mi", "init": "com"},
}

# Half a voxel of smoothing at the finest level of the linear stages: MI's interpolation
# artefact (interpolated moving values are blurred, fixed voxel values are not) biased
# affine results by ~0.01 mm on 1 mm brains without it (benchmarks/).
FINEST_SIGMA_VOXELS = 0.5
# 48 bins: on 1 mm MNI pairs 32 bins left T1-T1 at 2x ANTs' error, 64 bins cost
# accuracy on T1-T2 (benchmarks/); 48 matched ANTs on both.
DEFAULT_BINS = 48
# The linear stages' MI is conditioned on 3 x 3 x 3 regions of the fixed image where a
# level has enough samples for it (the finest by default; conditional MI, Loeckx et al.
# 2010; metrics/histogram.py): a smooth intensity bias, which the held-out multi-modal
# pairs carry, then no longer smears one global joint histogram. MNI T1 vs T2-like pairs
# under a +-10 % bias field (benchmarks/bench_affine.py): TRE 0.115-0.167 -> 0.057-0.073
# mm; without the bias 0.064 -> 0.062 mm; T1-T1 0.007/0.004 -> 0.008/0.003 mm. 64 bins:
# with 48 (32) per region T1-T1 lost accuracy, 0.012 (0.02) mm.
LINEAR_MI_OPTIONS: dict[str, Any] = {"bins": 64, "regions": 3}


def default_deformable_metric(model: str, metric: str) -> str:
    """SyN chooses by default ("auto": local NCC as ANTs' SyN for one contrast, MI when
    the pair looks like two, :func:`~napari_reg.core.stages.syn_rules.choose_metric`);
    the B-spline uses the run's metric."""
    return "auto" if model == "syn" else metric
