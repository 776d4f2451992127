"""Histogram metrics on samples: mutual information (MI) and normalised MI (NMI)."""

from __future__ import annotations

import numpy as np

from .base import Metric, MetricError

__all__ = ["MI", "NMI"]


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
