"""The sampled-metric contract: :class:`Metric` and :class:`MetricError`.

See :mod:`napari_reg.core.metrics` for what a metric sees and returns.
"""

from __future__ import annotations

import numpy as np

from ..engine.errors import RegistrationError

__all__ = ["Metric", "MetricError"]

# Percentile ranges are computed on at most this many values (an even stride through
# the input): np.percentile on all 7M voxels of a 1 mm brain costs ~0.1 s per level,
# a 200k subset gives the same 0.5/99.5 percentiles to well below a histogram bin.
_MAX_RANGE_VALUES = 200_000


class MetricError(RegistrationError):
    """A metric cannot be evaluated on these intensities (constant image, no overlap, ...)."""


def _check_samples(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(fixed, dtype=np.float64).ravel()
    m = np.asarray(moving, dtype=np.float64).ravel()
    if f.shape != m.shape:
        raise MetricError(
            f"fixed and moving samples differ in number ({f.size} vs {m.size}); "
            "they must be paired values at the same points"
        )
    if f.size < 2:
        raise MetricError(
            f"only {f.size} sample(s) in the overlap of the images: the moving image has "
            "left the fixed image under the current transform (check the initialisation)"
        )
    # One cheap reduction instead of isfinite on every sample: NaN/inf propagate into it.
    if not np.isfinite(f.sum() + m.sum()):
        raise MetricError(
            "the samples contain NaN or infinite intensities; replace them (e.g. by 0) "
            "before registering"
        )
    return f, m


def _robust_range(values: np.ndarray, percentiles: tuple[float, float], which: str):
    """``(lo, hi)`` intensity range at the given percentiles; raise for a constant image."""
    v = np.asarray(values).ravel()
    if v.size > _MAX_RANGE_VALUES:
        v = v[:: int(np.ceil(v.size / _MAX_RANGE_VALUES))]
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise MetricError(f"the {which} image has no finite intensities to set the metric up")
    lo, hi = (float(x) for x in np.percentile(v, percentiles))
    if not hi > lo:
        # Mostly-background images (e.g. a small mask in a large zero field) can have
        # equal percentiles; the full range is then the only sensible choice.
        lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        raise MetricError(
            f"the {which} image is constant (every value is {lo:g}): a constant image has "
            "no structure to register"
        )
    return lo, hi


class Metric:
    """Base class: a cost on paired samples and its derivative w.r.t. the moving samples.

    Subclasses implement :meth:`_evaluate`. ``percentiles`` (default 0.5, 99.5) set the
    robust intensity ranges taken in :meth:`setup`.
    """

    name: str = ""

    def __init__(self, percentiles: tuple[float, float] = (0.5, 99.5)):
        lo, hi = (float(p) for p in percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise MetricError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        self.percentiles = (lo, hi)
        self.fixed_range: tuple[float, float] | None = None
        self.moving_range: tuple[float, float] | None = None

    def setup(self, fixed_values: np.ndarray, moving_values: np.ndarray) -> None:
        """Fix intensity ranges for one pyramid level from representative intensities.

        ``fixed_values`` / ``moving_values`` may be whole images or large samples (of any
        shape, e.g. only inside a mask); they need not be paired. Raises
        :class:`MetricError` if either image is constant.
        """
        self.fixed_range = _robust_range(fixed_values, self.percentiles, "fixed")
        self.moving_range = _robust_range(moving_values, self.percentiles, "moving")

    def _ensure_setup(self, f: np.ndarray, m: np.ndarray) -> None:
        if self.fixed_range is None or self.moving_range is None:
            self.setup(f, m)

    def value_and_derivative(
        self, fixed_samples: np.ndarray, moving_samples: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Cost (minimised, averaged over the N samples) and ``d cost / d m_i`` (N,)."""
        f, m = _check_samples(fixed_samples, moving_samples)
        self._ensure_setup(f, m)
        cost, grad = self._evaluate(f, m, True)
        return float(cost), grad

    def value(self, fixed_samples: np.ndarray, moving_samples: np.ndarray) -> float:
        """The cost only (cheaper than :meth:`value_and_derivative` for some metrics)."""
        f, m = _check_samples(fixed_samples, moving_samples)
        self._ensure_setup(f, m)
        return float(self._evaluate(f, m, False)[0])

    def _buffers(self, n: int):
        """Scratch arrays reused across calls (views of length n).

        Allocating ~15 temporaries of N float64 per call costs more than the arithmetic
        once N * 8 bytes passes malloc's mmap threshold (128 kB, N = 16k): every array
        is then a fresh mmap with page faults. Capacity grows geometrically, so sample
        counts that vary slightly between iterations do not reallocate. This makes a
        metric instance single-threaded, like the registration that owns it.
        """
        ws = getattr(self, "_ws", None)
        if ws is None or ws[0] < n:
            cap = max(n, int(1.25 * (ws[0] if ws else 0)))
            ws = (cap, np.empty((5, cap)), np.empty((3, cap), dtype=np.intp))
            self._ws = ws
        _, fl, it = ws
        return fl[:, :n], it[:, :n]

    def _evaluate(self, f: np.ndarray, m: np.ndarray, want_grad: bool):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
