"""A chain of cubic B-spline FFDs, each inside its injectivity bound: a fold-free FFD.

One FFD ``D(x) = x + u(x)`` is locally injective (no fold, Jacobian determinant > 0)
when every control-point displacement component stays below ``spacing / K`` along its
axis, with ``K = 2.046`` in 2D and ``K = 2.479`` in 3D (Choi & Lee, "Injectivity
conditions of 2D and 3D uniform cubic B-spline functions", Graphical Models 62, 2000;
the "0.4 x spacing" rule). A sum of such FFDs can fold, their composition cannot: the
registration therefore composes one bounded FFD per pyramid level (and, where the
bound limits it, a few per level), as Rueckert et al. do for diffeomorphic FFDs
(MICCAI 2006):

    D(x) = D_n( ... D_2(D_1(x)) )       (fixed world RAS mm -> fixed world RAS mm)

Every ``D_k`` is a :class:`BSplineTransform` over the fixed image box. The chain is
what a B-spline stage returns as its deformation; the linear fixed->moving matrix comes
after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .base import Transform
from .bspline import BSplineTransform
from .field import DisplacementField, _interpolate

__all__ = ["BSplineChain", "CHOI_LEE_K", "injectivity_bound"]

# Choi & Lee (2000), theorems 2 and 3: the FFD is locally injective if every control
# displacement component is below spacing / K along its axis.
CHOI_LEE_K = {2: 2.046392675, 3: 2.479472335}


def injectivity_bound(ffd: BSplineTransform, safety: float = 0.95) -> np.ndarray:
    """``(d, *grid_shape)`` largest allowed ``|phi|`` (mm) per coefficient: a fraction
    ``safety`` (< 1: the theorem's inequality is strict) of ``spacing_axis / K``."""
    if not 0 < safety < 1:
        raise ValueError(f"safety must be in (0, 1), got {safety}")
    d = ffd.ndim
    per_axis = safety * ffd.spacing / CHOI_LEE_K[d]
    return np.broadcast_to(per_axis.reshape((d,) + (1,) * d), (d,) + ffd.grid_shape).copy()


class BSplineChain(Transform):
    """``x -> D_n(...D_1(x))``: B-spline FFDs applied in list order (world RAS mm).

    An empty chain is the identity.
    """

    def __init__(self, ffds: Sequence[BSplineTransform], ndim: int | None = None):
        self.ffds = list(ffds)
        if not self.ffds and ndim is None:
            raise ValueError("an empty B-spline chain needs ndim")
        self.ndim = self.ffds[0].ndim if self.ffds else int(ndim)  # type: ignore[arg-type]
        if any(f.ndim != self.ndim for f in self.ffds):
            raise ValueError("every FFD of a chain must have the same dimension")

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Fixed world mm ``(N, d)`` -> deformed fixed world mm (exact, every FFD in turn)."""
        out = np.asarray(points, dtype=np.float64)
        for ffd in self.ffds:
            out = ffd.transform_points(out)
        return out

    def to_field(self, shape: tuple[int, ...], affine: np.ndarray,
                 check: Callable[[], None] | None = None) -> DisplacementField:
        """The chain's displacement on a voxel grid (world mm), fast.

        Each FFD is sampled on the grid by its separable tensor product; the next one is
        then read at the displaced positions by linear interpolation of its sampled
        field (a cubic spline over >= 1 voxel cells: the interpolation error is a tiny
        fraction of a voxel), instead of summing 4^d basis terms per voxel and FFD.
        ``check`` (a cancellation hook) is called between the steps.
        """
        affine = np.asarray(affine, np.float64)
        d = self.ndim
        if not self.ffds:
            return DisplacementField.identity(tuple(shape), affine)
        u = self.ffds[0].to_field(shape, affine, check).components.copy()
        if len(self.ffds) == 1:
            return DisplacementField.from_components(u, affine)
        inv = np.linalg.inv(affine)
        index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                     indexing="ij"))
        lin = inv[:d, :d].astype(np.float32)
        for ffd in self.ffds[1:]:
            nxt = ffd.to_field(shape, affine, check).components
            # voxel position of x + u(x): index + A^-1 u
            vox = index + np.tensordot(lin, u, axes=1)
            u += _interpolate(nxt, vox)
        return DisplacementField.from_components(u, affine)

    def inverse_field(self, shape: tuple[int, ...], affine: np.ndarray) -> DisplacementField:
        """The inverse map as a dense field on a grid (fixed-point iteration)."""
        return self.to_field(shape, affine).inverse()

    def bending_energy(self) -> float:
        """Sum of the FFDs' bending energies (mm^-2), each over the fixed box."""
        return float(sum(f.bending_energy() for f in self.ffds))

    def bound_usage(self) -> list[float]:
        """Per FFD: largest ``|phi| / injectivity bound`` (< 1 always; 1 = saturated)."""
        return [float(np.max(np.abs(f.coefficients) / (injectivity_bound(f, 0.999999))))
                for f in self.ffds]

    def copy(self) -> BSplineChain:
        return BSplineChain([f.copy() for f in self.ffds], self.ndim)

    def __repr__(self) -> str:
        spacings = ", ".join(f"{f.spacing.min():g}" for f in self.ffds)
        return f"BSplineChain({len(self.ffds)} FFDs, spacings [{spacings}] mm)"
