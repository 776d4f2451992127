"""Histogram metrics on samples: mutual information (MI) and normalised MI (NMI)."""

from __future__ import annotations

import numpy as np

from .base import Metric, MetricError

__all__ = ["MI", "NMI", "MIN_SAMPLES_PER_REGION"]

# Conditional MI needs this many samples per region: with fewer, sparse per-region
# histograms of 48 bins made coarse levels fail (an 83 mm miss on an MNI pair with 27
# regions at 2000 samples); 50 000 finest-level samples give 1850 per region.
MIN_SAMPLES_PER_REGION = 1000


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

    def __init__(self, bins: int = 32, percentiles: tuple[float, float] = (0.5, 99.5),
                 regions: int = 1):
        super().__init__(percentiles)
        if int(bins) != bins or bins < 8:
            raise MetricError(f"bins must be an integer >= 8, got {bins!r}")
        if int(regions) != regions or regions < 1:
            raise MetricError(f"regions must be an integer >= 1, got {regions!r}")
        self.bins = int(bins)
        self.regions_per_axis = int(regions)
        self.regions: np.ndarray | None = None
        self.n_regions = 1

    def assign_regions(self, points: np.ndarray) -> None:
        """Split the sample points (fixed world mm, ``(N, d)``) into ``regions`` slabs of
        equal sample count per axis and condition on them (:meth:`set_regions`); off with
        ``regions=1`` or fewer than ``MIN_SAMPLES_PER_REGION`` points per region. Called by
        a stage after it has fixed a level's samples."""
        k = self.regions_per_axis
        points = np.asarray(points, dtype=np.float64)
        if k <= 1 or points.shape[0] < MIN_SAMPLES_PER_REGION * k ** points.shape[1]:
            # too few samples to fill each region's histogram (coarse pyramid levels):
            # the plain MI, whose one histogram is robust there
            self.set_regions(None)
            return
        labels = np.zeros(points.shape[0], dtype=np.intp)
        for axis in range(points.shape[1]):
            edges = np.quantile(points[:, axis], np.arange(1, k) / k)
            labels = labels * k + np.searchsorted(edges, points[:, axis])
        self.set_regions(labels)

    def set_regions(self, labels: np.ndarray | None) -> None:
        """Condition on where each sample lies: ``labels[i]`` (ints ``0..R-1``) is sample
        i's region of the fixed image, for the samples of every later call (None: off).

        The joint histogram then has a third, spatial axis and the metric is the
        conditional MI ``I(F; M | R) = sum_r p(r) I(F; M | R = r)`` (Loeckx et al.,
        "Nonrigid image registration using conditional mutual information", IEEE TMI
        2010): a smooth intensity bias of either image is near constant within a region,
        so it no longer smears the classes of one global histogram.
        """
        if labels is None:
            self.regions, self.n_regions = None, 1
            return
        labels = np.asarray(labels, dtype=np.intp).ravel()
        self.regions, self.n_regions = labels, int(labels.max()) + 1 if labels.size else 1

    def __repr__(self) -> str:
        extra = f", regions={self.regions_per_axis}" if self.regions_per_axis > 1 else ""
        return f"{type(self).__name__}(bins={self.bins}{extra})"

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
        n_regions = self.n_regions
        if self.regions is not None:
            if self.regions.size != n:
                raise MetricError(f"{self.regions.size} region labels for {n} samples")
            # the fixed bin index runs over (region, bin): a = r * nb + bin
            a += self.regions * nb
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

        size = n_regions * nb * nb
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
        p = h[:size].reshape(n_regions * nb, nb) * (1.0 / n)
        pf = np.bincount(a, minlength=n_regions * nb) * (1.0 / n)
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

    def _logs(self, p: np.ndarray, pf: np.ndarray):
        """Logs of the joint and marginal tables, 0 where the probability is 0.

        With regions, ``p`` has one row per (region, fixed bin) and the moving marginal
        ``pm`` is per region, repeated over that region's rows (``p(r, k)``)."""
        nb = self.bins
        if getattr(self, "joint_regions", False):
            pm = np.broadcast_to(p.sum(axis=0), p.shape)
        else:
            pm = p.reshape(self.n_regions, nb, nb).sum(axis=1)
            pm = np.repeat(pm, nb, axis=0)
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
        ratio = np.where(nz, log_p - log_pf[:, None] - log_pm, 0.0)
        mi = float(np.sum(p * ratio))
        if self.n_regions > 1 and not getattr(self, "joint_regions", False):
            # sum p log(p / (pf pm)) = I(F; M | R) + H(R), and H(R) is fixed by the labels
            p_r = pf.reshape(self.n_regions, self.bins).sum(axis=1)
            mi += float(np.sum(p_r * np.log(p_r, out=np.zeros_like(p_r), where=p_r > 0)))
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
        if self.n_regions > 1:
            raise MetricError("nmi has no regional (conditional) form; use mi")
        p, pf, aux = self._histogram(f, m, want_grad)
        pm, nz, log_p, log_pf, log_pm = self._logs(p, pf)
        pm, log_pm = pm[0], log_pm[0]
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
