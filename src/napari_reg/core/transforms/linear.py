"""Linear transform models: Translation, Rigid, Similarity, Affine (2D and 3D).

Every model maps **fixed** world points (RAS mm) to **moving** world points as

    T(x) = M (x - c) + c + t

with ``c`` the centre of rotation/scaling (world mm, set by the driver to the fixed image
centre so that rotations and translations are nearly decoupled), ``M`` the linear part of
the family and ``t`` a translation in mm. The homogeneous matrix is
``[[M, t + c - M c], [0, 1]]``.

Parameter vectors (float64), in order:

* ``Translation``: ``t`` (d values, mm).
* ``Rigid``: 3D Euler angles ``(ax, ay, az)`` in radians with ``R = Rz @ Ry @ Rx`` (ITK's
  Euler3D with ``ComputeZYX`` on; note ITK's *default* is ``Rz @ Rx @ Ry``), then ``t``
  (6); 2D: one angle (counter-clockwise from +x towards +y) then ``t`` (3).
* ``Similarity``: the rigid parameters, then ``log_scale`` (7 in 3D, 4 in 2D) with
  ``M = exp(log_scale) R``. The identity has ``log_scale = 0`` (scale 1); the log keeps the
  scale positive whatever the optimiser does. ``Similarity.scale`` reads/writes ``exp``.
* ``Affine``: the d x d entries of ``M`` row-major, then ``t`` (12 in 3D, 6 in 2D), as ITK.

``parameter_scales()`` returns ``s`` (optimiser variable ``q = p * s``): 1 for
translations (mm) and ``radius`` (mm) for dimensionless parameters, so that a unit step
in ``q`` moves points at the edge of the region by about 1 mm.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from .base import MatrixTransform, ParametricTransform, PointJacobian
from .rotations import _axis_rotations, euler_to_matrix, matrix_to_euler, nearest_rotation

__all__ = ["Translation", "Rigid", "Similarity", "Affine", "LinearTransform",
           "euler_to_matrix", "matrix_to_euler", "nearest_rotation"]

DEFAULT_RADIUS_MM = 100.0


class _LinearPointJacobian(PointJacobian):
    """The chain rule of a linear model in O(N d^2) whatever the parameter count.

    ``dT(x)/dp`` is affine in ``x``, so ``sum_i w_i . dT(x_i)/dp`` needs only
    ``sum_i w_i`` and ``sum_i w_i (x_i - c)^T`` and the Jacobian at the ``d+1`` points
    ``c, c + e_k``: cheap at any sample count.
    """

    def __init__(self, transform: LinearTransform, points: np.ndarray,
                 then: np.ndarray | None = None):
        super().__init__(transform, points, then)
        d = self.points.shape[1]
        center = np.asarray(transform.center, dtype=np.float64)
        self.offsets = self.points - center
        self.basis = np.vstack([center, center + np.eye(d)])

    def pull_back(self, forces: np.ndarray) -> np.ndarray:
        if self.then is not None:
            d = forces.shape[1]
            forces = forces @ self.then[:d, :d]
        sum_w = forces.sum(axis=0)
        moment = forces.T @ self.offsets  # (d, d): sum_i w_i (x_i - c)^T
        jac = self.transform.jacobian(self.basis)  # (d+1, d, P)
        j0 = jac[0]
        return sum_w @ j0 + np.einsum("ak,kap->p", moment, jac[1:] - j0[None])


# ---------------------------------------------------------------------- base class
class LinearTransform(ParametricTransform):
    """Shared machinery: ``T(x) = M(p) (x - c) + c + t``; subclasses define ``M(p)``."""

    _n_linear: dict[int, int] = {}  # number of parameters of the linear part per ndim

    def __init__(self, ndim: int = 3, center: np.ndarray | None = None,
                 parameters: np.ndarray | None = None):
        if ndim not in (2, 3):
            raise ValueError(f"linear transforms are 2D or 3D, got ndim={ndim}")
        self.ndim = int(ndim)
        self.center = np.zeros(ndim) if center is None else np.asarray(center, np.float64).copy()
        if self.center.shape != (ndim,):
            raise ValueError(f"center must have {ndim} coordinates, got shape {self.center.shape}")
        self.radius = DEFAULT_RADIUS_MM
        self._p = self._identity_parameters()
        if parameters is not None:
            self.parameters = parameters

    # -- to be provided by subclasses
    def _identity_parameters(self) -> np.ndarray:
        return np.zeros(self._n_linear[self.ndim] + self.ndim)

    def _linear(self) -> np.ndarray:
        """The d x d linear part M."""
        raise NotImplementedError

    def _linear_derivatives(self) -> np.ndarray:
        """``(n_linear, d, d)``: d M / d p_k for the linear-part parameters."""
        raise NotImplementedError

    @classmethod
    def _linear_parameters(cls, linear: np.ndarray) -> np.ndarray:
        """Linear-part parameters of the family member closest to a d x d matrix."""
        raise NotImplementedError

    # -- parameters
    @property
    def parameters(self) -> np.ndarray:
        return self._p.copy()

    @parameters.setter
    def parameters(self, value: np.ndarray) -> None:
        value = np.array(value, dtype=np.float64).ravel()
        if value.size != self._p.size:
            raise ValueError(f"{type(self).__name__} in {self.ndim}D has {self._p.size} "
                             f"parameters, got {value.size}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{type(self).__name__} parameters contain NaN or infinity")
        self._p = value

    @property
    def translation(self) -> np.ndarray:
        """The translation ``t`` (mm): displacement of the centre."""
        n = self._n_linear[self.ndim]
        return self._p[n:n + self.ndim].copy()

    @property
    def linear(self) -> np.ndarray:
        """The d x d linear part ``M``."""
        return self._linear()

    @property
    def is_linear(self) -> bool:
        return True

    @property
    def matrix(self) -> np.ndarray:
        """Homogeneous ``(d+1, d+1)`` matrix, fixed world mm -> moving world mm."""
        d = self.ndim
        m = self._linear()
        out = np.eye(d + 1)
        out[:d, :d] = m
        out[:d, d] = self.translation + self.center - m @ self.center
        return out

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, d)`` fixed world points (mm) to moving world points (mm)."""
        points = self._check_points(points)
        m = self.matrix
        return points @ m[:-1, :-1].T + m[:-1, -1]

    def _check_points(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.ndim:
            raise ValueError(f"expected (N, {self.ndim}) points, got shape {points.shape}")
        return points

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """``(N, d, n_parameters)``: d T(x_n) / d p at each fixed world point (mm per unit)."""
        points = self._check_points(points)
        d, n_lin = self.ndim, self._n_linear[self.ndim]
        jac = np.zeros((len(points), d, self._p.size))
        if n_lin:
            rel = points - self.center
            # d T / d p_k = (dM/dp_k) (x - c)
            jac[:, :, :n_lin] = np.einsum("kij,nj->nik", self._linear_derivatives(), rel)
        jac[:, np.arange(d), n_lin + np.arange(d)] = 1.0
        return jac

    def at_points(self, points: np.ndarray, then: np.ndarray | None = None) -> PointJacobian:
        return _LinearPointJacobian(self, points, then)

    def parameter_scales(self, radius_mm: float | None = None) -> np.ndarray:
        """Per-parameter scales: 1 for translations, ``radius`` (mm) for the others."""
        r = self.radius if radius_mm is None else float(radius_mm)
        if not r > 0:
            raise ValueError(f"radius must be positive (mm), got {r}")
        scales = np.ones(self._p.size)
        n_lin = self._n_linear[self.ndim]
        scales[:n_lin] = r
        scales[n_lin + self.ndim:] = r  # similarity's log-scale
        return scales

    # -- construction
    @classmethod
    def from_matrix(cls, matrix: np.ndarray, center: np.ndarray | None = None):
        """The family member closest to a homogeneous fixed->moving matrix, about ``center``.

        The linear part is projected onto the family (see each class); the translation is
        chosen so that the centre maps exactly where ``matrix`` maps it.
        """
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] not in (3, 4):
            raise ValueError(f"expected a 3x3 or 4x4 homogeneous matrix, got {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("transform matrix contains NaN or infinite values")
        d = matrix.shape[0] - 1
        out = cls(ndim=d, center=center)
        c = out.center
        t = matrix[:d, :d] @ c + matrix[:d, d] - c
        out.parameters = np.concatenate([cls._linear_parameters(matrix[:d, :d]), t,
                                         cls._extra_parameters(matrix[:d, :d])])
        return out

    @classmethod
    def _extra_parameters(cls, linear: np.ndarray) -> np.ndarray:
        return np.zeros(0)

    def inverse(self) -> LinearTransform | MatrixTransform:
        """Exact inverse (moving -> fixed) in the same family, about the same centre."""
        inv = type(self).from_matrix(np.linalg.inv(self.matrix), center=self.center)
        inv.radius = self.radius
        return inv

    def copy(self):
        out = type(self)(ndim=self.ndim, center=self.center, parameters=self._p)
        out.radius = self.radius
        return out

    def __repr__(self) -> str:
        p = np.array2string(self._p, precision=5, separator=", ")
        c = np.array2string(self.center, precision=3, separator=", ")
        return f"{type(self).__name__}(ndim={self.ndim}, center={c}, parameters={p})"


# ---------------------------------------------------------------------- families
class Translation(LinearTransform):
    """``T(x) = x + t``. Parameters: ``t`` (mm). ``from_matrix`` keeps where c goes."""

    _n_linear = {2: 0, 3: 0}

    def _linear(self) -> np.ndarray:
        return np.eye(self.ndim)

    def _linear_derivatives(self) -> np.ndarray:
        return np.zeros((0, self.ndim, self.ndim))

    @classmethod
    def _linear_parameters(cls, linear: np.ndarray) -> np.ndarray:
        return np.zeros(0)


class Rigid(LinearTransform):
    """Rotation about ``c`` then translation. Parameters: angles (rad), then ``t`` (mm).

    ``from_matrix`` uses the nearest proper rotation (polar decomposition, det +1).
    """

    _n_linear = {2: 1, 3: 3}

    def _angles(self) -> np.ndarray:
        return self._p[:self._n_linear[self.ndim]]

    def _rotation(self) -> np.ndarray:
        return euler_to_matrix(self._angles())

    def _rotation_derivatives(self) -> np.ndarray:
        a = self._angles()
        if self.ndim == 2:
            c, s = np.cos(a[0]), np.sin(a[0])
            return np.array([[[-s, -c], [c, -s]]])
        rx, ry, rz, drx, dry, drz = _axis_rotations(a)
        return np.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx])

    def _linear(self) -> np.ndarray:
        return self._rotation()

    def _linear_derivatives(self) -> np.ndarray:
        return self._rotation_derivatives()

    @property
    def angles(self) -> np.ndarray:
        """Rotation angles in radians (1 in 2D, ``(ax, ay, az)`` in 3D)."""
        return self._angles().copy()

    @classmethod
    def _linear_parameters(cls, linear: np.ndarray) -> np.ndarray:
        return matrix_to_euler(nearest_rotation(linear)[0])


class Similarity(Rigid):
    """Rigid plus one isotropic scale: ``M = exp(log_scale) R``.

    Parameters: angles (rad), ``t`` (mm), ``log_scale`` (identity: 0). ``from_matrix``
    takes the nearest rotation and the mean singular value as the scale.
    """

    _n_linear = {2: 1, 3: 3}  # angles; log_scale is stored after t (rigid prefix kept)

    @property
    def scale(self) -> float:
        """The isotropic scale factor ``exp(log_scale)`` (1 = no scaling)."""
        return float(np.exp(self._p[-1]))

    @scale.setter
    def scale(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"similarity scale must be positive, got {value}")
        self._p[-1] = np.log(value)

    def _identity_parameters(self) -> np.ndarray:
        return np.zeros(self._n_linear[self.ndim] + self.ndim + 1)

    def _linear(self) -> np.ndarray:
        return self.scale * self._rotation()

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        jac = super().jacobian(points)  # angles (scaled by `scale` via _linear_derivatives) + t
        rel = self._check_points(points) - self.center
        jac[:, :, -1] = rel @ self._linear().T  # d/d log_scale of M (x - c) is M (x - c)
        return jac

    def _linear_derivatives(self) -> np.ndarray:
        return self.scale * self._rotation_derivatives()

    @classmethod
    def _extra_parameters(cls, linear: np.ndarray) -> np.ndarray:
        _, s = nearest_rotation(linear)
        return np.array([np.log(np.mean(s))])


class Affine(LinearTransform):
    """General linear part. Parameters: entries of ``M`` row-major, then ``t`` (mm)."""

    _n_linear = {2: 4, 3: 9}

    def _identity_parameters(self) -> np.ndarray:
        return np.concatenate([np.eye(self.ndim).ravel(), np.zeros(self.ndim)])

    def _linear(self) -> np.ndarray:
        d = self.ndim
        return self._p[:d * d].reshape(d, d).copy()

    def _linear_derivatives(self) -> np.ndarray:
        d = self.ndim
        return np.eye(d * d).reshape(d * d, d, d)

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        # Sparse structure: d T_i / d M_ij = (x - c)_j; filled directly for speed.
        points = self._check_points(points)
        d = self.ndim
        rel = points - self.center
        jac = np.zeros((len(points), d, d * d + d))
        for i, j in product(range(d), range(d)):
            jac[:, i, i * d + j] = rel[:, j]
        jac[:, np.arange(d), d * d + np.arange(d)] = 1.0
        return jac

    @classmethod
    def _linear_parameters(cls, linear: np.ndarray) -> np.ndarray:
        return np.asarray(linear, dtype=np.float64).ravel().copy()
