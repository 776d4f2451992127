"""Intensity-difference and correlation metrics on samples: SSD, SAD, NCC."""

from __future__ import annotations

import numpy as np

from .base import Metric, MetricError

__all__ = ["SSD", "SAD", "NCC"]


class SSD(Metric):
    """Mean squared difference ``mean (m - f)^2`` (intensity units squared)."""

    name = "ssd"

    def _evaluate(self, f, m, want_grad):
        d = m - f
        n = d.size
        cost = float(np.dot(d, d)) / n
        if want_grad:
            d *= 2.0 / n  # d is a fresh array: becomes the derivative in place
        return cost, (d if want_grad else None)


class SAD(Metric):
    """Mean absolute difference, smoothed so that its gradient is continuous.

    ``|d|`` is replaced by the Charbonnier function ``sqrt(d^2 + eps^2) - eps``, which is
    0 at d = 0 and differs from ``|d|`` by at most ``eps``. ``eps = epsilon * span``
    where ``span`` is the larger of the two robust intensity ranges from :meth:`setup`
    (``epsilon`` default 1e-3, i.e. 0.1 % of the intensity range): small enough to keep
    the robustness of the L1 norm, large enough that the derivative ``d / sqrt(d^2+eps^2)``
    does not jump at d = 0 and gradient optimisers do not chatter.
    """

    name = "sad"

    def __init__(self, epsilon: float = 1e-3, percentiles: tuple[float, float] = (0.5, 99.5)):
        super().__init__(percentiles)
        if not epsilon > 0:
            raise MetricError(f"SAD epsilon must be > 0 (relative to the range), got {epsilon}")
        self.epsilon = float(epsilon)

    @property
    def eps(self) -> float:
        """The absolute smoothing width in intensity units (needs :meth:`setup`)."""
        if self.fixed_range is None or self.moving_range is None:
            raise MetricError("SAD needs setup() before its smoothing width is known")
        span = max(np.diff(self.fixed_range)[0], np.diff(self.moving_range)[0])
        return self.epsilon * float(span)

    def _evaluate(self, f, m, want_grad):
        eps = self.eps
        d = m - f
        n = d.size
        (root, *_), _ = self._buffers(n)
        np.multiply(d, d, out=root)
        root += eps * eps
        np.sqrt(root, out=root)
        cost = float(root.sum()) / n - eps
        if not want_grad:
            return cost, None
        root *= n
        d /= root  # d / sqrt(d^2 + eps^2) / N, in the fresh difference array
        return cost, d


class NCC(Metric):
    """Negative Pearson correlation of the samples: -1 for a perfect positive linear fit.

    ``r = a / sqrt(b c)`` with ``a = sum (f-fm)(m-mm)``, ``b = sum (f-fm)^2``,
    ``c = sum (m-mm)^2``. ``b`` and ``c`` get a tiny floor (1e-12 of N * range^2) so that
    samples that happen to be constant give cost 0 rather than a division by zero; the
    derivative is exact for this (guarded) definition:
    ``dr/dm_i = (f_i - fm) / sqrt(b c) - r (m_i - mm) / c``.
    """

    name = "ncc"

    def _evaluate(self, f, m, want_grad):
        n = f.size
        (fc, mc, *_), _ = self._buffers(n)
        np.subtract(f, f.mean(), out=fc)
        np.subtract(m, m.mean(), out=mc)
        span_f = self.fixed_range[1] - self.fixed_range[0]
        span_m = self.moving_range[1] - self.moving_range[0]
        a = float(np.dot(fc, mc))
        b = float(np.dot(fc, fc)) + 1e-12 * n * span_f * span_f
        c = float(np.dot(mc, mc)) + 1e-12 * n * span_m * span_m
        root = np.sqrt(b * c)
        r = a / root
        if not want_grad:
            return -r, None
        # sum_i fc_i = 0 makes d a / d m_i = fc_i exactly (the mean's derivative cancels).
        grad = mc * (r / c)
        grad -= fc * (1.0 / root)
        return -r, grad
