"""Similarity metrics: sampled (this package) and dense (``dense.py``, for SyN).

Sampled metrics work on intensity samples: cost value and d cost / d moving sample.

The registration driver draws N points ``x_i`` (world RAS mm) on the *fixed* grid, reads
the fixed values ``f_i``, maps the points fixed->moving through the current transform and
interpolates the moving image there (``m_i = moving(T(x_i))``); only points inside the
overlap are passed. A metric sees nothing but these two sample vectors, so it is
independent of dimension, grids and transform models. The driver applies the chain rule
``dC/dp = sum_i dC/dm_i * grad moving(T(x_i)) . dT(x_i)/dp``.

Every cost is **minimised** and averaged over the samples (the 1/N definitions of the
course notes, section 8.3), so the number of samples does not change its scale:

* ``ssd``  mean (m - f)^2
* ``sad``  mean |m - f|, smoothed (Charbonnier, see :class:`SAD`)
* ``ncc``  -(Pearson correlation of f and m)
* ``mi``   -mutual information (nats) of a Mattes-style joint histogram
* ``nmi``  -(H(F) + H(M)) / H(F, M) on the same histogram (Studholme)

``Metric.setup(fixed_values, moving_values)`` is called once per pyramid level with
representative intensities of both images; it fixes the intensity ranges (robust
percentiles) so that histogram bins do not move while the optimiser runs, and rejects
constant images, which carry nothing to register. If a metric is used without
``setup()``, the first samples it sees set it up.

* ``base.py``       :class:`Metric` (setup, value_and_derivative), :class:`MetricError`
* ``intensity.py``  SSD, SAD, NCC
* ``histogram.py``  MI, NMI (Mattes joint histogram, cubic B-spline Parzen window)
* ``dense.py``      whole-image metrics with voxel-wise derivatives (local NCC, ...)
"""

from __future__ import annotations

from .base import Metric, MetricError
from .histogram import MI, NMI
from .intensity import NCC, SAD, SSD

__all__ = ["Metric", "MetricError", "SSD", "SAD", "NCC", "MI", "NMI", "make_metric", "METRICS"]

METRICS: dict[str, type[Metric]] = {"ssd": SSD, "sad": SAD, "ncc": NCC, "mi": MI, "nmi": NMI}


def make_metric(name: str, **options) -> Metric:
    """Create a metric by name (``ssd sad ncc mi nmi``, case-insensitive).

    ``options`` go to the metric's constructor: ``percentiles`` for all, ``epsilon`` for
    SAD, ``bins`` for MI and NMI.
    """
    key = str(name).strip().lower()
    if key not in METRICS:
        raise MetricError(f"unknown metric {name!r}; valid metrics are: {', '.join(METRICS)}")
    cls = METRICS[key]
    try:
        return cls(**options)
    except TypeError as exc:
        raise MetricError(f"invalid option for metric {key!r}: {exc}") from None
