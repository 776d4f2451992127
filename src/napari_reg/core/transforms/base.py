"""The transform contract shared by every model (linear, B-spline, velocity, field).

Direction (never drift): a registration result ``T`` maps **fixed** world points
(RAS mm) to **moving** world points, the "pull" direction resampling needs:
``warped(x) = moving(T(x))`` sampled on the fixed grid.

Composition order: ``a.then(b)`` is the map ``x -> b(a(x))`` (apply ``a`` first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..image import apply_affine

__all__ = ["Transform", "ParametricTransform", "PointJacobian", "MatrixTransform",
           "CompositeTransform"]


class Transform(ABC):
    """A map from fixed world RAS mm to moving world RAS mm, in ``ndim`` dimensions."""

    ndim: int

    @abstractmethod
    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, ndim)`` fixed-space world points (mm) to moving-space world points."""

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.transform_points(points)

    def inverse(self) -> Transform:
        """The moving->fixed map. Linear models are exact; others may approximate."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    @property
    def is_linear(self) -> bool:
        return False

    def then(self, other: Transform) -> Transform:
        """The map ``x -> other(self(x))``; linear pairs collapse into one matrix."""
        if self.is_linear and other.is_linear:
            return MatrixTransform(other.matrix @ self.matrix)  # type: ignore[attr-defined]
        return CompositeTransform([self, other])


class ParametricTransform(Transform):
    """A transform with a parameter vector an optimiser can move.

    Subclasses provide ``parameters`` (float64 vector, settable), ``jacobian(points)``
    (``(N, ndim, n_parameters)``: d T(x) / d p at each point) and ``parameter_scales``
    (typical size of a unit step in each parameter, so that one mm of motion at the
    image edge has about the same size in every scaled parameter).
    """

    @property
    @abstractmethod
    def parameters(self) -> np.ndarray: ...

    @parameters.setter
    @abstractmethod
    def parameters(self, value: np.ndarray) -> None: ...

    @property
    def n_parameters(self) -> int:
        return int(self.parameters.size)

    @abstractmethod
    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """``(N, ndim, n_parameters)`` derivative of mapped points w.r.t. the parameters."""

    def parameter_scales(self) -> np.ndarray:
        return np.ones(self.n_parameters)

    def at_points(self, points: np.ndarray, then: np.ndarray | None = None) -> PointJacobian:
        """This transform at fixed sample points that stay put while the parameters move
        (one pyramid level of a sampled objective), optionally followed by a constant
        linear map ``then`` (homogeneous matrix): see :class:`PointJacobian`. Models
        override it with a cheaper exact form."""
        return PointJacobian(self, points, then)


class PointJacobian:
    """``x_i -> then(T_p(x_i))`` at fixed points ``x_i`` (world mm) and its chain rule.

    ``mapped()`` gives the ``(N, d)`` mapped points (world mm) for the current parameters;
    ``pull_back(forces)`` turns per-point forces ``dC/dy_i`` (``(N, d)``, per mm, at the
    mapped points) into the parameter gradient ``dC/dp = sum_i forces_i . dy_i/dp``.
    This generic form evaluates :meth:`ParametricTransform.jacobian` at every call (exact
    for any model, but ``N x d x P`` values); linear models and the B-spline override it.
    """

    def __init__(self, transform: ParametricTransform, points: np.ndarray,
                 then: np.ndarray | None = None):
        self.transform = transform
        self.points = np.asarray(points, dtype=np.float64)
        self.then = None if then is None else np.asarray(then, dtype=np.float64)

    def mapped(self) -> np.ndarray:
        y = self.transform.transform_points(self.points)
        if self.then is None:
            return y
        d = y.shape[1]
        return y @ self.then[:d, :d].T + self.then[:d, d]

    def pull_back(self, forces: np.ndarray) -> np.ndarray:
        if self.then is not None:
            d = forces.shape[1]
            forces = forces @ self.then[:d, :d]
        return np.einsum("nd,ndp->p", forces, self.transform.jacobian(self.points))


class MatrixTransform(Transform):
    """A fixed homogeneous matrix, fixed world mm -> moving world mm."""

    def __init__(self, matrix: np.ndarray):
        matrix = np.array(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] not in (3, 4):
            raise ValueError(f"expected a 3x3 or 4x4 homogeneous matrix, got {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("transform matrix contains NaN or infinite values")
        self._matrix = matrix
        self.ndim = matrix.shape[0] - 1

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix.copy()

    @property
    def is_linear(self) -> bool:
        return True

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self._matrix, points)

    def inverse(self) -> MatrixTransform:
        return MatrixTransform(np.linalg.inv(self._matrix))

    def __repr__(self) -> str:
        return f"MatrixTransform({np.array2string(self._matrix, precision=4)})"


class CompositeTransform(Transform):
    """Transforms applied in list order: ``[a, b]`` maps ``x -> b(a(x))``."""

    def __init__(self, transforms: list[Transform]):
        if not transforms:
            raise ValueError("a composite transform needs at least one transform")
        dims = {t.ndim for t in transforms}
        if len(dims) != 1:
            raise ValueError(f"cannot compose transforms of dimensions {sorted(dims)}")
        flat: list[Transform] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, CompositeTransform) else [t])
        self.transforms = flat
        self.ndim = flat[0].ndim

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            points = t.transform_points(points)
        return points

    def inverse(self) -> CompositeTransform:
        return CompositeTransform([t.inverse() for t in reversed(self.transforms)])
