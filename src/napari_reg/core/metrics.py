"""Similarity metrics on intensity samples: cost value and d cost / d moving sample.

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
"""

from __future__ import annotations

import numpy as np

__all__ = ["Metric", "MetricError", "SSD", "SAD", "NCC", "MI", "NMI", "make_metric", "METRICS"]

# Percentile ranges are computed on at most this many values (an even stride through
# the input): np.percentile on all 7M voxels of a 1 mm brain costs ~0.1 s per level,
# a 200k subset gives the same 0.5/99.5 percentiles to well below a histogram bin.
_MAX_RANGE_VALUES = 200_000


class MetricError(ValueError):
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


class _HistogramMetric(Metric):
    """Mattes-style joint histogram of (fixed, moving) samples, ``bins`` x ``bins``.

    Fixed intensities fall into ``bins`` equal bins over the fixed range with a box
    (zero-order) window. Moving intensities are spread with a cubic B-spline Parzen
    window over ``bins`` bins of which two at each end are padding, so the kernel's
    support stays inside the histogram: with ``t = (m - lo) / width + 2`` in
    ``[2, bins - 2]``, sample i adds ``beta3(k - t_i)`` to bins ``k = floor(t)-1 ..
    floor(t)+2``. The weights sum to 1 (partition of unity), so the joint histogram
    divided by N is a probability table whose fixed marginal is exactly the box
    histogram, and it is twice differentiable in every m_i.

    Samples outside the ranges from :meth:`setup` are clipped into them; their
    derivative is 0 (the derivative of the clip).
    """

    def __init__(self, bins: int = 32, percentiles: tuple[float, float] = (0.5, 99.5)):
        super().__init__(percentiles)
        if int(bins) != bins or bins < 8:
            raise MetricError(f"bins must be an integer >= 8, got {bins!r}")
        self.bins = int(bins)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins})"

    def _histogram(self, f: np.ndarray, m: np.ndarray, want_grad: bool):
        """Joint probability table ``p`` (bins, bins), fixed marginal, derivative state."""
        nb = self.bins
        n = f.size
        flo, fhi = self.fixed_range
        mlo, mhi = self.moving_range
        (t, frac, omf, f2, w), (a, k1, base) = self._buffers(n)
        # Fixed: box window; clip in float, then truncate (values are >= 0 by then).
        np.subtract(f, flo, out=t)
        t *= nb / (fhi - flo)
        np.clip(t, 0, nb - 1, out=t)
        np.copyto(a, t, casting="unsafe")
        # Moving: cubic B-spline window in the padded bin coordinate t in [2, nb - 2].
        mwidth = (mhi - mlo) / (nb - 4)
        np.clip(m, mlo, mhi, out=t)
        t -= mlo
        t *= 1.0 / mwidth
        t += 2.0
        # k1 = floor(t) = k0 + 1, held at nb - 3 for t = nb - 2 exactly (then frac = 1).
        np.copyto(k1, t, casting="unsafe")
        np.minimum(k1, nb - 3, out=k1)
        np.subtract(t, k1, out=frac)
        np.multiply(a, nb, out=base)
        base += k1
        base -= 1  # flat index of bin (a, k0)
        np.subtract(1.0, frac, out=omf)
        np.multiply(frac, frac, out=f2)

        size = nb * nb
        h = np.zeros(size + 3)
        # Kernel taps: w0 = (1-u)^3/6, w3 = u^3/6, w1 = u^3/2 - u^2 + 2/3, w2 = 1 - rest.
        # One bincount per tap at the shared base index, shifted into place: a row never
        # wraps because k0 + 3 <= nb - 1.
        np.multiply(omf, omf, out=w)
        w *= omf
        w *= 1.0 / 6.0
        h[0:size] += np.bincount(base, weights=w, minlength=size)
        np.multiply(f2, frac, out=t)  # t now holds u^3 (the bin coordinate is used up)
        t *= 1.0 / 6.0
        h[3 : 3 + size] += np.bincount(base, weights=t, minlength=size)
        w += t  # w = w0 + w3
        t *= 3.0
        t -= f2
        t += 2.0 / 3.0  # t = w1
        h[1 : 1 + size] += np.bincount(base, weights=t, minlength=size)
        w += t
        np.subtract(1.0, w, out=w)  # w2 by the partition of unity
        h[2 : 2 + size] += np.bincount(base, weights=w, minlength=size)
        p = h[:size].reshape(nb, nb) * (1.0 / n)
        pf = np.bincount(a, minlength=nb) * (1.0 / n)
        aux = (m, mwidth, frac, omf, f2, w, base) if want_grad else None
        return p, pf, aux

    def _gather(self, dcost_dp: np.ndarray, aux) -> np.ndarray:
        """Chain rule through the Parzen window: ``sum_k dC/dp(a_i, k) dp(a_i, k)/dm_i``.

        Tap derivatives w.r.t. the bin coordinate u: ``-(1-u)^2/2``, ``3u^2/2 - 2u``,
        ``-(sum of the others)``, ``u^2/2``; ``du/dm = 1 / width`` and ``dp = dh / N``.
        """
        m, mwidth, frac, omf, f2, w, base = aux
        n = m.size
        table = np.concatenate([np.ravel(dcost_dp), np.zeros(3)])
        g = np.empty(n)
        np.multiply(omf, omf, out=omf)
        omf *= -0.5  # dw0
        np.take(table, base, out=g)
        g *= omf
        np.multiply(f2, 0.5, out=f2)  # dw3
        np.take(table[3:], base, out=w)
        w *= f2
        g += w
        omf += f2  # dw0 + dw3
        np.multiply(f2, 3.0, out=f2)
        frac *= 2.0
        f2 -= frac  # dw1 = 1.5 u^2 - 2u
        np.take(table[1:], base, out=w)
        w *= f2
        g += w
        omf += f2  # dw0 + dw1 + dw3 = -dw2
        np.take(table[2:], base, out=w)
        w *= omf
        g -= w
        g *= 1.0 / (n * mwidth)
        mlo, mhi = self.moving_range
        if m.min() < mlo or m.max() > mhi:
            g[(m < mlo) | (m > mhi)] = 0.0  # clipped samples: derivative of the clip
        return g

    @staticmethod
    def _logs(p: np.ndarray, pf: np.ndarray):
        """Logs of the joint and marginal tables, 0 where the probability is 0."""
        pm = p.sum(axis=0)
        nz = p > 0
        log_p = np.zeros_like(p)
        log_p[nz] = np.log(p[nz])
        log_pf = np.log(pf, out=np.zeros_like(pf), where=pf > 0)
        log_pm = np.log(pm, out=np.zeros_like(pm), where=pm > 0)
        return pm, nz, log_p, log_pf, log_pm


class MI(_HistogramMetric):
    """Negative mutual information (nats), Mattes et al. 2003 joint histogram.

    ``MI = sum p(a,k) log(p(a,k) / (pf(a) pm(k)))``. Its derivative w.r.t. ``p(a,k)`` is
    ``log(p / (pf pm))`` (the ``+1`` terms of the joint and moving-marginal entropies
    cancel; the fixed marginal does not depend on m), chained through the Parzen window.
    """

    name = "mi"

    def _evaluate(self, f, m, want_grad):
        p, pf, aux = self._histogram(f, m, want_grad)
        pm, nz, log_p, log_pf, log_pm = self._logs(p, pf)
        ratio = np.where(nz, log_p - log_pf[:, None] - log_pm[None, :], 0.0)
        mi = float(np.sum(p * ratio))
        if not want_grad:
            return -mi, None
        return -mi, self._gather(-ratio, aux)


class NMI(_HistogramMetric):
    """Negative normalised mutual information ``-(H(F) + H(M)) / H(F, M)`` (Studholme).

    NMI lies in [1, 2]. With ``S = H(F) + H(M)`` and ``J = H(F, M)``:
    ``dNMI/dp(a,k) = (NMI (log p(a,k) + 1) - (log pm(k) + 1)) / J``.
    """

    name = "nmi"

    def _evaluate(self, f, m, want_grad):
        p, pf, aux = self._histogram(f, m, want_grad)
        pm, nz, log_p, log_pf, log_pm = self._logs(p, pf)
        h_f = -float(np.dot(pf, log_pf))
        h_m = -float(np.dot(pm, log_pm))
        h_j = -float(np.sum(p * log_p))
        if h_j <= 1e-300:  # cannot happen with the Parzen window; guard the division
            return -1.0, (np.zeros_like(m) if want_grad else None)
        nmi = (h_f + h_m) / h_j
        if not want_grad:
            return -nmi, None
        dnmi = np.where(nz, nmi * (log_p + 1.0) - (log_pm[None, :] + 1.0), 0.0) / h_j
        return -nmi, self._gather(-dnmi, aux)


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
