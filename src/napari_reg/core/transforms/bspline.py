"""Cubic B-spline free-form deformation (FFD, Rueckert et al., IEEE TMI 1999).

``T(x) = x + u(x)`` with

    u(x) = sum_{l,m,n=0..3} B_l(s) B_m(t) B_n(w) phi[i+l, j+m, k+n]

(the course notes' tensor product), where, along each world axis ``a``, the knot
coordinate is ``tau_a = (x_a - start_a) / spacing_a``, the cell ``i = floor(tau)`` and
``s = tau - i`` in ``[0, 1]``, and the seed's basis functions are

    B0 = (1 - s)^3 / 6,  B1 = (3 s^3 - 6 s^2 + 4) / 6,
    B2 = (-3 s^3 + 3 s^2 + 3 s + 1) / 6,  B3 = s^3 / 6.

Everything is in world RAS mm: the control grid is aligned with the world axes, covers
the fixed image's axis-aligned world box (centred on it) with ``spacing`` mm, and the
coefficients ``phi`` are displacements in mm. Control point ``m`` sits at world
``start + (m - 1) * spacing``. Points outside the grid box are clamped onto it (the
displacement is extended as a constant), so ``T`` is defined everywhere.

The map goes fixed world -> (deformed) fixed world; the registration puts the linear
fixed->moving part after it: ``T_total(x) = M (x + u(x))``.

Parameters (float64): the coefficient array ``(d, *n_control)`` flattened C-order, all
x-components first (as ITK orders B-spline parameters by component).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
from scipy import sparse

from ..errors import NapariRegError
from ..image import Volume
from .base import ParametricTransform, PointJacobian
from .field import DisplacementField

__all__ = ["BSplineTransform", "BSplineGridError", "cubic_bspline_basis"]


class BSplineGridError(NapariRegError):
    """A control grid that cannot be built (spacing below a voxel, mismatched sizes...)."""


def cubic_bspline_basis(s: np.ndarray, derivative: int = 0) -> np.ndarray:
    """The four cubic basis values ``(..., 4)`` (or their d-th derivative w.r.t. ``s``)."""
    s = np.asarray(s, dtype=np.float64)
    if derivative == 0:
        b = [(1 - s) ** 3 / 6, (3 * s**3 - 6 * s**2 + 4) / 6,
             (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6, s**3 / 6]
    elif derivative == 1:
        b = [-((1 - s) ** 2) / 2, (9 * s**2 - 12 * s) / 6, (-9 * s**2 + 6 * s + 3) / 6, s**2 / 2]
    elif derivative == 2:
        b = [1 - s, 3 * s - 2, -3 * s + 1, s]
    else:
        raise ValueError("derivative must be 0, 1 or 2")
    return np.stack(b, axis=-1)


def _axis_basis_matrix(tau: np.ndarray, n_cells: int, derivative: int = 0) -> np.ndarray:
    """Dense ``(len(tau), n_cells + 3)`` matrix of 1D basis values (d/dtau^derivative)."""
    cell, s = _cells(tau, n_cells)
    out = np.zeros((tau.size, n_cells + 3))
    b = cubic_bspline_basis(s, derivative)
    rows = np.arange(tau.size)
    for l in range(4):
        out[rows, cell + l] = b[:, l]
    return out


def _cells(tau: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Clamp knot coordinates to the grid box; cell index and fraction in [0, 1]."""
    tau = np.clip(tau, 0.0, float(n_cells))
    cell = np.minimum(np.floor(tau).astype(np.int64), n_cells - 1)
    return cell, tau - cell


class BSplineTransform(ParametricTransform):
    """Cubic B-spline FFD ``T(x) = x + u(x)`` in world RAS mm (see module docstring).

    Parameters
    ----------
    start
        World position (mm) of knot 0 along each axis (grid box lower corner).
    spacing
        Control-point spacing along each world axis, mm.
    n_cells
        Number of spline cells along each axis; there are ``n_cells + 3`` control points.
    domain
        ``(lower, upper)`` world corners (mm) of the region the bending energy integrates
        over (the fixed image box); defaults to the grid box.
    coefficients
        ``(d, *(n_cells + 3))`` displacement coefficients in mm; zeros if omitted.
    """

    def __init__(self, start: np.ndarray, spacing: np.ndarray, n_cells: np.ndarray,
                 domain: tuple[np.ndarray, np.ndarray] | None = None,
                 coefficients: np.ndarray | None = None):
        self.start = np.array(start, dtype=np.float64).ravel()
        self.ndim = self.start.size
        if self.ndim not in (2, 3):
            raise BSplineGridError(f"B-spline grids are 2D or 3D, got {self.ndim} axes")
        self.spacing = np.broadcast_to(np.asarray(spacing, np.float64), (self.ndim,)).copy()
        self.n_cells = np.broadcast_to(np.asarray(n_cells, np.int64), (self.ndim,)).copy()
        if np.any(self.spacing <= 0) or np.any(self.n_cells < 1):
            raise BSplineGridError("control-point spacing must be > 0 and the grid >= 1 cell")
        if domain is None:
            domain = (self.start, self.start + self.n_cells * self.spacing)
        self.domain = (np.asarray(domain[0], np.float64), np.asarray(domain[1], np.float64))
        self.grid_shape = tuple(int(n) + 3 for n in self.n_cells)
        if coefficients is None:
            coefficients = np.zeros((self.ndim,) + self.grid_shape)
        self.coefficients = coefficients

    # ------------------------------------------------------------------ construction
    @classmethod
    def over_volume(cls, volume: Volume, spacing_mm: float | np.ndarray) -> BSplineTransform:
        """A zero FFD whose grid covers ``volume``'s world box with ``spacing_mm`` spacing.

        Raises :class:`BSplineGridError` if the spacing is smaller than the smallest voxel
        (more control points than voxels cannot be constrained by the image).
        """
        d = volume.ndim
        spacing = np.broadcast_to(np.asarray(spacing_mm, np.float64), (d,)).copy()
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise BSplineGridError(f"control-point spacing must be positive, got {spacing_mm}")
        vox = float(volume.spacing.min())
        if np.any(spacing < vox * (1 - 1e-9)):
            raise BSplineGridError(
                f"control-point spacing {spacing.min():g} mm is smaller than a voxel "
                f"({vox:g} mm) of '{volume.name or 'the fixed image'}'; use at least {vox:g} mm")
        lo, hi = volume.bounds_world()
        extent = hi - lo
        n_cells = np.maximum(1, np.ceil(extent / spacing - 1e-9)).astype(np.int64)
        start = (lo + hi) / 2 - n_cells * spacing / 2
        return cls(start, spacing, n_cells, domain=(lo, hi))

    def copy(self) -> BSplineTransform:
        return BSplineTransform(self.start, self.spacing, self.n_cells,
                                (self.domain[0].copy(), self.domain[1].copy()),
                                self._coef.copy())

    # ------------------------------------------------------------------ parameters
    @property
    def coefficients(self) -> np.ndarray:
        """``(d, *grid_shape)`` control-point displacements (mm)."""
        return self._coef

    @coefficients.setter
    def coefficients(self, value: np.ndarray) -> None:
        value = np.array(value, dtype=np.float64)
        if value.shape != (self.ndim,) + self.grid_shape:
            raise BSplineGridError(f"coefficients must have shape {(self.ndim,) + self.grid_shape},"
                                   f" got {value.shape}")
        self._coef = value

    @property
    def parameters(self) -> np.ndarray:
        return self._coef.ravel().copy()

    @parameters.setter
    def parameters(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        if value.size != self._coef.size:
            raise BSplineGridError(f"expected {self._coef.size} parameters, got {value.size}")
        self._coef = value.reshape(self._coef.shape).copy()

    def control_point_positions(self) -> np.ndarray:
        """World mm of every control point, ``(*grid_shape, d)``."""
        axes = [self.start[a] + (np.arange(n) - 1.0) * self.spacing[a]
                for a, n in enumerate(self.grid_shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    # ------------------------------------------------------------------ evaluation
    def weight_matrix(self, points: np.ndarray) -> sparse.csr_matrix:
        """Sparse ``(N, n_control)`` basis weights: ``u(x_i) = W[i] @ phi_c`` per component.

        This is the Jacobian ``d T_c(x_i) / d phi_{c,m}`` (the same for every component
        ``c`` and zero across components) in sparse form: ``4^d`` non-zeros per row, the
        separable products ``B_l(s) B_m(t) B_n(w)``.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.ndim:
            raise ValueError(f"expected (N, {self.ndim}) points, got {points.shape}")
        n = points.shape[0]
        tau = (points - self.start) / self.spacing
        # the flat index of row i's k-th weight is base_i + offset_k: the 4^d offsets of a
        # 4 x ... x 4 block are the same for every point (C order over the grid), so only
        # one (N,) base index and one (N, 4^d) product of the per-axis weights are built
        strides = np.cumprod((self.grid_shape[1:] + (1,))[::-1])[::-1]
        base = np.zeros(n, dtype=np.int64)
        offsets = np.zeros(1, dtype=np.int64)
        w = np.ones((n, 1))
        for a in range(self.ndim):
            cell, s = _cells(tau[:, a], int(self.n_cells[a]))
            base += cell.astype(np.int64) * int(strides[a])
            offsets = (offsets[:, None] + np.arange(4) * int(strides[a])).ravel()
            w = (w[:, :, None] * cubic_bspline_basis(s)[:, None, :]).reshape(n, -1)
        k = w.shape[1]
        n_control = int(np.prod(self.grid_shape))
        index_type = np.int32 if max(n_control, n * k) < 2**31 - 1 else np.int64
        indices = (base.astype(index_type)[:, None] + offsets.astype(index_type)).ravel()
        indptr = np.arange(0, n * k + 1, k, dtype=index_type)
        return sparse.csr_matrix((w.ravel(), indices, indptr), shape=(n, n_control))

    def displacement_at(self, points: np.ndarray, weights: sparse.csr_matrix | None = None,
                        chunk: int = 131072) -> np.ndarray:
        """``u(x)`` in mm at ``(N, d)`` world points (optionally with a precomputed ``W``)."""
        phi = self._coef.reshape(self.ndim, -1).T
        if weights is not None:
            # one product per component: scipy's one-vector CSR kernel ran 2.2x faster
            # than its multi-vector one on (N, 3) right-hand sides (164 k points of a
            # 3D brain: 15 vs 33 ms), with the same sums in the same order
            out = np.empty((weights.shape[0], self.ndim))
            for c in range(self.ndim):
                out[:, c] = weights @ self._coef[c].ravel()
            return out
        points = np.asarray(points, dtype=np.float64)
        out = np.empty(points.shape)
        for s in range(0, points.shape[0], chunk):
            out[s:s + chunk] = self.weight_matrix(points[s:s + chunk]) @ phi
        return out

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Fixed world mm ``(N, d)`` -> ``x + u(x)`` (world mm)."""
        points = np.asarray(points, dtype=np.float64)
        return points + self.displacement_at(points)

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """Dense ``(N, d, n_parameters)`` d T / d p. Only for small N; see :meth:`weight_matrix`."""
        points = np.asarray(points, dtype=np.float64)
        n, p = points.shape[0], self.n_parameters
        if n * self.ndim * p > 5e7:
            raise MemoryError(f"dense B-spline Jacobian would hold {n * self.ndim * p:.3g} values;"
                              " use weight_matrix() (sparse) instead")
        w = self.weight_matrix(points).toarray()
        m = w.shape[1]
        jac = np.zeros((n, self.ndim, p))
        for c in range(self.ndim):
            jac[:, c, c * m:(c + 1) * m] = w
        return jac

    def gradient_from_forces(self, weights: sparse.csr_matrix, forces: np.ndarray) -> np.ndarray:
        """Chain rule: ``dC/dp`` from per-point forces ``dC/dT(x_i)`` ``(N, d)`` (mm^-1)."""
        return np.asarray(weights.T @ forces).T.ravel()

    def at_points(self, points: np.ndarray, then: np.ndarray | None = None) -> PointJacobian:
        """The sparse form: the basis weights of the points are computed once, so each
        evaluation costs two sparse products."""
        return _BSplinePointJacobian(self, points, then)

    def to_field(self, shape: tuple[int, ...], affine: np.ndarray,
                 check: Callable[[], None] | None = None) -> DisplacementField:
        """``u`` sampled on a voxel grid as a :class:`DisplacementField` (world mm).

        Axis-aligned grids (diagonal affine) use the separable tensor product: one small
        matrix per axis, no per-voxel 64-term sums. ``check`` (a cancellation hook) is
        called before each component.
        """
        affine = np.asarray(affine, np.float64)
        d = self.ndim
        lin = affine[:d, :d]
        if np.allclose(lin, np.diag(np.diag(lin))):
            mats = []
            for a in range(d):
                x = affine[a, d] + lin[a, a] * np.arange(shape[a])
                mats.append(_axis_basis_matrix((x - self.start[a]) / self.spacing[a],
                                               int(self.n_cells[a])))
            comps = np.empty((d,) + tuple(shape), np.float32)
            for c in range(d):
                if check is not None:
                    check()
                out = self._coef[c]
                for a in range(d):
                    out = np.tensordot(mats[a], out, axes=([1], [a]))
                    out = np.moveaxis(out, 0, a)
                comps[c] = out
            return DisplacementField.from_components(comps, affine)
        return DisplacementField.from_transform(self, shape, affine)

    # ------------------------------------------------------------------ regularisation
    def _gram(self, axis: int, order: int) -> np.ndarray:
        """``int N_m^(r)(x) N_n^(r)(x) dx`` over the domain along one axis (exact, Gauss)."""
        n = int(self.n_cells[axis])
        lo = (self.domain[0][axis] - self.start[axis]) / self.spacing[axis]
        hi = (self.domain[1][axis] - self.start[axis]) / self.spacing[axis]
        lo, hi = max(lo, 0.0), min(hi, float(n))
        breaks = np.unique(np.concatenate([[lo, hi], np.arange(np.ceil(lo), np.floor(hi) + 1)]))
        breaks = breaks[(breaks >= lo) & (breaks <= hi)]
        gx, gw = np.polynomial.legendre.leggauss(4)  # exact for the degree-6 products
        a, b = breaks[:-1, None], breaks[1:, None]
        nodes = ((b - a) / 2 * gx + (a + b) / 2).ravel()
        weights = ((b - a) / 2 * gw).ravel()
        # a node exactly on a knot must use the cell to its right; nodes are interior
        basis = _axis_basis_matrix(nodes, n, order)
        g = basis.T @ (basis * weights[:, None])
        # d/dx = d/dtau / spacing; dx = spacing dtau
        return g * self.spacing[axis] ** (1 - 2 * order)

    def _bending_operator(self, phi: np.ndarray) -> np.ndarray:
        """``K phi`` with ``E = <phi, K phi> / V`` for one component (separable Gram sums)."""
        d = self.ndim
        # the Gram matrices depend on the grid only: cached (the grid never changes)
        grams = getattr(self, "_grams", None)
        if grams is None:
            grams = [[self._gram(a, r) for r in range(3)] for a in range(d)]
            self._grams = grams
        out = np.zeros_like(phi)
        for orders in product(range(3), repeat=d):
            if sum(orders) != 2:
                continue
            mult = 2.0 if max(orders) == 1 else 1.0  # mixed terms count twice (seed formula)
            t = phi
            for a in range(d):
                t = np.moveaxis(np.tensordot(grams[a][orders[a]], t, axes=([1], [a])), 0, a)
            out += mult * t
        return out

    def domain_volume(self) -> float:
        return float(np.prod(self.domain[1] - self.domain[0]))

    def bending_energy(self) -> float:
        """The seed's smoothness term: mean over the fixed box of the summed squared second
        derivatives of ``T`` (all components), in mm^-2."""
        return self.bending_energy_and_gradient()[0]

    def bending_energy_and_gradient(self) -> tuple[float, np.ndarray]:
        """Bending energy and its gradient w.r.t. the parameters (exact, closed form)."""
        vol = max(self.domain_volume(), 1e-12)
        energy = 0.0
        grad = np.empty_like(self._coef)
        for c in range(self.ndim):
            k = self._bending_operator(self._coef[c])
            energy += float(np.sum(self._coef[c] * k)) / vol
            grad[c] = 2.0 * k / vol
        return energy, grad.ravel()

    # ------------------------------------------------------------------ multi-level
    def refine(self, factor: int = 2) -> BSplineTransform:
        """The same deformation on a grid ``factor`` times finer (exact subdivision).

        The finer knots contain the coarser ones, so the cubic spline is represented
        exactly; the per-axis subdivision matrix is found by a least-squares fit of the
        coarse basis by the fine basis (residual at round-off level).
        """
        factor = int(factor)
        if factor < 1:
            raise BSplineGridError("refinement factor must be a positive integer")
        fine = BSplineTransform(self.start, self.spacing / factor, self.n_cells * factor,
                                self.domain)
        coef = self._coef
        for a in range(self.ndim):
            n_c = int(self.n_cells[a])
            tau = np.linspace(0.0, n_c, 8 * n_c * factor + 1)
            bc = _axis_basis_matrix(tau, n_c)
            bf = _axis_basis_matrix(tau * factor, n_c * factor)
            r = np.linalg.lstsq(bf, bc, rcond=None)[0]
            coef = np.moveaxis(np.tensordot(r, coef, axes=([1], [a + 1])), 0, a + 1)
        fine.coefficients = coef
        return fine

    def __repr__(self) -> str:
        return (f"BSplineTransform(grid={self.grid_shape}, spacing={self.spacing.tolist()} mm, "
                f"max |phi|={np.abs(self._coef).max():.3g} mm)")


class _BSplinePointJacobian(PointJacobian):
    """``y_i = M (x_i + u(x_i))`` through the sparse weights ``W`` of the fixed points:
    ``u = W phi`` and ``dC/dphi = W^T (forces A)`` with ``A`` the linear part of ``M``."""

    def __init__(self, transform: BSplineTransform, points: np.ndarray,
                 then: np.ndarray | None = None):
        super().__init__(transform, points, then)
        self.weights = transform.weight_matrix(self.points)
        d = self.points.shape[1]
        then = np.eye(d + 1) if self.then is None else self.then
        self.linear = then[:d, :d]
        self.base = self.points @ self.linear.T + then[:d, d]  # M x, once per level

    def mapped(self) -> np.ndarray:
        u = self.transform.displacement_at(self.points, self.weights)
        return self.base + u @ self.linear.T

    def pull_back(self, forces: np.ndarray) -> np.ndarray:
        return self.transform.gradient_from_forces(self.weights, forces @ self.linear)
