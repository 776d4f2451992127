"""Dense image metrics for the deformable optimisers: values and voxel-wise derivatives.

Both images are arrays on one grid (the SyN "middle" grid, or the fixed grid), so the
metrics work on whole arrays rather than on sparse samples. Each metric returns the cost
(minimised, averaged over the voxels in the mask) and its derivative w.r.t. **both**
images' voxel values, which symmetric registration needs; :func:`force_field` turns such
a derivative into a force (d cost / d displacement, per voxel, world mm^-1) with the image
gradient, the way ANTs and demons do.

* :class:`LocalNCC` - local normalised cross-correlation in a box window of
  ``2 * radius + 1`` voxels per axis (ANTs "CC"), with the exact gradient (box sums and
  their adjoint), not the single-voxel approximation.
* :class:`SampledDenseMetric` - any metric of :mod:`napari_reg.core.metrics` (``ssd``,
  ``mi``, ...) evaluated on every voxel, so SSD and MI forces share that module's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from scipy import ndimage

from . import make_metric
from .base import Metric

__all__ = ["DenseMetric", "LocalNCC", "SampledDenseMetric", "make_dense_metric",
           "image_gradient_world", "force_field", "symmetric_force"]


def image_gradient_world(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(d, *shape)`` float32 gradient of an image in world mm^-1 (central differences).

    ``grad_world = inv(A)^T grad_voxel`` with ``A`` the linear part of the voxel->world
    affine, so oblique and anisotropic grids give the true spatial gradient.
    """
    d = data.ndim
    inv = np.linalg.inv(np.asarray(affine, np.float64)[:d, :d]).astype(np.float32)
    g = np.gradient(np.asarray(data, dtype=np.float32))
    if d == 1:
        g = [g]
    out = np.empty((d,) + data.shape, dtype=np.float32)
    for b in range(d):
        out[b] = sum(g[a] * inv[a, b] for a in range(d))
    return out


def force_field(derivative: np.ndarray, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``dC/dI (x) * grad I (x)``: the voxel-wise force (``(d, *shape)``, world axes).

    Moving the point whose value is read from ``image`` by ``delta`` (mm) changes the
    cost by ``force . delta`` to first order.
    """
    grad = image_gradient_world(image, affine)
    grad *= derivative.astype(np.float32, copy=False)[None]
    return grad


def symmetric_force(d_fixed: np.ndarray, fixed: np.ndarray, d_moving: np.ndarray,
                    moving: np.ndarray, affine: np.ndarray,
                    map: Callable[[Callable, list], list] | None = None) -> np.ndarray:
    """``dC/dJ grad J - dC/dI grad I`` (``(d, *shape)`` float32, world mm^-1): the force
    of a symmetric registration that moves ``moving`` (J) by ``+delta`` and ``fixed``
    (I) by ``-delta``; each term as :func:`force_field`.

    Computed in slabs along the first axis (about a million voxels each, with a one-row
    halo so the central differences are those of the whole array), so the temporaries
    are a slab's, not the grid's: on a 1 mm brain the two images' gradients used to take
    600 MB on their own. ``map`` runs the independent slabs (serial by default).
    """
    d = fixed.ndim
    shape = fixed.shape
    inv = np.linalg.inv(np.asarray(affine, np.float64)[:d, :d]).astype(np.float32)
    out = np.empty((d,) + shape, np.float32)
    n0 = shape[0]
    n_slabs = int(min(n0, max(2, np.ceil(fixed.size / 1e6))))
    bounds = np.linspace(0, n0, n_slabs + 1).astype(int)

    def slab(k: int) -> None:
        s0, s1 = int(bounds[k]), int(bounds[k + 1])
        lo, hi = max(s0 - 1, 0), min(s1 + 1, n0)
        rows = slice(s0 - lo, s1 - lo)
        voxel = np.empty((d, s1 - s0) + shape[1:], np.float32)
        for a in range(d):
            voxel[a] = np.gradient(np.asarray(moving[lo:hi], np.float32), axis=a)[rows]
            voxel[a] *= d_moving[s0:s1]
            term = np.gradient(np.asarray(fixed[lo:hi], np.float32), axis=a)[rows]
            term *= d_fixed[s0:s1]
            voxel[a] -= term
        # world mm^-1: grad_world = inv(A)^T grad_voxel
        out[:, s0:s1] = np.tensordot(inv.T, voxel, axes=1)

    list((map or _serial_map)(slab, list(range(n_slabs))))
    return out


def _serial_map(fn: Callable, items: list) -> Iterator:
    """``fn`` over ``items``, each result computed when asked for (so it can be used
    and freed before the next exists)."""
    return (fn(x) for x in items)


def _call(task: Callable[[], np.ndarray]) -> np.ndarray:
    return task()


def _product(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b * c`` with one temporary."""
    out = a * b
    out *= c
    return out


class DenseMetric:
    """Interface: ``value_and_derivatives(fixed, moving, mask=None) -> (cost, dC/dfixed,
    dC/dmoving)`` with arrays of the grid's shape; costs are minimised.

    ``map``: how independent filters of one evaluation are run, ``map(fn, items)`` ->
    an iterable of the results in order (a list, or an iterator that yields each result
    as it is done: the local NCC consumes them one by one); serial by default, a caller
    with a thread pool may set its own (the local NCC's box sums release the GIL)."""

    name = ""
    map: Callable[[Callable, list], Iterable] = staticmethod(_serial_map)

    def setup(self, fixed: np.ndarray, moving: np.ndarray) -> None:
        """Called once per pyramid level with the level's images (ranges, scales)."""

    def value_and_derivatives(self, fixed: np.ndarray, moving: np.ndarray,
                              mask: np.ndarray | None = None,
                              check: Callable[[], None] | None = None
                              ) -> tuple[float, np.ndarray, np.ndarray]:
        """``check`` (optional) is called between the expensive parts (cancellation)."""
        raise NotImplementedError


def _moments(x: np.ndarray) -> tuple[float, float]:
    x64 = np.asarray(x, dtype=np.float64)
    sd = float(x64.std())
    return float(x64.mean()), (sd if sd > 0 else 1.0)


def _standardise(x: np.ndarray, moments: tuple[float, float]) -> np.ndarray:
    """float32 ``(x - mean) / std``: NCC does not change, and float32 sums stay accurate."""
    mu, sd = moments
    return ((np.asarray(x, dtype=np.float32) - np.float32(mu)) / np.float32(sd))


class LocalNCC(DenseMetric):
    """``-mean_x cc(x)``, ``cc = s_IJ^2 / (s_II s_JJ + eps)`` over a ``(2r+1)^d`` box.

    ``s_IJ``, ``s_II``, ``s_JJ`` are the centred window sums (windows are truncated at the
    grid border). The derivative is exact: voxel ``y`` enters every window that contains
    it, so ``dC/dJ(y) = -[I(y) S(A) - S(A mu_I) - J(y) S(B) + S(B mu_J)](y)`` with
    ``A = 2 s_IJ / D``, ``B = 2 s_IJ^2 s_II / D^2`` (per-window weights) and ``S`` the box
    sum, which is its own adjoint. ``eps`` (relative to the window variance of
    standardised images) keeps flat background windows harmless.
    """

    name = "lncc"

    def __init__(self, radius: int = 2, eps: float = 1e-5):
        radius = int(radius)
        if radius < 1:
            raise ValueError(f"local NCC window radius must be >= 1 voxel, got {radius}")
        self.radius = radius
        self.eps = float(eps)
        self._moments: tuple[tuple[float, float], tuple[float, float]] | None = None

    def setup(self, fixed: np.ndarray, moving: np.ndarray) -> None:
        """Fix the intensity normalisation for one level (so ``eps`` is a constant)."""
        self._moments = (_moments(fixed), _moments(moving))

    def _box(self, x: np.ndarray, in_place: bool = False) -> np.ndarray:
        """Window sums (zero outside the grid), float32; ``in_place`` overwrites ``x``
        (a temporary: scipy's 1D passes buffer each line, so this is exact)."""
        size = 2 * self.radius + 1
        out = ndimage.uniform_filter(x, size=size, mode="constant", cval=0.0,
                                     output=x if in_place else None)
        out *= np.float32(size ** x.ndim)
        return out

    def _counts(self, shape: tuple[int, ...]) -> np.ndarray:
        """Voxels per (border-truncated) window: a separable product of 1D counts."""
        r = self.radius
        out = np.ones((1,) * len(shape), np.float32)
        for axis, n in enumerate(shape):
            k = np.arange(n)
            c = (np.minimum(k + r, n - 1) - np.maximum(k - r, 0) + 1).astype(np.float32)
            out = out * c.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        return out

    def value_and_derivatives(self, fixed, moving, mask=None, check=None):
        # Written with in-place operations and streamed window sums: on a 1 mm brain
        # every temporary is 35 MB. The products a window sum needs are formed on the
        # worker that sums them, and the adjoint sums are added into the derivatives as
        # they arrive, so about 14 such arrays are alive at once instead of 22.
        mom_i, mom_j = self._moments or (_moments(fixed), _moments(moving))
        i, j = _standardise(fixed, mom_i), _standardise(moving, mom_j)
        sd_i, sd_j = mom_i[1], mom_j[1]
        box = self._box
        n = self._counts(i.shape)
        # the five window sums are independent: one batch for the caller's map
        mu_i, mu_j, s_ii, s_jj, s_ij = self.map(_call, [
            lambda: box(i), lambda: box(j), lambda: box(i * i, True),
            lambda: box(j * j, True), lambda: box(i * j, True)])
        mu_i /= n
        mu_j /= n
        s_ii -= _product(mu_i, mu_i, n)
        s_jj -= _product(mu_j, mu_j, n)
        s_ij -= _product(mu_i, mu_j, n)
        # eps scaled to a full window of unit-variance images
        eps = np.float32(self.eps * float(n.max()) ** 2)
        del n
        den = s_ii * s_jj
        den += eps
        cc = s_ij * s_ij
        cc /= den
        if mask is None:
            weight = np.float32(1.0 / cc.size)
            cost = -float(cc.mean(dtype=np.float64))
        else:
            m = np.asarray(mask, dtype=np.float32)
            total = float(m.sum())
            if total <= 0:
                raise ValueError("the local NCC mask is empty")
            cost = -float(np.sum(cc * m, dtype=np.float64) / total)
            weight = m
            weight /= np.float32(total)
        if check is not None:
            check()
        a = s_ij / den
        a *= 2 * weight  # A = 2 s_IJ / D (per window, weighted)
        r = cc
        r /= den
        r *= 2 * weight  # 2 s_IJ^2 / D^2
        del den, weight
        b_j = r * s_ii  # B for J: weight of J's own variance
        b_i = r
        b_i *= s_jj
        del s_ii, s_jj, s_ij
        # the seven adjoint window sums (one more independent batch), each added into
        # its derivative as soon as it is done:
        #   dC/dJ = -[i S(a) - S(a mu_i) - j S(b_j) + S(b_j mu_j)] / sd_j,
        #   dC/dI = -[j S(a) - S(a mu_j) - i S(b_i) + S(b_i mu_i)] / sd_i
        sums = self.map(_call, [
            lambda: box(a), lambda: box(a * mu_i, True), lambda: box(a * mu_j, True),
            lambda: box(b_j), lambda: box(b_j * mu_j, True),
            lambda: box(b_i), lambda: box(b_i * mu_i, True)])
        sums = iter(sums)
        s_a = next(sums)
        d_j = i * s_a
        d_i = j * s_a
        del s_a
        d_j -= next(sums)
        d_i -= next(sums)
        s_b = next(sums)
        s_b *= j
        d_j -= s_b
        del s_b
        d_j += next(sums)
        s_b = next(sums)
        s_b *= i
        d_i -= s_b
        del s_b
        d_i += next(sums)
        # sign (cost = -mean cc) and the chain rule through the standardisation
        d_i *= np.float32(-1.0 / sd_i)
        d_j *= np.float32(-1.0 / sd_j)
        return cost, d_i, d_j

    def __repr__(self) -> str:
        return f"LocalNCC(radius={self.radius})"


class SampledDenseMetric(DenseMetric):
    """A :mod:`~napari_reg.core.metrics` metric on all voxels (or those in ``mask``).

    The derivative w.r.t. the fixed image comes from a second instance with the roles
    swapped (SSD, NCC, MI and NMI are symmetric in their two images).
    """

    def __init__(self, name: str, **options):
        self.name = name
        self._fwd: Metric = make_metric(name, **options)
        self._bwd: Metric = make_metric(name, **options)

    def setup(self, fixed: np.ndarray, moving: np.ndarray) -> None:
        self._fwd.setup(fixed, moving)
        self._bwd.setup(moving, fixed)

    def value_and_derivatives(self, fixed, moving, mask=None, check=None):
        if mask is None:
            f, m = fixed.ravel(), moving.ravel()
        else:
            sel = np.asarray(mask, dtype=bool)
            f, m = fixed[sel], moving[sel]
        cost, dm = self._fwd.value_and_derivative(f, m)
        _, df = self._bwd.value_and_derivative(m, f)
        d_fixed = np.zeros(fixed.shape, np.float32)
        d_moving = np.zeros(fixed.shape, np.float32)
        if mask is None:
            d_fixed.ravel()[:] = df
            d_moving.ravel()[:] = dm
        else:
            d_fixed[sel] = df
            d_moving[sel] = dm
        return cost, d_fixed, d_moving

    def __repr__(self) -> str:
        return f"SampledDenseMetric({self.name!r})"


def make_dense_metric(name: str, radius: int = 2, **options) -> DenseMetric:
    """``"lncc"`` / ``"cc"`` (local NCC, window radius in voxels) or any name
    :func:`napari_reg.core.metrics.make_metric` knows (``ssd``, ``mi``, ``nmi``, ``ncc``)."""
    key = name.lower()
    if key in ("lncc", "cc", "local_ncc", "localncc"):
        return LocalNCC(radius=radius, **options)
    return SampledDenseMetric(key, **options)
